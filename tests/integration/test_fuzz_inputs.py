"""Bad-input fuzzing (hypothesis): every refusal is a typed error naming the problem, and writes nothing.

Payloads (wrong types, huge, deeply nested, values JSON cannot hold, NaN, lone surrogates), run
ids (non-UUID, SQL- and path-looking), option values, workflow graphs and JSON specs.
"""

from __future__ import annotations

import math
from datetime import datetime
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import squid_mesh as sm
from tests.conftest import MeshFactory
from tests.support.databases import row_counts

FUZZ = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# JSON-ish scalars plus what JSON cannot hold.
odd_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(alphabet=st.characters(codec=None, categories=None), max_size=40),
    st.sampled_from(["\ud800", "a\udfffb", "\x00", "'; DROP TABLE squid_mesh_runs; --"]),
    st.binary(max_size=8),
    st.builds(object),
    st.just(Decimal("1.5")),
    st.just(datetime(2026, 1, 1)),
    st.frozensets(st.integers(), max_size=3),
)
values = st.recursive(
    odd_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.text(max_size=8), st.integers()), inner, max_size=4),
    ),
    max_leaves=20,
)


def nested(depth: int) -> dict[str, Any]:
    payload: dict[str, Any] = {}
    for _ in range(depth):
        payload = {"x": payload}
    return payload


def free_workflow() -> sm.Workflow:
    wf = sm.Workflow("free", version="1")  # no schema: any JSON object

    @wf.step()
    def work(input: dict[str, Any], ctx: sm.StepContext) -> dict[str, Any]:
        return {}

    wf.transition("work", to=sm.COMPLETE)
    return wf


def typed_workflow() -> sm.Workflow:
    wf = sm.Workflow("typed", version="1", payload={"n": sm.Field(int), "tag": sm.Field(str)})

    @wf.step()
    def work(input: dict[str, Any], ctx: sm.StepContext) -> dict[str, Any]:
        return {}

    wf.transition("work", to=sm.COMPLETE)
    return wf


def json_clean(value: Any) -> bool:
    """Whether ``value`` is plain JSON (what a payload may hold)."""
    if value is None or isinstance(value, bool | int | str):
        return True  # lone surrogates too: stored JSON-escaped
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list):
        return all(json_clean(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and json_clean(v) for k, v in value.items())
    return False


@pytest.fixture
def mesh(make_mesh: MeshFactory) -> sm.Mesh:
    return make_mesh([free_workflow(), typed_workflow()])


def refused_cleanly(db_url: str, call: Any, *errors: type[Exception]) -> Exception | None:
    """Run ``call``; if it raises, it must be one of ``errors`` and nothing may have been written."""
    before = row_counts(db_url)
    try:
        call()
    except errors as exc:
        assert row_counts(db_url) == before, f"a refused call wrote: {exc!r}"
        assert str(exc), "the error says what is wrong"
        return exc
    return None


@FUZZ
@given(payload=values)
def test_fuzzed_payloads_start_or_are_refused_with_payload_error(
    mesh: sm.Mesh, db_url: str, payload: Any
) -> None:
    error = refused_cleanly(db_url, lambda: mesh.start("free", payload), sm.PayloadError)
    # Accepted exactly when it is a JSON object (None stands for the empty one).
    valid = payload is None or (isinstance(payload, dict) and json_clean(payload))
    assert (error is None) == valid, (payload, error)


@FUZZ
@given(n=values, tag=values)
def test_fuzzed_fields_of_a_typed_payload(mesh: sm.Mesh, db_url: str, n: Any, tag: Any) -> None:
    error = refused_cleanly(
        db_url, lambda: mesh.start("typed", {"n": n, "tag": tag}), sm.PayloadError
    )
    if error is not None:
        assert isinstance(error, sm.PayloadError) and error.fields, error


def test_deep_and_huge_payloads_are_refused_by_name(make_mesh: MeshFactory, db_url: str) -> None:
    mesh = make_mesh([free_workflow()], max_payload_bytes=10_000)
    error = refused_cleanly(db_url, lambda: mesh.start("free", nested(5_000)), sm.PayloadError)
    assert isinstance(error, sm.PayloadError) and "nested" in str(error)
    error = refused_cleanly(
        db_url, lambda: mesh.start("free", {"blob": "x" * 20_000}), sm.PayloadError
    )
    assert isinstance(error, sm.PayloadError) and "max_payload_bytes" in str(error)
    assert mesh.start("free", {"blob": "x" * 5_000}).status == sm.RunStatus.RUNNING
    assert mesh.start("free", nested(50)).status == sm.RunStatus.RUNNING
    with pytest.raises(sm.InvalidOptionError, match="max_payload_bytes"):
        make_mesh([free_workflow()], max_payload_bytes=0)


run_ids = st.one_of(
    st.text(max_size=60),
    st.sampled_from(
        [
            "",
            "../../etc/passwd",
            "'; DROP TABLE squid_mesh_runs; --",
            "0193f0c2-0000-7000-8000-00000000000",
            "\x00",
            "\ud800",
            "%s",
            ":run_id",
        ]
    ),
    st.integers(),
    st.none(),
    st.uuids().map(str),
)


@FUZZ
@given(run_id=run_ids)
def test_fuzzed_run_ids_are_refused_or_not_found(mesh: sm.Mesh, db_url: str, run_id: Any) -> None:
    for call in (
        lambda: mesh.inspect_run(run_id),
        lambda: mesh.explain_run(run_id),
        lambda: mesh.run_graph(run_id),
        lambda: mesh.cancel(run_id),
        lambda: mesh.resume(run_id),
        lambda: mesh.approve(run_id, actor="a"),
        lambda: mesh.replay(run_id),
    ):
        error = refused_cleanly(db_url, call, sm.InvalidOptionError, sm.RunNotFoundError)
        assert error is not None, "no run has such an id"


options = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True),
    st.text(max_size=30),
    st.binary(max_size=4),
    st.lists(st.integers(), max_size=2),
)


@FUZZ
@given(queue=options, lease=options, owner=options, priority=options, key=options)
def test_fuzzed_option_values_are_refused_by_name(
    mesh: sm.Mesh, db_url: str, queue: Any, lease: Any, owner: Any, priority: Any, key: Any
) -> None:
    error = refused_cleanly(
        db_url,
        lambda: mesh.start("free", {}, queue=queue, priority=priority, idempotency_key=key),
        sm.InvalidOptionError,
    )
    if error is not None:
        assert isinstance(error, sm.InvalidOptionError)
        assert error.option in ("queue", "priority", "idempotency_key"), error
    error = refused_cleanly(
        db_url,
        lambda: mesh.execute_next(owner_id=owner, queue="nothing_here", lease=lease),
        sm.InvalidOptionError,
    )
    if error is not None:
        assert isinstance(error, sm.InvalidOptionError) and error.option in ("owner_id", "lease")


names = st.sampled_from(["a", "b", "c", "d", sm.COMPLETE, "", "no such"])


@settings(max_examples=200, deadline=None)
@given(
    steps=st.lists(st.sampled_from(["a", "b", "c", "d"]), unique=True, max_size=4),
    edges=st.lists(st.tuples(names, names, st.sampled_from(["ok", "error", "maybe"])), max_size=8),
    afters=st.dictionaries(st.sampled_from(["a", "b", "c", "d"]), st.lists(names, max_size=2)),
)
def test_fuzzed_graphs_build_or_raise_definition_error(
    steps: list[str], edges: list[tuple[str, str, str]], afters: dict[str, list[str]]
) -> None:
    wf = sm.Workflow("g", version="1")
    try:
        for name in steps:
            wf.step(name=name, after=afters.get(name) or None)(lambda i, c: {})
        for source, target, on in edges:
            wf.transition(source, to=target, on=on)  # type: ignore[arg-type]
        wf.definition()
    except sm.DefinitionError as exc:
        assert str(exc)


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=10)),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=15,
)
spec_like = st.fixed_dictionaries(
    {},
    optional={
        "name": json_values,
        "version": json_values,
        "steps": st.one_of(
            json_values,
            st.lists(
                st.dictionaries(
                    st.sampled_from(
                        ["name", "action", "retry", "input", "output", "after", "kind"]
                    ),
                    json_values,
                ),
                max_size=3,
            ),
        ),
        "transitions": json_values,
        "payload": json_values,
        "triggers": json_values,
    },
)


@settings(max_examples=200, deadline=None)
@given(spec=st.one_of(json_values, spec_like))
def test_fuzzed_specs_build_or_raise_spec_error(spec: Any) -> None:
    registry = sm.Registry()

    @registry.action("act")
    def act(input: dict[str, Any], ctx: sm.StepContext) -> dict[str, Any]:
        return {}

    try:
        sm.Workflow.from_spec(spec, registry)
    except sm.SpecError as exc:
        assert exc.problems


def test_nested_non_string_keys_are_refused_not_rewritten(mesh: sm.Mesh, db_url: str) -> None:
    # Found by the payload fuzzer: {"": {0: None}} was stored as {"": {"0": None}}.
    for payload in [{"": {0: None}}, {"a": [{"b": {1: 2}}]}]:
        error = refused_cleanly(db_url, lambda p=payload: mesh.start("free", p), sm.PayloadError)
        assert isinstance(error, sm.PayloadError) and "keys must be strings" in str(error)
