"""pytest plugin (entry point ``squid_mesh``): the ``clock`` and ``mesh`` fixtures.

Override ``squid_mesh_workflows`` to register the host's workflows; set
``SQUID_MESH_TEST_DATABASE_URL`` to a PostgreSQL URL to run on a fresh schema there instead of a
fresh SQLite file.

Example (a host's ``conftest.py`` and test)::

    @pytest.fixture
    def squid_mesh_workflows():
        return [checkout_workflow()]

    def test_checkout_retries(mesh, clock):
        run = mesh.start("checkout", {"order_id": "o-1"})
        drain(mesh, until=run.id, clock=clock, advance=True)
        assert mesh.inspect_run(run.id).status == "completed"
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence

import pytest

from squid_mesh.definition.workflow import Workflow
from squid_mesh.mesh import Mesh
from squid_mesh.testing import FakeClock, mesh_for_tests

DATABASE_SETTING = "SQUID_MESH_TEST_DATABASE_URL"


@pytest.fixture
def squid_mesh_clock() -> FakeClock:
    """The fake clock of the ``mesh`` fixture (at ``FakeClock.START``)."""
    return FakeClock()


@pytest.fixture
def clock(squid_mesh_clock: FakeClock) -> FakeClock:
    """The ``mesh`` fixture's :class:`~squid_mesh.testing.FakeClock`.

    A host whose own ``clock`` fixture means something else keeps it: ``mesh`` uses
    ``squid_mesh_clock``, which this is an alias of.
    """
    return squid_mesh_clock


@pytest.fixture
def squid_mesh_workflows() -> Sequence[Workflow]:
    """The workflows the ``mesh`` fixture registers: override it in the host's conftest."""
    return ()


@pytest.fixture
def mesh(squid_mesh_workflows: Sequence[Workflow], squid_mesh_clock: FakeClock) -> Iterator[Mesh]:
    """A migrated mesh on a fresh database, on ``squid_mesh_clock``'s time; closed afterwards."""
    with mesh_for_tests(
        squid_mesh_workflows, url=os.environ.get(DATABASE_SETTING) or None, clock=squid_mesh_clock
    ) as made:
        yield made
