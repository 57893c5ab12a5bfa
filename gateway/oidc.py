"""OpenID Connect sign-in (authorization code flow with PKCE, state and nonce) against any issuer.

The provider is described by its discovery document; its signing keys come from its JWKS, cached
and re-read when an unknown `kid` shows up. An ID token is accepted only when its signature, issuer,
audience (and authorized party), expiry, issue time and nonce all check out.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import httpx
import jwt

from coder.shared.errors import Problem, Unauthorized

DISCOVERY_TTL = 3600.0
JWKS_MIN_REFRESH = 10.0
ID_TOKEN_ALGORITHMS = ["RS256", "RS384", "RS512", "ES256", "ES384", "PS256", "EdDSA"]
# Google documents both spellings of its issuer.
ISSUER_ALIASES = {"https://accounts.google.com": {"https://accounts.google.com", "accounts.google.com"}}


class ProviderError(Problem):
    status, slug, title = 502, "oidc-provider", "Identity provider error"


class InvalidIdToken(Unauthorized):
    slug, title = "oidc-invalid-id-token", "ID token refused"


@dataclass(frozen=True)
class Pkce:
    verifier: str
    challenge: str

    @classmethod
    def new(cls) -> Pkce:
        verifier = secrets.token_urlsafe(64)
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=")
        return cls(verifier, challenge.decode())


@dataclass(frozen=True)
class IdClaims:
    issuer: str
    subject: str
    email: str | None
    email_verified: bool
    name: str | None


class OidcClient:
    def __init__(
        self,
        *,
        issuer: str,
        client_id: str,
        client_secret: str | None,
        redirect_uri: str,
        scopes: str,
        http: httpx.AsyncClient,
    ) -> None:
        self.issuer = issuer.rstrip("/")
        self.client_id = client_id
        self.client_secret = client_secret
        self.redirect_uri = redirect_uri
        self.scopes = scopes
        self._http = http
        self._discovery: dict[str, Any] | None = None
        self._discovered_at = 0.0
        self._keys: dict[str, jwt.PyJWK] = {}
        self._keys_at = 0.0

    async def discovery(self) -> dict[str, Any]:
        if self._discovery is None or time.monotonic() - self._discovered_at > DISCOVERY_TTL:
            document = await self._get_json(f"{self.issuer}/.well-known/openid-configuration")
            for field in ("issuer", "authorization_endpoint", "token_endpoint", "jwks_uri"):
                if not isinstance(document.get(field), str):
                    raise ProviderError(f"the discovery document lacks {field}")
            if document["issuer"].rstrip("/") not in self._issuers():
                raise ProviderError("the discovery document names another issuer")
            self._discovery, self._discovered_at = document, time.monotonic()
        return self._discovery

    def _issuers(self) -> set[str]:
        return ISSUER_ALIASES.get(self.issuer, {self.issuer})

    async def _get_json(self, url: str) -> dict[str, Any]:
        try:
            response = await self._http.get(url)
            response.raise_for_status()
            body: dict[str, Any] = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise ProviderError(f"the identity provider did not answer: {type(exc).__name__}") from None
        return body

    async def authorize_url(self, *, state: str, nonce: str, pkce: Pkce, login_hint: str | None) -> str:
        endpoint = (await self.discovery())["authorization_endpoint"]
        params = {
            "response_type": "code",
            "client_id": self.client_id,
            "redirect_uri": self.redirect_uri,
            "scope": self.scopes,
            "state": state,
            "nonce": nonce,
            "code_challenge": pkce.challenge,
            "code_challenge_method": "S256",
        }
        if login_hint:
            params["login_hint"] = login_hint
        return f"{endpoint}{'&' if '?' in endpoint else '?'}{urlencode(params)}"

    async def exchange(self, code: str, verifier: str, nonce: str) -> IdClaims:
        """Trade the authorization code for tokens; returns the checked claims of the ID token."""
        endpoint = (await self.discovery())["token_endpoint"]
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": self.redirect_uri,
            "client_id": self.client_id,
            "code_verifier": verifier,
        }
        if self.client_secret:
            form["client_secret"] = self.client_secret
        try:
            response = await self._http.post(endpoint, data=form, headers={"Accept": "application/json"})
        except httpx.HTTPError as exc:
            raise ProviderError(f"the token endpoint did not answer: {type(exc).__name__}") from None
        if response.status_code != 200:
            error = _error_of(response)
            raise Unauthorized(f"the identity provider refused the code: {error}", slug="oidc-code-refused")
        try:
            id_token = response.json()["id_token"]
        except (ValueError, KeyError, TypeError):
            raise ProviderError("the token response carries no id_token") from None
        return await self.verify_id_token(id_token, nonce)

    async def verify_id_token(self, id_token: str, nonce: str) -> IdClaims:
        try:
            header = jwt.get_unverified_header(id_token)
        except jwt.InvalidTokenError:
            raise InvalidIdToken("the ID token is malformed") from None
        if header.get("alg") not in ID_TOKEN_ALGORITHMS:
            raise InvalidIdToken(f"the ID token uses algorithm {header.get('alg')!r}")
        key = await self._key(header.get("kid"))
        try:
            claims = jwt.decode(
                id_token,
                key=key,
                algorithms=ID_TOKEN_ALGORITHMS,
                audience=self.client_id,
                options={"require": ["iss", "sub", "aud", "exp", "iat"], "verify_iss": False},
                leeway=30,
            )
        except jwt.ExpiredSignatureError:
            raise InvalidIdToken("the ID token expired") from None
        except jwt.InvalidAudienceError:
            raise InvalidIdToken("the ID token was issued for another client") from None
        except jwt.InvalidSignatureError:
            raise InvalidIdToken("the ID token signature does not verify") from None
        except jwt.InvalidTokenError as exc:
            raise InvalidIdToken(f"the ID token is invalid: {exc}") from None
        if str(claims["iss"]).rstrip("/") not in self._issuers():
            raise InvalidIdToken("the ID token comes from another issuer")
        audiences = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
        if len(audiences) > 1 and claims.get("azp") != self.client_id:
            raise InvalidIdToken("the ID token was issued for another client")
        if not isinstance(claims.get("nonce"), str) or not secrets.compare_digest(claims["nonce"], nonce):
            raise InvalidIdToken("the ID token does not answer this sign-in (nonce)")
        verified = claims.get("email_verified")
        return IdClaims(
            issuer=self.issuer,
            subject=str(claims["sub"]),
            email=claims.get("email"),
            email_verified=verified is True or verified == "true",
            name=claims.get("name"),
        )

    async def _key(self, kid: Any) -> jwt.PyJWK:
        if (kid not in self._keys or kid is None) and time.monotonic() - self._keys_at > JWKS_MIN_REFRESH:
            document = await self._get_json((await self.discovery())["jwks_uri"])
            try:
                keyset = jwt.PyJWKSet.from_dict(document)
            except jwt.PyJWKSetError:
                raise ProviderError("the identity provider's JWKS holds no usable key") from None
            self._keys = {k.key_id or "": k for k in keyset.keys}
            self._keys_at = time.monotonic()
        if kid is None and len(self._keys) == 1:
            return next(iter(self._keys.values()))
        try:
            return self._keys[kid]
        except KeyError:
            raise InvalidIdToken("the ID token is signed by a key the provider does not publish") from None


def _error_of(response: httpx.Response) -> str:
    try:
        body = response.json()
        return str(body.get("error_description") or body.get("error") or response.status_code)
    except ValueError:
        return str(response.status_code)
