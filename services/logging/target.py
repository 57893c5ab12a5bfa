from coder.services.logging.api import router
from coder.services.logging.config import LoggingSettings
from coder.services.logging.descriptor import descriptor
from coder.services.logging.handlers import on_secret_fingerprinted, retention
from coder.services.logging.models import Base
from coder.shared.target import Target

target = Target(
    descriptor=descriptor,
    router=router,
    metadata=Base.metadata,
    events=Base.events,
    consumes={"secrets.secret.fingerprinted": on_secret_fingerprinted},
    settings=LoggingSettings,
    background=(retention,),
)
