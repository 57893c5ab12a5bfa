"""FastAPI dependencies of the gateway's own routes, as named `Annotated` aliases."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import Depends, Request

from coder.gateway.edge import Caller, Gateway
from coder.gateway.service import Actor
from coder.gateway.sessions import Client
from coder.shared.auth import bearer_token
from coder.shared.errors import Unauthorized, answers


async def _gateway(request: Request) -> Gateway:
    gateway: Gateway = request.app.state.gateway
    return gateway


GatewayDep = Annotated[Gateway, Depends(_gateway)]


async def _client(request: Request) -> Client:
    ip = request.client.host if request.client else ""
    return Client(ip=ip, user_agent=request.headers.get("user-agent", ""))


ClientDep = Annotated[Client, Depends(_client)]


@answers(401)
async def _caller(request: Request, gateway: GatewayDep) -> Caller:
    token = bearer_token(request)
    if not token:
        raise Unauthorized("a bearer token is required")
    return await gateway.authenticate(token)


CallerDep = Annotated[Caller, Depends(_caller)]


@answers(401, 403)
async def _actor(caller: CallerDep, client: ClientDep) -> Actor:
    principal = caller.principal
    try:
        user_id = uuid.UUID(principal.subject)
        org_id = uuid.UUID(principal.org_id) if principal.org_id else None
    except ValueError:
        raise Unauthorized("the token does not name a user of this gateway", slug="unknown-user") from None
    return Actor(user_id=user_id, org_id=org_id, permissions=principal.permissions, ip=client.ip or None)


ActorDep = Annotated[Actor, Depends(_actor)]
