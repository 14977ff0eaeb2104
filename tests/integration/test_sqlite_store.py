"""Behaviour specific to the SQLite store."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import squid_mesh as sm
from tests.support.databases import sqlite_database


def one_step() -> sm.Workflow:
    wf = sm.Workflow("solo", version="1")

    @wf.step()
    def only(input: dict, ctx: sm.StepContext) -> dict:
        return {"done": True}

    wf.transition("only", to=sm.COMPLETE)
    return wf


def test_an_idle_poller_does_not_wait_for_another_process_writer(tmp_path: Path) -> None:
    with sqlite_database(tmp_path) as url:
        mesh = sm.connect(url, workflows=[one_step()])
        writer = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
        try:
            writer.execute("BEGIN IMMEDIATE")  # another process holds the write lock
            # Nothing is due: the poll answers from a read snapshot instead of queueing for the
            # write lock (which would end in StoreError after the 30 s busy timeout).
            assert mesh.execute_next(owner_id="w1") is None
            assert mesh.execute_next(owner_id="w1") is None
            writer.execute("ROLLBACK")
            run = mesh.start("solo", {})
            done = mesh.execute_next(owner_id="w1")
            assert done is not None and done.outcome == "completed"
            assert mesh.inspect_run(run.id).status == "completed"
        finally:
            writer.close()
            mesh.close()
