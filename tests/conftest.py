"""Shared fixtures. Integration tests take ``backend`` and run once on SQLite and once on Postgres."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

import squid_mesh as sm
from tests.support.clock import FakeClock
from tests.support.databases import database, drop_template

BACKENDS = ("sqlite", "postgres")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    drop_template()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def db_url(backend: str, tmp_path: Path) -> Iterator[str]:
    """A fresh, migrated database of the current backend."""
    with database(backend, tmp_path) as url:
        yield url


@pytest.fixture
def machine_url(backend: str, tmp_path: Path) -> Iterator[str]:
    """For a state machine: one Postgres database per test (emptied per example), or nothing."""
    if backend == "postgres":
        with database("postgres", tmp_path) as url:
            yield url
    else:
        yield ""


MeshFactory = Callable[..., sm.Mesh]


@pytest.fixture
def make_mesh(db_url: str, clock: FakeClock) -> Iterator[MeshFactory]:
    """``make_mesh([wf, ...])`` connects to the test database with the fake clock and seeded entropy.

    Every mesh made here is closed at teardown. Pass ``clock=None`` for the real clock.
    """
    made: list[sm.Mesh] = []

    def make(
        workflows: Sequence[sm.Workflow] = (),
        *,
        clock: object = clock,
        seed: int = 1,
        strict_versions: bool = False,
        **options: object,
    ) -> sm.Mesh:
        mesh = sm.connect(
            db_url,
            workflows=workflows,
            clock=clock,  # type: ignore[arg-type]
            entropy=sm.SeededEntropy(seed + len(made)),
            strict_versions=strict_versions,
            **options,  # type: ignore[arg-type]
        )
        made.append(mesh)
        return mesh

    yield make
    for mesh in made:
        mesh.close()
