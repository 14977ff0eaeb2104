"""Named crash points, for fault-injection tests only.

With ``SQUID_MESH_CRASH_AT=<point>`` (or ``<point>:<n>``, the n-th time the point is reached) in a
process's environment, that process ends with ``os._exit(CRASH_EXIT)`` at that point: no
``finally``, no flush, no commit, as a power cut or a SIGKILL would leave it. Without the
variable, :data:`ARMED` is ``None`` and each call site costs one attribute test.

Points (where the engine calls :func:`reached`):

- ``start.before_commit``, ``start.after_commit``: a start's write, before and after it commits;
- ``claim.after_commit``: a claim committed, the step not started;
- ``step.after_side_effect``: the step returned (its side effects happened), nothing recorded;
- ``record.before_commit``, ``record.after_commit``: recording an outcome;
- ``retry.before_commit``: recording a failure that plans a retry;
- ``compensation.before_commit``: recording a write that starts or continues compensation;
- ``reclaim.before_commit``: taking over an attempt whose lease ran out (the recovery path);
- ``heartbeat.before_commit``: a heartbeat's write;
- ``cancel.before_commit``: a cancel's write;
- ``cron.after_start``: a cron slot's run started, the schedule not yet advanced.
"""

from __future__ import annotations

import os

CRASH_EXIT = 70

_setting = os.environ.get("SQUID_MESH_CRASH_AT") or None
ARMED: str | None = None if _setting is None else _setting.partition(":")[0]
_AT = 1 if _setting is None or ":" not in _setting else int(_setting.partition(":")[2])
_hits = [0]


def reached(point: str) -> None:
    """End the process here if ``point`` is the armed one and this is its chosen hit."""
    if point != ARMED:
        return
    _hits[0] += 1
    if _hits[0] >= _AT:
        os._exit(CRASH_EXIT)
