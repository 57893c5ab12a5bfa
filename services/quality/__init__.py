"""quality: static analysis, CI test and coverage reports, measures and quality gates.

Modelled on SonarQube: projects with branches and pull requests, an analysis per commit (ruff lint
findings, cyclomatic complexity with radon, duplicated blocks found by a line-window hash in the manner
of SonarQube's CPD), JUnit and Cobertura/coverage.py reports from CI, measures per branch and pull
request, and a quality gate: conditions on the new code (what differs from the branch's baseline)
answering OK or ERROR.
"""
