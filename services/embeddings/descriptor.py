"""embeddings as the platform sees it: data only (see coder.shared.target)."""

from coder.shared.target import Dependency, Descriptor, Tool, read, write

descriptor = Descriptor(
    name="embeddings",
    port=3005,
    title="Vector embeddings",
    package="coder.services.embeddings",
    # Redis: the gateway's revocation list, read on every call (coder.shared.auth.RevocationList).
    needs=frozenset({Dependency.POSTGRES, Dependency.REDIS, Dependency.RABBITMQ}),
    permissions={
        "embed": read("Turn texts into vectors with the platform's models (OpenAI /v1/embeddings)"),
        "read": read("List collections and items, and search them"),
        "write": write("Create and delete collections, upsert and delete their items"),
    },
    emits=("embeddings.collection.created", "embeddings.collection.deleted"),
    tools=(
        Tool(
            name="embeddings_search",
            operation="POST /v1/collections/{name}/search",
            description=(
                "Semantic search in a vector collection: the k items nearest in meaning to a text "
                "query, optionally only those whose metadata equals the given values; each hit has "
                "its id, cosine score, text and metadata."
            ),
            read_only=True,
            idempotent=True,
        ),
        Tool(
            name="embeddings_list_collections",
            operation="GET /v1/collections",
            description="The organization's vector collections: name, model, size, description.",
            read_only=True,
            idempotent=True,
        ),
    ),
)
