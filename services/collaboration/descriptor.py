"""collaboration as the platform sees it: data only (see coder.shared.target)."""

from coder.shared.target import Dependency, Descriptor, Tool, admin, read, write

descriptor = Descriptor(
    name="collaboration",
    port=3016,
    title="Collaboration",
    package="coder.services.collaboration",
    # Redis: the gateway's revocation list, and the channel that carries updates between replicas.
    needs=frozenset({Dependency.POSTGRES, Dependency.REDIS, Dependency.RABBITMQ}),
    permissions={
        "read": read("Open shared documents (as their members allow), read their text, comments and history"),
        "write": write("Create documents, edit the ones you may edit, and comment on them"),
        "admin": admin("Manage every document of the organization, whoever its members are"),
    },
    emits=(
        "collaboration.document.created",
        "collaboration.document.deleted",
        "collaboration.document.snapshotted",
        "collaboration.document.commented",
    ),
    tools=(
        Tool(
            name="collaboration_read_document",
            operation="GET /v1/documents/{document_id}",
            description="Read a shared document: its title, members, current text and size.",
            read_only=True,
            idempotent=True,
        ),
        Tool(
            name="collaboration_add_comment",
            operation="POST /v1/documents/{document_id}/comments",
            description=(
                "Comment on a range [start, end) of a shared document's text (character offsets), or "
                "reply to a comment with thread_id; the range follows the text as people edit it."
            ),
        ),
    ),
)
