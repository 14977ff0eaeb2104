"""The Django app: ``manage.py migrate`` applies squid-mesh's migrations as well."""

from __future__ import annotations

import sys
from typing import Any

from django.apps import AppConfig
from django.core import checks
from django.core.signals import setting_changed
from django.db.models.signals import post_migrate


class SquidMeshConfig(AppConfig):  # type: ignore[misc]  # Django has no type hints
    """``squid_mesh.django`` in ``INSTALLED_APPS``."""

    name = "squid_mesh.django"
    label = "squid_mesh"
    verbose_name = "squid-mesh"

    def ready(self) -> None:
        """Hook squid-mesh's migrations onto ``migrate`` and its settings onto ``check``."""
        post_migrate.connect(_migrate, sender=self, dispatch_uid="squid_mesh.migrate")
        setting_changed.connect(_setting_changed, dispatch_uid="squid_mesh.setting_changed")
        checks.register(_check_settings, "squid_mesh")


def _check_settings(app_configs: Any = None, **_: Any) -> list[checks.CheckMessage]:
    # ``manage.py check`` (and runserver, migrate, the test runner) reports a bad SQUID_MESH or
    # an alias squid-mesh cannot use before the first get_mesh() meets it in a request. Nothing
    # here connects to the database.
    from django.core.exceptions import ImproperlyConfigured

    from squid_mesh.django._settings import load
    from squid_mesh.errors import SquidMeshError
    from squid_mesh.store.django_db import DjangoStore

    try:
        config = load()
    except ImproperlyConfigured as exc:
        return [checks.Error(str(exc), id="squid_mesh.E001")]
    try:
        DjangoStore(config.database)
    except SquidMeshError as exc:
        return [
            checks.Error(
                exc.message,
                hint=f"SQUID_MESH['DATABASE'] is {config.database!r}",
                id="squid_mesh.E002",
            )
        ]
    return []


def _setting_changed(setting: str, **_: Any) -> None:
    # override_settings(SQUID_MESH=...) in a host's tests: the mesh follows the new setting.
    if setting == "SQUID_MESH":
        from squid_mesh.django._mesh import forget_mesh

        forget_mesh()


def _migrate(
    sender: AppConfig, using: str, verbosity: int = 1, stdout: Any = None, **_: Any
) -> None:
    # squid-mesh's schema is plain .sql files of its own (store/*/migrations), versioned in its
    # own table: Django's migrate applies them to the configured database, and only there.
    from squid_mesh.django._settings import load
    from squid_mesh.store import open_store

    if using != load().database:
        return
    store = open_store(f"django://{using}")
    out = stdout or sys.stdout
    for version in store.migrate():
        if verbosity >= 1:
            out.write(f"  Applying squid-mesh {version}... OK\n")
