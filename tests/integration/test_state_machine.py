"""A hypothesis state machine over the public API, on both stores.

Rules start runs (random payloads, idempotency keys reused on purpose), execute the next attempt with
a drawn behaviour (succeed, loop, raise, ``sm.Retry``, ``sm.Fail``, crash the worker, cancel the
run from inside the step, or let the lease expire while another worker takes the attempt over),
cancel random runs and move the fake clock. After every rule the invariants are checked: the journal
refolds to the projection, no attempt is completed twice, terminal runs never change, attempt
numbers stay within ``max_attempts`` and a state-machine run has at most one live attempt.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

import squid_mesh as sm
from tests.support.clock import START, FakeClock
from tests.support.machines import example_url, machine_for

LEASE = 5.0
OWNERS = ("w1", "w2")
KEYS = ("k1", "k2", "k3")
MAX_ATTEMPTS = {"a": 3, "b": 2, "recover": 1}
A_MAX_VISITS = 2
TERMINAL = {sm.RunStatus.COMPLETED, sm.RunStatus.FAILED, sm.RunStatus.CANCELLED}

SETTINGS = settings(
    max_examples=25,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


class Crash(BaseException):
    """Raised by a step to stand for the worker process dying mid-step (not caught by the engine)."""


Behaviour = tuple[str, float]

BEHAVIOURS: st.SearchStrategy[Behaviour] = st.sampled_from(
    [
        ("ok", 0.0),
        ("beat", 0.0),
        ("loop", 0.0),
        ("loop", 0.0),
        ("raise", 0.0),
        ("retry", 0.0),
        ("retry", 2.0),
        ("retry", 7.5),
        ("fail", 0.0),
        ("crash", 0.0),
        ("cancel", 0.0),
        ("steal", 0.0),
    ]
)


@dataclass
class Ran:
    """One call of a step function, as the step saw it."""

    run_id: str
    step: str
    visit: int
    attempt: int
    behaviour: Behaviour
    at: float
    inner: sm.Execution | None = None
    heartbeat_lost: bool = False
    heartbeat_cancelled: bool = False
    saw_cancelled: bool = False


@dataclass
class Frozen:
    """What a run looked like when it was first seen terminal."""

    status: sm.RunStatus
    context: dict[str, Any]
    error: dict[str, Any] | None
    revision: int
    completed: frozenset[tuple[str, int, int]] = field(default_factory=frozenset)


def completed_attempts(snap: sm.RunSnapshot) -> frozenset[tuple[str, int, int]]:
    return frozenset(
        (s.name, s.visit, a.number)
        for s in snap.steps
        for a in s.attempts
        if a.status == sm.AttemptStatus.COMPLETED
    )


def normalised(payload: dict[str, Any]) -> dict[str, Any]:
    return {"tag": "x", **payload}


class MeshMachine(RuleBasedStateMachine):
    """Configured by :func:`machine_for` with a backend and a database."""

    backend: str = "sqlite"
    url: str = ""
    tmp: Path = Path()

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock(START)
        self.behaviour: Behaviour = ("ok", 0.0)
        self.ran: list[Ran] = []
        self.runs: list[str] = []
        self.keys: dict[str, tuple[str, dict[str, Any]]] = {}
        self.frozen: dict[str, Frozen] = {}
        self.mesh = self._connect()

    # -- set-up -----------------------------------------------------------------------------

    def _connect(self) -> sm.Mesh:
        url = example_url(self.backend, self.url, self.tmp)
        mesh = sm.connect(
            url, workflows=[self._workflow()], clock=self.clock, entropy=sm.SeededEntropy(7)
        )
        if self.backend == "sqlite":
            mesh.migrate()
        return mesh

    def _workflow(self) -> sm.Workflow:
        wf = sm.Workflow(
            "machine",
            version="1",
            payload={"n": sm.Field(int), "tag": sm.Field(str, required=False, default="x")},
        )

        @wf.step(
            retry=sm.RetryPolicy(
                max_attempts=MAX_ATTEMPTS["a"],
                backoff=sm.Backoff.exponential(min=0.5, max=4.0, jitter=0.5),
            ),
            entry=True,
            max_visits=A_MAX_VISITS,
        )
        def a(input: dict[str, Any], ctx: sm.StepContext) -> dict[str, Any]:
            return self._act(ctx, {"a": ctx.visit})

        @wf.step(
            retry=sm.RetryPolicy(max_attempts=MAX_ATTEMPTS["b"], backoff=sm.Backoff.fixed(1.0))
        )
        def b(input: dict[str, Any], ctx: sm.StepContext) -> dict[str, Any]:
            return self._act(ctx, {"b": ctx.visit, "loop": self.behaviour[0] == "loop"})

        @wf.step(retry=sm.RetryPolicy(max_attempts=MAX_ATTEMPTS["recover"]))
        def recover(input: dict[str, Any], ctx: sm.StepContext) -> dict[str, Any]:
            return self._act(ctx, {"recovered": True})

        wf.transition("a", to="b")
        wf.transition("a", to="recover", on="error")
        wf.transition("b", to="a", when=sm.Condition("loop", equals=True))
        wf.transition("b", to=sm.COMPLETE)
        wf.transition("recover", to=sm.COMPLETE)
        return wf

    def _act(self, ctx: sm.StepContext, output: dict[str, Any]) -> dict[str, Any]:
        behaviour = self.behaviour
        self.behaviour = ("ok", 0.0)  # a nested execution (see "steal") just succeeds
        seen = Ran(ctx.run_id, ctx.step, ctx.visit, ctx.attempt, behaviour, self.clock.now)
        self.ran.append(seen)
        kind, after = behaviour
        if kind == "raise":
            raise RuntimeError(f"boom in {ctx.step}")
        if kind == "retry":
            raise sm.Retry("try later", after=after)
        if kind == "fail":
            raise sm.Fail("no way", code="no_way", details={"token": "s3cret"})
        if kind == "crash":
            raise Crash()
        if kind == "beat":
            ctx.heartbeat()
            assert not ctx.cancelled
        if kind == "cancel":
            self.mesh.cancel(ctx.run_id, reason="cancelled while the step ran")
            seen.saw_cancelled = ctx.cancelled
            try:
                ctx.heartbeat()
            except sm.Cancelled:
                seen.heartbeat_cancelled = True
        if kind == "steal":
            # This worker stalls past its lease; the other worker takes over what is due.
            self.clock.advance(LEASE + 1.0)
            seen.inner = self.mesh.execute_next(owner_id="w2", lease=LEASE)
            try:
                ctx.heartbeat()
            except sm.LeaseLostError:
                seen.heartbeat_lost = True
        return output

    def teardown(self) -> None:
        self.mesh.close()

    # -- helpers ----------------------------------------------------------------------------

    def _due(self) -> bool:
        now = self.clock.now
        for run_id in self.runs:
            snap = self.mesh.inspect_run(run_id)
            if snap.terminal:
                continue
            for s in snap.steps:
                for att in s.attempts:
                    if att.status == sm.AttemptStatus.SCHEDULED and (
                        att.visible_at.timestamp() <= now + 1e-6
                    ):
                        return True
                    if (
                        att.status == sm.AttemptStatus.RUNNING
                        and att.lease_until is not None
                        and att.lease_until.timestamp() <= now + 1e-6
                    ):
                        return True
        return False

    # -- rules ------------------------------------------------------------------------------

    @initialize(n=st.integers(-5, 5))
    def first_run(self, n: int) -> None:
        self.start_run(n=n, tag=None, key=None)

    @rule(
        n=st.integers(-1000, 1000),
        tag=st.none() | st.sampled_from(["x", "y", "ü"]),
        key=st.none() | st.sampled_from(KEYS),
    )
    def start_run(self, n: int, tag: str | None, key: str | None) -> None:
        payload: dict[str, Any] = {"n": n} if tag is None else {"n": n, "tag": tag}
        known = self.keys.get(key) if key is not None else None
        if known is not None and known[1] != normalised(payload):
            with pytest.raises(sm.IdempotencyConflictError):
                self.mesh.start("machine", payload, idempotency_key=key)
            return
        snap = self.mesh.start("machine", payload, idempotency_key=key)
        assert snap.payload == normalised(payload)
        if known is not None:
            assert snap.id == known[0], "an idempotency key names one run for its whole life"
            return
        assert snap.id not in self.runs
        assert snap.status == sm.RunStatus.RUNNING and snap.current_steps == ("a",)
        self.runs.append(snap.id)
        if key is not None:
            self.keys[key] = (snap.id, snap.payload)

    @rule(owner=st.sampled_from(OWNERS), plan=st.lists(BEHAVIOURS, min_size=1, max_size=4))
    def execute_next(self, owner: str, plan: list[Behaviour]) -> None:
        for behaviour in plan:
            if not self._execute_one(owner, behaviour):
                break

    def _execute_one(self, owner: str, behaviour: Behaviour) -> bool:
        """One ``execute_next`` whose step (if any) behaves as told; False when nothing ran."""
        due = self._due()
        self.behaviour = behaviour
        before = len(self.ran)
        try:
            done = self.mesh.execute_next(owner_id=owner, lease=LEASE)
        except Crash:
            seen = self.ran[before]
            assert behaviour[0] == "crash"
            snap = self.mesh.inspect_run(seen.run_id)
            visit = next(s for s in snap.steps if (s.name, s.visit) == (seen.step, seen.visit))
            att = visit.attempts[seen.attempt - 1]
            assert att.status == sm.AttemptStatus.RUNNING and att.owner == owner
            return True
        finally:
            self.behaviour = ("ok", 0.0)
        if done is None:
            assert not due, "an attempt was due but execute_next found nothing"
            assert len(self.ran) == before
            return False
        assert due, "execute_next ran an attempt that was not due"
        seen = self.ran[before]
        assert (seen.run_id, seen.step, seen.attempt) == (done.run_id, done.step, done.attempt)
        self._check_outcome(seen, done)
        return True

    def _check_outcome(self, seen: Ran, done: sm.Execution) -> None:
        kind = seen.behaviour[0]
        snap = self.mesh.inspect_run(done.run_id)
        assert done.run_status == snap.status
        if kind in ("ok", "loop", "beat"):
            assert done.outcome == "completed"
        elif kind == "cancel":
            assert done.outcome == "discarded"
            assert snap.status == sm.RunStatus.CANCELLED
            assert seen.saw_cancelled, "ctx.cancelled saw the cancel"
            assert seen.heartbeat_cancelled, "the heartbeat raised sm.Cancelled"
            # The step's result came after the cancel: kept in the journal, not in the context.
            if seen.step == "recover":
                assert "recovered" not in snap.context
            else:
                assert snap.context.get(seen.step) != seen.visit
        elif kind == "steal":
            inner = seen.inner
            assert inner is not None, "the expired lease made at least this attempt due"
            same = (inner.run_id, inner.step, inner.attempt) == (
                done.run_id,
                done.step,
                done.attempt,
            )
            assert done.outcome == ("lease_lost" if same else "completed")
            assert seen.heartbeat_lost is same, "a heartbeat reports a lost lease"
        elif kind == "fail":
            assert done.outcome == "failed"
            assert done.error is not None and done.error["code"] == "no_way"
            assert done.error["details"] == {"token": "[REDACTED]"}
        else:  # raise / retry
            self._check_retry(seen, done, snap)
        self._check_route(seen, done, snap)

    def _check_retry(self, seen: Ran, done: sm.Execution, snap: sm.RunSnapshot) -> None:
        kind, after = seen.behaviour
        retries_left = done.attempt < MAX_ATTEMPTS[done.step]
        assert done.outcome == ("retry_scheduled" if retries_left else "failed")
        if not retries_left:
            return
        visit = next(s for s in snap.steps if (s.name, s.visit) == (seen.step, seen.visit))
        nxt = visit.attempts[done.attempt]
        assert nxt.number == done.attempt + 1
        assert nxt.status == sm.AttemptStatus.SCHEDULED
        wait = nxt.visible_at.timestamp() - self.clock.now
        if kind == "retry":
            assert wait == pytest.approx(after, abs=1e-6), "Retry(after=) sets the delay"
        elif done.step == "b":
            assert wait == pytest.approx(1.0, abs=1e-6)
        else:  # exponential(min=0.5, max=4.0, jitter=0.5)
            base = min(0.5 * 2 ** (done.attempt - 1), 4.0)
            assert base * 0.5 - 1e-6 <= wait <= base + 1e-6

    def _check_route(self, seen: Ran, done: sm.Execution, snap: sm.RunSnapshot) -> None:
        kind = seen.behaviour[0]
        if done.outcome == "failed" and done.step == "a":
            assert snap.status == sm.RunStatus.RUNNING and snap.current_steps == ("recover",)
        if done.outcome == "failed" and done.step in ("b", "recover"):
            assert snap.status == sm.RunStatus.FAILED
            assert snap.error is not None and snap.error["step"] == done.step
        if done.outcome == "completed" and kind in ("ok", "loop", "beat"):
            if done.step == "recover" or (done.step == "b" and kind != "loop"):
                assert snap.status == sm.RunStatus.COMPLETED
            elif done.step == "a":
                assert snap.current_steps == ("b",)
            elif snap.status == sm.RunStatus.FAILED:  # b looped back to a once too often
                assert snap.error is not None and snap.error["code"] == "max_visits_exceeded"
            else:
                assert snap.current_steps == ("a",)

    @precondition(lambda self: bool(self.runs))
    @rule(index=st.integers(0, 10_000), reason=st.none() | st.just("operator said so"))
    def cancel(self, index: int, reason: str | None) -> None:
        run_id = self.runs[index % len(self.runs)]
        before = self.mesh.inspect_run(run_id)
        if before.status in (sm.RunStatus.COMPLETED, sm.RunStatus.FAILED):
            with pytest.raises(sm.RunFinishedError):
                self.mesh.cancel(run_id, reason=reason)
            return
        after = self.mesh.cancel(run_id, reason=reason, actor="ops")
        assert after.status == sm.RunStatus.CANCELLED
        assert after.current_steps == ()
        if before.status == sm.RunStatus.CANCELLED:
            assert after.revision == before.revision, "a repeat cancel changes nothing"

    @rule(seconds=st.sampled_from([0.1, 0.5, 1.0, 2.5, LEASE + 0.5, 30.0]))
    def advance_clock(self, seconds: float) -> None:
        self.clock.advance(seconds)

    # -- invariants -------------------------------------------------------------------------

    @invariant()
    def journal_folds_to_projection(self) -> None:
        assert self.mesh.verify() == []

    @invariant()
    def runs_are_sound(self) -> None:
        for run_id in self.runs:
            snap = self.mesh.inspect_run(run_id, history=True)
            assert snap.history is not None
            completions = [h.data["key"] for h in snap.history if h.kind == "attempt_completed"]
            assert len(completions) == len(set(completions)), "an attempt completed twice"
            live = 0
            for s in snap.steps:
                done = [a for a in s.attempts if a.status == sm.AttemptStatus.COMPLETED]
                assert len(done) <= 1, f"step {s.name} visit {s.visit} completed twice"
                assert [a.number for a in s.attempts] == list(range(1, len(s.attempts) + 1))
                assert len(s.attempts) <= MAX_ATTEMPTS[s.name]
                live += sum(a.status.live for a in s.attempts)
                if s.name == "a":
                    assert s.visit <= A_MAX_VISITS
            assert live <= 1, "a state-machine run has one live attempt at most"
            self._terminal_is_final(snap)

    def _terminal_is_final(self, snap: sm.RunSnapshot) -> None:
        if snap.status not in TERMINAL:
            assert snap.id not in self.frozen, "a terminal run came back to life"
            return
        assert snap.current_steps == ()
        frozen = self.frozen.get(snap.id)
        if frozen is None:
            self.frozen[snap.id] = Frozen(
                snap.status, snap.context, snap.error, snap.revision, completed_attempts(snap)
            )
            return
        assert snap.status == frozen.status
        assert snap.context == frozen.context
        assert snap.error == frozen.error
        assert completed_attempts(snap) == frozen.completed
        assert snap.history is not None
        later = [h.kind for h in snap.history if h.seq > frozen.revision]
        if snap.status == sm.RunStatus.CANCELLED:
            assert set(later) <= {"result_discarded"}, later
        else:
            assert later == [] and snap.revision == frozen.revision


def test_runs_stay_consistent_under_random_commands(
    backend: str, machine_url: str, tmp_path: Path
) -> None:
    run_state_machine_as_test(
        machine_for(MeshMachine, backend, machine_url, tmp_path), settings=SETTINGS
    )
