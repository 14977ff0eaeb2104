"""A hypothesis state machine over gates, DAG joins and compensation, on both stores.

Two workflows: ``gated`` (prepare -> approval -> charge -> pause -> finish, with compensations)
and ``fan`` (a DAG: roots left and right, then join, with compensations). Rules start runs,
execute attempts with a drawn behaviour (succeed, raise, fail for good, crash), approve / reject /
resume / cancel random runs (idempotency keys reused on purpose) and move the fake clock. After
every rule the core invariants hold (the journal refolds to the projection, no attempt completes
twice, finished runs never change, attempts stay within max_attempts), and those of the features:
a paused run waits at a gate with nothing live, a DAG step is planned once, each completed step is
undone at most once and in reverse completion order, and a repeated command key writes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
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
MAX_ATTEMPTS = 2
COMMAND_KEYS = ("c1", "c2", "c3", None, None)
TERMINAL = {sm.RunStatus.COMPLETED, sm.RunStatus.FAILED, sm.RunStatus.CANCELLED}

SETTINGS = settings(
    max_examples=20,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


class Crash(BaseException):
    """A step standing for its worker process dying (not caught by the engine)."""


# Mostly successes, so that runs get far: through gates, joins and whole compensation chains.
BEHAVIOURS = st.sampled_from(["ok"] * 7 + ["raise", "fail", "crash"])


@dataclass
class Frozen:
    status: sm.RunStatus
    context: dict[str, Any]
    error: dict[str, Any] | None
    revision: int


class SemanticsMachine(RuleBasedStateMachine):
    backend: str = "sqlite"
    url: str = ""
    tmp: Path = Path()

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock(START)
        self.behaviour = "ok"
        self.runs: list[str] = []
        self.frozen: dict[str, Frozen] = {}
        self.used_keys: dict[str, tuple[str, str]] = {}  # key -> (run id, command)
        self.mesh = self._connect()

    # -- set-up -----------------------------------------------------------------------------

    def _connect(self) -> sm.Mesh:
        url = example_url(self.backend, self.url, self.tmp)
        mesh = sm.connect(
            url,
            workflows=[self._gated(), self._fan()],
            clock=self.clock,
            entropy=sm.SeededEntropy(11),
        )
        if self.backend == "sqlite":
            mesh.migrate()
        return mesh

    def _policy(self) -> sm.RetryPolicy:
        return sm.RetryPolicy(max_attempts=MAX_ATTEMPTS, backoff=sm.Backoff.fixed(1.0))

    def _task(self, name: str) -> Any:
        def fn(input: dict[str, Any], ctx: sm.StepContext) -> dict[str, Any]:
            behaviour, self.behaviour = self.behaviour, "ok"
            if behaviour == "raise":
                raise RuntimeError(f"{name} broke")
            if behaviour == "fail":
                raise sm.Fail(f"{name} cannot go on", code="stop")
            if behaviour == "crash":
                raise Crash()
            return {name: ctx.attempt}

        return fn

    def _gated(self) -> sm.Workflow:
        wf = sm.Workflow("gated", version="1")
        policy = self._policy()
        wf.step("prepare", retry=policy, compensate=self._task("undo_prepare"))(
            self._task("prepare")
        )
        wf.approval("sign", output="decision")
        wf.step("charge", retry=policy, compensate=self._task("undo_charge"))(self._task("charge"))
        wf.pause("hold")
        wf.step("finish", retry=policy)(self._task("finish"))
        wf.step("deny", retry=policy)(self._task("deny"))
        wf.transition("prepare", to="sign")
        wf.transition("sign", to="charge")
        wf.transition("sign", to="deny", on="error")
        wf.transition("charge", to="hold")
        wf.transition("hold", to="finish")
        wf.transition("finish", to=sm.COMPLETE)
        wf.transition("deny", to=sm.COMPLETE)
        return wf

    def _fan(self) -> sm.Workflow:
        wf = sm.Workflow("fan", version="1")
        policy = self._policy()
        wf.step("left", retry=policy, compensate=self._task("undo_left"))(self._task("left"))
        wf.step("right", retry=policy, compensate=self._task("undo_right"))(self._task("right"))
        wf.step("join", retry=policy, after=["left", "right"])(self._task("join"))
        return wf

    # -- rules ------------------------------------------------------------------------------

    @initialize(workflow=st.sampled_from(["gated", "fan"]))
    def first_run(self, workflow: str) -> None:
        self.start_run(workflow)

    @precondition(lambda self: len(self.runs) < 4)
    @rule(workflow=st.sampled_from(["gated", "fan"]))
    def start_run(self, workflow: str) -> None:
        snap = self.mesh.start(workflow, {})
        self.runs.append(snap.id)

    @rule(owner=st.sampled_from(["w1", "w2"]), plan=st.lists(BEHAVIOURS, min_size=1, max_size=4))
    def execute_next(self, owner: str, plan: list[str]) -> None:
        for behaviour in plan:
            self.behaviour = behaviour
            try:
                done = self.mesh.execute_next(owner_id=owner, lease=LEASE)
            except Crash:
                continue
            finally:
                self.behaviour = "ok"
            if done is None:
                return
            assert done.outcome != "lease_lost", "one process: a claim is never taken over"

    @precondition(lambda self: bool(self.runs))
    @rule(
        index=st.integers(0, 10_000),
        command=st.sampled_from(["approve", "approve", "reject", "resume", "resume", "cancel"]),
        key=st.sampled_from(COMMAND_KEYS),
    )
    def command(self, index: int, command: str, key: str | None) -> None:
        run_id = self.runs[index % len(self.runs)]
        before = self.mesh.inspect_run(run_id)
        if key is not None and key in self.used_keys:
            used_run, used_command = self.used_keys[key]
            if used_run == run_id and used_command == command:
                again = self._send(command, run_id, key)
                assert again.revision == before.revision, "a repeated key writes nothing"
                return
            if used_run == run_id:
                with pytest.raises(sm.IdempotencyConflictError):
                    self._send(command, run_id, key)
                return
            key = None  # a key is per run: using it on another run is simply a new command
        try:
            after = self._send(command, run_id, key)
        except (sm.RunNotPausedError, sm.WrongGateError, sm.RunFinishedError) as refused:
            self._check_refusal(before, command, refused)
            assert self.mesh.inspect_run(run_id).revision == before.revision
            return
        if key is not None and after.revision != before.revision:
            self.used_keys[key] = (run_id, command)  # a command that wrote nothing keeps no key
        if command == "cancel":
            assert after.status == sm.RunStatus.CANCELLED
        else:
            assert before.gate is not None and after.gate is None
            assert after.status in (sm.RunStatus.RUNNING, sm.RunStatus.COMPLETED)
            if before.gate.kind == "approval":
                decision = after.context["decision"]["decision"]
                assert decision == ("approved" if command == "approve" else "rejected")

    def _send(self, command: str, run_id: str, key: str | None) -> sm.RunSnapshot:
        if command == "cancel":
            return self.mesh.cancel(run_id, idempotency_key=key)
        if command == "resume":
            return self.mesh.resume(run_id, actor="ops", idempotency_key=key)
        send = self.mesh.approve if command == "approve" else self.mesh.reject
        return send(run_id, actor="ops", idempotency_key=key)

    def _check_refusal(self, before: sm.RunSnapshot, command: str, refused: Exception) -> None:
        if isinstance(refused, sm.RunFinishedError):
            assert before.terminal
        elif isinstance(refused, sm.RunNotPausedError):
            assert before.status != sm.RunStatus.PAUSED and command != "cancel"
        else:
            assert before.gate is not None
            assert (before.gate.kind == "pause") == (command != "resume")

    @rule(seconds=st.sampled_from([0.5, 1.0, LEASE + 0.5]))
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
            history = snap.history or ()
            completions = [h.data["key"] for h in history if h.kind == "attempt_completed"]
            assert len(completions) == len(set(completions)), "an attempt completed twice"
            for s in snap.steps:
                assert len(s.attempts) <= MAX_ATTEMPTS or s.name.endswith("#compensate")
                assert sum(a.status == sm.AttemptStatus.COMPLETED for a in s.attempts) <= 1
                if snap.workflow == "fan":
                    assert s.visit == 1, "a DAG step is planned once"
            if snap.status == sm.RunStatus.PAUSED:
                assert snap.gate is not None and snap.current_steps == ()
            else:
                assert snap.gate is None
            self._compensation_is_sound(snap, completions)
            self._terminal_is_final(snap)

    def _compensation_is_sound(self, snap: sm.RunSnapshot, completions: list[str]) -> None:
        undone = [k.split("#")[0] for k in completions if "#compensate" in k]
        assert len(undone) == len(set(undone)), "a step was undone twice"
        done_order = [k.split(":")[0] for k in completions if "#" not in k]
        undoable = [s for s in done_order if s in ("prepare", "charge", "left", "right")]
        # Undone in reverse completion order: what was undone is a prefix of that order.
        assert undone == list(reversed(undoable))[: len(undone)]
        if snap.compensation is None:
            assert undone == []
        elif snap.compensation == "running":
            assert snap.status == sm.RunStatus.RUNNING
        elif snap.compensation == "cancelled":
            assert snap.status == sm.RunStatus.CANCELLED
        elif snap.compensation == "completed":
            assert snap.status == sm.RunStatus.FAILED
            assert sorted(undone) == sorted(undoable)
        else:
            assert snap.status == sm.RunStatus.FAILED and snap.compensation == "failed"
        if snap.status == sm.RunStatus.COMPLETED:
            assert snap.compensation is None

    def _terminal_is_final(self, snap: sm.RunSnapshot) -> None:
        if snap.status not in TERMINAL:
            assert snap.id not in self.frozen, "a finished run came back to life"
            return
        frozen = self.frozen.get(snap.id)
        if frozen is None:
            self.frozen[snap.id] = Frozen(snap.status, snap.context, snap.error, snap.revision)
            return
        assert (snap.status, snap.context, snap.error) == (
            frozen.status,
            frozen.context,
            frozen.error,
        )
        later = [h.kind for h in snap.history or () if h.seq > frozen.revision]
        assert set(later) <= {"result_discarded"}, later

    def teardown(self) -> None:
        self.mesh.close()


def test_gates_joins_and_compensations_stay_consistent_under_random_commands(
    backend: str, machine_url: str, tmp_path: Path
) -> None:
    run_state_machine_as_test(
        machine_for(SemanticsMachine, backend, machine_url, tmp_path), settings=SETTINGS
    )
