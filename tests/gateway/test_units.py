"""Pure parts: permission patterns and the circuit breaker's state machine."""

from __future__ import annotations

from coder.gateway import roles
from coder.gateway.breaker import CircuitBreaker, State
from coder.runner import registry
from coder.shared.target import Access, Descriptor, Permission, admin, read, write


def test_builtin_roles_follow_the_declared_kinds_of_action() -> None:
    # A target no list in roles.py names: its actions reach the built-in roles by their kind alone.
    reports = Descriptor(
        name="reports",
        port=3999,
        title="Reports",
        package="coder.services.reports",
        permissions={
            "read": read("Read reports"),
            "write": write("Write reports"),
            "publish": admin("Publish reports"),
            "render": Permission(Access.SERVICE, "Render a report for a user"),
        },
    )
    descriptors = [*registry.descriptors().values(), reports]
    assert roles.builtin_permissions("owner", descriptors) == ["*"]
    admin_ = roles.builtin_permissions("admin", descriptors)
    member = roles.builtin_permissions("member", descriptors)
    viewer = roles.builtin_permissions("viewer", descriptors)
    assert {"reports:read", "reports:write", "reports:publish"} <= set(admin_)
    assert {"reports:read", "reports:write"} <= set(member) and "reports:publish" not in member
    assert "reports:read" in viewer and "reports:write" not in viewer
    # No role holds a service action, nor the owner's, nor (as a role) the self-service ones.
    for granted in (admin_, member, viewer):
        assert "reports:render" not in granted and "usage:reserve" not in granted
        assert roles.OWNERS_WRITE not in granted and roles.TOKENS_WRITE not in granted
    assert {"secrets:read", "secrets:list", roles.MEMBERS_READ} <= set(viewer)
    assert "secrets:write" not in viewer and "secrets:destroy" not in member
    # Every action of secrets is the admin's: written as the pattern; usage keeps reserve back.
    assert "secrets:*" in admin_ and "usage:*" not in admin_
    assert {"usage:admin", "usage:ingest", roles.AUDIT_READ, roles.ROLES_WRITE} <= set(admin_)
    # The self-service permissions are the gateway's SELF actions.
    gateway = registry.descriptors()["gateway"]
    own = {f"gateway:{a}" for a, p in gateway.permissions.items() if p.access is Access.SELF}
    assert own == set(roles.SELF_SERVICE)


def test_patterns_cover_and_intersect() -> None:
    assert roles.covers("*", "secrets:read") and roles.covers("secrets:*", "secrets:read")
    assert not roles.covers("secrets:*", "usage:read") and not roles.covers("secrets:read", "secrets:*")
    assert roles.intersect(["*"], ["secrets:read"]) == ["secrets:read"]
    assert roles.intersect(["secrets:read", "secrets:list"], ["secrets:*"]) == [
        "secrets:read",
        "secrets:list",
    ]
    assert roles.intersect(["secrets:*", "usage:read"], ["usage:*", "secrets:write"]) == [
        "secrets:write",
        "usage:read",
    ]
    assert roles.intersect(["secrets:read"], ["usage:*"]) == []


def test_self_service_joins_every_role_but_not_a_narrow_scope() -> None:
    assert roles.with_self_service(["*"]) == ["*"]
    assert roles.with_self_service([]) == list(roles.SELF_SERVICE)
    viewer = roles.with_self_service(["secrets:read"])
    assert viewer == ["secrets:read", *roles.SELF_SERVICE]
    # A personal token's scopes narrow what its holder holds: `secrets:read` keeps no self-service.
    assert roles.intersect(viewer, ["secrets:read"]) == ["secrets:read"]
    assert roles.intersect(viewer, [roles.TOKENS_WRITE]) == [roles.TOKENS_WRITE]
    assert roles.reaches(["usage:read"], "usage") and not roles.reaches(["usage:read"], "secrets")
    known = roles.declared(registry.descriptors().values())
    assert roles.invalid_permission("nope:read", known) == "unknown target 'nope'"
    assert roles.invalid_permission("Secrets:READ", known) is not None
    assert "unknown permission 'secrets:nope'" in (roles.invalid_permission("secrets:nope", known) or "")
    assert all(roles.invalid_permission(p, known) is None for p in ("*", "secrets:*", "usage:reserve"))
    assert roles.grants_ownership(["gateway:*"]) and not roles.grants_ownership(["secrets:*"])


def state_of(breaker: CircuitBreaker) -> str:
    return breaker.state.value


def test_breaker_opens_half_opens_and_closes() -> None:
    now = [0.0]
    breaker = CircuitBreaker(threshold=2, reset_seconds=10, clock=lambda: now[0])
    breaker.failure()
    assert state_of(breaker) == "closed" and breaker.allow()
    breaker.failure()
    assert state_of(breaker) == "open" and not breaker.allow() and breaker.retry_after() == 10
    now[0] = 10
    assert state_of(breaker) == "half-open"
    assert breaker.allow() and not breaker.allow()  # one trial at a time
    breaker.failure()
    assert state_of(breaker) == "open"  # the trial failed: another full period
    now[0] = 20
    assert breaker.allow()
    breaker.success()
    assert state_of(breaker) == State.CLOSED.value and breaker.allow()
