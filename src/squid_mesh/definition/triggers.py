"""Triggers: how runs of a workflow come to be started."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from squid_mesh.errors import DefinitionError


@dataclass(frozen=True)
class Manual:
    """A run started by the host calling ``mesh.start(...)``.

    Example:
        >>> Manual().name
        'manual'
    """

    name: str = "manual"

    def describe(self) -> dict[str, str]:
        """A JSON-safe description."""
        return {"type": "manual", "name": self.name}


@dataclass(frozen=True)
class Cron:
    """A run started on a cron schedule (expression + IANA timezone), by ``mesh.cron_tick()``.

    ``catch_up`` says what a tick does about slots missed while nothing ticked: ``"skip"`` starts
    only the latest one, ``"all"`` starts each of them, at most ``max_catch_up`` (the latest
    ones). ``payload`` is every scheduled run's payload.

    Example:
        >>> Cron("0 6 * * *", timezone="Europe/Paris").name
        'cron'
    """

    expression: str
    timezone: str = "UTC"
    name: str = "cron"
    catch_up: Literal["skip", "all"] = "skip"
    max_catch_up: int = 100
    payload: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from croniter import croniter

        if not isinstance(self.expression, str) or not croniter.is_valid(self.expression):
            raise DefinitionError(
                f"cron trigger {self.name!r}: invalid expression {self.expression!r}"
            )
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError, TypeError):
            raise DefinitionError(
                f"cron trigger {self.name!r}: unknown timezone {self.timezone!r}"
            ) from None
        if self.catch_up not in ("skip", "all"):
            raise DefinitionError(f"cron trigger {self.name!r}: catch_up must be 'skip' or 'all'")
        limit = self.max_catch_up
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 10_000:
            raise DefinitionError(
                f"cron trigger {self.name!r}: max_catch_up must be an integer from 1 to 10000"
            )
        try:
            json.dumps(self.payload, allow_nan=False)
        except (TypeError, ValueError):
            raise DefinitionError(
                f"cron trigger {self.name!r}: payload must be a JSON object"
            ) from None
        if not isinstance(self.payload, dict):
            raise DefinitionError(f"cron trigger {self.name!r}: payload must be a JSON object")

    def describe(self) -> dict[str, Any]:
        """A JSON-safe description."""
        return {
            "type": "cron",
            "name": self.name,
            "expression": self.expression,
            "timezone": self.timezone,
            "catch_up": self.catch_up,
            "max_catch_up": self.max_catch_up,
            "payload": self.payload,
        }


Trigger = Manual | Cron
