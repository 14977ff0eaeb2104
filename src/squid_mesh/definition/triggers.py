"""Triggers: how runs of a workflow come to be started."""

from __future__ import annotations

from dataclasses import dataclass
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
    """A run started on a cron schedule (expression + IANA timezone).

    The expression and timezone are validated when the workflow is declared; the schedule is
    evaluated by the mesh's cron activation.

    Example:
        >>> Cron("0 6 * * *", timezone="Europe/Paris").name
        'cron'
    """

    expression: str
    timezone: str = "UTC"
    name: str = "cron"

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

    def describe(self) -> dict[str, str]:
        """A JSON-safe description."""
        return {
            "type": "cron",
            "name": self.name,
            "expression": self.expression,
            "timezone": self.timezone,
        }


Trigger = Manual | Cron
