"""The latency scenario through ``django://``: what running on Django's connections costs.

The same database as the plain store's scenario, reached through a Django alias configured
here (SQLite with ``transaction_mode: IMMEDIATE`` and WAL, or PostgreSQL with psycopg 3).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from benchmarks import scenarios


def _database(url: str) -> dict[str, Any]:
    if url.startswith("sqlite:///"):
        return {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": url.removeprefix("sqlite:///"),
            "OPTIONS": {
                "transaction_mode": "IMMEDIATE",
                "timeout": 30,
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL",
            },
        }
    parts = urlsplit(url)
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": parts.path.lstrip("/"),
        "USER": parts.username or "",
        "PASSWORD": parts.password or "",
        "HOST": parts.hostname or "",
        "PORT": str(parts.port or ""),
    }


def latency(url: str, runs: int) -> scenarios.Figures:
    """The latency scenario on ``url``'s database, through Django's ``default`` alias."""
    import django
    from django.conf import settings
    from django.db import connections

    if settings.configured:  # the other store's scenario ran first: point the alias here
        connections["default"].close()
        del connections["default"]
        filled = connections.configure_settings({"default": _database(url)})
        connections.settings["default"] = filled["default"]
    else:
        settings.configure(DATABASES={"default": _database(url)}, USE_TZ=True)
        django.setup()
    try:
        return scenarios.latency(
            "django://default", runs, stats_url=url, settle=connections.close_all
        )
    finally:
        connections.close_all()
