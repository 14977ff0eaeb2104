"""I8: N processes starting with one idempotency key at the same moment make exactly one run."""

from __future__ import annotations

import multiprocessing
from typing import Any

import pytest

import squid_mesh as sm
from tests.acceptance.workflows import all_workflows

pytestmark = pytest.mark.slow
N = 8


def start_at_once(db_url: str, key: str, barrier: Any, out: Any) -> None:
    with sm.connect(db_url, workflows=all_workflows()) as mesh:
        barrier.wait(30)
        out.put(mesh.start("acc_three", {"n": 1}, idempotency_key=key).id)


@pytest.mark.parametrize("round_", range(3))
def test_concurrent_starts_with_one_key_make_one_run(db_url: str, round_: int) -> None:
    ctx = multiprocessing.get_context("fork")
    barrier, out = ctx.Barrier(N), ctx.Queue()
    key = f"same-{round_}"
    procs = [ctx.Process(target=start_at_once, args=(db_url, key, barrier, out)) for _ in range(N)]
    for p in procs:
        p.start()
    ids = [out.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert len(set(ids)) == 1, ids
    with sm.connect(db_url, workflows=all_workflows()) as mesh:
        runs = mesh.list_runs(workflow="acc_three").runs
        assert [r.id for r in runs] == [ids[0]]
        assert mesh.verify() == []
