"""Sign-in: local accounts, OpenID Connect, refresh, logout, revocation, personal access tokens."""

from __future__ import annotations

import json
import secrets
import uuid
from typing import Annotated
from urllib.parse import urlencode, urlsplit

import jwt
from fastapi import APIRouter, Query, Request, Response, status
from fastapi.responses import JSONResponse, RedirectResponse
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from coder.gateway import roles
from coder.gateway import sessions as accounts
from coder.gateway.deps import ActorDep, ClientDep, GatewayDep
from coder.gateway.edge import Gateway
from coder.gateway.models import PersonalToken
from coder.gateway.oidc import Pkce
from coder.gateway.schemas import (
    ExchangeRequest,
    LoginRequest,
    LogoutRequest,
    OidcProviderRead,
    PersonalTokenCreate,
    PersonalTokenCreated,
    PersonalTokenRead,
    ProvidersRead,
    RefreshRequest,
    RevokeRequest,
    SignupRequest,
    TokenPair,
)
from coder.gateway.service import Actor
from coder.gateway.sessions import Issued, RefreshReused
from coder.gateway.tokens import PERSONAL_PREFIX, REFRESH_PREFIX, digest
from coder.shared.auth import bearer_token
from coder.shared.db import SessionDep
from coder.shared.errors import InvalidField, Problem, Unauthorized, problem_responses
from coder.shared.pagination import Page, PageDep, paginate

router = APIRouter(prefix="/auth", tags=["auth"])

STATE_COOKIE = "coder_oidc_state"
OIDC_STATE_TTL = 600
LOGIN_CODE_TTL = 60
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def _pair(issued: Issued) -> TokenPair:
    return TokenPair(
        access_token=issued.access_token,
        expires_in=issued.expires_in,
        refresh_token=issued.refresh_token,
        refresh_expires_in=issued.refresh_expires_in,
        user_id=issued.user_id,
        org_id=issued.org_id,
    )


@router.get("/providers", response_model=ProvidersRead)
async def providers(gateway: GatewayDep) -> ProvidersRead:
    """The ways to sign in here, for the IDE's sign-in screen."""
    s = gateway.settings
    oidc = (
        OidcProviderRead(name=s.oidc_provider_name, issuer=s.oidc_issuer, login_url="/auth/oidc/login")
        if s.oidc_enabled
        else None
    )
    return ProvidersRead(local_accounts=s.local_accounts, open_signup=s.open_signup, oidc=oidc)


@router.post(
    "/signup",
    response_model=TokenPair,
    status_code=status.HTTP_201_CREATED,
    # Sign-up closed or the invitation for another address; unknown invitation; address taken.
    responses=problem_responses({403, 404, 409}),
)
async def signup(
    body: SignupRequest, session: SessionDep, gateway: GatewayDep, client: ClientDep
) -> TokenPair:
    """Create a local account (argon2id) and sign in. The very first user founds the first organization
    as its owner; later users join through an invitation, or found their own org with open sign-up."""
    user = await accounts.signup(session, body, gateway.settings, client.ip)
    issued = await accounts.start(
        session, gateway.keys, gateway.settings, user, method="password", client=client
    )
    return _pair(issued)


@router.post("/login", response_model=TokenPair, responses=problem_responses({401}))
async def login(body: LoginRequest, session: SessionDep, gateway: GatewayDep, client: ClientDep) -> TokenPair:
    """Sign in with email and password. Repeated failures for one account or one address are throttled
    (429 with Retry-After)."""
    if not gateway.settings.local_accounts:
        raise Problem("local accounts are disabled", status=403, slug="local-disabled", title="Forbidden")
    await gateway.throttle.check(body.email, client.ip)
    user = await accounts.authenticate_password(session, body.email, body.password)
    if user is None:
        await gateway.throttle.failed(body.email, client.ip)
        raise Unauthorized("wrong email or password", slug="invalid-credentials")
    await gateway.throttle.succeeded(body.email, client.ip)
    issued = await accounts.start(
        session, gateway.keys, gateway.settings, user, method="password", client=client, org=body.org_id
    )
    return _pair(issued)


@router.post("/refresh", response_model=TokenPair, responses={401: {"description": "Refused or reused"}})
async def refresh(body: RefreshRequest, session: SessionDep, gateway: GatewayDep) -> TokenPair:
    """Trade a refresh token for new tokens; the old refresh token stops working. Presenting a refresh
    token a second time ends the whole session (its copy may be in the wrong hands). With `org_id`, the
    new access token acts in that organization."""
    outcome = await accounts.refresh(session, gateway.keys, gateway.settings, body.refresh_token, body.org_id)
    if isinstance(outcome, Issued):
        return _pair(outcome)
    await gateway.revocations.revoke([str(outcome.id)])
    # The ended session commits with this answer.
    raise RefreshReused("refresh token reused: the session was ended", commit=True)


@router.post("/exchange", response_model=TokenPair, responses=problem_responses({401}))
async def exchange(body: ExchangeRequest, gateway: GatewayDep) -> TokenPair:
    """Trade the one-time code a finished OIDC sign-in sent to `return_to` for the session's tokens."""
    stored = await gateway.cache.getdel(f"gateway:login-code:{digest(body.code)}")
    if stored is None:
        raise InvalidField("code", "unknown, used or expired", status=400)
    return TokenPair.model_validate_json(stored)


async def _optional_actor(gateway: Gateway, token: str | None) -> Actor | None:
    """Who the presented bearer token is, if any (logout also works with only a refresh token)."""
    if not token:
        return None
    principal = (await gateway.authenticate(token)).principal
    try:
        user_id = uuid.UUID(principal.subject)
    except ValueError:
        raise Unauthorized("the token does not name a user of this gateway", slug="unknown-user") from None
    return Actor(user_id, None, principal.permissions)


@router.post("/logout", status_code=status.HTTP_204_NO_CONTENT)
async def logout(request: Request, body: LogoutRequest, session: SessionDep, gateway: GatewayDep) -> Response:
    """End the session of the presented refresh token or access token. `everywhere` ends every session
    of the user: it needs the session's refresh token or a bearer token holding
    `gateway:sessions.write` (every session's access token does; a personal access token only if
    scoped so). A personal access token belongs to no session: alone it ends nothing (422; revoke it
    with `/auth/revoke`). Ended sessions' access tokens stop working at the gateway at once."""
    token = bearer_token(request)
    actor = await _optional_actor(gateway, token)
    user_id = actor.user_id if actor else None
    sids: list[str] = []
    if body.refresh_token:
        found = await accounts.find_session_by_refresh(session, body.refresh_token)
        if found is None:
            raise InvalidField("refresh_token", "unknown refresh token", status=401)
        user_id = user_id or found.user_id
        if found.user_id != user_id:
            raise InvalidField("refresh_token", "belongs to another user", status=403)
        sids += await accounts.end_sessions(session, found.user_id, only=found.id, reason="logout")
    if user_id is None:
        raise Unauthorized("present the session's access token or refresh token")
    if body.everywhere:
        # A session's refresh token proves a session, and every session holds the permission.
        if not body.refresh_token and actor is not None:
            actor.require(roles.SESSIONS_WRITE)
        sids += await accounts.end_sessions(session, user_id, only=None, reason="logout-everywhere")
    elif not body.refresh_token:
        sid = _sid_of(token)
        if sid is None:
            raise InvalidField(
                "refresh_token",
                "the bearer token belongs to no session (a personal access token never does; revoke it "
                "with /auth/revoke); send a session's refresh token",
            )
        sids += await accounts.end_sessions(session, user_id, only=uuid.UUID(sid), reason="logout")
    await gateway.revocations.revoke(sids)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


def _sid_of(token: str | None) -> str | None:
    if not token or token.startswith(PERSONAL_PREFIX):
        return None
    sid = jwt.decode(token, options={"verify_signature": False}).get("sid")
    if not isinstance(sid, str):
        return None
    try:
        return str(uuid.UUID(sid))
    except ValueError:
        return None


@router.post("/revoke", status_code=status.HTTP_200_OK)
async def revoke(body: RevokeRequest, session: SessionDep, gateway: GatewayDep) -> dict[str, str]:
    """Revoke a token you hold (RFC 7009 style): a refresh token ends its session, a personal access
    token stops working, an access token ends the session it belongs to. Unknown tokens are no error."""
    token = body.token
    if token.startswith(REFRESH_PREFIX):
        found = await accounts.find_session_by_refresh(session, token)
        if found is not None:
            await gateway.revocations.revoke(
                await accounts.end_sessions(session, found.user_id, only=found.id, reason="revoked")
            )
    elif token.startswith(PERSONAL_PREFIX):
        row = await session.scalar(select(PersonalToken).where(PersonalToken.token_hash == digest(token)))
        if row is not None:
            await _revoke_personal(session, gateway, row.user_id, row.id)
    else:
        await _revoke_access(session, gateway, token)
    return {"status": "revoked"}


async def _revoke_access(session: AsyncSession, gateway: Gateway, token: str) -> None:
    verifier = gateway.runtime.verifier
    assert verifier is not None
    try:
        principal = await verifier.verify(token)
        user_id = uuid.UUID(principal.subject)
    except (Problem, ValueError):
        return
    sid = (principal.claims or {}).get("sid")
    if not isinstance(sid, str):
        return
    if sid.startswith("pat:"):
        await _revoke_personal(session, gateway, user_id, uuid.UUID(sid[4:]))
        return
    await gateway.revocations.revoke(
        await accounts.end_sessions(session, user_id, only=uuid.UUID(sid), reason="revoked")
    )


async def _revoke_personal(
    session: AsyncSession, gateway: Gateway, user_id: uuid.UUID, token_id: uuid.UUID
) -> PersonalToken:
    row = await accounts.revoke_personal_token(session, Actor(user_id, None, frozenset()), token_id)
    await gateway.revocations.revoke([f"pat:{row.id}"])
    gateway.forget_personal(row.token_hash)
    return row


# OpenID Connect


def _checked_return_to(value: str | None, allowed: list[str]) -> str | None:
    if not value:
        return None
    parts = urlsplit(value)
    loopback = parts.scheme == "http" and parts.hostname in LOOPBACK
    if loopback or any(value.startswith(prefix) for prefix in allowed):
        return value
    raise InvalidField("query.return_to", "must be a loopback address or an allowed return URL")


@router.get("/oidc/login", status_code=status.HTTP_302_FOUND, response_class=RedirectResponse)
async def oidc_login(
    gateway: GatewayDep,
    return_to: Annotated[str | None, Query(max_length=2000, description="Loopback URL of the IDE")] = None,
    login_hint: Annotated[str | None, Query(max_length=320)] = None,
    invitation: Annotated[str | None, Query(max_length=200)] = None,
) -> RedirectResponse:
    """Start OpenID Connect sign-in: redirects to the identity provider with PKCE, state and nonce. With
    `return_to`, the finished sign-in comes back there with a one-time `code` for `/auth/exchange`."""
    oidc = gateway.oidc
    if oidc is None:
        raise Problem("OpenID Connect is not configured", status=404, slug="oidc-disabled", title="Not found")
    target = _checked_return_to(return_to, gateway.settings.allowed_return_urls)
    state, nonce, pkce = secrets.token_urlsafe(32), secrets.token_urlsafe(32), Pkce.new()
    record = {"verifier": pkce.verifier, "nonce": nonce, "return_to": target, "invitation": invitation}
    url = await oidc.authorize_url(state=state, nonce=nonce, pkce=pkce, login_hint=login_hint)
    await gateway.cache.set(f"gateway:oidc:{digest(state)}", json.dumps(record), ex=OIDC_STATE_TTL)
    response = RedirectResponse(url, status_code=status.HTTP_302_FOUND)
    # Binds the sign-in to this browser: a callback carrying someone else's state is refused.
    response.set_cookie(
        STATE_COOKIE,
        state,
        max_age=OIDC_STATE_TTL,
        httponly=True,
        samesite="lax",
        secure=gateway.settings.oidc_redirect_uri.startswith("https://"),
        path="/auth/oidc",
    )
    return response


@router.get("/oidc/callback", response_model=TokenPair, responses={302: {"description": "Back to return_to"}})
async def oidc_callback(
    request: Request,
    session: SessionDep,
    gateway: GatewayDep,
    client: ClientDep,
    state: Annotated[str | None, Query(max_length=200)] = None,
    code: Annotated[str | None, Query(max_length=2000)] = None,
    error: Annotated[str | None, Query(max_length=200)] = None,
    error_description: Annotated[str | None, Query(max_length=1000)] = None,
) -> Response:
    """Where the identity provider sends the browser back: checks state, trades the code (with the PKCE
    verifier), checks the ID token, then signs the user in (creating the account on first sign-in)."""
    oidc = gateway.oidc
    if oidc is None:
        raise Problem("OpenID Connect is not configured", status=404, slug="oidc-disabled", title="Not found")
    if error:
        raise Unauthorized(
            f"the identity provider refused: {error_description or error}", slug="oidc-refused"
        )
    if not state:
        raise InvalidField("query.state", "missing")
    if not code:
        raise InvalidField("query.code", "missing")
    stored = await gateway.cache.getdel(f"gateway:oidc:{digest(state)}")
    if stored is None:
        raise InvalidField("query.state", "unknown or expired sign-in; start again", status=400)
    cookie = request.cookies.get(STATE_COOKIE)
    if cookie is None or not secrets.compare_digest(cookie, state):
        raise InvalidField("query.state", "this sign-in was started in another browser", status=400)
    record = json.loads(stored)
    claims = await oidc.exchange(code, record["verifier"], record["nonce"])
    user = await accounts.oidc_user(session, claims, gateway.settings, record.get("invitation"), client.ip)
    pair = _pair(
        await accounts.start(session, gateway.keys, gateway.settings, user, method="oidc", client=client)
    )
    response: Response
    if record.get("return_to"):
        one_time = secrets.token_urlsafe(32)
        await gateway.cache.set(
            f"gateway:login-code:{digest(one_time)}", pair.model_dump_json(), ex=LOGIN_CODE_TTL
        )
        target = record["return_to"]
        response = RedirectResponse(
            f"{target}{'&' if '?' in target else '?'}{urlencode({'code': one_time})}", status_code=302
        )
    else:
        response = JSONResponse(pair.model_dump(mode="json"))
    response.delete_cookie(STATE_COOKIE, path="/auth/oidc")
    return response


# Personal access tokens


@router.get("/tokens", response_model=Page[PersonalTokenRead])
async def list_personal_tokens(
    session: SessionDep, actor: ActorDep, params: PageDep
) -> Page[PersonalTokenRead]:
    """Your personal access tokens (never their values), newest first. Needs `gateway:tokens.read`."""
    actor.require(roles.TOKENS_READ)
    query = select(PersonalToken).where(PersonalToken.user_id == actor.user_id)
    rows = await paginate(
        session, query, (PersonalToken.created_at, PersonalToken.id), params, descending=True
    )
    return rows.page(PersonalTokenRead.model_validate)


@router.post("/tokens", response_model=PersonalTokenCreated, status_code=status.HTTP_201_CREATED)
async def create_personal_token(
    body: PersonalTokenCreate, session: SessionDep, gateway: GatewayDep, actor: ActorDep
) -> PersonalTokenCreated:
    """A personal access token for the IDE or CI, acting in your current organization with at most
    `scopes` (and never more than your role allows at the time of use). The value is shown only here.
    Needs `gateway:tokens.write`, and every scope must be held by the credential asking (403 naming
    the others): a personal token mints only a subset of its own scopes, `*` only a holder of `*`."""
    row, token = await accounts.create_personal_token(session, actor, body, gateway.settings)
    return PersonalTokenCreated(**PersonalTokenRead.model_validate(row).model_dump(), token=token)


@router.delete("/tokens/{token_id}", status_code=status.HTTP_204_NO_CONTENT)
async def revoke_personal_token(
    token_id: uuid.UUID, session: SessionDep, gateway: GatewayDep, actor: ActorDep
) -> Response:
    """Revoke one of your personal access tokens; it stops working at once. Needs
    `gateway:tokens.write` (revoking a token you hold needs nothing: `/auth/revoke`)."""
    actor.require(roles.TOKENS_WRITE)
    await _revoke_personal(session, gateway, actor.user_id, token_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
