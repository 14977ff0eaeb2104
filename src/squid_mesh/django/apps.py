"""The Django app: ``manage.py migrate`` applies squid-mesh's migrations as well."""

from __future__ import annotations

from typing import Any

from django.apps import AppConfig
from django.db.models.signals import post_migrate


class SquidMeshConfig(AppConfig):  # type: ignore[misc]  # Django has no type hints
    """``squid_mesh.django`` in ``INSTALLED_APPS``."""

    name = "squid_mesh.django"
    label = "squid_mesh"
    verbose_name = "squid-mesh"

    def ready(self) -> None:
        """Hook squid-mesh's own migrations onto Django's ``migrate``."""
        post_migrate.connect(_migrate, sender=self, dispatch_uid="squid_mesh.migrate")


def _migrate(sender: AppConfig, using: str, verbosity: int = 1, **_: Any) -> None:
    # squid-mesh's schema is plain .sql files of its own (store/*/migrations), versioned in its
    # own table: Django's migrate applies them to the configured database, and only there.
    from squid_mesh.django._settings import load
    from squid_mesh.store import open_store

    if using != load().database:
        return
    store = open_store(f"django://{using}")
    for version in store.migrate():
        if verbosity >= 1:
            print(f"  Applying squid-mesh {version}... OK")
