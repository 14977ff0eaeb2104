"""Django integration: squid-mesh on a Django database, configured in ``settings.py``.

Add the app and say where the runs live and which workflows this project has::

    INSTALLED_APPS = [..., "squid_mesh.django"]
    SQUID_MESH = {
        "DATABASE": "default",                      # a DATABASES alias (SQLite or PostgreSQL)
        "WORKFLOWS": ["orders.workflows.fulfil"],   # dotted paths to sm.Workflow objects
        "OPTIONS": {"strict_versions": True},       # more keyword arguments of sm.connect
    }

Then ``manage.py migrate`` creates squid-mesh's tables in that database too,
``manage.py squid_mesh_worker`` runs a worker, and :func:`get_mesh` is the mesh to start runs
from. The store runs on Django's own connections (see ``django://`` in :func:`squid_mesh.connect`):
a ``mesh.start()`` inside ``transaction.atomic()`` commits with the host's writes, and a
``transactional=True`` step's ORM writes commit with the step's completion.
"""

from __future__ import annotations

from squid_mesh.django._mesh import get_mesh

__all__ = ["get_mesh"]
