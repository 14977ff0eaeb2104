"""The fake clock of the project's tests: the one squid_mesh.testing gives host applications."""

from __future__ import annotations

from squid_mesh.testing import FakeClock

START = FakeClock.START

__all__ = ["START", "FakeClock"]
