from coder.services.knowledge.api import router
from coder.services.knowledge.config import KnowledgeSettings
from coder.services.knowledge.descriptor import descriptor
from coder.services.knowledge.indexing import on_document_deleted, on_document_updated
from coder.services.knowledge.models import Base
from coder.shared.contracts.knowledge import DocumentDeleted, DocumentUpdated
from coder.shared.target import Target

target = Target(
    descriptor=descriptor,
    router=router,
    metadata=Base.metadata,
    events=Base.events,
    consumes={
        DocumentUpdated.event_type: on_document_updated,
        DocumentDeleted.event_type: on_document_deleted,
    },
    settings=KnowledgeSettings,
)
