"""The Django app: ``manage.py migrate`` applies squid-mesh's migrations as well."""

from __future__ import annotations

import sys
from typing import Any

from django.apps import AppConfig
from django.core.signals import setting_changed
from django.db.models.signals import post_migrate


class SquidMeshConfig(AppConfig):  # type: ignore[misc]  # Django has no type hints
    """``squid_mesh.django`` in ``INSTALLED_APPS``."""

    name = "squid_mesh.django"
    label = "squid_mesh"
    verbose_name = "squid-mesh"

    def ready(self) -> None:
        """Hook squid-mesh's own migrations onto Django's ``migrate``."""
        post_migrate.connect(_migrate, sender=self, dispatch_uid="squid_mesh.migrate")
        setting_changed.connect(_setting_changed, dispatch_uid="squid_mesh.setting_changed")


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
