"""learning: courses of modules, lessons and quizzes; enrollments, progress and completion; learning
paths; and an xAPI-style statement store.

Modelled on Open edX and Moodle basics (a course's outline of modules holding lessons and quizzes, a
quiz's single and multiple choice questions with Moodle's partial credit and a pass mark, completion
as every required lesson done and every required quiz passed) and on the xAPI statements resource
(actor, verb, object, result, context; idempotent statement ids; queries by agent, verb, activity and
time with `more` paging). Every course action writes its statement too.
"""
