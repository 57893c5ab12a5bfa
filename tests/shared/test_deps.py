"""The typed runtime dependencies: what a process did not open is a documented 503 problem, never a
500; a target's own settings arrive typed."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Annotated

import httpx
from fastapi import Depends, FastAPI
from pydantic_settings import SettingsConfigDict

from coder.shared.deps import BusDep, CacheDep, ClientsDep, settings_of
from coder.shared.errors import install_problem_handlers, install_problem_openapi
from coder.shared.http import ServiceClients
from coder.shared.settings import TargetSettings


class ProbeSettings(TargetSettings):
    model_config = SettingsConfigDict(env_prefix="PROBE_")

    greeting: str = "hello"


SettingsDep = Annotated[ProbeSettings, Depends(settings_of(ProbeSettings))]


def _app(settings: ProbeSettings) -> FastAPI:
    app = FastAPI()
    clients = ServiceClients({}, {})
    app.state.runtime = SimpleNamespace(
        cache=None, bus=None, clients=clients, config=lambda kind: settings if kind is ProbeSettings else None
    )
    install_problem_handlers(app)

    @app.get("/cache")
    async def cache(_cache: CacheDep) -> None: ...

    @app.get("/bus")
    async def bus(_bus: BusDep) -> None: ...

    @app.get("/settings")
    async def own(settings: SettingsDep, clients: ClientsDep) -> dict[str, object]:
        return {"greeting": settings.greeting, "clients": isinstance(clients, ServiceClients)}

    install_problem_openapi(app, frozenset())
    return app


async def test_what_the_process_did_not_open_is_a_503_problem() -> None:
    app = _app(ProbeSettings(greeting="hi"))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://deps") as client:
        for path, what in (("/cache", "cache"), ("/bus", "event bus")):
            response = await client.get(path)
            assert response.status_code == 503, path
            assert response.headers["content-type"] == "application/problem+json"
            assert what in response.json()["detail"]
        own = await client.get("/settings")
        assert own.json() == {"greeting": "hi", "clients": True}
    paths = app.openapi()["paths"]
    assert "503" in paths["/cache"]["get"]["responses"] and "503" in paths["/bus"]["get"]["responses"]
