from coder.services.embeddings.api import router
from coder.services.embeddings.config import EmbeddingsSettings
from coder.services.embeddings.descriptor import descriptor
from coder.services.embeddings.models import Base, events
from coder.shared.target import Target

target = Target(
    descriptor=descriptor,
    router=router,
    metadata=Base.metadata,
    events=events,
    settings=EmbeddingsSettings,
)
