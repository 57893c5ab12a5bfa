"""Accounts and credentials: sign-up, sign-in (password or OIDC), sessions with rotating refresh
tokens, personal access tokens. Functions only flush; the request's transaction commits.
"""

from __future__ import annotations

import asyncio
import functools
import os
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import exists, func, select, text, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from coder.gateway import roles, service
from coder.gateway.config import GatewaySettings
from coder.gateway.models import Identity, PersonalToken, RefreshToken, Session, User
from coder.gateway.oidc import IdClaims
from coder.gateway.schemas import PersonalTokenCreate, SignupRequest
from coder.gateway.service import Actor
from coder.gateway.tokens import PERSONAL_PREFIX, REFRESH_PREFIX, KeyStore, digest, new_secret
from coder.shared.errors import Conflict, Forbidden, InvalidField, NotFound, Unauthorized

_T = TypeVar("_T")
_BOOTSTRAP_LOCK = 0x626F6F74  # pg advisory lock: one first user, one first organization
_hasher = PasswordHasher()  # argon2id with the library's current recommended parameters
# Verified against when the account does not exist, so both answers take as long.
_DUMMY_HASH = (
    "$argon2id$v=19$m=65536,t=3,p=4$c29tZXNhbHRzb21lc2FsdA$2RAVqpRLH+4m1ZbHrWnBO0SjsZp4uC/TUBR0jRIbCXI"
)


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Client:
    """Where a sign-in comes from, kept with the session."""

    ip: str
    user_agent: str


@dataclass(frozen=True)
class Issued:
    access_token: str
    expires_in: int
    refresh_token: str
    refresh_expires_in: int
    user_id: uuid.UUID
    org_id: uuid.UUID | None


class RefreshReused(Unauthorized):
    slug, title = "refresh-token-reused", "Refresh token reused"


@functools.cache
def _hashing_pool() -> ThreadPoolExecutor:
    # argon2 is CPU-bound and takes 64 MiB a hash: at most one per core, in threads of its own, so a
    # burst of sign-ins queues here instead of filling the default pool the rest of the process uses.
    return ThreadPoolExecutor(max_workers=os.cpu_count() or 1, thread_name_prefix="argon2")


async def _hashing(work: Callable[[], _T]) -> _T:
    return await asyncio.get_running_loop().run_in_executor(_hashing_pool(), work)


async def hash_password(password: str) -> str:
    return await _hashing(lambda: _hasher.hash(password))


async def _verify_password(stored: str | None, password: str) -> bool:
    try:
        verified = await _hashing(lambda: _hasher.verify(stored or _DUMMY_HASH, password))
    except (VerificationError, InvalidHashError):
        return False
    return verified and stored is not None


def check_password_policy(password: str, settings: GatewaySettings, field: str = "password") -> None:
    if len(password) < settings.password_min_length:
        raise InvalidField(field, f"at least {settings.password_min_length} characters")
    if password.isdigit() or len(set(password)) < 4:
        raise InvalidField(field, "too easy to guess")


async def _user_by_email(session: AsyncSession, email: str) -> User | None:
    return await session.scalar(select(User).where(User.email == email.lower()))


async def _no_user_yet(session: AsyncSession) -> bool:
    """Whether no user exists, read on a connection of its own: the request's transaction has not
    begun, and does not begin before the password is hashed."""
    engine = session.bind
    assert isinstance(engine, AsyncEngine)
    async with engine.connect() as conn:
        return not await conn.scalar(select(exists().select_from(User)))


async def _first_user(session: AsyncSession) -> bool:
    """Whether no user exists yet; holds the bootstrap lock until the transaction ends."""
    await session.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": _BOOTSTRAP_LOCK})
    return not await session.scalar(select(func.count()).select_from(User))


async def _place_new_user(
    session: AsyncSession,
    user: User,
    settings: GatewaySettings,
    *,
    first: bool,
    invitation: str | None,
    organization: str | None,
    ip: str,
) -> None:
    """A new user joins through an invitation, founds the first org, or (open sign-up) their own."""
    if invitation:
        await service.accept_invitation(session, user, invitation, "invitation")
    elif user.email_verified and (pending := await service.pending_invitation(session, user.email)):
        await service.join(session, user, pending)
    elif first or settings.open_signup:
        name = organization or (f"{user.name}'s organization" if not first else "Default organization")
        await service.create_org(session, user.id, name, ip=ip)
    else:
        raise _signup_closed()


def _signup_closed() -> Forbidden:
    return Forbidden("sign-up is by invitation only", slug="signup-closed")


async def signup(session: AsyncSession, body: SignupRequest, settings: GatewaySettings, ip: str) -> User:
    if not settings.local_accounts:
        raise Forbidden(
            "local accounts are disabled; sign in through the identity provider", slug="local-disabled"
        )
    check_password_policy(body.password, settings)
    # Refused before any costly work, and with one answer whether or not the address has an account.
    if not (body.invitation or settings.open_signup or await _no_user_yet(session)):
        raise _signup_closed()
    # Hashed before the transaction begins, so never under the bootstrap lock.
    password_hash = await hash_password(body.password)
    first = await _first_user(session)
    if await _user_by_email(session, body.email) is not None:
        raise Conflict("an account with this address exists", errors=[{"field": "email", "message": "taken"}])
    user = User(id=uuid.uuid4(), email=body.email, name=body.name, password_hash=password_hash)
    session.add(user)
    await session.flush()
    await _place_new_user(
        session,
        user,
        settings,
        first=first,
        invitation=body.invitation,
        organization=body.organization,
        ip=ip,
    )
    return user


async def authenticate_password(session: AsyncSession, email: str, password: str) -> User | None:
    user = await _user_by_email(session, email)
    if not await _verify_password(user.password_hash if user else None, password) or user is None:
        return None
    if user.disabled:
        return None
    assert user.password_hash is not None
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = await hash_password(password)
    return user


async def change_password(
    session: AsyncSession, user: User, current: str | None, new: str, settings: GatewaySettings
) -> None:
    if user.password_hash is not None and (
        current is None or not await _verify_password(user.password_hash, current)
    ):
        raise InvalidField("current_password", "does not match", status=403)
    check_password_policy(new, settings, "new_password")
    user.password_hash = await hash_password(new)
    await session.flush()


async def oidc_user(
    session: AsyncSession, claims: IdClaims, settings: GatewaySettings, invitation: str | None, ip: str
) -> User:
    """The user an ID token names: by (issuer, subject), else by verified address, else a new one."""
    identity = await session.scalar(
        select(Identity).where(Identity.issuer == claims.issuer, Identity.subject == claims.subject)
    )
    if identity is not None:
        identity.last_login_at, identity.email = _now(), claims.email
        user = await session.get(User, identity.user_id)
        assert user is not None
        return user
    if not claims.email or not claims.email_verified:
        raise Forbidden(
            "the identity provider did not vouch for an email address", slug="oidc-email-unverified"
        )
    email = claims.email.lower()
    domain = email.rsplit("@", 1)[-1]
    if settings.oidc_allowed_domains and domain not in settings.oidc_allowed_domains:
        raise Forbidden(f"addresses at {domain} may not sign in here", slug="oidc-domain-refused")
    first = await _first_user(session)
    user = await _user_by_email(session, email)
    if user is None:
        user = User(
            id=uuid.uuid4(), email=email, name=claims.name or email.split("@")[0], email_verified=True
        )
        session.add(user)
        await session.flush()
        await _place_new_user(
            session, user, settings, first=first, invitation=invitation, organization=None, ip=ip
        )
    else:
        user.email_verified = True
    session.add(
        Identity(
            user_id=user.id, issuer=claims.issuer, subject=claims.subject, email=email, last_login_at=_now()
        )
    )
    await session.flush()
    return user


# Sessions


async def choose_org(session: AsyncSession, user_id: uuid.UUID, wanted: uuid.UUID | None) -> uuid.UUID | None:
    """The org a session acts in: the one asked for (must be a member), else the oldest membership."""
    if wanted is not None:
        if await service.membership(session, wanted, user_id) is None:
            raise InvalidField("org_id", "not a member of this organization", status=403)
        return wanted
    rows = await service.memberships(session, user_id)
    return rows[0][0].id if rows else None


async def permissions(session: AsyncSession, org_id: uuid.UUID | None, user_id: uuid.UUID) -> list[str]:
    """What the user holds in `org_id`: the role's permissions and the self-service ones (which a
    session carries even in no organization, so its holder can found or join one)."""
    member = await service.membership(session, org_id, user_id) if org_id is not None else None
    granted = await service.permissions_of(session, member.org_id, member.role) if member else []
    return roles.with_self_service(granted)


async def _access(
    keys: KeyStore, session: AsyncSession, user_id: uuid.UUID, org_id: uuid.UUID | None, sid: str
) -> tuple[str, int]:
    perms = await permissions(session, org_id, user_id)
    return await keys.access_token(
        subject=str(user_id), org=str(org_id) if org_id else "", permissions=perms, session=sid
    )


async def start(
    session: AsyncSession,
    keys: KeyStore,
    settings: GatewaySettings,
    user: User,
    *,
    method: str,
    client: Client,
    org: uuid.UUID | None = None,
) -> Issued:
    """A new sign-in session for `user`: an access token and the first refresh token of its family."""
    org_id = await choose_org(session, user.id, org)
    now = _now()
    user.last_login_at = now
    row = Session(
        id=uuid.uuid4(),
        user_id=user.id,
        org_id=org_id,
        method=method,
        ip=client.ip[:64],
        user_agent=client.user_agent[:300],
        last_used_at=now,
        expires_at=now + timedelta(seconds=settings.session_max_age_seconds),
    )
    session.add(row)
    await session.flush()
    return await _issue(session, keys, settings, row)


async def _issue(session: AsyncSession, keys: KeyStore, settings: GatewaySettings, row: Session) -> Issued:
    refresh = new_secret(REFRESH_PREFIX)
    now = _now()
    expires = min(now + timedelta(seconds=settings.refresh_token_ttl_seconds), row.expires_at)
    session.add(RefreshToken(session_id=row.id, token_hash=digest(refresh), expires_at=expires))
    access, ttl = await _access(keys, session, row.user_id, row.org_id, str(row.id))
    await session.flush()
    return Issued(access, ttl, refresh, int((expires - now).total_seconds()), row.user_id, row.org_id)


async def refresh(
    session: AsyncSession, keys: KeyStore, settings: GatewaySettings, token: str, org: uuid.UUID | None
) -> Issued | Session:
    """Rotate a refresh token. A token used before means a copy is out there: the whole session is
    revoked and returned (the caller commits that and refuses); otherwise new tokens."""
    found = await session.scalar(
        select(RefreshToken).where(RefreshToken.token_hash == digest(token)).with_for_update()
    )
    if found is None:
        raise Unauthorized("unknown refresh token", slug="invalid-refresh-token")
    row = await session.scalar(select(Session).where(Session.id == found.session_id).with_for_update())
    assert row is not None
    now = _now()
    if row.revoked_at is not None:
        raise Unauthorized("this session was ended", slug="session-revoked")
    if found.used_at is not None:
        row.revoked_at, row.revoked_reason = now, "refresh-token-reuse"
        await session.flush()
        return row
    if found.expires_at <= now or row.expires_at <= now:
        raise Unauthorized("the refresh token expired; sign in again", slug="refresh-token-expired")
    user = await session.get(User, row.user_id)
    if user is None or user.disabled:
        raise Unauthorized("the account is disabled", slug="account-disabled")
    found.used_at = now
    row.last_used_at = now
    row.org_id = await choose_org(session, row.user_id, org or row.org_id) if (org or row.org_id) else None
    return await _issue(session, keys, settings, row)


async def find_session_by_refresh(session: AsyncSession, token: str) -> Session | None:
    return await session.scalar(
        select(Session)
        .join(RefreshToken, RefreshToken.session_id == Session.id)
        .where(RefreshToken.token_hash == digest(token))
    )


async def end_sessions(
    session: AsyncSession,
    user_id: uuid.UUID,
    *,
    only: uuid.UUID | None,
    reason: str,
    keep: uuid.UUID | None = None,
) -> list[str]:
    """Revoke one session of the user, or all (but `keep`); returns the revoked ids (for the deny list)."""
    query = update(Session).where(Session.user_id == user_id, Session.revoked_at.is_(None))
    if only is not None:
        query = query.where(Session.id == only)
    if keep is not None:
        query = query.where(Session.id != keep)
    result = await session.execute(
        query.values(revoked_at=_now(), revoked_reason=reason).returning(Session.id)
    )
    return [str(sid) for sid in result.scalars().all()]


# Personal access tokens


async def create_personal_token(
    session: AsyncSession, actor: Actor, body: PersonalTokenCreate, settings: GatewaySettings
) -> tuple[PersonalToken, str]:
    actor.require(roles.TOKENS_WRITE)
    if body.expires_in_days > settings.personal_token_max_days:
        raise InvalidField("expires_in_days", f"at most {settings.personal_token_max_days}")
    known = service.declared_permissions()
    for index, scope in enumerate(body.scopes):
        if reason := roles.invalid_permission(scope, known):
            raise InvalidField(f"scopes.{index}", reason)
    # No credential mints a broader one: each scope must be held by the credential asking, so a
    # personal token mints only a subset of its own scopes, and `*` needs `*`.
    broader = [(i, s) for i, s in enumerate(body.scopes) if not actor.can(s)]
    if broader:
        raise Forbidden(
            f"scopes broader than this credential: {', '.join(s for _, s in broader)}",
            slug="scope-not-held",
            errors=[{"field": f"scopes.{i}", "message": f"{s} is not held"} for i, s in broader],
        )
    token = new_secret(PERSONAL_PREFIX)
    row = PersonalToken(
        id=uuid.uuid4(),
        user_id=actor.user_id,
        org_id=actor.org,
        name=body.name,
        token_hash=digest(token),
        prefix=token[: len(PERSONAL_PREFIX) + 6],
        scopes=list(dict.fromkeys(body.scopes)),
        created_at=_now(),
        expires_at=_now() + timedelta(days=body.expires_in_days),
    )
    session.add(row)
    await service.audit(
        session,
        actor,
        actor.org,
        "token.created",
        "personal_token",
        row.id,
        name=body.name,
        scopes=row.scopes,
    )
    await session.flush()
    return row, token


async def revoke_personal_token(session: AsyncSession, actor: Actor, token_id: uuid.UUID) -> PersonalToken:
    row = await session.scalar(
        select(PersonalToken)
        .where(PersonalToken.id == token_id, PersonalToken.user_id == actor.user_id)
        .with_for_update()
    )
    if row is None:
        raise NotFound("no such token")
    if row.revoked_at is None:
        row.revoked_at = _now()
        await service.audit(
            session, actor, row.org_id, "token.revoked", "personal_token", row.id, name=row.name
        )
        await session.flush()
    return row


@dataclass(frozen=True)
class PersonalGrant:
    token_id: uuid.UUID
    user_id: uuid.UUID
    org_id: uuid.UUID
    permissions: list[str]
    expires_at: datetime


async def use_personal_token(session: AsyncSession, token: str) -> PersonalGrant:
    """What a personal access token may do now: its scopes narrowed by the owner's current role."""
    row = await session.scalar(select(PersonalToken).where(PersonalToken.token_hash == digest(token)))
    now = _now()
    if row is None or row.revoked_at is not None:
        raise Unauthorized("unknown or revoked personal access token", slug="invalid-personal-token")
    if row.expires_at <= now:
        raise Unauthorized("the personal access token expired", slug="personal-token-expired")
    member = await service.membership(session, row.org_id, row.user_id)
    user = await session.get(User, row.user_id)
    if member is None or user is None or user.disabled:
        raise Unauthorized(
            "the token's owner no longer belongs to its organization", slug="invalid-personal-token"
        )
    granted = roles.with_self_service(await service.permissions_of(session, row.org_id, member.role))
    row.last_used_at = now
    await session.flush()
    return PersonalGrant(
        row.id, row.user_id, row.org_id, roles.intersect(granted, row.scopes), row.expires_at
    )
