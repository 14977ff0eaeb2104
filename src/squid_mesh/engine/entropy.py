"""Time and randomness, injected so that tests can drive the engine deterministically."""

from __future__ import annotations

import hashlib
import math
import random
import secrets
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Protocol

from squid_mesh.errors import InvalidOptionError

Clock = Callable[[], float]
"""Returns the current time as epoch seconds (``time.time`` by default)."""


class Entropy(Protocol):
    """The engine's source of run ids, claim tokens and jitter."""

    def run_id(self) -> str:
        """A new run id (a UUID string)."""

    def token(self) -> str:
        """A new secret claim token."""

    def fraction(self) -> float:
        """A number in [0, 1), for backoff jitter."""


class SystemEntropy:
    """Cryptographic tokens and time-ordered random UUIDs: the default."""

    def run_id(self) -> str:
        """A UUIDv7: 48 bits of Unix milliseconds, then random bits.

        Time-ordered ids keep inserts at the right edge of the run-id indexes (runs, attempts,
        journal), so writing a new run costs the same with a million finished runs behind it.
        """
        return uuid7(time.time_ns() // 1_000_000, secrets.randbits(74))

    def token(self) -> str:
        """32 random bytes, URL-safe."""
        return secrets.token_urlsafe(32)

    def fraction(self) -> float:
        """A uniformly random fraction."""
        return random.random()


class SeededEntropy:
    """Reproducible entropy for tests and simulations.

    Example:
        >>> SeededEntropy(7).run_id() == SeededEntropy(7).run_id()
        True
    """

    def __init__(self, seed: int) -> None:
        self._rng = random.Random(seed)

    def run_id(self) -> str:
        """A UUID drawn from the seeded generator."""
        return str(uuid.UUID(int=self._rng.getrandbits(128), version=4))

    def token(self) -> str:
        """A token drawn from the seeded generator."""
        return f"{self._rng.getrandbits(256):064x}"

    def fraction(self) -> float:
        """A fraction drawn from the seeded generator."""
        return self._rng.random()


def uuid7(unix_ms: int, rand74: int) -> str:
    """An RFC 9562 version-7 UUID string from a millisecond timestamp and 74 random bits.

    Example:
        >>> uuid7(0, 0)
        '00000000-0000-7000-8000-000000000000'
    """
    value = (unix_ms & (2**48 - 1)) << 80
    value |= 0x7 << 76 | ((rand74 >> 62) & 0xFFF) << 64
    value |= 0b10 << 62 | (rand74 & (2**62 - 1))
    return str(uuid.UUID(int=value))


def token_hash(token: str) -> str:
    """What the store keeps of a claim token: its SHA-256, never the token."""
    return hashlib.sha256(token.encode()).hexdigest()


def to_epoch(option: str, value: object) -> float:
    """Accept an aware ``datetime`` or epoch seconds for a ``now=`` option."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise InvalidOptionError(option, "a datetime must be timezone-aware")
        return value.timestamp()
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    raise InvalidOptionError(option, "expected an aware datetime or epoch seconds")


def to_seconds(option: str, value: object) -> float:
    """Accept seconds (a positive number) or a ``timedelta`` for a duration option."""
    if isinstance(value, timedelta):
        value = value.total_seconds()
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise InvalidOptionError(option, "expected a positive number of seconds or a timedelta")
    return float(value)


def monotonic() -> float:
    """Monotonic seconds, for measuring durations (never stored)."""
    return time.monotonic()
