"""Workflow validation: every DefinitionError names what is wrong; the fingerprint tracks the shape."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

import squid_mesh as sm


def noop(input: dict[str, Any], ctx: sm.StepContext) -> dict[str, Any]:
    return {}


def two_steps(name: str = "wf") -> sm.Workflow:
    wf = sm.Workflow(name)
    wf.step("first")(noop)
    wf.step("second")(noop)
    wf.transition("first", to="second")
    wf.transition("second", to=sm.COMPLETE)
    return wf


def test_a_valid_workflow_builds() -> None:
    d = two_steps().definition()
    assert d.entry == "first"
    assert set(d.steps) == {"first", "second"}
    assert d.key == "wf@1"
    assert len(d.fingerprint) == 64


# -- the graph --------------------------------------------------------------------------------


def test_unknown_target_is_named() -> None:
    wf = two_steps()
    wf.transition("second", to="nowhere", on="error")
    with pytest.raises(sm.DefinitionError, match=r"unknown target 'nowhere'"):
        wf.definition()


def test_unknown_source_is_named() -> None:
    wf = two_steps()
    wf.transition("ghost", to="second")
    with pytest.raises(sm.DefinitionError, match=r"unknown step 'ghost'"):
        wf.definition()


def test_duplicate_step_name_is_named() -> None:
    wf = sm.Workflow("wf")
    wf.step("load")(noop)
    with pytest.raises(sm.DefinitionError, match=r"step 'load'.*declared twice"):
        wf.step("load")(noop)


def test_reserved_name_complete_is_refused() -> None:
    wf = sm.Workflow("wf")
    with pytest.raises(sm.DefinitionError, match=r"'complete'.*reserved"):
        wf.step(sm.COMPLETE)(noop)


def test_no_step_at_all() -> None:
    with pytest.raises(sm.DefinitionError, match=r"workflow 'empty': declares no step"):
        sm.Workflow("empty").definition()


def test_no_entry_step_when_every_step_is_a_target() -> None:
    wf = sm.Workflow("loop")
    wf.step("a")(noop)
    wf.step("b")(noop)
    wf.transition("a", to="b")
    wf.transition("b", to="a")
    with pytest.raises(sm.DefinitionError, match=r"no entry step.*entry=True"):
        wf.definition()


def test_an_explicit_entry_step_allows_a_loop_back_to_it() -> None:
    wf = sm.Workflow("loop")
    wf.step("a", entry=True)(noop)
    wf.step("b")(noop)
    wf.transition("a", to="b")
    wf.transition("b", to="a", when=sm.Condition("again", equals=True))
    wf.transition("b", to=sm.COMPLETE)
    assert wf.definition().entry == "a"


def test_several_entry_steps_are_listed() -> None:
    wf = sm.Workflow("wf")
    wf.step("a")(noop)
    wf.step("b")(noop)
    wf.transition("a", to=sm.COMPLETE)
    wf.transition("b", to=sm.COMPLETE)
    with pytest.raises(sm.DefinitionError, match=r"several steps.*\(a, b\)"):
        wf.definition()


def test_two_explicit_entry_steps() -> None:
    wf = sm.Workflow("wf")
    wf.step("a", entry=True)(noop)
    with pytest.raises(sm.DefinitionError, match=r"step 'b'.*'a' is already the entry step"):
        wf.step("b", entry=True)(noop)


def test_duplicate_unconditional_transition() -> None:
    wf = two_steps()
    wf.transition("first", to=sm.COMPLETE)
    with pytest.raises(sm.DefinitionError, match=r"'first' already has an unconditional on='ok'"):
        wf.definition()


def test_same_condition_twice() -> None:
    wf = two_steps()
    wf.transition("first", to=sm.COMPLETE, when=sm.Condition("x", equals=1))
    wf.transition("first", to="second", when={"path": "x", "equals": 1})
    with pytest.raises(sm.DefinitionError, match=r"'first' -> 'second'.*same condition"):
        wf.definition()


def test_different_conditions_are_fine_and_kept_in_order() -> None:
    wf = two_steps()
    wf.transition("first", to=sm.COMPLETE, when=sm.Condition("x", equals=1))
    wf.transition("first", to=sm.COMPLETE, when=sm.Condition("x", equals=2))
    routes = wf.definition().routes("first", "ok")
    assert [t.when.operator if t.when else None for t in routes] == [
        None,
        ("equals", 1),
        ("equals", 2),
    ]


@pytest.mark.parametrize("on", ["success", "OK", "", None])
def test_bad_on_is_named(on: Any) -> None:
    wf = two_steps()
    with pytest.raises(sm.DefinitionError, match=r"on must be 'ok' or 'error'"):
        wf.transition("first", to="second", on=on)


@pytest.mark.parametrize("to", ["", None, 3])
def test_bad_target_type(to: Any) -> None:
    with pytest.raises(sm.DefinitionError, match=r"from 'first': to must be a step name"):
        two_steps().transition("first", to=to)


def test_bad_when_type() -> None:
    with pytest.raises(sm.DefinitionError, match=r"when must be a sm.Condition"):
        two_steps().transition("first", to="second", when="x == 1")  # type: ignore[arg-type]


def test_step_without_ok_transition_is_named_with_a_hint() -> None:
    wf = sm.Workflow("wf")
    wf.step("a")(noop)
    wf.step("b")(noop)
    wf.transition("a", to="b")
    with pytest.raises(sm.DefinitionError, match=r"step 'b'.*no on='ok' transition") as err:
        wf.definition()
    assert "wf.transition('b', to=sm.COMPLETE)" in str(err.value)


def test_an_error_route_alone_is_not_an_ok_route() -> None:
    wf = sm.Workflow("wf")
    wf.step("a")(noop)
    wf.transition("a", to=sm.COMPLETE, on="error")
    with pytest.raises(sm.DefinitionError, match=r"step 'a'.*no on='ok' transition"):
        wf.definition()


# -- conditions ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"equals": 1, "less_than": 3}, r"exactly one operator.*\['equals', 'less_than'\]"),
        ({}, r"exactly one operator.*got none"),
        ({"greater_than": "10"}, r"greater_than needs a number, got '10'"),
        ({"greater_than": True}, r"greater_than needs a number, got True"),
        ({"less_than": None}, r"less_than needs a number"),
        ({"exists": 1}, r"exists needs True or False, got 1"),
        ({"exists": "yes"}, r"exists needs True or False"),
        ({"in_": "abc"}, r"in_ needs a list of values, got 'abc'"),
        ({"in_": 3}, r"in_ needs a list of values"),
        ({"equals": object()}, r"equals value must be JSON-safe"),
    ],
)
def test_bad_conditions_are_named(kwargs: dict[str, Any], pattern: str) -> None:
    with pytest.raises(sm.DefinitionError, match=r"condition on 'amount'") as err:
        sm.Condition("amount", **kwargs)
    assert err.match(pattern)


@pytest.mark.parametrize("path", ["", "a..b", ".a", 5, None])
def test_bad_condition_paths(path: Any) -> None:
    with pytest.raises(sm.DefinitionError, match=r"path"):
        sm.Condition(path, equals=1)


@pytest.mark.parametrize(
    ("spec", "pattern"),
    [
        ({"equals": 1}, r"needs 'path'"),
        ({"path": "x", "eq": 1}, r"unknown keys \['eq'\]"),
        ({"path": "x", "equals": 1, "in": [1]}, r"exactly one operator"),
    ],
)
def test_bad_condition_mappings(spec: dict[str, Any], pattern: str) -> None:
    wf = two_steps()
    with pytest.raises(sm.DefinitionError, match=pattern):
        wf.transition("first", to="second", when=spec)


# -- retry ---------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [0, -1, True, False, "3", 2.0, None])
def test_bad_max_attempts(value: Any) -> None:
    with pytest.raises(sm.DefinitionError, match=r"max_attempts must be an integer >= 1") as err:
        sm.RetryPolicy(max_attempts=value)
    assert repr(value) in str(err.value)


def test_backoff_must_be_a_backoff() -> None:
    with pytest.raises(sm.DefinitionError, match=r"backoff must be a Backoff.*got float"):
        sm.RetryPolicy(max_attempts=2, backoff=1.0)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("build", "pattern"),
    [
        (lambda: sm.Backoff.fixed(-1.0), r"Backoff.fixed delay must be >= 0 seconds, got -1.0"),
        (
            lambda: sm.Backoff.fixed("1"),
            r"Backoff.fixed delay must be a number of seconds, got str",
        ),
        (lambda: sm.Backoff.fixed(float("inf")), r"Backoff.fixed delay must be a number"),
        (
            lambda: sm.Backoff.fixed(True),
            r"Backoff.fixed delay must be a number of seconds, got bool",
        ),
        (
            lambda: sm.Backoff.exponential(min=-0.1, max=1.0),
            r"Backoff.exponential min must be > 0 seconds",
        ),
        (
            lambda: sm.Backoff.exponential(min=0.0, max=1.0),
            r"Backoff.exponential min must be > 0 seconds, got 0",
        ),
        (
            lambda: sm.Backoff.exponential(min=1.0, max=-2.0),
            r"Backoff.exponential max must be > 0 seconds",
        ),
        (
            lambda: sm.Backoff.exponential(min=2.0, max=1.0),
            r"Backoff.exponential max \(1.0\) must be >= min \(2.0\)",
        ),
        (
            lambda: sm.Backoff.fixed(1.0, jitter=1.5),
            r"jitter must be a number between 0 and 1, got 1.5",
        ),
        (lambda: sm.Backoff.fixed(1.0, jitter=-0.1), r"jitter must be a number between 0 and 1"),
        (
            lambda: sm.Backoff.exponential(min=1.0, max=2.0, jitter=True),
            r"jitter must be a number between 0 and 1, got True",
        ),
    ],
)
def test_bad_backoff_values_are_named(build: Callable[[], object], pattern: str) -> None:
    with pytest.raises(sm.DefinitionError, match=pattern):
        build()


def test_step_retry_must_be_a_policy() -> None:
    wf = sm.Workflow("wf")
    with pytest.raises(sm.DefinitionError, match=r"step 'a'.*retry must be a sm.RetryPolicy"):
        wf.step("a", retry=3)(noop)  # type: ignore[arg-type]


# -- mapping, output, names, options --------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "pattern"),
    [
        ({}, r"the mapping is empty"),
        ([], r"non-empty list of key names"),
        (["a", ""], r"non-empty list of key names"),
        (["a", 1], r"non-empty list of key names"),
        (["a", "a"], r"names a key twice"),
        ("amount", r"expected a list of keys or a \{target: 'dotted.path'\} mapping"),
        (42, r"expected a list of keys"),
        ({"": "a.b"}, r"target names must be non-empty strings"),
        ({"amount": "invoice..amount"}, r"'amount': path 'invoice..amount' has an empty part"),
        ({"amount": 3}, r"'amount': path must be a dotted string"),
    ],
)
def test_bad_input_mapping_is_named(spec: Any, pattern: str) -> None:
    wf = sm.Workflow("wf")
    with pytest.raises(sm.DefinitionError, match=r"step 'charge' input") as err:
        wf.step("charge", input=spec)(noop)
    assert err.match(pattern)


@pytest.mark.parametrize("output", ["", 3])
def test_bad_output_key(output: Any) -> None:
    wf = sm.Workflow("wf")
    with pytest.raises(sm.DefinitionError, match=r"step 'a'.*output must be a non-empty key name"):
        wf.step("a", output=output)(noop)


@pytest.mark.parametrize("value", [0, -3, True, 1.5, "2"])
def test_bad_max_visits(value: Any) -> None:
    wf = sm.Workflow("wf")
    with pytest.raises(sm.DefinitionError, match=r"step 'a'.*max_visits must be an integer >= 1"):
        wf.step("a", max_visits=value)(noop)


@pytest.mark.parametrize("name", ["", "1abc", "has space", "a:b", "x" * 101, 7, None])
def test_bad_workflow_names(name: Any) -> None:
    with pytest.raises(sm.DefinitionError, match=r"workflow name .* is invalid"):
        sm.Workflow(name)


@pytest.mark.parametrize("name", ["", "1abc", "has space", "a:b", "x" * 101])
def test_bad_step_names(name: str) -> None:
    wf = sm.Workflow("wf")
    with pytest.raises(sm.DefinitionError, match=r"step name .* is invalid"):
        wf.step(name)(noop)


def test_a_lambda_needs_an_explicit_name() -> None:
    wf = sm.Workflow("wf")
    with pytest.raises(sm.DefinitionError, match=r"step name '<lambda>' is invalid"):
        wf.step()(lambda input, ctx: {})


@pytest.mark.parametrize("name", ["a", "_private", "load.invoice", "step-2", "A" * 100])
def test_good_step_names(name: str) -> None:
    wf = sm.Workflow("wf")
    wf.step(name)(noop)
    wf.transition(name, to=sm.COMPLETE)
    assert wf.definition().entry == name


@pytest.mark.parametrize("version", ["", 1, None, "v" * 101])
def test_bad_version(version: Any) -> None:
    with pytest.raises(sm.DefinitionError, match=r"workflow 'wf': version must be a non-empty"):
        sm.Workflow("wf", version=version)


def test_bad_triggers() -> None:
    wf = sm.Workflow("wf", triggers=[])
    wf.step("a")(noop)
    wf.transition("a", to=sm.COMPLETE)
    with pytest.raises(sm.DefinitionError, match=r"needs at least one trigger"):
        wf.definition()
    twice = sm.Workflow("wf2", triggers=[sm.Manual(), sm.Manual()])
    twice.step("a")(noop)
    twice.transition("a", to=sm.COMPLETE)
    with pytest.raises(sm.DefinitionError, match=r"trigger name 'manual' is used twice"):
        twice.definition()


def test_bad_cron() -> None:
    with pytest.raises(sm.DefinitionError, match=r"invalid expression 'every day'"):
        sm.Cron("every day")
    with pytest.raises(sm.DefinitionError, match=r"unknown timezone 'Mars/Olympus'"):
        sm.Cron("0 6 * * *", timezone="Mars/Olympus")


def test_definition_errors_carry_their_code() -> None:
    with pytest.raises(sm.SquidMeshError) as err:
        sm.Workflow("wf", version="")
    assert err.value.code == "invalid_definition"


# -- fingerprint ---------------------------------------------------------------------------


def shaped(
    *,
    retry: sm.RetryPolicy | None = None,
    input: Any = None,
    output: str | None = None,
    second_target: str = sm.COMPLETE,
    condition: sm.Condition | None = None,
    body: Callable[..., Any] = noop,
    version: str = "1",
) -> sm.Workflow:
    wf = sm.Workflow("shaped", version=version)
    wf.step("first", retry=retry, input=input, output=output)(body)
    wf.step("second")(noop)
    wf.transition("first", to="second")
    if condition is not None:
        wf.transition("first", to=sm.COMPLETE, when=condition)
    wf.transition("second", to=second_target, when=None)
    return wf


def test_fingerprint_is_stable_across_identical_declarations() -> None:
    one = shaped(retry=sm.RetryPolicy(max_attempts=3), input=["a"], output="out")
    two = shaped(retry=sm.RetryPolicy(max_attempts=3), input=["a"], output="out")
    assert one.definition().fingerprint == two.definition().fingerprint
    assert one.definition().fingerprint == one.definition().fingerprint


def test_fingerprint_ignores_the_step_body() -> None:
    def other(input: dict[str, Any], ctx: sm.StepContext) -> dict[str, Any]:
        return {"something": "else entirely"}

    assert shaped(body=noop).definition().fingerprint == shaped(body=other).definition().fingerprint


@pytest.mark.parametrize(
    "changed",
    [
        {"retry": sm.RetryPolicy(max_attempts=2)},
        {"retry": sm.RetryPolicy(max_attempts=1, backoff=sm.Backoff.fixed(2.0))},
        {"input": ["a"]},
        {"input": {"a": "x.y"}},
        {"output": "wrapped"},
        {"condition": sm.Condition("x", greater_than=1)},
        {"version": "2"},
    ],
    ids=lambda c: next(iter(c)),
)
def test_fingerprint_changes_with_the_shape(changed: dict[str, Any]) -> None:
    assert shaped().definition().fingerprint != shaped(**changed).definition().fingerprint


def test_fingerprint_changes_with_a_transition_target() -> None:
    base = shaped()
    moved = sm.Workflow("shaped")
    moved.step("first")(noop)
    moved.step("second")(noop)
    moved.transition("first", to="second")
    moved.transition("second", to=sm.COMPLETE)
    moved.transition("first", to=sm.COMPLETE, on="error")
    assert base.definition().fingerprint != moved.definition().fingerprint


def test_fingerprint_changes_with_a_condition_operand() -> None:
    one = shaped(condition=sm.Condition("x", greater_than=1))
    two = shaped(condition=sm.Condition("x", greater_than=2))
    assert one.definition().fingerprint != two.definition().fingerprint


def test_definition_is_rebuilt_after_a_change() -> None:
    wf = two_steps()
    before = wf.definition().fingerprint
    wf.transition("first", to=sm.COMPLETE, on="error")
    assert wf.definition().fingerprint != before


# -- DAG mode -----------------------------------------------------------------------------------


def dag(name: str = "dag") -> sm.Workflow:
    wf = sm.Workflow(name)
    wf.step("left")(noop)
    wf.step("right")(noop)
    wf.step("join", after=["left", "right"])(noop)
    return wf


def test_a_dag_has_every_step_without_after_as_a_root() -> None:
    d = dag().definition()
    assert d.mode == "dag"
    assert d.roots == ("left", "right")
    assert d.dependents["left"] == ("join",) and d.dependents["join"] == ()
    assert d.transitions == {}


def test_a_transitions_workflow_has_its_entry_as_its_only_root() -> None:
    d = two_steps().definition()
    assert (d.mode, d.roots) == ("transitions", ("first",))


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda wf: wf.step("x", after=["x"])(noop), r"step 'x': depends on itself"),
        (
            lambda wf: wf.step("x", after=["ghost"])(noop),
            r"step 'x': after names unknown step 'ghost'",
        ),
        (
            lambda wf: wf.transition("left", to="join"),
            r"DAG and cannot also declare transitions \(found 'left' -> 'join'\)",
        ),
        (lambda wf: wf.step("x", entry=True, after=["left"])(noop), r"entry=True on 'x'"),
    ],
)
def test_bad_dags_are_refused_naming_the_problem(
    build: Callable[[sm.Workflow], object], message: str
) -> None:
    wf = dag()
    build(wf)
    with pytest.raises(sm.DefinitionError, match=message):
        wf.definition()


def test_a_cycle_is_refused_with_its_path() -> None:
    wf = sm.Workflow("loop")
    wf.step("root")(noop)
    wf.step("a", after=["root", "c"])(noop)
    wf.step("b", after=["a"])(noop)
    wf.step("c", after=["b"])(noop)
    with pytest.raises(sm.DefinitionError, match=r"cycle: a -> c -> b -> a"):
        wf.definition()


@pytest.mark.parametrize(
    ("after", "message"),
    [
        ([], r"after=\[\] names no step"),
        ("left", r"after must be a list of step names"),
        (["left", "left"], r"after names a step twice"),
        ([""], r"after must hold step names"),
        ([3], r"after must hold step names"),
    ],
)
def test_bad_after_values_are_refused_at_declaration(after: object, message: str) -> None:
    wf = sm.Workflow("wf")
    wf.step("left")(noop)
    with pytest.raises(sm.DefinitionError, match=message):
        wf.step("x", after=after)(noop)  # type: ignore[arg-type]


def test_dependencies_are_part_of_the_fingerprint() -> None:
    one, other = dag().definition(), dag()
    other.step("extra", after=["join"])(noop)
    assert one.fingerprint != other.definition().fingerprint
    assert dag().definition().fingerprint == one.fingerprint


# -- loops: the workflow's max_visits -----------------------------------------------------------


def test_the_workflow_max_visits_is_each_step_default_and_a_step_may_override_it() -> None:
    wf = sm.Workflow("loops", max_visits=5)
    wf.step("a", entry=True)(noop)
    wf.step("b", max_visits=2)(noop)
    wf.transition("a", to="b")
    wf.transition("b", to="a")
    d = wf.definition()
    assert (d.steps["a"].max_visits, d.steps["b"].max_visits) == (5, 2)
    assert sm.Workflow("plain").step("a")(noop) is noop


@pytest.mark.parametrize("bad", [0, -1, True, 2.5, "3"])
def test_a_bad_workflow_max_visits_is_refused(bad: object) -> None:
    with pytest.raises(sm.DefinitionError, match=r"max_visits must be an integer >= 1"):
        sm.Workflow("wf", max_visits=bad)  # type: ignore[arg-type]
