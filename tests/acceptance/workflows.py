"""Workflow definitions shared by the acceptance tests and their worker processes.

The test process and every worker process import this module and register the same workflows, so
they agree on names, versions and fingerprints. Steps that must behave differently in different
processes read :data:`WORKER` (set by ``tests.acceptance.worker`` from its command line) or look at
files whose paths come in the run's payload: no state crosses processes except through the files
and the database.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import time
from pathlib import Path
from typing import Any

import squid_mesh as sm

# Set by the worker process from --tag / --hold; the test process keeps the defaults.
WORKER: dict[str, Any] = {"tag": "test", "hold": False}

# The longest a held step waits for its release file (keeps a broken test bounded).
HOLD_LIMIT = 30.0


def three_steps() -> sm.Workflow:
    """``a -> b -> c``: the payload's ``n`` is carried through three quick steps."""
    wf = sm.Workflow("acc_three", version="1")

    @wf.step()
    def a(input: dict[str, Any], ctx: sm.StepContext) -> dict[str, Any]:
        return {"a": input["n"] + 1}

    @wf.step()
    def b(input: dict[str, Any], ctx: sm.StepContext) -> dict[str, Any]:
        return {"b": input["a"] * 2}

    @wf.step()
    def c(input: dict[str, Any], ctx: sm.StepContext) -> dict[str, Any]:
        return {"c": input["b"] - 1}

    wf.transition("a", to="b")
    wf.transition("b", to="c")
    wf.transition("c", to=sm.COMPLETE)
    return wf


def sleepy() -> sm.Workflow:
    """One step that writes ``<dir>/started.<pid>``, then sleeps 60 s while ``<dir>/slow`` exists."""
    wf = sm.Workflow("acc_sleepy", version="1")

    @wf.step()
    def nap(input: dict[str, Any], ctx: sm.StepContext) -> dict[str, Any]:
        folder = Path(input["dir"])
        (folder / f"started.{os.getpid()}").write_text(str(ctx.attempt))
        if (folder / "slow").exists():
            time.sleep(60)
        return {"pid": os.getpid()}

    wf.transition("nap", to=sm.COMPLETE)
    return wf


def napper() -> sm.Workflow:
    """One step that appends ``start end pid`` to ``<dir>/intervals`` around its nap.

    It naps ``seconds``, or, while ``<dir>/slow`` exists, until the file goes (at most HOLD_LIMIT).
    """
    wf = sm.Workflow("acc_nap", version="1")

    @wf.step()
    def nap(input: dict[str, Any], ctx: sm.StepContext) -> dict[str, Any]:
        folder = Path(input["dir"])
        began = time.time()
        slow, deadline = folder / "slow", time.monotonic() + HOLD_LIMIT
        if slow.exists():
            while slow.exists() and time.monotonic() < deadline:
                time.sleep(0.02)
        else:
            time.sleep(input["seconds"])
        with (folder / "intervals").open("a") as out:
            out.write(f"{began} {time.time()} {os.getpid()}\n")
        return {"pid": os.getpid()}

    wf.transition("nap", to=sm.COMPLETE)
    return wf


def zombie() -> sm.Workflow:
    """One step on queue ``zombie``: writes ``<dir>/<run>.began.<pid>``, then, while
    ``<dir>/hold.<pid>`` exists, waits; writes ``<dir>/<run>.returned.<pid>`` as it returns."""
    wf = sm.Workflow("acc_zombie", version="1", queue="zombie")

    @wf.step()
    def work(input: dict[str, Any], ctx: sm.StepContext) -> dict[str, Any]:
        folder, pid = Path(input["dir"]), os.getpid()
        (folder / f"{ctx.run_id}.began.{pid}").touch()
        hold, deadline = folder / f"hold.{pid}", time.monotonic() + HOLD_LIMIT
        while hold.exists() and time.monotonic() < deadline:
            time.sleep(0.005)
        (folder / f"{ctx.run_id}.returned.{pid}").touch()
        return {"by": pid}

    wf.transition("work", to=sm.COMPLETE)
    return wf


def beat() -> sm.Workflow:
    """One step on queue ``beat`` that heartbeats twice (for the heartbeat crash point)."""
    wf = sm.Workflow("acc_beat", version="1", queue="beat")

    @wf.step()
    def pulse(input: dict[str, Any], ctx: sm.StepContext) -> dict[str, Any]:
        ctx.heartbeat()
        ctx.heartbeat()
        return {"beats": 2}

    wf.transition("pulse", to=sm.COMPLETE)
    return wf


def contended() -> sm.Workflow:
    """One step that returns ``{"by": <worker tag>}``.

    It writes ``<dir>/claimed.<tag>`` on entry. In a worker started with ``--hold`` it then blocks
    (without heartbeat) until ``<dir>/release`` exists, so its completion arrives late.
    """
    wf = sm.Workflow("acc_contended", version="1")

    @wf.step()
    def work(input: dict[str, Any], ctx: sm.StepContext) -> dict[str, Any]:
        folder = Path(input["dir"])
        tag = str(WORKER["tag"])
        (folder / f"claimed.{tag}").write_text(str(ctx.attempt))
        if WORKER["hold"]:
            deadline = time.monotonic() + HOLD_LIMIT
            while not (folder / "release").exists() and time.monotonic() < deadline:
                time.sleep(0.02)
        return {"by": tag}

    wf.transition("work", to=sm.COMPLETE)
    return wf


def flaky() -> sm.Workflow:
    """One step that fails on attempts 1 and 2 and succeeds on 3; logs each ``ctx.attempt``.

    Every execution appends ``{"pid": ..., "attempt": ctx.attempt}`` to the payload's ``log`` file.
    """
    wf = sm.Workflow("acc_flaky", version="1")

    @wf.step(retry=sm.RetryPolicy(max_attempts=3, backoff=sm.Backoff.fixed(0)))
    def wobble(input: dict[str, Any], ctx: sm.StepContext) -> dict[str, Any]:
        with open(input["log"], "a", encoding="utf-8") as log:
            log.write(json.dumps({"pid": os.getpid(), "attempt": ctx.attempt}) + "\n")
        if ctx.attempt < 3:
            raise RuntimeError(f"wobble failed on attempt {ctx.attempt}")
        return {"finished_on": ctx.attempt}

    wf.transition("wobble", to=sm.COMPLETE)
    return wf


def _meet(name: str, other: str) -> Any:
    def root(input: dict[str, Any], ctx: sm.StepContext) -> dict[str, Any]:
        folder = Path(input["dir"])
        (folder / f"{ctx.run_id}.{name}").write_text(str(WORKER["tag"]))
        # Wait (bounded) until the sibling root has started too, so that the two roots of a run
        # run, and then complete, at the same time in two processes.
        deadline = time.monotonic() + 5.0
        while not (folder / f"{ctx.run_id}.{other}").exists() and time.monotonic() < deadline:
            time.sleep(0.001)
        return {"by": str(WORKER["tag"])}

    return root


def join() -> sm.Workflow:
    """DAG: roots ``left`` and ``right`` (each waits for the other to start), then ``both``."""
    wf = sm.Workflow("acc_join", version="1")
    wf.step("left", output="left")(_meet("left", "right"))
    wf.step("right", output="right")(_meet("right", "left"))

    @wf.step(after=["left", "right"], input={"l": "left.by", "r": "right.by"})
    def both(input: dict[str, Any], ctx: sm.StepContext) -> dict[str, Any]:
        return {"joined": [input["l"], input["r"]]}

    return wf


def _die_if(flag: Path) -> None:
    """SIGKILL this very process when ``flag`` exists (removing it, so the next try goes on)."""
    if flag.exists():
        flag.unlink()
        os.kill(os.getpid(), signal.SIGKILL)


def ledger() -> sm.Workflow:
    """A transactional step that writes a host row, then dies by SIGKILL once if ``<dir>/die``."""
    wf = sm.Workflow("acc_ledger", version="1")

    @wf.step(transactional=True)
    def book(input: dict[str, Any], ctx: sm.StepContext) -> dict[str, Any]:
        mark = "?" if isinstance(ctx.db, sqlite3.Cursor) else "%s"
        ctx.db.execute(
            f"INSERT INTO acc_ledger (run_id, pid) VALUES ({mark}, {mark})",
            (ctx.run_id, os.getpid()),
        )
        _die_if(Path(input["dir"]) / "die")  # after the write, before the commit
        return {"booked_by": os.getpid()}

    wf.transition("book", to=sm.COMPLETE)
    return wf


def saga() -> sm.Workflow:
    """reserve, authorize, capture (fails); undoing authorize dies by SIGKILL once if asked.

    Every compensation that starts appends its name to ``<dir>/undo.log``.
    """
    wf = sm.Workflow("acc_saga", version="1")

    def logged(name: str) -> Any:
        def undo(input: dict[str, Any], ctx: sm.StepContext) -> dict[str, Any]:
            folder = Path(input["input"]["dir"])
            with open(folder / "undo.log", "a", encoding="utf-8") as log:
                log.write(name + "\n")
            _die_if(folder / f"die_in_{name}")
            return {"undone": name}

        return undo

    @wf.step(compensate=logged("release"))
    def reserve(input: dict[str, Any], ctx: sm.StepContext) -> dict[str, Any]:
        return {"reserved": True}

    @wf.step(compensate=logged("void"))
    def authorize(input: dict[str, Any], ctx: sm.StepContext) -> dict[str, Any]:
        return {"authorized": True}

    @wf.step()
    def capture(input: dict[str, Any], ctx: sm.StepContext) -> dict[str, Any]:
        raise sm.Fail("card declined", code="declined")

    wf.transition("reserve", to="authorize")
    wf.transition("authorize", to="capture")
    wf.transition("capture", to=sm.COMPLETE)
    return wf


def gated() -> sm.Workflow:
    """prepare, an approval gate, then ship (approved) or drop (rejected)."""
    wf = sm.Workflow("acc_gated", version="1")

    @wf.step()
    def prepare(input: dict[str, Any], ctx: sm.StepContext) -> dict[str, Any]:
        return {"prepared_by": os.getpid()}

    wf.approval("sign_off", output="approval")

    @wf.step()
    def ship(input: dict[str, Any], ctx: sm.StepContext) -> dict[str, Any]:
        return {"shipped_by": os.getpid()}

    @wf.step()
    def drop(input: dict[str, Any], ctx: sm.StepContext) -> dict[str, Any]:
        return {"dropped": True}

    wf.transition("prepare", to="sign_off")
    wf.transition("sign_off", to="ship")
    wf.transition("sign_off", to="drop", on="error")
    wf.transition("ship", to=sm.COMPLETE)
    wf.transition("drop", to=sm.COMPLETE)
    return wf


def scheduled() -> sm.Workflow:
    """A cron workflow firing every minute; a tick that missed slots starts all of them."""
    wf = sm.Workflow(
        "acc_scheduled",
        version="1",
        triggers=[sm.Cron("* * * * *", name="minutely", catch_up="all", max_catch_up=1000)],
    )

    @wf.step()
    def note(input: dict[str, Any], ctx: sm.StepContext) -> dict[str, Any]:
        return {"slot": input["schedule"]["slot"]}

    wf.transition("note", to=sm.COMPLETE)
    return wf


def deployed(version: str) -> sm.Workflow:
    """``acc_deploy`` at a given version: pack then ship, each recording the version that ran it."""
    wf = sm.Workflow("acc_deploy", version=version)

    @wf.step()
    def pack(input: dict[str, Any], ctx: sm.StepContext) -> dict[str, Any]:
        return {"packed_on": ctx.version}

    @wf.step()
    def ship(input: dict[str, Any], ctx: sm.StepContext) -> dict[str, Any]:
        return {"shipped_on": ctx.version}

    wf.transition("pack", to="ship")
    wf.transition("ship", to=sm.COMPLETE)
    return wf


def all_workflows() -> list[sm.Workflow]:
    """Every acceptance workflow (the test process and the workers register the same set)."""
    return [
        three_steps(),
        sleepy(),
        napper(),
        zombie(),
        beat(),
        contended(),
        flaky(),
        join(),
        ledger(),
        saga(),
        gated(),
        scheduled(),
    ]
