from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from coder.gateway.roles import ROLE_NAME
from coder.shared.schemas import Input

# Deliberately plain: the address is proven by an invitation or an identity provider, not by syntax.
EMAIL_PATTERN = r"^[^@\s]{1,64}@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$"
Email = Annotated[
    str,
    StringConstraints(strip_whitespace=True, max_length=320, pattern=EMAIL_PATTERN),
    AfterValidator(str.lower),
]
Password = Annotated[str, Field(min_length=1, max_length=256)]
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
RoleName = Annotated[str, Field(pattern=ROLE_NAME)]
Slug = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{1,62}$")]
Permission = Annotated[str, Field(max_length=130)]


# Sign-in


class SignupRequest(Input):
    email: Email
    password: Password
    name: Name
    organization: Name | None = Field(
        default=None, description="The new organization's name (first user, or open sign-up)"
    )
    invitation: str | None = Field(default=None, max_length=200, description="Join through this invitation")


class LoginRequest(Input):
    email: Email
    password: Password
    org_id: uuid.UUID | None = Field(default=None, description="Sign in to this organization")


class RefreshRequest(Input):
    refresh_token: str = Field(max_length=200)
    org_id: uuid.UUID | None = Field(default=None, description="Switch the session to this organization")


class ExchangeRequest(Input):
    code: str = Field(max_length=200, description="The one-time code a finished OIDC sign-in returned")


class LogoutRequest(Input):
    refresh_token: str | None = Field(default=None, max_length=200)
    everywhere: bool = Field(default=False, description="End every session of this user")


class RevokeRequest(Input):
    token: str = Field(max_length=4096, description="A refresh token, personal access token or access token")


class TokenPair(BaseModel):
    access_token: str
    token_type: Literal["Bearer"] = "Bearer"  # noqa: S105 - the scheme name
    expires_in: int
    refresh_token: str
    refresh_expires_in: int
    user_id: uuid.UUID
    org_id: uuid.UUID | None


class OidcProviderRead(BaseModel):
    name: str
    issuer: str
    login_url: str


class ProvidersRead(BaseModel):
    local_accounts: bool
    open_signup: bool
    oidc: OidcProviderRead | None


# Personal access tokens


class PersonalTokenCreate(Input):
    name: Name
    scopes: list[Permission] = Field(
        min_length=1,
        max_length=100,
        description="`<target>:<action>` patterns, each held by the credential asking; narrowed by the "
        "role at each use",
    )
    expires_in_days: int = Field(ge=1, description="At most the configured maximum")


class PersonalTokenRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    name: str
    prefix: str
    org_id: uuid.UUID
    scopes: list[str]
    created_at: datetime
    expires_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class PersonalTokenCreated(PersonalTokenRead):
    token: str = Field(description="Shown once; only its hash is kept")


# Users


class UserRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    email: str
    name: str
    email_verified: bool
    created_at: datetime
    last_login_at: datetime | None


class MembershipSummary(BaseModel):
    org_id: uuid.UUID
    org_name: str
    org_slug: str
    role: str


class MeRead(UserRead):
    org_id: uuid.UUID | None = Field(description="The organization the presented token acts in")
    permissions: list[str]
    memberships: list[MembershipSummary]
    teams: list[uuid.UUID] = Field(
        description="The teams of that organization the holder belongs to (what team permissions check)"
    )


class UserUpdate(Input):
    name: Name


class PasswordChange(Input):
    current_password: Password | None = None
    new_password: Password


# Organizations


class OrgCreate(Input):
    name: Name
    slug: Slug | None = None


class OrgUpdate(Input):
    name: Name


class OrgRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    name: str
    slug: str
    created_at: datetime


class MemberRead(BaseModel):
    user_id: uuid.UUID
    email: str
    name: str
    role: str
    joined_at: datetime


class MemberUpdate(Input):
    role: RoleName


class InvitationCreate(Input):
    email: Email
    role: RoleName = "member"


class InvitationRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    email: str
    role: str
    invited_by: uuid.UUID | None
    created_at: datetime
    expires_at: datetime
    accepted_at: datetime | None
    revoked_at: datetime | None


class InvitationCreated(InvitationRead):
    token: str = Field(description="Shown once: send it to the invitee")


class JoinRequest(Input):
    invitation: str = Field(max_length=200)


class RoleCreate(Input):
    name: RoleName
    description: str = Field(default="", max_length=500)
    permissions: list[Permission] = Field(min_length=1, max_length=200)


class RoleUpdate(Input):
    description: str | None = Field(default=None, max_length=500)
    permissions: list[Permission] | None = Field(default=None, min_length=1, max_length=200)


class RoleRead(BaseModel):
    name: str
    description: str
    permissions: list[str]
    builtin: bool


class AuditEntryRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    actor_id: uuid.UUID | None
    action: str
    resource_type: str
    resource_id: str
    details: dict[str, Any]
    request_id: str | None
    ip: str | None
    at: datetime


# Teams


class TeamCreate(Input):
    name: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
    description: str = Field(default="", max_length=500)


class TeamUpdate(Input):
    name: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)] | None = None
    description: str | None = Field(default=None, max_length=500)


class TeamRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    name: str
    description: str
    created_at: datetime


class TeamMemberRead(BaseModel):
    user_id: uuid.UUID
    email: str
    name: str
    added_at: datetime
