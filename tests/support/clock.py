"""A clock that tests move by hand."""

from __future__ import annotations

START = 1_750_000_000.0


class FakeClock:
    """Callable epoch-seconds clock; ``advance`` moves it forward."""

    def __init__(self, start: float = START) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now
