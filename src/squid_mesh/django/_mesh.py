"""The process's mesh, built from ``settings.SQUID_MESH`` on first use."""

from __future__ import annotations

import threading

from squid_mesh.mesh import Mesh, connect

_lock = threading.Lock()
_built: dict[str, Mesh] = {}


def get_mesh() -> Mesh:
    """The mesh on ``SQUID_MESH['DATABASE']`` with ``SQUID_MESH['WORKFLOWS']`` (one per process).

    Safe to call from any thread: each thread's statements go through its own Django
    connection.

    Example:
        >>> from squid_mesh.django import get_mesh
        >>> with transaction.atomic():  # doctest: +SKIP
        ...     order = Order.objects.create(sku="book")
        ...     get_mesh().start("fulfil_order", {"order_id": order.pk})
    """
    with _lock:
        if "mesh" not in _built:
            from squid_mesh.django._settings import load

            config = load()
            _built["mesh"] = connect(
                f"django://{config.database}", workflows=config.workflows, **config.options
            )
        return _built["mesh"]


def forget_mesh() -> None:
    """Drop the process's mesh: the next :func:`get_mesh` reads the settings again."""
    with _lock:
        mesh = _built.pop("mesh", None)
    if mesh is not None:
        mesh.close()
