"""execution as the platform sees it: data only (see coder.shared.target)."""

from coder.shared.target import Dependency, Descriptor, KubeRule, Tool, read, workload_secret, write

descriptor = Descriptor(
    name="execution",
    port=3008,
    title="Sandboxed execution",
    package="coder.services.execution",
    # Redis: the gateway's revocation list, read on every call (coder.shared.auth.RevocationList).
    needs=frozenset({Dependency.POSTGRES, Dependency.REDIS, Dependency.RABBITMQ}),
    permissions={
        "read": read("Read jobs, their output and their files"),
        "run": write("Run commands and code in a sandbox, and cancel runs"),
    },
    emits=("execution.job.finished",),
    # resources: hold a sandbox, CPU and memory for the user while a job waits and runs.
    grants=("resources:reserve",),
    generated_secrets={
        workload_secret("execution"): "Proves execution to the gateway when it calls resources"
    },
    # In a cluster each run is a Job in the platform's sandbox namespace (kube.py), never the platform's
    # own: exactly the calls it makes, granted there only.
    kube_rules=(
        KubeRule("batch", ("jobs",), ("create", "get", "delete")),
        # The run's deny-all policy and its files, created first, then patched to be owned by the Job.
        KubeRule("networking.k8s.io", ("networkpolicies",), ("create", "patch")),
        KubeRule("", ("configmaps",), ("create", "patch")),
        # The Job's pod, found by its label once the Job ended, and its output.
        KubeRule("", ("pods",), ("list",)),
        KubeRule("", ("pods/log",), ("get",)),
    ),
    cluster_settings={"EXECUTION_BACKEND": "kubernetes", "EXECUTION_KUBE_NAMESPACE": "{sandbox_namespace}"},
    tools=(
        Tool(
            name="execution_run",
            operation="POST /v1/jobs",
            description=(
                "Run a command (argv) or code (language python or sh, and source) in a sandbox with "
                "limits on CPU time, wall time, memory, processes and output, no network unless asked; "
                "answers at once with the queued job (poll execution_get_job for its end)."
            ),
        ),
        Tool(
            name="execution_get_job",
            operation="GET /v1/jobs/{job_id}",
            description=(
                "A job's status (queued, running, finished, cancelled), exit code, outcome (exited, "
                "cpu_time, wall_time, memory, processes, output, cancelled, error) and why."
            ),
            read_only=True,
            idempotent=True,
        ),
        Tool(
            name="execution_cancel",
            operation="POST /v1/jobs/{job_id}/cancel",
            description=(
                "Cancel a queued or running job (its processes are killed); a finished job stays as it is."
            ),
            destructive=True,
            idempotent=True,
        ),
    ),
)
