"""Org scoping lives in one place (shared/repository.py): a hand-written org filter anywhere under
services/ or gateway/ fails here. A filter is SQL: a mapped class's `org_id` column compared with a
value. A join condition (`Membership.org_id == Org.id`) and a check on a loaded object
(`actor.org_id`) are not."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SQL_FILTER = re.compile(r"\borg_id\s*(=|<>|!=|\bin\b|\bis\b)", re.IGNORECASE)


def _is_column(node: ast.expr) -> bool:
    """`Model.attribute`: a mapped class is spelled with a capital, an object is not."""
    return (
        isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id[:1].isupper()
    )


def _is_org_column(node: ast.expr) -> bool:
    return _is_column(node) and isinstance(node, ast.Attribute) and node.attr == "org_id"


def _filters_by_org(node: ast.expr) -> bool:
    if isinstance(node, ast.Compare):
        operands = [node.left, *node.comparators]
        return any(map(_is_org_column, operands)) and sum(map(_is_column, operands)) == 1
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
        by_keyword = node.func.attr == "filter_by" and any(k.arg == "org_id" for k in node.keywords)
        return by_keyword or _is_org_column(node.func.value)
    return (
        isinstance(node, ast.Constant) and isinstance(node.value, str) and bool(SQL_FILTER.search(node.value))
    )


def org_filters(source: str) -> list[int]:
    """Lines of `source` that filter by org without the helper: a comparison with an `org_id`
    attribute, a method call on one (`.in_`, `.is_`), `filter_by(org_id=...)`, or SQL text
    comparing `org_id`. Building a row (`Model(org_id=...)`, `.values(org_id=...)`) is not a filter."""
    nodes = ast.walk(ast.parse(source))
    return sorted({n.lineno for n in nodes if isinstance(n, ast.expr) and _filters_by_org(n)})


@pytest.mark.parametrize("package", ["services", "gateway"])
def test_filters_by_org_go_through_the_repository(package: str) -> None:
    found = [
        f"{path.relative_to(ROOT)}:{line}"
        for path in sorted((ROOT / package).rglob("*.py"))
        for line in org_filters(path.read_text())
    ]
    assert not found, (
        "filter by org with coder.shared.repository (scoped, owned_by, OrgScoped): " + ", ".join(found)
    )


@pytest.mark.parametrize(
    "code",
    [
        "select(Budget).where(Budget.org_id == org_id)",
        "select(Budget).where(org_id == Budget.org_id)",
        "conditions = [Event.org_id != org]",
        "select(Secret).where(Secret.org_id.in_(orgs))",
        "select(Secret).filter_by(org_id=org)",
        "text('SELECT * FROM usage_budget WHERE org_id = :org')",
        "text('select 1 from t where org_id in (:a)')",
    ],
)
def test_the_scan_sees_a_hand_written_org_filter(code: str) -> None:
    assert org_filters(code) == [1]


@pytest.mark.parametrize(
    "code",
    [
        "Budget(org_id=org_id, name=name)",
        "insert(Meter).values(org_id=org_id).on_conflict_do_nothing(index_elements=['org_id', 'slug'])",
        "scoped(Budget, org_id).where(Budget.id == budget_id)",
        "BudgetKeys(budget.org_id, budget.id)",
        "select(Org).join(Membership, Membership.org_id == Org.id)",
        "if self.org_id is None or org_id != self.org_id: raise Forbidden()",
        "events.publish(session, 'x', {}, org_id=org_id)",
    ],
)
def test_the_scan_leaves_rows_being_built_alone(code: str) -> None:
    assert org_filters(code) == []
