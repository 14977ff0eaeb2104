"""Workflows as data: a JSON spec of a definition, and the registry of actions it names."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

from squid_mesh.definition.paths import MISSING
from squid_mesh.definition.payload import Field
from squid_mesh.definition.retry import Backoff, RetryPolicy
from squid_mesh.definition.triggers import Cron, Manual, Trigger
from squid_mesh.errors import DefinitionError

if TYPE_CHECKING:
    from squid_mesh.definition.workflow import Step, Workflow

SPEC_FORMAT = 1
_TYPES: dict[str, type] = {
    "str": str,
    "int": int,
    "float": float,
    "bool": bool,
    "dict": dict,
    "list": list,
}
_STEP_KEYS = {
    "name",
    "action",
    "kind",
    "retry",
    "input",
    "output",
    "entry",
    "max_visits",
    "after",
    "compensate",
    "compensate_retry",
    "irreversible",
    "compensatable",
    "transactional",
    "seconds",
    "message",
    "level",
}
_TOP_KEYS = {
    "format",
    "name",
    "version",
    "queue",
    "max_visits",
    "payload",
    "triggers",
    "steps",
    "transitions",
}


class SpecError(DefinitionError):
    """A workflow spec is invalid; ``problems`` lists each one with its JSON path."""

    code = "invalid_spec"

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid workflow spec:\n" + "\n".join(f"  {p}" for p in problems))


class Registry:
    """Named actions that workflow specs refer to.

    Example:
        >>> registry = Registry()
        >>> @registry.action("payment.load_invoice")
        ... def load_invoice(input, ctx):
        ...     return {"invoice": {"id": input["invoice_id"]}}
        >>> registry.names()
        ['payment.load_invoice']
    """

    def __init__(self) -> None:
        self._actions: dict[str, Callable[..., Any]] = {}

    def register(self, name: str, fn: Callable[..., Any]) -> None:
        """Register ``fn`` under ``name`` (once: a second registration of a name is refused)."""
        if not isinstance(name, str) or not name or len(name) > 200 or name != name.strip():
            raise DefinitionError(f"action name {name!r}: expected 1-200 characters, no padding")
        if not callable(fn):
            raise DefinitionError(f"action {name!r}: expected a callable")
        if name in self._actions and self._actions[name] is not fn:
            raise DefinitionError(f"action {name!r} is registered twice")
        self._actions[name] = fn

    def action(self, name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Decorator form of :meth:`register`."""

        def register(fn: Callable[..., Any]) -> Callable[..., Any]:
            self.register(name, fn)
            return fn

        return register

    def get(self, name: str) -> Callable[..., Any] | None:
        """The action registered under ``name``, if any."""
        return self._actions.get(name)

    def name_of(self, fn: Callable[..., Any]) -> str | None:
        """The name ``fn`` is registered under, if any."""
        return next((name for name, known in self._actions.items() if known is fn), None)

    def names(self) -> list[str]:
        """Every registered name, sorted."""
        return sorted(self._actions)


def action_name(fn: Callable[..., Any]) -> str:
    """The name a function gets in a spec when no registry names it: module and qualified name."""
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"


# -- to_spec --------------------------------------------------------------------------------------


def to_spec(wf: Workflow, registry: Registry | None = None) -> dict[str, Any]:
    """The JSON spec of a code-declared workflow (see docs/workflows-as-data.md).

    Actions are named by ``registry`` when it knows the function, else by :func:`action_name`.
    A payload declared with a pydantic model has no spec form and is refused.
    """
    d = wf.definition()

    def name(fn: Callable[..., Any]) -> str:
        known = registry.name_of(fn) if registry is not None else None
        return known or action_name(fn)

    # The spec mirrors the declaration, so it reads the workflow's own fields.
    payload = wf._payload._spec
    if payload is not None and not isinstance(payload, Mapping):
        raise SpecError(["$.payload: a pydantic model payload has no spec form; use sm.Field"])
    return {
        "format": SPEC_FORMAT,
        "name": d.name,
        "version": d.version,
        "queue": d.queue,
        "max_visits": wf._max_visits,
        "payload": None if payload is None else {k: _field(f) for k, f in payload.items()},
        "triggers": [t.describe() for t in d.triggers],
        "steps": [_step(s, name, entry=s.name == wf._entry) for s in d.steps.values()],
        "transitions": [t.describe() for t in wf._transitions],
    }


def _field(f: Field) -> dict[str, Any]:
    out: dict[str, Any] = {"type": f.type.__name__, "required": f.required}
    if f.default is not MISSING:
        out["default"] = f.default
    return out


def _step(step: Step, name: Callable[[Callable[..., Any]], str], *, entry: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"name": step.name}
    if step.kind == "task":
        out["action"] = name(step.fn)
        out["retry"] = step.retry.describe()
    else:
        out["kind"] = step.kind
        out.update(step.options)
    if step.input is not None:
        out["input"] = step.input.describe()
    if step.output is not None:
        out["output"] = step.output
    if entry:
        out["entry"] = True
    out["max_visits"] = step.max_visits
    if step.after is not None:
        out["after"] = list(step.after)
    if step.compensate is not None:
        out["compensate"] = name(step.compensate)
        if step.compensate_retry is not None:
            out["compensate_retry"] = step.compensate_retry.describe()
    for flag, default in (("irreversible", False), ("compensatable", True)):
        if getattr(step, flag) != default:
            out[flag] = getattr(step, flag)
    if step.transactional:
        out["transactional"] = True
    return out


# -- from_spec ------------------------------------------------------------------------------------


def from_spec(spec: object, registry: Registry) -> Workflow:
    """Build a workflow from its JSON spec; raise :class:`SpecError` listing every problem."""
    from squid_mesh.definition.workflow import Workflow

    if not isinstance(spec, Mapping):
        raise SpecError(["$: expected a JSON object"])
    steps, transitions, payload, triggers = _checked(spec, registry)
    at = "$"
    try:
        wf = Workflow(
            str(spec["name"]),
            version=str(spec["version"]),
            payload=payload,
            triggers=triggers,
            queue=spec.get("queue", "default"),
            max_visits=spec.get("max_visits", 100),
        )
        for i, step in enumerate(steps):
            at = f"$.steps[{i}]"
            _declare(wf, step, registry)
        for i, t in enumerate(transitions):
            at = f"$.transitions[{i}]"
            source, target = str(t.get("from")), str(t.get("to"))
            wf.transition(source, to=target, on=t.get("on", "ok"), when=t.get("when"))
        at = "$"
        wf.definition()
    except DefinitionError as exc:
        raise SpecError([f"{at}: {exc.message}"]) from None
    return wf


def _checked(
    spec: Mapping[str, Any], registry: Registry
) -> tuple[list[Mapping[str, Any]], list[Mapping[str, Any]], Any, Any]:
    """The spec's shape, checked all at once: every problem is reported with its JSON path."""
    problems: list[str] = []
    _unknown_keys(spec, _TOP_KEYS, "$", problems)
    if spec.get("format", SPEC_FORMAT) != SPEC_FORMAT:
        problems.append(f"$.format: expected {SPEC_FORMAT}, got {spec.get('format')!r}")
    for key in ("name", "version"):
        if not isinstance(spec.get(key), str):
            problems.append(f"$.{key}: expected a string")
    steps = spec.get("steps")
    if not isinstance(steps, list) or not steps:
        problems.append("$.steps: expected a non-empty list")
        steps = []
    for i, step in enumerate(steps):
        _check_step(step, f"$.steps[{i}]", registry, problems)
    transitions = spec.get("transitions", [])
    if not isinstance(transitions, list):
        problems.append("$.transitions: expected a list")
        transitions = []
    for i, t in enumerate(transitions):
        if not isinstance(t, Mapping):
            problems.append(f"$.transitions[{i}]: expected an object")
        else:
            _unknown_keys(t, {"from", "to", "on", "when"}, f"$.transitions[{i}]", problems)
    payload = _payload(spec.get("payload"), problems)
    triggers = _triggers(spec.get("triggers"), problems)
    if problems:
        raise SpecError(problems)
    return steps, transitions, payload, triggers


def _unknown_keys(obj: Mapping[str, Any], allowed: set[str], at: str, problems: list[str]) -> None:
    for key in sorted(set(obj) - allowed):
        problems.append(f"{at}.{key}: unknown key")


def _check_step(step: object, at: str, registry: Registry, problems: list[str]) -> None:
    if not isinstance(step, Mapping):
        problems.append(f"{at}: expected an object")
        return
    _unknown_keys(step, _STEP_KEYS, at, problems)
    if not isinstance(step.get("name"), str):
        problems.append(f"{at}.name: expected a string")
    kind = step.get("kind", "task")
    if kind == "task":
        action = step.get("action")
        if not isinstance(action, str):
            problems.append(f"{at}.action: expected the name of a registered action")
        elif registry.get(action) is None:
            problems.append(f"{at}.action: unknown action {action!r}")
    elif kind not in ("wait", "log", "pause", "approval", "children"):
        problems.append(f"{at}.kind: expected task, wait, log, pause, approval or children")
    undo = step.get("compensate")
    if undo is not None and (not isinstance(undo, str) or registry.get(undo) is None):
        problems.append(f"{at}.compensate: unknown action {undo!r}")


def _retry(spec: object) -> RetryPolicy | None:
    if spec is None:
        return None
    if not isinstance(spec, Mapping):
        raise DefinitionError("retry: expected {max_attempts, backoff}")
    backoff = spec.get("backoff") or {"kind": "fixed", "min": 0.0, "max": 0.0}
    if not isinstance(backoff, Mapping):
        raise DefinitionError("retry.backoff: expected {kind, min, max, jitter}")
    jitter = backoff.get("jitter", 0.0)
    if backoff.get("kind") == "exponential":
        low, high = cast(float, backoff.get("min")), cast(float, backoff.get("max"))
        made = Backoff.exponential(min=low, max=high, jitter=jitter)
    elif backoff.get("kind") == "fixed":
        made = Backoff.fixed(backoff.get("min", 0.0), jitter=jitter)
    else:
        raise DefinitionError("retry.backoff.kind: expected 'fixed' or 'exponential'")
    return RetryPolicy(max_attempts=spec.get("max_attempts", 1), backoff=made)


def _declare(wf: Workflow, step: Mapping[str, Any], registry: Registry) -> None:
    name = str(step["name"])
    kind = step.get("kind", "task")
    after: Sequence[str] | None = step.get("after")
    if kind == "wait":
        wf.wait(name, step.get("seconds"), after=after, output=step.get("output"))  # type: ignore[arg-type]
    elif kind == "log":
        wf.log(name, step.get("message"), level=step.get("level", "info"), after=after)  # type: ignore[arg-type]
    elif kind == "pause":
        wf.pause(name)
    elif kind == "approval":
        wf.approval(name, output=step.get("output"))
    elif kind == "children":
        wf.await_children(name, output=step.get("output"), after=after)
    else:
        action = cast(Callable[..., Any], registry.get(step["action"]))  # checked: it exists
        undo = step.get("compensate")
        wf.step(
            name,
            retry=_retry(step.get("retry")),
            input=step.get("input"),
            output=step.get("output"),
            entry=step.get("entry", False),
            max_visits=step.get("max_visits"),
            after=after,
            compensate=None if undo is None else registry.get(undo),
            compensate_retry=_retry(step.get("compensate_retry")),
            irreversible=step.get("irreversible", False),
            compensatable=step.get("compensatable", True),
            transactional=step.get("transactional", False),
        )(action)
        return
    if "max_visits" in step:
        wf._steps[name] = _with_visits(wf._steps[name], step["max_visits"])


def _with_visits(step: Step, visits: object) -> Step:
    from dataclasses import replace

    if isinstance(visits, bool) or not isinstance(visits, int) or visits < 1:
        raise DefinitionError(f"step {step.name!r}: max_visits must be an integer >= 1")
    return replace(step, max_visits=visits)


def _payload(spec: object, problems: list[str]) -> dict[str, Field] | None:
    if spec is None:
        return None
    if not isinstance(spec, Mapping):
        problems.append("$.payload: expected an object of fields")
        return None
    fields = {}
    for name, f in spec.items():
        at = f"$.payload.{name}"
        if not isinstance(f, Mapping) or f.get("type") not in _TYPES:
            problems.append(f"{at}.type: expected one of {sorted(_TYPES)}")
            continue
        _unknown_keys(f, {"type", "required", "default"}, at, problems)
        required = bool(f.get("required", True))
        fields[name] = Field(
            _TYPES[f["type"]], required=required, default=f.get("default", MISSING)
        )
    return fields


def _triggers(spec: object, problems: list[str]) -> list[Trigger] | None:
    if spec is None:
        return None
    if not isinstance(spec, list):
        problems.append("$.triggers: expected a list")
        return None
    made: list[Trigger] = []
    for i, t in enumerate(spec):
        at = f"$.triggers[{i}]"
        if not isinstance(t, Mapping) or t.get("type") not in ("manual", "cron"):
            problems.append(f"{at}.type: expected 'manual' or 'cron'")
            continue
        try:
            if t["type"] == "manual":
                made.append(Manual(name=t.get("name", "manual")))
            else:
                options = {k: v for k, v in t.items() if k != "type"}
                made.append(Cron(**options))
        except (DefinitionError, TypeError) as exc:
            problems.append(f"{at}: {exc}")
    return made
