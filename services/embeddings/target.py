from coder.services.embeddings.api import router
from coder.services.embeddings.config import EmbeddingsSettings
from coder.services.embeddings.descriptor import descriptor
from coder.services.embeddings.models import Base
from coder.services.embeddings.service import prune_loop
from coder.shared.target import Target

target = Target(
    descriptor=descriptor,
    router=router,
    metadata=Base.metadata,
    events=Base.events,
    settings=EmbeddingsSettings,
    background=(prune_loop,),
)
