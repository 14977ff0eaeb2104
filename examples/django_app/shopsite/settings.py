"""The shop's settings. The database comes from SHOP_DATABASE_URL (a SQLite file by default).

squid-mesh keeps its runs in the same database as the shop's own tables (``SQUID_MESH``), so a
transactional step's ORM writes commit together with the step's completion.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

BASE_DIR = Path(__file__).resolve().parent.parent


def database(url: str) -> dict[str, Any]:
    """A DATABASES entry for ``sqlite:///path.db`` or ``postgresql://user:pw@host:port/name``."""
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        path = path if path.is_absolute() else BASE_DIR / path
        return {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": path,
            "OPTIONS": {
                # squid-mesh needs write transactions that take the lock at BEGIN.
                "transaction_mode": "IMMEDIATE",
                # Worker processes and the web server share the file: wait for the lock.
                "timeout": 30,
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL",
            },
            # The tests run a real worker process against the test database: a file, not memory.
            "TEST": {"NAME": path.with_name(f"test_{path.name}")},
        }
    if url.startswith(("postgresql://", "postgres://")):
        parts = urlsplit(url)
        name = parts.path.lstrip("/")
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": name,
            "USER": unquote(parts.username or ""),
            "PASSWORD": unquote(parts.password or ""),
            "HOST": parts.hostname or "",
            "PORT": str(parts.port or ""),
            "TEST": {"NAME": f"{name}_test"},
        }
    raise ValueError("SHOP_DATABASE_URL: expected sqlite:///path.db or postgresql://...")


SECRET_KEY = os.environ.get("SHOP_SECRET_KEY", "django-insecure-example-only")
DEBUG = os.environ.get("SHOP_DEBUG") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]
INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "squid_mesh.django",
    "orders",
]
MIDDLEWARE = ["django.middleware.common.CommonMiddleware"]
ROOT_URLCONF = "shopsite.urls"
DATABASES = {"default": database(os.environ.get("SHOP_DATABASE_URL", "sqlite:///shop.db"))}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True

SQUID_MESH = {
    "DATABASE": "default",
    "WORKFLOWS": ["orders.workflows.fulfil_order"],
}

# The steps log what they did (the crash test waits for "reserved" before it kills a worker).
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"orders": {"handlers": ["console"], "level": "INFO"}},
}
