"""knowledge as the platform sees it: data only (see coder.shared.target)."""

from coder.shared.target import Dependency, Descriptor, Tool, admin, read, workload_secret, write

descriptor = Descriptor(
    name="knowledge",
    port=3010,
    title="Knowledge base and code search",
    package="coder.services.knowledge",
    # Redis: the gateway's revocation list, read on every call (coder.shared.auth.RevocationList).
    needs=frozenset({Dependency.POSTGRES, Dependency.REDIS, Dependency.RABBITMQ}),
    permissions={
        "read": read("Read collections, documents, revisions and code sources, and search them"),
        "write": write("Write documents, restore revisions, upload and push code sources"),
        "admin": admin("Create, change and delete collections; see every team's collections"),
    },
    emits=("knowledge.document.created", "knowledge.document.updated", "knowledge.document.deleted"),
    consumes=("knowledge.document.updated", "knowledge.document.deleted"),
    # embeddings holds the chunks' vectors: a search reads them for the user; indexing (an event
    # handler, with no user) writes them for the document's organization.
    grants=("embeddings:embed", "embeddings:read", "embeddings:write"),
    background_grants=("embeddings:embed", "embeddings:read", "embeddings:write"),
    generated_secrets={
        workload_secret("knowledge"): "Proves knowledge to the gateway when it calls embeddings"
    },
    tools=(
        Tool(
            name="knowledge_search",
            operation="POST /v1/search",
            description=(
                "Search the organization's knowledge (Markdown documents and code) by meaning and by "
                "words: ranked snippets, each citing its collection, document or file path, revision "
                "and heading path or line range."
            ),
            read_only=True,
            idempotent=True,
        ),
        Tool(
            name="knowledge_get_document",
            operation="GET /v1/documents/{document_id}",
            description="Read one document (or code file): its content, revision and index status.",
            read_only=True,
            idempotent=True,
        ),
        Tool(
            name="knowledge_list_collections",
            operation="GET /v1/collections",
            description="The collections the caller can read: name, description, private, teams.",
            read_only=True,
            idempotent=True,
        ),
        Tool(
            name="knowledge_write_document",
            operation="POST /v1/collections/{collection_id}/documents",
            description="Add a Markdown document to a collection; it is indexed for search shortly after.",
        ),
    ),
)
