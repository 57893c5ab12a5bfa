"""ai as the platform sees it: data only (see coder.shared.target)."""

from coder.shared.target import Dependency, Descriptor, Tool, admin, read, workload_secret, write

descriptor = Descriptor(
    name="ai",
    port=3006,
    title="AI model gateway",
    package="coder.services.ai",
    # Redis: deployment health and cooldowns shared by replicas, and the gateway's revocation list.
    needs=frozenset({Dependency.POSTGRES, Dependency.REDIS, Dependency.RABBITMQ}),
    permissions={
        "use": write("Call models: chat, completions, messages, context and the IDE configuration"),
        "read": read("Read providers, deployments, model groups and deployment health"),
        "admin": admin("Create, change and delete providers, deployments and model groups"),
    },
    emits=("ai.request.completed",),
    # usage: hold budget before a call and settle it; secrets: read a provider's API key for the user.
    grants=("usage:reserve", "secrets:read"),
    generated_secrets={workload_secret("ai"): "Proves ai to the gateway when it calls usage and secrets"},
    tools=(
        Tool(
            name="ai_list_models",
            operation="GET /v1/models",
            description="List the model aliases this organization can call (OpenAI model list).",
            read_only=True,
            idempotent=True,
        ),
        Tool(
            name="ai_chat",
            operation="POST /v1/chat/completions",
            description="Ask a model: an OpenAI chat completion (`model` is an alias from ai_list_models).",
        ),
    ),
)
