"""The ``squid-mesh`` command: operate runs from a shell.

Exit codes: 0 done, 1 the command was refused (one line on stderr says why), 2 usage error.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import math
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from enum import Enum
from typing import Any

import click

import squid_mesh as sm

_AGE = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _plain(value: Any) -> Any:
    """JSON-safe form of the read model's dataclasses."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {k: _plain(v) for k, v in dataclasses.asdict(value).items()}
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    return value


def _emit(value: Any) -> None:
    click.echo(json.dumps(_plain(value), indent=2, sort_keys=True))


def _workflows(app: str | None) -> list[sm.Workflow]:
    if not app:
        return []
    module_name, _, attr = app.partition(":")
    if not module_name or not attr:
        raise click.BadParameter("expected module:attribute", param_hint="--app")
    # As `python -m` does: the host's modules are found from the directory it runs in.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        found = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise click.BadParameter(f"cannot load {app!r}: {exc}", param_hint="--app") from None
    workflows = found() if callable(found) and not isinstance(found, sm.Workflow) else found
    if isinstance(workflows, sm.Workflow):
        return [workflows]
    return list(workflows)


@contextmanager
def _mesh(ctx: click.Context) -> Iterator[sm.Mesh]:
    db, app = _target(ctx)
    with sm.connect(db, workflows=_workflows(app)) as mesh:
        yield mesh


def _target(ctx: click.Context) -> tuple[str, str | None]:
    """The database URL and the app, from the group's options or the command's own."""
    db, app = ctx.obj["db"], ctx.obj["app"]
    if not db:
        raise click.UsageError("Missing option '--db' (or SQUID_MESH_DATABASE_URL).")
    if db.startswith("django://") and app:
        # The host's workflows import its models: Django must be set up before --app loads.
        from squid_mesh.store.django_db import setup_django

        if os.getcwd() not in sys.path:
            sys.path.insert(0, os.getcwd())
        setup_django(db)
    return db, app


def _need_app(ctx: click.Context, command: str) -> None:
    # Without the definitions, every unfinished run would look parked on a missing version.
    if not ctx.obj["app"]:
        raise click.UsageError(f"{command} needs --app module:attribute (the workflows)")


def _refusals(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn squid-mesh refusals into one line on stderr and exit code 1."""

    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except sm.SquidMeshError as exc:
            click.echo(f"error: {exc.message}", err=True)
            sys.exit(1)

    run.__name__ = fn.__name__
    run.__doc__ = fn.__doc__
    return run


@click.group()
@click.option("--db", envvar="SQUID_MESH_DATABASE_URL", help="Database URL.")
@click.option("--app", default=None, help="module:attribute holding the host's workflows.")
@click.pass_context
def cli(ctx: click.Context, db: str, app: str | None) -> None:
    """Operate squid-mesh runs in a SQLite or PostgreSQL database."""
    ctx.obj = {"db": db, "app": app}


@cli.command()
@click.pass_context
@_refusals
def migrate(ctx: click.Context) -> None:
    """Create or upgrade squid-mesh's tables."""
    with _mesh(ctx) as mesh:
        mesh.migrate()
    click.echo("migrated")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
@_refusals
def verify(ctx: click.Context, as_json: bool) -> None:
    """Refold every journal and compare it with the projections (exit 1 when they differ)."""
    with _mesh(ctx) as mesh:
        problems = mesh.verify()
    if as_json:
        _emit(problems)
    else:
        for p in problems:
            click.echo(f"{p.run_id} {p.field}: journal {p.journal!r} projection {p.projection!r}")
        click.echo(f"{len(problems)} problem(s)")
    if problems:
        sys.exit(1)


@cli.command()
@click.option("--older-than", required=True, help="An age such as 30d, 12h, 90m.")
@click.pass_context
@_refusals
def purge(ctx: click.Context, older_than: str) -> None:
    """Delete finished runs not changed for the given age."""
    match = _AGE.match(older_than)
    if not match:
        raise click.BadParameter("expected a number and s, m, h or d", param_hint="--older-than")
    age = timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])
    with _mesh(ctx) as mesh:
        click.echo(f"purged {mesh.purge(older_than=age)} run(s)")


@cli.command()
@click.option(
    "--queue", "queues", multiple=True, default=("default",), help="A queue to serve (repeatable)."
)
@click.option("--concurrency", type=click.IntRange(1, 1000), default=1, help="Steps at once.")
@click.option("--lease", type=float, default=30.0, help="Seconds a claim holds between heartbeats.")
@click.option("--grace-period", type=float, default=30.0, help="Seconds steps get at SIGTERM.")
@click.option("--poll-interval", type=float, default=1.0, help="Longest idle sleep, in seconds.")
@click.option("--name", default=None, help="Owner id prefix of this worker's claims.")
@click.option("--metrics-port", type=int, default=None, help="Serve /metrics on this port.")
@click.option(
    "--metrics-host", default="127.0.0.1", help="Address for /metrics (0.0.0.0: all interfaces)."
)
@click.option("--max-idle", type=float, default=None, help="Stop after this many idle seconds.")
@click.option("--app", "app", default=None, help="module:attribute holding the host's workflows.")
@click.option("--db", "db", default=None, help="Database URL.")
@click.pass_context
@_refusals
def worker(
    ctx: click.Context,
    app: str | None,
    db: str | None,
    queues: tuple[str, ...],
    concurrency: int,
    lease: float,
    grace_period: float,
    poll_interval: float,
    name: str | None,
    metrics_port: int | None,
    metrics_host: str,
    max_idle: float | None,
) -> None:
    """Run steps of the queues until SIGINT/SIGTERM (or idle for --max-idle seconds)."""
    # --app and --db may come after the command name too (`squid-mesh worker --app m:reg`).
    ctx.obj = {"db": db or ctx.obj["db"], "app": app or ctx.obj["app"]}
    db, app = _target(ctx)
    # Each lane holds a connection while it records; the dispatcher and heartbeats need theirs.
    with sm.connect(db, workflows=_workflows(app), max_connections=concurrency + 3) as mesh:
        w = sm.Worker(
            mesh,
            queues=list(queues),
            concurrency=concurrency,
            lease=lease,
            grace_period=grace_period,
            poll_interval=poll_interval,
            name=name,
        )
        server = (
            None
            if metrics_port is None
            else sm.serve_metrics(mesh, port=metrics_port, host=metrics_host)
        )
        try:
            if max_idle is None:
                w.run()
            else:
                _run_until_idle(w, max_idle)
        finally:
            if server is not None:
                server.close()
    click.echo(f"executed {w.executed} step(s)")


@cli.command()
@click.option("--host", default="127.0.0.1", help="Address to listen on (0.0.0.0: all interfaces).")
@click.option("--port", type=click.IntRange(1, 65535), default=8080, help="Port to listen on.")
@click.option(
    "--token",
    envvar="SQUID_MESH_WEB_TOKEN",
    default=None,
    help="Shared sign-in token, at least 16 characters (better: the SQUID_MESH_WEB_TOKEN variable).",
)
@click.option("--read-only", is_flag=True, help="Refuse every action; hide the buttons.")
@click.option("--app", "app", default=None, help="module:attribute holding the host's workflows.")
@click.option("--db", "db", default=None, help="Database URL.")
@click.pass_context
@_refusals
def web(
    ctx: click.Context,
    app: str | None,
    db: str | None,
    host: str,
    port: int,
    token: str | None,
    read_only: bool,
) -> None:
    """Serve the operator console (needs squid-mesh[web]) until SIGINT/SIGTERM."""
    ctx.obj = {"db": db or ctx.obj["db"], "app": app or ctx.obj["app"]}
    db, app = _target(ctx)
    _need_app(ctx, "web")
    if token is None:
        raise click.UsageError("set SQUID_MESH_WEB_TOKEN (or --token): the console's sign-in token")
    try:
        import uvicorn

        import squid_mesh.web
    except ImportError as exc:
        raise click.UsageError(
            f"the console needs the web extra: pip install 'squid-mesh[web]' ({exc.name} missing)"
        ) from None
    with sm.connect(db, workflows=_workflows(app)) as mesh:
        console = squid_mesh.web.app(mesh, token=token, read_only=read_only)
        click.echo(f"console on http://{host}:{port}/ (sign in with the token)", err=True)
        # uvicorn re-raises the signal it stopped on once it has shut down; with these handlers
        # in place that is a no-op, and a SIGTERM ends the command cleanly with status 0.
        for sig in _SIGNALS:
            signal.signal(sig, lambda *_: None)
        uvicorn.run(console, host=host, port=port, log_level="warning", lifespan="off")


def _run_until_idle(w: sm.Worker, max_idle: float) -> None:
    """Run the worker until it has had nothing to do for ``max_idle`` seconds (or a signal)."""
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in _SIGNALS}
    w.start()
    try:
        seen, idle_since = -1, time.monotonic()
        while not stop.wait(0.05):
            if w.executed != seen or w.in_flight:
                seen, idle_since = w.executed, time.monotonic()
            elif time.monotonic() - idle_since >= max_idle:
                break
    finally:
        w.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@cli.group()
def runs() -> None:
    """List, inspect and command runs."""


@runs.command("list")
@click.option("--workflow")
@click.option("--status")
@click.option("--queue")
@click.option("--limit", type=int, default=50)
@click.option("--cursor")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
@_refusals
def list_runs(
    ctx: click.Context,
    workflow: str | None,
    status: str | None,
    queue: str | None,
    limit: int,
    cursor: str | None,
    as_json: bool,
) -> None:
    """Runs newest first."""
    with _mesh(ctx) as mesh:
        page = mesh.list_runs(
            workflow=workflow, status=status, queue=queue, limit=limit, cursor=cursor
        )
    if as_json:
        _emit({"runs": page.runs, "next_cursor": page.next_cursor})
        return
    for r in page:
        click.echo(
            f"{r.id}  {r.status.value:<9}  {r.workflow}@{r.version}  {r.created_at:%Y-%m-%d %H:%M:%S}"
        )
    if page.next_cursor:
        click.echo(f"next page: --cursor {page.next_cursor}")


@runs.command("show")
@click.argument("run_id")
@click.option("--history", is_flag=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
@_refusals
def show(ctx: click.Context, run_id: str, history: bool, as_json: bool) -> None:
    """A run's state, steps and attempts."""
    with _mesh(ctx) as mesh:
        snap = mesh.inspect_run(run_id, history=history)
    if as_json:
        _emit(snap)
        return
    click.echo(f"{snap.id}  {snap.workflow}@{snap.version}  {snap.status.value}")
    for step in snap.steps:
        click.echo(
            f"  {step.name} (visit {step.visit}): {step.status.value}, {len(step.attempts)} attempt(s)"
        )
    for entry in snap.history or ():
        click.echo(f"  {entry.seq:>3} {entry.kind}")


@runs.command("wait")
@click.argument("run_id")
@click.option(
    "--timeout", type=click.FloatRange(min=0, min_open=True), default=None, help="Seconds at most."
)
@click.option(
    "--until",
    "until",
    multiple=True,
    type=click.Choice([s.value for s in sm.RunStatus]),
    help="A status to wait for (repeatable; default: completed, failed, cancelled).",
)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
@_refusals
def wait(
    ctx: click.Context, run_id: str, timeout: float | None, until: tuple[str, ...], as_json: bool
) -> None:
    """Wait until the run finishes (or reaches --until); exit 1 unless it completed (or got there)."""
    if timeout is not None and not math.isfinite(timeout):
        raise click.BadParameter("expected a finite number of seconds", param_hint="'--timeout'")
    with _mesh(ctx) as mesh:
        snap = mesh.wait_run(run_id, timeout=timeout, until=until or None)
    if as_json:
        _emit(snap)
    else:
        click.echo(f"{snap.id}  {snap.status.value}")
    # A script goes on after `runs wait` only when the run got where it should: completed, or a
    # status it named (a run that failed while the script waited for "paused" did not).
    if snap.status not in (until or (sm.RunStatus.COMPLETED,)):
        sys.exit(1)


@runs.command("explain")
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
@_refusals
def explain(ctx: click.Context, run_id: str, as_json: bool) -> None:
    """Why the run is where it is, and what to do next (needs --app)."""
    _need_app(ctx, "runs explain")
    with _mesh(ctx) as mesh:
        why = mesh.explain_run(run_id)
    if as_json:
        _emit(why)
        return
    click.echo(f"{why.reason.value}: {why.summary}")
    click.echo(f"next: {', '.join(why.next_actions)}")


@runs.command("graph")
@click.argument("run_id")
@click.option("--format", "fmt", type=click.Choice(["dot", "mermaid", "json"]), default="dot")
@click.pass_context
@_refusals
def graph(ctx: click.Context, run_id: str, fmt: str) -> None:
    """The run's graph as Graphviz DOT, Mermaid or JSON (needs --app)."""
    _need_app(ctx, "runs graph")
    with _mesh(ctx) as mesh:
        drawn = mesh.run_graph(run_id)
    if fmt == "json":
        _emit(drawn)
    else:
        click.echo(drawn.to_dot() if fmt == "dot" else drawn.to_mermaid())


def _metadata(raw: str | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        raise click.BadParameter("expected a JSON object", param_hint="--metadata") from None
    if not isinstance(value, dict):
        raise click.BadParameter("expected a JSON object", param_hint="--metadata")
    return value


def _command(name: str) -> None:
    @runs.command(name)
    @click.argument("run_id")
    @click.option("--actor")
    @click.option("--comment")
    @click.option("--metadata", help="A JSON object.")
    @click.option("--idempotency-key")
    @click.option("--allow-irreversible", is_flag=True, hidden=name != "replay")
    @click.option("--json", "as_json", is_flag=True)
    @click.pass_context
    @_refusals
    def command(
        ctx: click.Context,
        run_id: str,
        actor: str | None,
        comment: str | None,
        metadata: str | None,
        idempotency_key: str | None,
        allow_irreversible: bool,
        as_json: bool,
    ) -> None:
        details = _metadata(metadata)
        with _mesh(ctx) as mesh:
            if name == "cancel":
                snap = mesh.cancel(
                    run_id,
                    reason=comment,
                    actor=actor,
                    metadata=details,
                    idempotency_key=idempotency_key,
                )
            elif name == "replay":
                snap = mesh.replay(
                    run_id,
                    allow_irreversible=allow_irreversible,
                    actor=actor,
                    metadata=details,
                    idempotency_key=idempotency_key,
                )
            else:
                resolve = getattr(mesh, name)
                snap = resolve(
                    run_id,
                    actor=actor,
                    comment=comment,
                    metadata=details,
                    idempotency_key=idempotency_key,
                )
        if as_json:
            _emit(snap)
        else:
            click.echo(f"{snap.id}  {snap.status.value}")

    command.__doc__ = f"{name.capitalize()} a run."


for _name in ("cancel", "resume", "approve", "reject", "replay"):
    _command(_name)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``squid-mesh`` command: every error is one line on stderr."""
    try:
        code = cli.main(args=argv, prog_name="squid-mesh", standalone_mode=False)
    except click.UsageError as exc:
        click.echo(f"error: {exc.format_message()}", err=True)
        sys.exit(2)
    except click.ClickException as exc:
        click.echo(f"error: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code)
    except click.Abort:
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
