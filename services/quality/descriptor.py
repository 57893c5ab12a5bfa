"""quality as the platform sees it: data only (see coder.shared.target)."""

from coder.shared.target import Dependency, Descriptor, Tool, read, write

descriptor = Descriptor(
    name="quality",
    port=3017,
    title="Code quality",
    package="coder.services.quality",
    # Redis: the gateway's revocation list, read on every call (coder.shared.auth.RevocationList).
    needs=frozenset({Dependency.POSTGRES, Dependency.REDIS, Dependency.RABBITMQ}),
    permissions={
        "read": read("Read projects, analyses, issues, measures and quality gate statuses"),
        "write": write("Create, change and delete projects, branches, pull requests and gate conditions"),
        "analyze": write("Submit code for analysis and report test results and coverage from CI"),
    },
    emits=("quality.gate.changed",),
    tools=(
        Tool(
            name="quality_gate_status",
            operation="GET /v1/projects/{project_key}/gate",
            description=(
                "The quality gate of a project's branch (default: its main branch) or pull request: "
                "OK or ERROR, with every condition on new code, its measured value and the failing ones."
            ),
            read_only=True,
            idempotent=True,
        ),
        Tool(
            name="quality_list_issues",
            operation="GET /v1/projects/{project_key}/issues",
            description=(
                "The issues (lint findings, over-complex functions) of the latest analysis of a branch or "
                "pull request, by file and line; filter by severity, rule or new code only."
            ),
            read_only=True,
            idempotent=True,
        ),
    ),
)
