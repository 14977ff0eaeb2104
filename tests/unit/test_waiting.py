"""wait_flow: when to look again, when to stop, and what a bad option says (no I/O)."""

from __future__ import annotations

from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import pytest

import squid_mesh as sm
from squid_mesh.read.waiting import awaited_statuses, wait_flow


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def run_in(status: str) -> Any:
    return SimpleNamespace(status=sm.RunStatus(status))


def test_looks_at_once_then_ever_less_often_up_to_the_poll_interval() -> None:
    clock = Clock()
    flow = wait_flow("r1", until=None, timeout=None, poll_interval=0.1, clock=clock)
    delays = [next(flow)]
    for _ in range(6):
        clock.now += delays[-1]
        delays.append(flow.send(run_in("running")))
    assert delays == [0.0, 0.01, 0.02, 0.04, 0.08, 0.1, 0.1]
    done = run_in("failed")
    with pytest.raises(StopIteration) as stopped:
        flow.send(done)
    assert stopped.value.value is done


def test_the_last_sleep_ends_at_the_deadline_and_then_it_times_out() -> None:
    clock = Clock()
    flow = wait_flow(
        "r1", until="paused", timeout=timedelta(seconds=0.035), poll_interval=1, clock=clock
    )
    assert next(flow) == 0.0
    assert flow.send(run_in("running")) == 0.01
    clock.now += 0.01
    assert flow.send(run_in("running")) == 0.02
    clock.now += 0.02
    assert flow.send(run_in("running")) == pytest.approx(0.005)  # only what is left
    clock.now += 0.005
    with pytest.raises(sm.WaitTimeoutError) as caught:
        flow.send(run_in("running"))
    assert isinstance(caught.value, TimeoutError) and caught.value.code == "wait_timeout"
    assert caught.value.status == "running"
    assert str(caught.value) == "run 'r1' is still running after 0.035 s (waited for: paused)"


@pytest.mark.parametrize("final", ["completed", "failed", "cancelled"])
def test_a_run_that_finished_ends_a_wait_for_another_status(final: str) -> None:
    # A finished run never moves again: waiting on for "paused" would last the whole timeout,
    # or for ever without one.
    flow = wait_flow("r1", until="paused", timeout=None, poll_interval=1, clock=Clock())
    next(flow)
    assert flow.send(run_in("running")) == 0.01
    done = run_in(final)
    with pytest.raises(StopIteration) as stopped:
        flow.send(done)
    assert stopped.value.value is done


@pytest.mark.parametrize(
    ("options", "option"),
    [
        ({"until": ["done"]}, "until"),
        ({"until": []}, "until"),
        ({"until": 3}, "until"),
        ({"timeout": 0}, "timeout"),
        ({"timeout": "soon"}, "timeout"),
        ({"poll_interval": -1}, "poll_interval"),
    ],
)
def test_a_bad_option_is_refused_before_the_first_look(
    options: dict[str, Any], option: str
) -> None:
    given: dict[str, Any] = {"until": None, "timeout": None, "poll_interval": 0.5, **options}
    flow = wait_flow("r1", **given)
    with pytest.raises(sm.InvalidOptionError) as caught:
        next(flow)
    assert caught.value.option == option


def test_the_statuses_awaited_by_default_are_the_terminal_ones() -> None:
    assert awaited_statuses(None) == {
        sm.RunStatus.COMPLETED,
        sm.RunStatus.FAILED,
        sm.RunStatus.CANCELLED,
    }
    assert awaited_statuses(["paused", "completed"]) == {
        sm.RunStatus.PAUSED,
        sm.RunStatus.COMPLETED,
    }
