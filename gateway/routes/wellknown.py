"""The documents a verifier needs: the signing keys and where things are."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response

from coder.gateway.deps import GatewayDep

router = APIRouter(prefix="/.well-known", tags=["discovery"])


@router.get("/jwks.json")
async def jwks(gateway: GatewayDep, response: Response) -> dict[str, Any]:
    """The public keys access tokens are signed with: the current one, and replaced ones until every
    token they signed has expired. Verifiers cache this and re-read it on an unknown `kid`."""
    response.headers["Cache-Control"] = "public, max-age=60"
    return await gateway.keys.jwks()


@router.get("/openid-configuration")
async def openid_configuration(gateway: GatewayDep, request: Request) -> dict[str, Any]:
    """Discovery metadata of the gateway as a token issuer."""
    base = str(request.base_url).rstrip("/")
    settings = gateway.runtime.settings
    return {
        "issuer": settings.token_issuer,
        "jwks_uri": f"{base}/.well-known/jwks.json",
        "authorization_endpoint": f"{base}/auth/oidc/login",
        "token_endpoint": f"{base}/auth/refresh",
        "revocation_endpoint": f"{base}/auth/revoke",
        "userinfo_endpoint": f"{base}/api/users/me",
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": [gateway.settings.signing_algorithm],
        "token_endpoint_auth_methods_supported": ["none"],
        "code_challenge_methods_supported": ["S256"],
        "claims_supported": ["iss", "aud", "sub", "org", "perms", "exp", "iat", "jti", "sid"],
        "audience": settings.token_audience,
    }
