from coder.services.secrets.api import router
from coder.services.secrets.config import SecretsSettings
from coder.services.secrets.models import Base, events
from coder.shared.target import Dependency, Target

target = Target(
    name="secrets",
    port=3003,
    title="Secrets",
    package="coder.services.secrets",
    router=router,
    needs=frozenset({Dependency.POSTGRES, Dependency.RABBITMQ}),
    metadata=Base.metadata,
    events=events,
    settings=SecretsSettings,
)
