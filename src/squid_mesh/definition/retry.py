"""Retry policies and backoff, as typed values (no order-sensitive option lists)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from squid_mesh.errors import DefinitionError


def _check_seconds(option: str, value: object, *, allow_zero: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise DefinitionError(f"{option} must be a number of seconds, got {type(value).__name__}")
    if value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise DefinitionError(f"{option} must be {bound} seconds, got {value}")
    return float(value)


@dataclass(frozen=True)
class Backoff:
    """How long to wait before the next attempt of a failed step.

    Build one with :meth:`fixed` or :meth:`exponential`. ``jitter`` is the fraction (0..1) of the delay
    that may be taken off at random, so that many failing runs do not retry in lock-step.

    Example:
        >>> Backoff.exponential(min=0.5, max=10.0).delay(3, 0.0)
        2.0
    """

    kind: Literal["fixed", "exponential"]
    min: float
    max: float
    jitter: float = 0.0

    @classmethod
    def fixed(cls, delay: float, *, jitter: float = 0.0) -> Backoff:
        """The same delay after every failure.

        Example:
            >>> Backoff.fixed(2.0).delay(5, 0.0)
            2.0
        """
        seconds = _check_seconds("Backoff.fixed delay", delay, allow_zero=True)
        return cls("fixed", seconds, seconds, _check_jitter(jitter))

    @classmethod
    def exponential(cls, *, min: float, max: float, jitter: float = 0.0) -> Backoff:
        """``min * 2**(n-1)`` after the n-th failed attempt, capped at ``max``.

        Example:
            >>> Backoff.exponential(min=0.1, max=5.0).delay(1, 0.0)
            0.1
        """
        low = _check_seconds("Backoff.exponential min", min, allow_zero=False)
        high = _check_seconds("Backoff.exponential max", max, allow_zero=False)
        if high < low:
            raise DefinitionError(f"Backoff.exponential max ({high}) must be >= min ({low})")
        return cls("exponential", low, high, _check_jitter(jitter))

    def delay(self, failed_attempt: int, rand: float) -> float:
        """Seconds to wait after attempt number ``failed_attempt`` failed.

        ``rand`` is a number in [0, 1) from the engine's random source, so tests can fix it.
        """
        if self.kind == "fixed":
            base = self.min
        else:
            base = (
                self.max
                if failed_attempt > 64
                else min(self.min * 2 ** (failed_attempt - 1), self.max)
            )
        return base * (1.0 - self.jitter * rand)

    def describe(self) -> dict[str, object]:
        """A JSON-safe description, used by the fingerprint."""
        return {"kind": self.kind, "min": self.min, "max": self.max, "jitter": self.jitter}


def _check_jitter(jitter: object) -> float:
    if isinstance(jitter, bool) or not isinstance(jitter, int | float) or not 0 <= jitter <= 1:
        raise DefinitionError(f"Backoff jitter must be a number between 0 and 1, got {jitter!r}")
    return float(jitter)


@dataclass(frozen=True)
class RetryPolicy:
    """How many attempts a step gets in all (the first included) and how long to wait between them.

    Example:
        >>> policy = RetryPolicy(max_attempts=3, backoff=Backoff.fixed(1.0))
        >>> policy.next_delay(failed_attempt=1, rand=0.0)
        1.0
        >>> policy.next_delay(failed_attempt=3, rand=0.0) is None
        True
    """

    max_attempts: int = 1
    backoff: Backoff = Backoff("fixed", 0.0, 0.0)

    def __post_init__(self) -> None:
        if (
            isinstance(self.max_attempts, bool)
            or not isinstance(self.max_attempts, int)
            or self.max_attempts < 1
        ):
            raise DefinitionError(
                f"RetryPolicy max_attempts must be an integer >= 1, got {self.max_attempts!r}"
            )
        if not isinstance(self.backoff, Backoff):
            raise DefinitionError(
                "RetryPolicy backoff must be a Backoff (Backoff.fixed(...) or "
                f"Backoff.exponential(...)), got {type(self.backoff).__name__}"
            )

    def next_delay(
        self, failed_attempt: int, rand: float, override: float | None = None
    ) -> float | None:
        """Seconds until the next attempt, or ``None`` when no attempt is left."""
        if failed_attempt >= self.max_attempts:
            return None
        if override is not None:
            return override
        return self.backoff.delay(failed_attempt, rand)

    def describe(self) -> dict[str, object]:
        """A JSON-safe description, used by the fingerprint."""
        return {"max_attempts": self.max_attempts, "backoff": self.backoff.describe()}
