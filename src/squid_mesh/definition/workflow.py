"""The authoring DSL: a versioned workflow of steps joined by transitions."""

from __future__ import annotations

import hashlib
import inspect
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from squid_mesh.definition.conditions import Condition
from squid_mesh.definition.mapping import InputMapping
from squid_mesh.definition.payload import PayloadSchema
from squid_mesh.definition.retry import Backoff, RetryPolicy
from squid_mesh.definition.triggers import Cron, Manual, Trigger
from squid_mesh.errors import DefinitionError, SquidMeshError

if TYPE_CHECKING:
    from squid_mesh.definition.spec import Registry

COMPLETE = "complete"
"""The transition target that ends a run as completed: ``wf.transition("notify", to=sm.COMPLETE)``."""

NAME_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,99}$")
DEFAULT_MAX_VISITS = 100
DEFAULT_COMPENSATE_RETRY = RetryPolicy(
    max_attempts=3, backoff=Backoff.exponential(min=1.0, max=30.0)
)
# Marks a compensation attempt's step name ("charge#compensate"); '#' never occurs in step names.
COMPENSATION = "#compensate"

Outcome = Literal["ok", "error"]
Mode = Literal["transitions", "dag"]
StepKind = Literal["task", "wait", "log", "pause", "approval", "children"]
LOG_LEVELS = ("debug", "info", "warning", "error")
# Built-ins that stop the run until an operator acts; they exist in transitions mode only.
GATES = ("pause", "approval")
StepFn = Callable[..., Any]
F = TypeVar("F", bound=StepFn)


def _check_name(kind: str, name: object) -> str:
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise DefinitionError(
            f"{kind} name {name!r} is invalid: use 1-100 characters of letters, digits, '_', '.', '-', "
            "starting with a letter or '_'"
        )
    return name


@dataclass(frozen=True)
class Step:
    """One declared step: the callable and how it is fed, wrapped and retried."""

    name: str
    fn: StepFn
    retry: RetryPolicy
    input: InputMapping | None
    output: str | None
    max_visits: int
    is_async: bool
    after: tuple[str, ...] | None = None
    kind: StepKind = "task"
    options: Mapping[str, Any] = field(default_factory=dict)
    compensate: StepFn | None = None
    compensate_retry: RetryPolicy | None = None
    irreversible: bool = False
    compensatable: bool = True
    transactional: bool = False

    @property
    def wait_seconds(self) -> float:
        """How long a ``wait`` step holds its successors back (0 for every other kind)."""
        return float(self.options.get("seconds", 0.0)) if self.kind == "wait" else 0.0

    def describe(self) -> dict[str, object]:
        """A JSON-safe description, used by the fingerprint."""
        return {
            "name": self.name,
            "kind": self.kind,
            "options": dict(self.options),
            "compensate": None
            if self.compensate is None or self.compensate_retry is None
            else self.compensate_retry.describe(),
            "irreversible": self.irreversible,
            "compensatable": self.compensatable,
            "transactional": self.transactional,
            "retry": self.retry.describe(),
            "input": None if self.input is None else self.input.describe(),
            "output": self.output,
            "max_visits": self.max_visits,
            "after": None if self.after is None else sorted(self.after),
        }


@dataclass(frozen=True)
class Transition:
    """An edge: after ``source`` ends with ``on`` (ok or error), go to ``to`` when ``when`` holds."""

    source: str
    on: Outcome
    to: str
    when: Condition | None = None

    def describe(self) -> dict[str, object]:
        """A JSON-safe description, used by the fingerprint and the read model."""
        return {
            "from": self.source,
            "on": self.on,
            "to": self.to,
            "when": None if self.when is None else self.when.describe(),
        }


@dataclass(frozen=True)
class Definition:
    """A validated, immutable workflow definition; what the engine runs.

    ``mode`` is ``"transitions"`` (a state machine from one entry step) or ``"dag"`` (steps with
    ``after=``: every root starts at once, a step runs once all its own dependencies completed).
    """

    name: str
    version: str
    entry: str
    steps: Mapping[str, Step]
    transitions: Mapping[tuple[str, Outcome], tuple[Transition, ...]]
    triggers: tuple[Trigger, ...]
    payload: PayloadSchema
    queue: str
    fingerprint: str = field(default="")
    mode: Mode = "transitions"
    roots: tuple[str, ...] = ()
    dependents: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """``name@version``: what a run is pinned to."""
        return f"{self.name}@{self.version}"

    def routes(self, step: str, on: Outcome) -> tuple[Transition, ...]:
        """The transitions leaving ``step`` on ``on``, in declaration order."""
        return self.transitions.get((step, on), ())


class Workflow:
    """A named, versioned workflow declared in Python.

    Args:
        name: the workflow's name, used by ``mesh.start(name, ...)``.
        version: a label; each run is pinned to the version it started on.
        payload: a pydantic model class or ``{field: sm.Field(...)}``; ``None`` accepts any JSON object.
        triggers: how runs start (``[sm.Manual()]`` by default; ``sm.Cron(...)`` is declared here).
        queue: the default queue of the workflow's attempts.
        max_visits: how often a loop may come back to any one step before the run fails with
            ``max_visits_exceeded`` (default 100; a step's own ``max_visits`` overrides it).

    Example:
        >>> import squid_mesh as sm
        >>> wf = sm.Workflow("greet", version="1")
        >>> @wf.step()
        ... def hello(input, ctx):
        ...     return {"greeting": f"hello {input['name']}"}
        >>> wf.transition("hello", to=sm.COMPLETE)
        >>> wf.definition().entry
        'hello'
    """

    def __init__(
        self,
        name: str,
        *,
        version: str = "1",
        payload: object = None,
        triggers: Sequence[Trigger] | None = None,
        queue: str = "default",
        max_visits: int = DEFAULT_MAX_VISITS,
    ) -> None:
        self.name = _check_name("workflow", name)
        if isinstance(max_visits, bool) or not isinstance(max_visits, int) or max_visits < 1:
            raise DefinitionError(f"workflow {name!r}: max_visits must be an integer >= 1")
        self._max_visits = max_visits
        if not isinstance(version, str) or not version or len(version) > 100:
            raise DefinitionError(f"workflow {name!r}: version must be a non-empty string")
        self.version = version
        self._payload = PayloadSchema(name, payload)
        self._triggers = tuple(triggers) if triggers is not None else (Manual(),)
        self._queue = queue
        self._steps: dict[str, Step] = {}
        self._entry: str | None = None
        self._transitions: list[Transition] = []
        self._definition: Definition | None = None

    def step(
        self,
        name: str | None = None,
        *,
        retry: RetryPolicy | None = None,
        input: object = None,
        output: str | None = None,
        entry: bool = False,
        max_visits: int | None = None,
        after: Sequence[str] | None = None,
        compensate: StepFn | None = None,
        compensate_retry: RetryPolicy | None = None,
        irreversible: bool = False,
        compensatable: bool = True,
        transactional: bool = False,
    ) -> Callable[[F], F]:
        """Declare the decorated callable ``fn(input: dict, ctx: StepContext) -> dict | None`` a step.

        Args:
            name: defaults to the function's name.
            retry: a :class:`RetryPolicy`; one attempt when omitted.
            input: a list of context keys to select, or ``{target: "dotted.path"}``.
            output: wrap the step's result under this key in the context.
            entry: mark the run's first step (needed only when the first step is also a loop target).
            max_visits: how often a loop may come back to this step before the run fails (the
                workflow's ``max_visits`` when omitted).
            after: the steps this one depends on. Declaring ``after`` on any step makes the
                workflow a DAG: steps without ``after`` are roots and all start at once, and a step
                runs as soon as every step it names has completed. DAG workflows declare no
                transitions; the run completes when every step has.
            compensate: ``fn(input, ctx)`` that undoes this step. When the run fails for good,
                the compensations of its completed steps run in reverse completion order, each a
                durable attempt; ``input`` holds the step's ``input``, its ``output`` and the
                run's ``failure``.
            compensate_retry: the compensation's retry policy (3 attempts, exponential backoff
                from 1 to 30 s, by default).
            irreversible: the step cannot be undone (it may not declare ``compensate``); a run
                that completed it is not replayed unless ``allow_irreversible=True``.
            compensatable: ``False`` marks a step whose effect must not be repeated or undone
                automatically (a notification sent): like ``irreversible`` for replays.
            transactional: run the step inside the transaction that records it, with
                ``ctx.db`` a cursor on it: its own writes commit with its completion or not at
                all. It holds the run's lock (on SQLite the database's write lock) while it
                runs: keep it short, and it cannot heartbeat or start child runs.

        Example:
            >>> import squid_mesh as sm
            >>> wf = sm.Workflow("w")
            >>> @wf.step(output="invoice", retry=sm.RetryPolicy(max_attempts=3))
            ... def load(input, ctx):
            ...     return {"id": 1}
        """

        def register(fn: F) -> F:
            step_name = _check_name(
                "step", name if name is not None else getattr(fn, "__name__", "")
            )
            where = f"workflow {self.name!r} step {step_name!r}"
            if step_name == COMPLETE:
                raise DefinitionError(
                    f"{where}: the name {COMPLETE!r} is reserved for the end of a run"
                )
            if step_name in self._steps:
                raise DefinitionError(f"{where}: declared twice")
            if not callable(fn):
                raise DefinitionError(f"{where}: expected a callable")
            policy = retry if retry is not None else RetryPolicy()
            if not isinstance(policy, RetryPolicy):
                raise DefinitionError(f"{where}: retry must be a sm.RetryPolicy")
            if output is not None and (not isinstance(output, str) or not output):
                raise DefinitionError(f"{where}: output must be a non-empty key name")
            visits = self._max_visits if max_visits is None else max_visits
            if isinstance(visits, bool) or not isinstance(visits, int) or visits < 1:
                raise DefinitionError(f"{where}: max_visits must be an integer >= 1")
            deps = _dependencies(after, where)
            undo_policy = _compensation(
                compensate, compensate_retry, irreversible, compensatable, where
            )
            if not isinstance(transactional, bool):
                raise DefinitionError(f"{where}: transactional must be True or False")
            if entry and self._entry is not None:
                raise DefinitionError(
                    f"{where}: entry=True, but step {self._entry!r} is already the entry step"
                )
            self._steps[step_name] = Step(
                name=step_name,
                fn=fn,
                retry=policy,
                input=InputMapping.parse(input, step=step_name),
                output=output,
                max_visits=visits,
                is_async=inspect.iscoroutinefunction(fn),
                after=deps,
                compensate=compensate,
                compensate_retry=undo_policy,
                irreversible=irreversible,
                compensatable=compensatable,
                transactional=transactional,
            )
            if entry:
                self._entry = step_name
            self._definition = None
            return fn

        return register

    def wait(
        self,
        name: str,
        duration: float | timedelta,
        *,
        after: Sequence[str] | None = None,
        output: str | None = None,
    ) -> None:
        """A durable sleep: the steps after it become visible ``duration`` after it completes.

        Sub-second durations are kept exactly; the delay is in the stored visible time, so it
        survives restarts and no process sleeps through it.

        Example:
            >>> import squid_mesh as sm
            >>> wf = sm.Workflow("w")
            >>> wf.wait("cool_off", 2.5)
            >>> wf.transition("cool_off", to=sm.COMPLETE)
        """
        if isinstance(duration, timedelta):
            duration = duration.total_seconds()
        if (
            isinstance(duration, bool)
            or not isinstance(duration, int | float)
            or not math.isfinite(duration)
            or duration <= 0
        ):
            raise DefinitionError(
                f"workflow {self.name!r} step {name!r}: wait duration must be a positive number "
                "of seconds or a timedelta"
            )
        self._builtin(name, "wait", {"seconds": float(duration)}, after=after, output=output)

    def log(
        self,
        name: str,
        message: str,
        *,
        level: str = "info",
        after: Sequence[str] | None = None,
    ) -> None:
        """A step that writes ``message`` to the ``squid_mesh.steps`` logger with the run's ids.

        Example:
            >>> import squid_mesh as sm
            >>> wf = sm.Workflow("w")
            >>> wf.log("announce", "invoice recovered", level="warning")
            >>> wf.transition("announce", to=sm.COMPLETE)
        """
        where = f"workflow {self.name!r} step {name!r}"
        if not isinstance(message, str) or not message:
            raise DefinitionError(f"{where}: a log message must be a non-empty string")
        if level not in LOG_LEVELS:
            raise DefinitionError(f"{where}: log level must be one of {list(LOG_LEVELS)}")
        self._builtin(name, "log", {"message": message, "level": level}, after=after)

    def pause(self, name: str) -> None:
        """A gate: the run pauses here until ``mesh.resume(run_id, actor=...)``.

        The step's ``on="ok"`` transition is chosen when the run pauses, from the context as it
        is then; resuming continues there.

        Example:
            >>> import squid_mesh as sm
            >>> wf = sm.Workflow("w")
            >>> wf.pause("hold")
            >>> wf.transition("hold", to=sm.COMPLETE)
        """
        self._builtin(name, "pause", {})

    def approval(self, name: str, *, output: str | None = None) -> None:
        """A gate that waits for ``mesh.approve(...)`` or ``mesh.reject(...)``.

        Approval follows the step's ``on="ok"`` transition, rejection its ``on="error"`` one; both
        must be declared (without conditions). The decision (``decision``, ``actor``, ``comment``,
        ``metadata``, ``decided_at``) is written into the context under ``output`` (the step's
        name by default).

        Example:
            >>> import squid_mesh as sm
            >>> wf = sm.Workflow("w")
            >>> wf.approval("manager_ok", output="approval")
            >>> wf.transition("manager_ok", to=sm.COMPLETE)
            >>> wf.transition("manager_ok", to=sm.COMPLETE, on="error")
        """
        self._builtin(name, "approval", {}, output=output if output is not None else name)

    def await_children(
        self, name: str, *, output: str | None = None, after: Sequence[str] | None = None
    ) -> None:
        """A step that waits until every child run started by this run has ended.

        Its output, under ``output`` (the step's name by default), maps each ``child_key`` to the
        child's ``run_id``, ``workflow`` and ``status``, with its ``context`` when it completed or
        its ``error`` when it failed. Waiting costs nothing: the attempt is parked and the last
        child to end wakes it, in the same transaction.

        Example:
            >>> import squid_mesh as sm
            >>> wf = sm.Workflow("w")
            >>> wf.await_children("invites_done", output="invites")
            >>> wf.transition("invites_done", to=sm.COMPLETE)
        """
        self._builtin(name, "children", {}, after=after, output=output or name)

    def _builtin(
        self,
        name: str,
        kind: StepKind,
        options: dict[str, Any],
        *,
        after: Sequence[str] | None = None,
        output: str | None = None,
    ) -> None:
        def builtin(input: dict[str, Any], ctx: Any) -> dict[str, Any]:
            return {}  # the engine runs built-ins itself (see squid_mesh.engine.builtins)

        self.step(name, after=after, output=output)(builtin)
        self._steps[name] = replace(self._steps[name], kind=kind, options=options)

    def transition(
        self,
        source: str,
        *,
        to: str,
        on: Outcome = "ok",
        when: Condition | Mapping[str, Any] | None = None,
    ) -> None:
        """Route a step's outcome: ``on="ok"`` (default) or ``on="error"``, to a step or ``sm.COMPLETE``.

        Conditional transitions are tried in declaration order and the first match wins; the one
        transition without ``when`` is the fallback.

        Example:
            >>> import squid_mesh as sm
            >>> wf = sm.Workflow("w")
            >>> wf.transition("check", to="escalate", when=sm.Condition("risk", greater_than=7))
            >>> wf.transition("check", to=sm.COMPLETE)
        """
        where = f"workflow {self.name!r} transition from {source!r}"
        if on not in ("ok", "error"):
            raise DefinitionError(f"{where}: on must be 'ok' or 'error', got {on!r}")
        if not isinstance(to, str) or not to:
            raise DefinitionError(f"{where}: to must be a step name or sm.COMPLETE")
        condition = Condition.from_mapping(when) if isinstance(when, Mapping) else when
        if condition is not None and not isinstance(condition, Condition):
            raise DefinitionError(f"{where}: when must be a sm.Condition or a mapping")
        self._transitions.append(Transition(source, on, to, condition))
        self._definition = None

    @classmethod
    def from_spec(cls, spec: object, registry: Registry) -> Workflow:
        """Build a workflow from its JSON spec, its steps' actions taken from ``registry``.

        Every problem is reported at once, each with its JSON path, in a
        :class:`~squid_mesh.SpecError`. See docs/workflows-as-data.md for the format.

        Example:
            >>> wf = sm.Workflow.from_spec(json.load(open("refund.json")), registry)  # doctest: +SKIP
        """
        from squid_mesh.definition.spec import from_spec

        return from_spec(spec, registry)

    def to_spec(self, registry: Registry | None = None) -> dict[str, Any]:
        """The workflow as a JSON spec; ``Workflow.from_spec`` of it has the same fingerprint.

        Steps name their functions as ``registry`` names them, or by module and qualified name.

        Example:
            >>> spec = wf.to_spec(registry)  # doctest: +SKIP
            >>> sm.Workflow.from_spec(spec, registry).definition().fingerprint  # doctest: +SKIP
        """
        from squid_mesh.definition.spec import to_spec

        return to_spec(self, registry)

    def definition(self) -> Definition:
        """Validate and freeze the workflow; raises :class:`DefinitionError` naming what is wrong."""
        if self._definition is None:
            self._definition = _build(self)
        return self._definition


def _build(wf: Workflow) -> Definition:
    where = f"workflow {wf.name!r}"
    if not wf._steps:
        raise DefinitionError(f"{where}: declares no step")
    _check_triggers(wf)
    if any(s.after is not None for s in wf._steps.values()):
        return _with_fingerprint(_build_dag(wf))
    routes: dict[tuple[str, Outcome], list[Transition]] = {}
    for t in wf._transitions:
        edge = f"{where} transition {t.source!r} -> {t.to!r} (on {t.on})"
        if t.source not in wf._steps:
            raise DefinitionError(f"{edge}: unknown step {t.source!r}")
        if t.to != COMPLETE and t.to not in wf._steps:
            raise DefinitionError(f"{edge}: unknown target {t.to!r}")
        same = routes.setdefault((t.source, t.on), [])
        if t.when is None and any(other.when is None for other in same):
            raise DefinitionError(
                f"{edge}: step {t.source!r} already has an unconditional on={t.on!r} transition"
            )
        if t.when is not None and any(other.when == t.when for other in same):
            raise DefinitionError(f"{edge}: the same condition is declared twice")
        same.append(t)
    _check_gates(wf, routes)
    for name in wf._steps:
        if (name, "ok") not in routes:
            raise DefinitionError(
                f"{where} step {name!r}: has no on='ok' transition; "
                f"add wf.transition({name!r}, to=sm.COMPLETE) to end the run there"
            )
    entry = _entry_step(wf, routes)
    definition = Definition(
        name=wf.name,
        version=wf.version,
        entry=entry,
        steps=dict(wf._steps),
        transitions={key: tuple(value) for key, value in routes.items()},
        triggers=wf._triggers,
        payload=wf._payload,
        queue=wf._queue,
        roots=(entry,),
    )
    return _with_fingerprint(definition)


def _check_gates(wf: Workflow, routes: Mapping[tuple[str, Outcome], list[Transition]]) -> None:
    for name, step in wf._steps.items():
        if step.kind not in GATES:
            continue
        where = f"workflow {wf.name!r} {step.kind} step {name!r}"
        for on in ("ok", "error"):
            if any(t.when is not None for t in routes.get((name, on), ())):
                raise DefinitionError(
                    f"{where}: its transitions cannot have conditions (the route is decided "
                    "by the operator)"
                )
        if step.kind == "approval" and (name, "error") not in routes:
            raise DefinitionError(
                f"{where}: needs an on='error' transition for a rejection, e.g. "
                f"wf.transition({name!r}, to=sm.COMPLETE, on='error')"
            )
        if step.kind == "pause" and (name, "error") in routes:
            raise DefinitionError(f"{where}: a pause has no error route; remove on='error'")


def _compensation(
    compensate: object,
    compensate_retry: object,
    irreversible: object,
    compensatable: object,
    where: str,
) -> RetryPolicy:
    """Check a step's compensation options; return the compensation's retry policy."""
    if compensate is not None and not callable(compensate):
        raise DefinitionError(f"{where}: compensate must be a callable")
    for option, value in (("irreversible", irreversible), ("compensatable", compensatable)):
        if not isinstance(value, bool):
            raise DefinitionError(f"{where}: {option} must be True or False")
    if irreversible and compensate is not None:
        raise DefinitionError(f"{where}: an irreversible step cannot declare a compensation")
    if not compensatable and compensate is not None:
        raise DefinitionError(
            f"{where}: a step marked compensatable=False cannot declare a compensation"
        )
    policy = compensate_retry if compensate_retry is not None else DEFAULT_COMPENSATE_RETRY
    if not isinstance(policy, RetryPolicy):
        raise DefinitionError(f"{where}: compensate_retry must be a sm.RetryPolicy")
    return policy


def _dependencies(after: object, where: str) -> tuple[str, ...] | None:
    if after is None:
        return None
    if isinstance(after, str) or not isinstance(after, Sequence):
        raise DefinitionError(f"{where}: after must be a list of step names, got {after!r}")
    deps = tuple(after)
    if not deps:
        raise DefinitionError(f"{where}: after=[] names no step; leave after out for a root step")
    for dep in deps:
        if not isinstance(dep, str) or not dep:
            raise DefinitionError(f"{where}: after must hold step names, got {dep!r}")
    if len(set(deps)) != len(deps):
        raise DefinitionError(f"{where}: after names a step twice")
    return deps


def _build_dag(wf: Workflow) -> Definition:
    where = f"workflow {wf.name!r}"
    if wf._transitions:
        t = wf._transitions[0]
        raise DefinitionError(
            f"{where}: steps declare after=, so it is a DAG and cannot also declare transitions "
            f"(found {t.source!r} -> {t.to!r}); use one or the other"
        )
    if wf._entry is not None:
        raise DefinitionError(
            f"{where}: entry=True on {wf._entry!r} has no meaning in a DAG; "
            "steps without after= are the roots"
        )
    for name, step in wf._steps.items():
        if step.kind in GATES:
            raise DefinitionError(
                f"{where}: {step.kind} step {name!r} cannot be part of a DAG (a gate needs a "
                "single path to hold); use transitions"
            )
    dependents: dict[str, list[str]] = {name: [] for name in wf._steps}
    for name, step in wf._steps.items():
        for dep in step.after or ():
            if dep == name:
                raise DefinitionError(f"{where} step {name!r}: depends on itself")
            if dep not in wf._steps:
                raise DefinitionError(f"{where} step {name!r}: after names unknown step {dep!r}")
            dependents[dep].append(name)
    cycle = _find_cycle({name: step.after or () for name, step in wf._steps.items()})
    if cycle:
        raise DefinitionError(f"{where}: the dependencies form a cycle: {' -> '.join(cycle)}")
    roots = tuple(name for name, step in wf._steps.items() if step.after is None)
    return Definition(
        name=wf.name,
        version=wf.version,
        entry=roots[0],
        steps=dict(wf._steps),
        transitions={},
        triggers=wf._triggers,
        payload=wf._payload,
        queue=wf._queue,
        mode="dag",
        roots=roots,
        dependents={name: tuple(after) for name, after in dependents.items()},
    )


def _find_cycle(deps: Mapping[str, Sequence[str]]) -> list[str]:
    """A dependency cycle as ``[a, b, ..., a]``, or ``[]`` when the graph is acyclic."""
    state: dict[str, int] = {}  # 1: on the current path, 2: fully explored
    path: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        path.append(node)
        for dep in deps[node]:
            if state.get(dep) == 1:
                return [*path[path.index(dep) :], dep]
            if dep not in state:
                found = visit(dep)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return []

    for node in deps:
        if node not in state:
            found = visit(node)
            if found:
                return found
    return []


def _check_triggers(wf: Workflow) -> None:
    if not wf._triggers:
        raise DefinitionError(f"workflow {wf.name!r}: needs at least one trigger")
    names = [t.name for t in wf._triggers]
    for t in wf._triggers:
        if not isinstance(t, Manual | Cron):
            raise DefinitionError(f"workflow {wf.name!r}: triggers must be sm.Manual or sm.Cron")
        _check_name("trigger", t.name)
        if names.count(t.name) > 1:
            raise DefinitionError(f"workflow {wf.name!r}: trigger name {t.name!r} is used twice")
        if isinstance(t, Cron):
            # A scheduled run's payload is known now: check it now, not at every tick.
            try:
                wf._payload.validate(t.payload)
            except SquidMeshError as exc:
                raise DefinitionError(
                    f"workflow {wf.name!r} cron trigger {t.name!r}: its payload does not fit "
                    f"the workflow's payload schema: {exc.message}"
                ) from None


def _entry_step(wf: Workflow, routes: Mapping[tuple[str, Outcome], list[Transition]]) -> str:
    if wf._entry is not None:
        return wf._entry
    targeted = {t.to for group in routes.values() for t in group}
    untargeted = [name for name in wf._steps if name not in targeted]
    if len(untargeted) == 1:
        return untargeted[0]
    if not untargeted:
        raise DefinitionError(
            f"workflow {wf.name!r}: no entry step (every step is a transition target); "
            "mark the first one with @wf.step(entry=True)"
        )
    raise DefinitionError(
        f"workflow {wf.name!r}: several steps are never a transition target "
        f"({', '.join(untargeted)}); exactly one entry step is allowed"
    )


def _with_fingerprint(d: Definition) -> Definition:
    canonical = {
        "name": d.name,
        "version": d.version,
        "entry": d.entry,
        "steps": [d.steps[name].describe() for name in sorted(d.steps)],
        "transitions": [t.describe() for key in sorted(d.transitions) for t in d.transitions[key]],
        "payload": d.payload.describe(),
    }
    blob = json.dumps(canonical, sort_keys=True, separators=(",", ":"))
    digest = hashlib.sha256(blob.encode()).hexdigest()
    return Definition(**{**d.__dict__, "fingerprint": digest})
