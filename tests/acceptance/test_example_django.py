"""examples/django_app: its own test suite (Django's runner) on SQLite and on PostgreSQL.

The suite places orders over HTTP, drives runs with ``squid_mesh.testing.drain``, and kills a
real ``manage.py squid_mesh_worker`` inside a transactional step; here it runs as a host would run
it, in a process of its own, once per backend.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.databases import ADMIN_URL, _admin, require_postgres

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "django_app"
EXPECTED_TESTS = 8

pytestmark = pytest.mark.slow


def manage(*args: str, database_url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        check=False,
        cwd=EXAMPLE,
        env={**os.environ, "SHOP_DATABASE_URL": database_url},
        capture_output=True,
        text=True,
        timeout=240,
    )


def test_the_django_example_passes_its_tests(backend: str, tmp_path: Path) -> None:
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'shop.db'}"
    else:
        require_postgres()
        url = f"{ADMIN_URL.partition('?')[0].rsplit('/', 1)[0]}/sm_test_{os.getpid()}_django"
    try:
        check = manage("check", "--deploy", "--fail-level", "ERROR", database_url=url)
        assert check.returncode == 0, check.stderr
        result = manage("test", "orders", "--noinput", database_url=url)
        output = result.stdout + result.stderr
        assert result.returncode == 0, output
        ran = re.search(r"Ran (\d+) tests", output)
        assert ran is not None and int(ran.group(1)) == EXPECTED_TESTS, output
        assert "\nOK" in output, output
    finally:
        if backend == "postgres":
            with _admin() as conn:  # type: ignore[attr-defined]
                conn.execute(f'DROP DATABASE IF EXISTS "sm_test_{os.getpid()}_django_test"')


def test_migrate_creates_the_shop_and_squid_mesh_tables(backend: str, db_url: str) -> None:
    # db_url: a fresh database (already holding squid-mesh's tables on Postgres: migrate then
    # applies only the shop's and reports nothing for squid-mesh).
    if backend == "sqlite":
        Path(db_url.removeprefix("sqlite:///")).unlink()
    result = manage("migrate", "--noinput", database_url=db_url)
    assert result.returncode == 0, result.stderr
    assert "Applying orders.0001_initial... OK" in result.stdout
    if backend == "sqlite":
        assert "Applying squid-mesh 0001_initial... OK" in result.stdout
    again = manage("migrate", "--noinput", database_url=db_url)
    assert again.returncode == 0, again.stderr
    assert "Applying" not in again.stdout


def test_the_squid_mesh_command_works_on_the_django_database(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shop.db'}"
    assert manage("migrate", "--noinput", database_url=url).returncode == 0
    started = manage(
        "shell",
        "-c",
        "from squid_mesh.django import get_mesh; "
        "print(get_mesh().start('fulfil_order', {'order_id': 7}).id)",
        database_url=url,
    )
    assert started.returncode == 0, started.stderr
    run_id = started.stdout.strip().splitlines()[-1]  # after what the shell says of itself
    squid = [sys.executable, "-m", "squid_mesh.cli", "--db", "django://default"]
    squid += ["--app", "orders.workflows:fulfil_order"]
    env = {**os.environ, "SHOP_DATABASE_URL": url, "DJANGO_SETTINGS_MODULE": "shopsite.settings"}
    explained = subprocess.run(
        [*squid, "runs", "explain", run_id],
        check=False,
        cwd=EXAMPLE,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert explained.returncode == 0, explained.stderr
    assert "waiting_for_worker" in explained.stdout
    del env["DJANGO_SETTINGS_MODULE"]
    refused = subprocess.run(
        [*squid, "runs", "list"],
        check=False,
        cwd=EXAMPLE,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 1
    assert "Django settings are not configured (set DJANGO_SETTINGS_MODULE" in refused.stderr
