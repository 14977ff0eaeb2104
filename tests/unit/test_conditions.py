"""Condition matching, table-driven: JSON semantics (a boolean is never a number), missing paths."""

from __future__ import annotations

from typing import Any

import pytest

import squid_mesh as sm

CONTEXT: dict[str, Any] = {
    "amount": 120,
    "ratio": 0.5,
    "zero": 0,
    "flag": True,
    "off": False,
    "name": "ann",
    "nothing": None,
    "tags": ["a", "b"],
    "invoice": {"amount": 80, "currency": "EUR", "lines": {"count": 3}},
    "one": 1,
}

CASES: list[tuple[sm.Condition, bool]] = [
    # equals
    (sm.Condition("amount", equals=120), True),
    (sm.Condition("amount", equals=120.0), True),
    (sm.Condition("amount", equals=121), False),
    (sm.Condition("name", equals="ann"), True),
    (sm.Condition("name", equals="Ann"), False),
    (sm.Condition("nothing", equals=None), True),
    (sm.Condition("tags", equals=["a", "b"]), True),
    (sm.Condition("invoice.currency", equals="EUR"), True),
    (sm.Condition("invoice.lines.count", equals=3), True),
    # booleans are not numbers, and numbers are not booleans
    (sm.Condition("flag", equals=True), True),
    (sm.Condition("flag", equals=1), False),
    (sm.Condition("one", equals=True), False),
    (sm.Condition("one", equals=1), True),
    (sm.Condition("off", equals=0), False),
    (sm.Condition("zero", equals=False), False),
    (sm.Condition("off", equals=False), True),
    (sm.Condition("flag", in_=[1, 2]), False),
    (sm.Condition("one", in_=[True]), False),
    (sm.Condition("flag", in_=[True]), True),
    (sm.Condition("flag", greater_than=0), False),
    (sm.Condition("off", less_than=1), False),
    # greater_than / less_than on numbers only
    (sm.Condition("amount", greater_than=100), True),
    (sm.Condition("amount", greater_than=120), False),
    (sm.Condition("amount", less_than=120.5), True),
    (sm.Condition("ratio", less_than=1), True),
    (sm.Condition("ratio", greater_than=0.5), False),
    (sm.Condition("invoice.amount", less_than=100), True),
    (sm.Condition("name", greater_than=0), False),
    (sm.Condition("nothing", less_than=10), False),
    (sm.Condition("tags", greater_than=1), False),
    (sm.Condition("invoice", less_than=1), False),
    # exists
    (sm.Condition("nothing", exists=True), True),
    (sm.Condition("nothing", exists=False), False),
    (sm.Condition("missing", exists=False), True),
    (sm.Condition("missing", exists=True), False),
    (sm.Condition("invoice.lines", exists=True), True),
    (sm.Condition("invoice.lines.total", exists=False), True),
    (sm.Condition("name.first", exists=True), False),
    # in
    (sm.Condition("name", in_=["bob", "ann"]), True),
    (sm.Condition("name", in_=("bob",)), False),
    (sm.Condition("name", in_=[]), False),
    (sm.Condition("amount", in_=[120.0]), True),
    # a missing path never matches (except exists=False)
    (sm.Condition("missing", equals=None), False),
    (sm.Condition("missing", in_=[None]), False),
    (sm.Condition("missing", greater_than=0), False),
    (sm.Condition("missing", less_than=0), False),
    (sm.Condition("invoice.missing.deeper", equals=1), False),
    (sm.Condition("amount.deeper", equals=120), False),
    (sm.Condition("tags.0", equals="a"), False),
]


@pytest.mark.parametrize(("condition", "expected"), CASES, ids=[repr(c) for c, _ in CASES])
def test_matches(condition: sm.Condition, expected: bool) -> None:
    assert condition.matches(CONTEXT) is expected


def test_from_mapping_spells_in_without_underscore() -> None:
    cond = sm.Condition.from_mapping({"path": "name", "in": ["ann"]})
    assert cond == sm.Condition("name", in_=["ann"])
    assert cond.matches(CONTEXT)
    assert cond.describe() == {"path": "name", "in": ["ann"]}


@pytest.mark.parametrize(
    ("condition", "described"),
    [
        (sm.Condition("a.b", equals=1), {"path": "a.b", "equals": 1}),
        (sm.Condition("a", greater_than=2.5), {"path": "a", "greater_than": 2.5}),
        (sm.Condition("a", less_than=0), {"path": "a", "less_than": 0}),
        (sm.Condition("a", exists=False), {"path": "a", "exists": False}),
        (sm.Condition("a", in_=("x", "y")), {"path": "a", "in": ["x", "y"]}),
    ],
)
def test_describe_round_trips_through_from_mapping(
    condition: sm.Condition, described: dict[str, Any]
) -> None:
    assert condition.describe() == described
    assert sm.Condition.from_mapping(described).describe() == described


def test_operator_reports_the_single_operator() -> None:
    assert sm.Condition("a", exists=True).operator == ("exists", True)
    assert sm.Condition("a", equals=None).operator == ("equals", None)


def test_equals_none_is_an_operator_not_an_absence() -> None:
    assert sm.Condition("nothing", equals=None).matches({"nothing": None})
    assert not sm.Condition("nothing", equals=None).matches({"nothing": 0})
