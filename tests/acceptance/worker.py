"""A worker process for the acceptance tests: ``python -m tests.acceptance.worker --db URL ...``.

Modes:

* ``drain`` (default): loop ``execute_next`` with the real clock until nothing was visible for
  ``--max-idle`` seconds (or ``--limit`` executions were done). Prints each execution as a JSON line
  (``run_id``, ``step``, ``attempt``, ``outcome``, ``run_status``) and, as the last line, the number of
  executions.
* ``migrate``: call ``mesh.migrate()``, print ``{"migrated": true}``, then ``0``.
* ``tick``: call ``mesh.cron_tick(now=...)`` ``--ticks`` times, ``--tick-every`` seconds apart
  from ``--tick-from``; print how many runs the ticks returned, then ``0``.

With ``--barrier DIR`` the worker connects, writes ``DIR/ready.<owner>``, and waits for ``DIR/go``
before doing anything else, so that several processes can be released at the same instant.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import squid_mesh as sm
from tests.acceptance import workflows

BARRIER_LIMIT = 30.0


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="tests.acceptance.worker")
    parser.add_argument("--db", required=True, help="database URL")
    parser.add_argument("--owner", default="worker", help="owner id for claims")
    parser.add_argument("--lease", type=float, default=30.0, help="lease in seconds")
    parser.add_argument("--mode", choices=("drain", "migrate", "tick"), default="drain")
    parser.add_argument("--tick-from", type=float, default=0.0, help="tick: first tick time")
    parser.add_argument("--ticks", type=int, default=0, help="tick: how many ticks")
    parser.add_argument("--tick-every", type=float, default=60.0, help="tick: seconds between")
    parser.add_argument("--max-idle", type=float, default=1.0, help="stop after this idle time")
    parser.add_argument("--limit", type=int, default=0, help="stop after N executions (0: none)")
    parser.add_argument("--queue", default="default")
    parser.add_argument("--tag", default=None, help="what steps see as WORKER['tag'] (owner)")
    parser.add_argument("--hold", action="store_true", help="held steps wait for a release file")
    parser.add_argument("--barrier", default=None, help="directory of a start barrier")
    parser.add_argument("--approve", default=None, help="approve this run first, then drain")
    parser.add_argument(
        "--deployed", default="", help="versions of acc_deploy to register, e.g. '1,2'"
    )
    return parser.parse_args(argv)


def emit(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def wait_at_barrier(folder: Path, owner: str) -> None:
    (folder / f"ready.{owner}").write_text("")
    deadline = time.monotonic() + BARRIER_LIMIT
    while not (folder / "go").exists():
        if time.monotonic() > deadline:
            raise SystemExit(f"{owner}: no go signal in {folder} after {BARRIER_LIMIT} s")
        time.sleep(0.005)


def drain(mesh: sm.Mesh, args: argparse.Namespace) -> int:
    done = 0
    idle_since = time.monotonic()
    while not args.limit or done < args.limit:
        execution = mesh.execute_next(owner_id=args.owner, queue=args.queue, lease=args.lease)
        if execution is None:
            if time.monotonic() - idle_since >= args.max_idle:
                break
            time.sleep(0.02)
            continue
        done += 1
        emit(
            json.dumps(
                {
                    "run_id": execution.run_id,
                    "step": execution.step,
                    "attempt": execution.attempt,
                    "outcome": execution.outcome,
                    "run_status": str(execution.run_status),
                }
            )
        )
        idle_since = time.monotonic()
    return done


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    workflows.WORKER["tag"] = args.tag or args.owner
    workflows.WORKER["hold"] = args.hold
    deployed = [workflows.deployed(v) for v in args.deployed.split(",") if v]
    with sm.connect(args.db, workflows=[*workflows.all_workflows(), *deployed]) as mesh:
        if args.barrier:
            wait_at_barrier(Path(args.barrier), args.owner)
        if args.approve:
            snap = mesh.approve(args.approve, actor=args.owner, comment="after a restart")
            emit(json.dumps({"approved": snap.id, "status": str(snap.status)}))
        if args.mode == "tick":
            started = 0
            for i in range(args.ticks):
                started += len(mesh.cron_tick(now=args.tick_from + i * args.tick_every))
            emit(json.dumps({"ticked": args.ticks, "returned": started}))
            done = 0
        elif args.mode == "migrate":
            mesh.migrate()
            emit(json.dumps({"migrated": True}))
            done = 0
        else:
            done = drain(mesh, args)
    emit(str(done))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
