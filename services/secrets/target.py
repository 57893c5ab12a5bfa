from coder.services.secrets.api import router
from coder.services.secrets.config import SecretsSettings
from coder.services.secrets.descriptor import descriptor
from coder.services.secrets.models import Base
from coder.shared.target import Target

target = Target(
    descriptor=descriptor,
    router=router,
    metadata=Base.metadata,
    events=Base.events,
    settings=SecretsSettings,
)
