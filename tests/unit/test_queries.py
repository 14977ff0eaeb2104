"""The two backends' SQL catalogs and migrations stay in step (no database needed)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import squid_mesh
from squid_mesh.store.queries import Migration, load_migrations, load_queries

BACKENDS = ("sqlite", "postgres")
STORE = Path(squid_mesh.__file__).parent / "store"
PARAMS = {
    "sqlite": re.compile(r"(?<![:\w]):([a-z_][a-z0-9_]*)"),
    "postgres": re.compile(r"%\(([a-z_][a-z0-9_]*)\)s"),
}


# Postgres reads a run with its attempts and writes a whole command in one statement each, where
# SQLite (in-process, no round trips) uses one plain statement per table.
SQLITE_ONLY = {"load_attempts", "update_run", "insert_fact", "upsert_attempt", "next_claimable"}
# The Django store sets squid-mesh's planner settings per transaction on borrowed connections.
POSTGRES_ONLY = {"save_run", "next_claimable_run", "planner_for_squid_mesh", "planner_for_host"}
DIFFERENT_PARAMETERS = {"insert_run"}  # Postgres also takes the facts and attempts as JSON


def test_both_catalogs_define_the_same_names_but_the_declared_exceptions() -> None:
    sqlite, postgres = (set(load_queries(b)) for b in BACKENDS)
    assert sqlite - postgres == SQLITE_ONLY
    assert postgres - sqlite == POSTGRES_ONLY
    assert len(sqlite & postgres) >= 10, "most of the catalog is shared"


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_query_has_sql(backend: str) -> None:
    for name, sql in load_queries(backend).items():
        assert sql.strip(), f"{backend} query {name!r} is empty"
        assert not sql.rstrip().endswith(";"), f"{backend} query {name!r} keeps its ';'"
        assert "-- name:" not in sql


def test_both_catalogs_take_the_same_parameters() -> None:
    sqlite, postgres = (load_queries(b) for b in BACKENDS)
    for name in set(sqlite) & set(postgres) - DIFFERENT_PARAMETERS:
        mine = set(PARAMS["sqlite"].findall(sqlite[name]))
        theirs = set(PARAMS["postgres"].findall(postgres[name]))
        assert mine == theirs, f"query {name!r}: sqlite takes {mine}, postgres takes {theirs}"


QUERY_NAME = re.compile(r"[a-z_][a-z0-9_]*")


def _names_used_by_code() -> set[str]:
    """Query names the store code passes to ``query``/``command`` or looks up in ``_q``."""
    used: set[str] = set()
    for path in STORE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            args: list[ast.expr] = []
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                if node.func.attr in ("query", "command") and node.args:
                    args = [node.args[0]]
            elif (
                isinstance(node, ast.Subscript)
                and isinstance(node.value, ast.Attribute)
                and node.value.attr == "_q"
            ):
                args = [node.slice]
            for arg in args:
                used |= {
                    n.value
                    for n in ast.walk(arg)
                    if isinstance(n, ast.Constant)
                    and isinstance(n.value, str)
                    and QUERY_NAME.fullmatch(n.value)  # not raw SQL such as "COMMIT"
                }
    return used


def test_every_query_name_the_code_uses_is_in_both_catalogs() -> None:
    used = _names_used_by_code()
    assert {"load_run", "load_run_for_update", "insert_fact", "probe_due"} <= used
    catalogs = {b: set(load_queries(b)) for b in BACKENDS}
    missing = used - (catalogs["sqlite"] | catalogs["postgres"])
    assert not missing, f"no catalog defines {sorted(missing)}"
    assert used >= SQLITE_ONLY | POSTGRES_ONLY, "every backend-only query is used"


def test_both_backends_have_the_same_migration_versions() -> None:
    sqlite, postgres = ([m.version for m in load_migrations(b)] for b in BACKENDS)
    assert sqlite == postgres
    assert sqlite[0] == "0001_initial"
    assert sqlite == sorted(sqlite), "migrations apply in version order"
    assert all(re.fullmatch(r"\d{4}_[a-z0-9_]+", v) for v in sqlite)


_OBJECTS = re.compile(
    r"CREATE\s+(?:UNIQUE\s+)?(TABLE|INDEX)\s+(?:IF\s+NOT\s+EXISTS\s+)?(\w+)", re.IGNORECASE
)


def test_both_backends_create_the_same_tables_and_indexes() -> None:
    def objects(backend: str) -> set[tuple[str, str]]:
        return {
            (kind.upper(), name)
            for m in load_migrations(backend)
            for stmt in m.statements()
            for kind, name in _OBJECTS.findall(stmt)
        }

    sqlite = objects("sqlite")
    assert sqlite == objects("postgres")
    assert {("TABLE", "squid_mesh_runs"), ("TABLE", "squid_mesh_facts")} <= sqlite


@pytest.mark.parametrize("backend", BACKENDS)
def test_migration_statements_drop_comments(backend: str) -> None:
    for migration in load_migrations(backend):
        statements = migration.statements()
        assert statements, f"{backend} {migration.version} has statements"
        assert not any(
            line.lstrip().startswith("--") for s in statements for line in s.splitlines()
        )


def test_statements_split_on_semicolons() -> None:
    migration = Migration(
        "0009_x",
        "-- a comment; with a semicolon\nCREATE TABLE a (x INT);\n\nCREATE INDEX i ON a (x);\n",
    )
    assert migration.statements() == ["CREATE TABLE a (x INT)", "CREATE INDEX i ON a (x)"]
