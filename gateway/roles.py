"""Roles and permissions: pure functions from a role to the `<target>:<action>` list a token carries.

A permission is `<target>:<action>`, `<target>:*` (every action of a target) or `*` (everything).
Built-in roles are computed from the kind (`Access`) each target's descriptor gives its actions, the
gateway's own included, so a new service gets sensible defaults without an edit here; custom roles
and token scopes are patterns an org admin or a user writes, naming declared actions only.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping, Sequence

from coder.shared.target import Access, Descriptor

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

# The kinds of action each built-in role holds, over every target (owner holds `*`).
ROLE_ACCESS = {
    ADMIN: frozenset({Access.READ, Access.WRITE, Access.ADMIN}),
    MEMBER: frozenset({Access.READ, Access.WRITE}),
    VIEWER: frozenset({Access.READ}),
}

PERMISSION = re.compile(r"^(\*|[a-z][a-z0-9-]{0,62}:(\*|[a-z][a-z0-9._-]{0,62}))$")
ROLE_NAME = r"^[a-z][a-z0-9-]{1,63}$"


def builtin_permissions(role: str, descriptors: Iterable[Descriptor]) -> list[str]:
    """The permissions of a built-in role: every declared action of the kinds the role holds.

    A target whose every action the role holds is written `<target>:*`, so the holder can also
    grant the pattern (a personal token's scope, a custom role) and tokens stay short."""
    if role == OWNER:
        return ["*"]
    access = ROLE_ACCESS[role]
    result: list[str] = []
    for d in sorted(descriptors, key=lambda d: d.name):
        held = sorted(a for a, p in d.permissions.items() if p.access in access)
        if held and len(held) == len(d.permissions):
            result.append(f"{d.name}:*")
        else:
            result.extend(f"{d.name}:{a}" for a in held)
    return result


def declared(descriptors: Iterable[Descriptor]) -> dict[str, frozenset[str]]:
    """Target -> the actions its descriptor declares: what a custom role or a scope may name."""
    return {d.name: frozenset(d.permissions) for d in descriptors}


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


def invalid_permission(permission: str, known: Mapping[str, Collection[str]]) -> str | None:
    """Why a pattern cannot be part of a custom role or a token scope, or None when it can.

    `known` is target -> declared actions (`declared(...)`): an undeclared action is refused, so a
    typo never becomes a grant that silently matches nothing (or something declared later)."""
    if not PERMISSION.match(permission):
        return "a permission is `<target>:<action>`, `<target>:*` or `*`"
    if permission == "*":
        return None
    target, action = permission.split(":", 1)
    if target not in known:
        return f"unknown target {target!r}"
    if action != "*" and action not in known[target]:
        return f"unknown permission {permission!r}: {target} declares {', '.join(sorted(known[target]))}"
    return None


def grants_ownership(permissions: Iterable[str]) -> bool:
    return any(covers(p, OWNERS_WRITE) for p in permissions)
