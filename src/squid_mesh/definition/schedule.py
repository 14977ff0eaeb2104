"""When cron triggers fire: the one place that asks the cron package (croniter)."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from squid_mesh.definition.triggers import Cron


def due_slots(cron: Cron, *, after: float, until: float) -> list[float]:
    """The trigger's slots in ``(after, until]`` to start now, oldest first, as epoch seconds.

    Walks backwards from ``until`` (so a long downtime costs at most ``max_catch_up`` steps):
    ``skip`` keeps the latest slot only, ``all`` the latest ``max_catch_up``. Slots are computed
    in the trigger's timezone; daylight-saving gaps and repeats are the cron package's rules.

    Example:
        >>> due_slots(Cron("0 * * * *"), after=0.0, until=7200.0)
        [7200.0]
    """
    from croniter import croniter

    if until <= after:
        return []
    limit = 1 if cron.catch_up == "skip" else cron.max_catch_up
    # get_prev from a time exactly on a slot would skip that slot: start a millisecond after it.
    start = datetime.fromtimestamp(until + 1e-3, ZoneInfo(cron.timezone))
    walker = croniter(cron.expression, start)
    found: list[float] = []
    while len(found) < limit:
        slot = float(walker.get_prev(float))
        if slot <= after:
            break
        if slot <= until:
            found.append(slot)
    return sorted(found)


def next_slot(cron: Cron, *, after: float) -> float:
    """The trigger's first slot strictly after ``after``, as epoch seconds.

    Example:
        >>> next_slot(Cron("0 * * * *"), after=3600.0)
        7200.0
    """
    from croniter import croniter

    walker = croniter(cron.expression, datetime.fromtimestamp(after, ZoneInfo(cron.timezone)))
    return float(walker.get_next(float))
