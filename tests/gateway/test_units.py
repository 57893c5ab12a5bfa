"""Pure parts: permission patterns and the circuit breaker's state machine."""

from __future__ import annotations

from coder.gateway import roles
from coder.gateway.breaker import CircuitBreaker, State


def test_builtin_roles_follow_the_registry() -> None:
    services = ["gateway", "secrets", "usage"]
    assert roles.builtin_permissions("owner", services) == ["*"]
    admin = roles.builtin_permissions("admin", services)
    assert "secrets:*" in admin and "usage:*" in admin and roles.OWNERS_WRITE not in admin
    viewer = roles.builtin_permissions("viewer", services)
    assert "secrets:read" in viewer and "secrets:write" not in viewer and "gateway:*" not in viewer


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
    assert roles.invalid_permission("nope:read", ["secrets"]) == "unknown target 'nope'"
    assert roles.invalid_permission("Secrets:READ", ["secrets"]) is not None
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
