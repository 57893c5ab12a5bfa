"""Roles and permissions: pure functions from a role to the `<target>:<action>` list a token carries.

A permission is `<target>:<action>`, `<target>:*` (every action of a target) or `*` (everything).
Built-in roles are computed from the registry, so a new service gets sensible defaults without an
edit here; custom roles are lists of patterns an org admin writes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

OWNER, ADMIN, MEMBER, VIEWER = "owner", "admin", "member", "viewer"
BUILTIN_ROLES = (OWNER, ADMIN, MEMBER, VIEWER)

# What the gateway itself checks on its own routes.
MEMBERS_READ = "gateway:members.read"
MEMBERS_WRITE = "gateway:members.write"
OWNERS_WRITE = "gateway:owners.write"  # grant or take the owner role: owners only
INVITATIONS_WRITE = "gateway:invitations.write"
TEAMS_WRITE = "gateway:teams.write"
ROLES_WRITE = "gateway:roles.write"
ORG_WRITE = "gateway:org.write"
AUDIT_READ = "gateway:audit.read"

# Self-service: what a person may do to their own account and credentials, whatever their role. Every
# session's access token carries these (they concern the user, not the org); a personal access token
# carries them only if its scopes do, so a token scoped to `secrets:read` manages nothing.
ACCOUNT_WRITE = "gateway:account.write"
TOKENS_READ = "gateway:tokens.read"
TOKENS_WRITE = "gateway:tokens.write"
SESSIONS_WRITE = "gateway:sessions.write"
# Described, like every permission, in gateway/descriptor.py.
SELF_SERVICE = (ACCOUNT_WRITE, TOKENS_READ, TOKENS_WRITE, SESSIONS_WRITE)

ADMIN_GATEWAY = (
    MEMBERS_READ,
    MEMBERS_WRITE,
    INVITATIONS_WRITE,
    TEAMS_WRITE,
    ROLES_WRITE,
    ORG_WRITE,
    AUDIT_READ,
)
MEMBER_ACTIONS = ("read", "list", "write", "delete")
VIEWER_ACTIONS = ("read", "list")

PERMISSION = re.compile(r"^(\*|[a-z][a-z0-9-]{0,62}:(\*|[a-z][a-z0-9._-]{0,62}))$")
ROLE_NAME = r"^[a-z][a-z0-9-]{1,63}$"


def builtin_permissions(role: str, services: Iterable[str]) -> list[str]:
    """The permissions of a built-in role, for the services in the registry (gateway excluded)."""
    names = sorted(s for s in services if s != "gateway")
    if role == OWNER:
        return ["*"]
    if role == ADMIN:
        return [*ADMIN_GATEWAY, *(f"{s}:*" for s in names)]
    if role == MEMBER:
        return [MEMBERS_READ, *(f"{s}:{a}" for s in names for a in MEMBER_ACTIONS)]
    if role == VIEWER:
        return [MEMBERS_READ, *(f"{s}:{a}" for s in names for a in VIEWER_ACTIONS)]
    raise KeyError(role)


def with_self_service(permissions: Sequence[str]) -> list[str]:
    """What a person holds: their role's permissions plus the self-service ones it does not cover."""
    extra = [p for p in SELF_SERVICE if not any(covers(g, p) for g in permissions)]
    return [*permissions, *extra]


def covers(pattern: str, permission: str) -> bool:
    """Whether holding `pattern` grants `permission` (which may itself be a pattern)."""
    if pattern == "*" or pattern == permission:
        return True
    if pattern.endswith(":*"):
        return permission.startswith(pattern[:-1]) and permission != "*"
    return False


def intersect(granted: Sequence[str], scopes: Sequence[str]) -> list[str]:
    """What a scoped credential may do: the part of `granted` that `scopes` also allows."""
    result: list[str] = []
    for g in granted:
        for s in scopes:
            narrow = s if covers(g, s) else g if covers(s, g) else None
            if narrow is not None and narrow not in result:
                result.append(narrow)
    # Drop entries another entry already covers (`secrets:read` next to `secrets:*`).
    return [p for p in result if not any(q != p and covers(q, p) for q in result)]


def reaches(permissions: Iterable[str], target: str) -> bool:
    """Whether any permission concerns `target`: the gateway's coarse check before proxying."""
    return any(p == "*" or p.startswith(f"{target}:") for p in permissions)


def invalid_permission(permission: str, known_targets: Iterable[str]) -> str | None:
    """Why a pattern cannot be part of a custom role or a token scope, or None when it can."""
    if not PERMISSION.match(permission):
        return "a permission is `<target>:<action>`, `<target>:*` or `*`"
    target = permission.split(":", 1)[0]
    if permission != "*" and target not in set(known_targets):
        return f"unknown target {target!r}"
    return None


def grants_ownership(permissions: Iterable[str]) -> bool:
    return any(covers(p, OWNERS_WRITE) for p in permissions)
