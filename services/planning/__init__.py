"""planning: plans of tasks with status, priority, dependencies, subtasks and acceptance checks.

Modelled on Task Master (claude-task-master): its task shape (id, title, description, details,
test strategy, status, priority, dependencies, subtasks) and its "next task" rule. Task ids are
small integers per plan, as in Task Master's tasks.json; dependencies never form a cycle. Expanding
a task and generating a plan go through the `ai` target with structured output, and a model's
answer is stored whole or not at all.
"""
