"""The internal exchange a target calling another for a user goes through: the user's token and the
calling target's workload secret for a workload token (docs/architecture.md, "Service-to-service
identity"). Not a user route: left out of the OpenAPI, and useless without a target's secret."""

from __future__ import annotations

import hmac
import time
import uuid
from typing import Any

import jwt
from fastapi import APIRouter
from pydantic import BaseModel, Field

from coder.gateway.deps import CallerDep, GatewayDep
from coder.gateway.edge import Gateway
from coder.gateway.models import Org
from coder.shared.auth import ALGORITHMS, Principal, background_subject
from coder.shared.db import SessionDep
from coder.shared.errors import Forbidden, InvalidField, Unauthorized
from coder.shared.http import (
    DELEGATED_TOKEN_PATH,
    DELEGATION_PATH,
    WORKLOAD_ORG_TOKEN_PATH,
    WORKLOAD_TOKEN_PATH,
)
from coder.shared.schemas import Input

router = APIRouter(include_in_schema=False)

# A delegation's audience: no target's name, so no target (nor the gateway) takes one as a credential.
DELEGATION_AUDIENCE = "coder-delegation"
# At most this long (signing keys stay published for their lifetime, 30 days by default, and longer).
DELEGATION_MAX_SECONDS = 14 * 86400
# An access token traded from a delegation lives this long (then the delegation is traded again).
DELEGATED_TOKEN_SECONDS = 300


def _check_secret(gateway: Gateway, caller: str, secret: str) -> None:
    expected = gateway.runtime.settings.workload_secrets.get(caller, "")
    # Compared whatever the caller, in constant time: the answer tells no target name from a secret.
    matches = hmac.compare_digest(expected.encode(), secret.encode())
    if not expected or not matches:
        raise Unauthorized("unknown target or wrong workload secret", slug="workload-secret")


class WorkloadTokenRequest(Input):
    caller: str = Field(min_length=1, max_length=63, description="The calling target")
    secret: str = Field(min_length=1, max_length=512, description="The calling target's workload secret")
    audience: str = Field(min_length=1, max_length=63, description="The target to be called")


class WorkloadToken(BaseModel):
    token: str
    expires_in: int


class OrgWorkloadTokenRequest(WorkloadTokenRequest):
    org: str = Field(min_length=1, max_length=64, description="The organization acted for")


def _check_caller(gateway: Gateway, body: WorkloadTokenRequest, *, background: bool) -> None:
    runtime = gateway.runtime
    _check_secret(gateway, body.caller, body.secret)
    if body.audience not in runtime.descriptors:
        raise InvalidField("body.audience", f"no target named {body.audience!r}")
    caller = runtime.descriptors.get(body.caller)
    grants = () if caller is None else caller.background_grants if background else caller.grants
    if not any(grant.startswith(f"{body.audience}:") for grant in grants):
        alone = " without a user" if background else ""
        raise Forbidden(f"{body.caller} is granted nothing at {body.audience}{alone}")


@router.post(WORKLOAD_TOKEN_PATH)
async def workload_token(body: WorkloadTokenRequest, caller: CallerDep, gateway: GatewayDep) -> WorkloadToken:
    """A short-lived token naming `caller` acting for the user of the presented token, for `audience`."""
    _check_caller(gateway, body, background=False)
    principal = caller.principal
    if not principal.org_id:
        raise Forbidden("acting for a user needs the user's organization; select one first")
    sid = (principal.claims or {}).get("sid")
    token, lifetime = await gateway.keys.workload_token(
        subject=principal.subject,
        org=principal.org_id,
        actor=body.caller,
        audience=body.audience,
        session=sid if isinstance(sid, str) else None,
    )
    return WorkloadToken(token=token, expires_in=lifetime)


class DelegationRequest(Input):
    caller: str = Field(min_length=1, max_length=63, description="The target acting for the user")
    secret: str = Field(min_length=1, max_length=512, description="The calling target's workload secret")
    ttl_seconds: int = Field(ge=60, le=DELEGATION_MAX_SECONDS, description="How long the delegation lasts")


class Delegation(BaseModel):
    delegation: str
    expires_in: int


@router.post(DELEGATION_PATH)
async def delegation(body: DelegationRequest, caller: CallerDep, gateway: GatewayDep) -> Delegation:
    """A delegation: `caller` may act for the user of the presented token, with no more than that
    token's permissions, until it expires, the user's session ends or their role changes. It is
    useless without `caller`'s secret: only `delegated-token` takes it (workflow's runs, whose steps
    run after the user's request has ended)."""
    _check_secret(gateway, body.caller, body.secret)
    principal = caller.principal
    if not principal.org_id:
        raise Forbidden("acting for a user needs the user's organization; select one first")
    now = time.time()
    claims: dict[str, Any] = {
        "iss": gateway.keys.issuer,
        "aud": DELEGATION_AUDIENCE,
        "sub": principal.subject,
        "org": principal.org_id,
        # The gateway's own actions (the account, its tokens and sessions) are never delegated.
        "perms": sorted(p for p in principal.permissions if not p.startswith("gateway:")),
        "act": {"sub": body.caller},
        "iat": round(now, 3),
        "nbf": int(now),
        "exp": int(now) + body.ttl_seconds,
        "jti": uuid.uuid4().hex,
    }
    sid = (principal.claims or {}).get("sid")
    if isinstance(sid, str):
        claims["sid"] = sid
    return Delegation(delegation=await gateway.keys.sign(claims), expires_in=body.ttl_seconds)


class DelegatedTokenRequest(Input):
    caller: str = Field(min_length=1, max_length=63, description="The target acting for the user")
    secret: str = Field(min_length=1, max_length=512, description="The calling target's workload secret")
    delegation: str = Field(min_length=1, max_length=16_384, description="A delegation issued to `caller`")


async def _delegation_claims(gateway: Gateway, token: str) -> dict[str, Any]:
    try:
        kid = jwt.get_unverified_header(token).get("kid")
        jwk = next((k for k in (await gateway.keys.jwks())["keys"] if k.get("kid") == kid), None)
        if jwk is None:
            raise Unauthorized("the delegation's key is gone", slug="delegation")
        claims: dict[str, Any] = jwt.decode(
            token,
            key=jwt.PyJWK.from_dict(jwk),
            algorithms=ALGORITHMS,
            audience=DELEGATION_AUDIENCE,
            issuer=gateway.keys.issuer,
            options={"require": ["exp", "iat", "sub", "iss", "aud"]},
        )
    except jwt.InvalidTokenError as exc:
        raise Unauthorized(f"invalid delegation: {exc}", slug="delegation") from None
    return claims


@router.post(DELEGATED_TOKEN_PATH)
async def delegated_token(body: DelegatedTokenRequest, gateway: GatewayDep) -> WorkloadToken:
    """A short-lived access token of the delegation's user, for `caller`, the delegation's holder. Its
    permissions are the delegation's; it names `caller` (`act`) and keeps the delegation's issue time,
    so the revocation list refuses it, like the delegation, once the user's session ends or their role
    changes. The gateway takes no token carrying `act` (gateway/edge.py)."""
    _check_secret(gateway, body.caller, body.secret)
    claims = await _delegation_claims(gateway, body.delegation)
    act = claims.get("act")
    perms = claims.get("perms")
    org = claims.get("org")
    if not isinstance(act, dict) or act.get("sub") != body.caller:
        raise Unauthorized("this delegation was issued to another target", slug="delegation")
    if not isinstance(perms, list) or not isinstance(org, str):
        raise Unauthorized("invalid delegation: no organization or permissions", slug="delegation")
    principal = Principal(subject=claims["sub"], org_id=org, permissions=frozenset(perms), claims=claims)
    await gateway.revocations.check(principal)
    sid = claims.get("sid")
    token, lifetime = await gateway.keys.access_token(
        subject=claims["sub"],
        org=org,
        permissions=perms,
        session=sid if isinstance(sid, str) else claims.get("jti", ""),
        ttl=DELEGATED_TOKEN_SECONDS,
        act={"sub": body.caller},
        iat=claims["iat"],
    )
    return WorkloadToken(token=token, expires_in=lifetime)


@router.post(WORKLOAD_ORG_TOKEN_PATH)
async def org_workload_token(
    body: OrgWorkloadTokenRequest, session: SessionDep, gateway: GatewayDep
) -> WorkloadToken:
    """A short-lived token naming `caller` acting for an organization with no user (its event handlers),
    for `audience`: `sub` is "target:<caller>", no `sid`, and the callee admits only the caller's
    `background_grants`. The secret is the whole proof, so only those grants are ever reachable."""
    _check_caller(gateway, body, background=True)
    try:
        org = await session.get(Org, uuid.UUID(body.org))
    except ValueError:
        org = None
    if org is None:
        raise InvalidField("body.org", "no such organization")
    token, lifetime = await gateway.keys.workload_token(
        subject=background_subject(body.caller),
        org=body.org,
        actor=body.caller,
        audience=body.audience,
        session=None,
    )
    return WorkloadToken(token=token, expires_in=lifetime)
