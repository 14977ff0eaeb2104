"""squid_mesh.testing.FakeClock: moves only forward, by any unit."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

import squid_mesh as sm
from squid_mesh.testing import FakeClock


def test_advance_by_seconds_units_and_timedelta() -> None:
    clock = FakeClock(1000.0)
    assert clock() == 1000.0
    assert clock.advance(30) == 1030.0
    assert clock.advance(seconds=5, minutes=1) == 1095.0
    assert clock.advance(timedelta(hours=1), days=1) == 1095.0 + 3600 + 86400
    assert clock.datetime == datetime.fromtimestamp(clock.now, UTC)


def test_it_never_goes_back_and_refuses_naive_times() -> None:
    clock = FakeClock(datetime(2026, 1, 1, tzinfo=UTC))
    assert clock.now == datetime(2026, 1, 1, tzinfo=UTC).timestamp()
    with pytest.raises(sm.InvalidOptionError, match="seconds"):
        clock.advance(-1)
    with pytest.raises(sm.InvalidOptionError, match="when"):
        clock.set(clock.now - 1)
    with pytest.raises(sm.InvalidOptionError, match="start"):
        FakeClock(datetime(2026, 1, 1))
    assert clock.set(datetime(2026, 1, 2, tzinfo=UTC)) == clock.now
