"""The internal exchange a target calling another for a user goes through: the user's token and the
calling target's workload secret for a workload token (docs/architecture.md, "Service-to-service
identity"). Not a user route: left out of the OpenAPI, and useless without a target's secret."""

from __future__ import annotations

import hmac

from fastapi import APIRouter
from pydantic import BaseModel, Field

from coder.gateway.deps import CallerDep, GatewayDep
from coder.shared.errors import Forbidden, InvalidField, Unauthorized
from coder.shared.http import WORKLOAD_TOKEN_PATH
from coder.shared.schemas import Input

router = APIRouter(include_in_schema=False)


class WorkloadTokenRequest(Input):
    caller: str = Field(min_length=1, max_length=63, description="The calling target")
    secret: str = Field(min_length=1, max_length=512, description="The calling target's workload secret")
    audience: str = Field(min_length=1, max_length=63, description="The target to be called")


class WorkloadToken(BaseModel):
    token: str
    expires_in: int


@router.post(WORKLOAD_TOKEN_PATH)
async def workload_token(body: WorkloadTokenRequest, caller: CallerDep, gateway: GatewayDep) -> WorkloadToken:
    """A short-lived token naming `caller` acting for the user of the presented token, for `audience`."""
    runtime = gateway.runtime
    expected = runtime.settings.workload_secrets.get(body.caller, "")
    # Compared whatever the caller, in constant time: the answer tells no target name from a secret.
    matches = hmac.compare_digest(expected.encode(), body.secret.encode())
    if not expected or not matches:
        raise Unauthorized("unknown target or wrong workload secret", slug="workload-secret")
    if body.audience not in runtime.descriptors:
        raise InvalidField("body.audience", f"no target named {body.audience!r}")
    grants = runtime.descriptors[body.caller].grants if body.caller in runtime.descriptors else ()
    if not any(grant.startswith(f"{body.audience}:") for grant in grants):
        raise Forbidden(f"{body.caller} is granted nothing at {body.audience}")
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
