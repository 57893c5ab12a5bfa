"""The internal exchange a target calling another for a user goes through: the user's token and the
calling target's workload secret for a workload token (docs/architecture.md, "Service-to-service
identity"). Not a user route: left out of the OpenAPI, and useless without a target's secret."""

from __future__ import annotations

import hmac
import uuid

from fastapi import APIRouter
from pydantic import BaseModel, Field

from coder.gateway.deps import CallerDep, GatewayDep
from coder.gateway.edge import Gateway
from coder.gateway.models import Org
from coder.shared.auth import background_subject
from coder.shared.db import SessionDep
from coder.shared.errors import Forbidden, InvalidField, Unauthorized
from coder.shared.http import WORKLOAD_ORG_TOKEN_PATH, WORKLOAD_TOKEN_PATH
from coder.shared.schemas import Input

router = APIRouter(include_in_schema=False)


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
    expected = runtime.settings.workload_secrets.get(body.caller, "")
    # Compared whatever the caller, in constant time: the answer tells no target name from a secret.
    matches = hmac.compare_digest(expected.encode(), body.secret.encode())
    if not expected or not matches:
        raise Unauthorized("unknown target or wrong workload secret", slug="workload-secret")
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
