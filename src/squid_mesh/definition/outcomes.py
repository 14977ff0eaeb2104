"""What a step may raise to steer its own outcome."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

_CODE_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_")


class Retry(Exception):
    """Raised by a step to ask for another attempt, within its retry policy's ``max_attempts``.

    ``after`` (seconds) overrides the policy's backoff for this retry.

    Example:
        >>> def charge(input, ctx):
        ...     raise Retry("gateway busy", after=2.5)
    """

    def __init__(self, reason: str = "retry requested", *, after: float | None = None) -> None:
        if after is not None and (
            isinstance(after, bool)
            or not isinstance(after, int | float)
            or not math.isfinite(after)
            or after < 0
        ):
            raise ValueError(f"Retry after must be a number of seconds >= 0, got {after!r}")
        super().__init__(reason)
        self.reason = reason
        self.after = None if after is None else float(after)


class Fail(Exception):
    """Raised by a step for a failure that no retry can fix: the step's error route is taken at once.

    ``code`` is a short machine-readable label (lower case, digits, underscores); ``details`` is a
    JSON-safe mapping kept with the error (secret-looking keys are redacted).

    Example:
        >>> def charge(input, ctx):
        ...     raise Fail("card declined", code="card_declined")
    """

    def __init__(
        self,
        reason: str = "step failed",
        *,
        code: str = "step_failed",
        details: Mapping[str, Any] | None = None,
    ) -> None:
        if not code or len(code) > 64 or not set(code) <= _CODE_CHARS or not code[0].isalpha():
            raise ValueError(
                f"Fail code must be 1-64 chars of [a-z0-9_] starting with a letter, got {code!r}"
            )
        super().__init__(reason)
        self.reason = reason
        self.code = code
        self.details = dict(details or {})
