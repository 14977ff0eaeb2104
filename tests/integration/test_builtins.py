"""Built-in wait and log steps: durable sub-second sleeps, log records with the run's ids."""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest

import squid_mesh as sm
from tests.conftest import MeshFactory
from tests.support.clock import FakeClock


def waiting(seconds: float | timedelta) -> sm.Workflow:
    wf = sm.Workflow("cool_off", version="1")

    @wf.step()
    def charge(input: dict, ctx: sm.StepContext) -> dict:
        return {"charged": True}

    wf.wait("settle", seconds)

    @wf.step()
    def notify(input: dict, ctx: sm.StepContext) -> dict:
        return {"notified": input["charged"]}

    wf.transition("charge", to="settle")
    wf.transition("settle", to="notify")
    wf.transition("notify", to=sm.COMPLETE)
    return wf


@pytest.mark.parametrize("seconds", [1.5, 0.25, timedelta(milliseconds=10)])
def test_a_wait_makes_the_next_step_visible_exactly_after_its_duration(
    make_mesh: MeshFactory, clock: FakeClock, seconds: float | timedelta
) -> None:
    delay = seconds.total_seconds() if isinstance(seconds, timedelta) else seconds
    mesh = make_mesh([waiting(seconds)])
    run = mesh.start("cool_off", {})
    assert mesh.execute_next(owner_id="w") is not None  # charge
    waited = mesh.execute_next(owner_id="w")
    assert waited is not None and (waited.step, waited.outcome) == ("settle", "completed")
    done_at = clock()
    snap = mesh.inspect_run(run.id)
    assert snap.current_steps == ("notify",)
    assert snap.next_visible_at is not None
    assert snap.next_visible_at.timestamp() == pytest.approx(done_at + delay, abs=1e-6)
    assert mesh.execute_next(owner_id="w", now=done_at + delay - 0.001) is None
    last = mesh.execute_next(owner_id="w", now=done_at + delay)
    assert last is not None and (last.step, last.outcome) == ("notify", "completed")
    assert mesh.inspect_run(run.id).status == sm.RunStatus.COMPLETED


def test_a_wait_survives_a_restart_of_every_process(
    make_mesh: MeshFactory, clock: FakeClock
) -> None:
    first = make_mesh([waiting(30)])
    run = first.start("cool_off", {})
    first.execute_next(owner_id="w")
    first.execute_next(owner_id="w")
    due = clock() + 30
    first.close()
    # A new process: nothing in memory; the delay lives in the stored attempt.
    second = make_mesh([waiting(30)])
    assert second.execute_next(owner_id="w2") is None
    clock.advance(29.999)
    assert second.execute_next(owner_id="w2") is None
    clock.advance(0.001)
    assert clock() == pytest.approx(due)
    done = second.execute_next(owner_id="w2")
    assert done is not None and done.step == "notify"
    assert second.inspect_run(run.id).context == {"charged": True, "notified": True}


def test_a_dag_join_after_waits_is_visible_when_the_last_wait_is_over(
    make_mesh: MeshFactory, clock: FakeClock
) -> None:
    wf = sm.Workflow("fan_wait", version="1")

    @wf.step()
    def root(input: dict, ctx: sm.StepContext) -> dict:
        return {}

    wf.wait("short", 1.0, after=["root"])
    wf.wait("long", 5.0, after=["root"])

    @wf.step(after=["short", "long"])
    def join(input: dict, ctx: sm.StepContext) -> dict:
        return {"joined": True}

    mesh = make_mesh([wf])
    run = mesh.start("fan_wait", {})
    mesh.execute_next(owner_id="w")  # root
    finished = {}
    for _ in range(2):  # the two waits, one second apart, in whichever order they are claimed
        clock.advance(1)
        done = mesh.execute_next(owner_id="w")
        assert done is not None
        finished[done.step] = clock()
    ready_at = max(finished["short"] + 1.0, finished["long"] + 5.0)
    snap = mesh.inspect_run(run.id)
    assert snap.current_steps == ("join",)
    assert snap.next_visible_at is not None
    assert snap.next_visible_at.timestamp() == pytest.approx(ready_at)
    assert mesh.execute_next(owner_id="w", now=ready_at - 0.001) is None
    assert mesh.execute_next(owner_id="w", now=ready_at) is not None
    assert mesh.inspect_run(run.id).status == sm.RunStatus.COMPLETED


def test_a_wait_that_ends_the_run_completes_it_at_once(make_mesh: MeshFactory) -> None:
    wf = sm.Workflow("tail_wait", version="1")
    wf.wait("pointless", 60)
    wf.transition("pointless", to=sm.COMPLETE)
    mesh = make_mesh([wf])
    run = mesh.start("tail_wait", {})
    assert mesh.execute_next(owner_id="w") is not None
    assert mesh.inspect_run(run.id).status == sm.RunStatus.COMPLETED


def test_a_log_step_writes_its_message_with_the_run_ids(
    make_mesh: MeshFactory, caplog: pytest.LogCaptureFixture
) -> None:
    wf = sm.Workflow("announce", version="1")
    wf.log("say", "invoice recovered", level="warning")
    wf.transition("say", to=sm.COMPLETE)
    mesh = make_mesh([wf])
    run = mesh.start("announce", {})
    with caplog.at_level(logging.DEBUG, logger="squid_mesh.steps"):
        done = mesh.execute_next(owner_id="w")
    assert done is not None and done.outcome == "completed"
    (record,) = [r for r in caplog.records if r.name == "squid_mesh.steps"]
    assert record.levelno == logging.WARNING
    assert record.getMessage() == "invoice recovered"
    assert (record.run_id, record.workflow, record.step, record.attempt) == (  # type: ignore[attr-defined]
        run.id,
        "announce",
        "say",
        1,
    )
    assert mesh.inspect_run(run.id).status == sm.RunStatus.COMPLETED


@pytest.mark.parametrize(
    ("declare", "message"),
    [
        (lambda wf: wf.wait("w", 0), r"wait duration must be a positive number"),
        (lambda wf: wf.wait("w", -1.0), r"wait duration must be a positive number"),
        (lambda wf: wf.wait("w", float("inf")), r"wait duration must be a positive number"),
        (lambda wf: wf.wait("w", "5"), r"wait duration must be a positive number"),
        (lambda wf: wf.log("l", ""), r"log message must be a non-empty string"),
        (lambda wf: wf.log("l", "hi", level="loud"), r"log level must be one of"),
    ],
)
def test_bad_built_in_options_are_refused_naming_the_step(declare: object, message: str) -> None:
    wf = sm.Workflow("bad")
    with pytest.raises(sm.DefinitionError, match=message):
        declare(wf)  # type: ignore[operator]
