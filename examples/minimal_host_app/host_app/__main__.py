"""python -m host_app smoke | resilience | soak [--db URL]: the host's three questions."""

from __future__ import annotations

import logging
import sys
import tempfile
from pathlib import Path

import click

DEFAULT_DB = "sqlite:///{}/host_app.db"


def _url(db: str | None) -> str:
    if db:
        return db
    folder = Path(tempfile.mkdtemp(prefix="host-app-"))
    return DEFAULT_DB.format(folder)


@click.group()
@click.option(
    "-v", "--verbose", is_flag=True, help="Show squid-mesh's warnings (retries, failures)."
)
def main(verbose: bool) -> None:
    """A minimal host application on squid-mesh, and the checks that verify it."""
    # Expected failures (declined cards, refused postings) are part of the checks: quiet by default.
    logging.basicConfig(
        level=logging.WARNING if verbose else logging.CRITICAL,
        format="%(levelname)s %(name)s: %(message)s",
    )


@main.command()
@click.option("--db", default=None, help="Database URL (a fresh SQLite file by default).")
def smoke(db: str | None) -> None:
    """Does the basic embedded path work? Runs every workflow to its expected end."""
    from host_app.smoke import run_smoke

    sys.exit(0 if run_smoke(_url(db)) else 1)


@main.command()
@click.option("--db", default=None, help="Database URL (a fresh SQLite file by default).")
def resilience(db: str | None) -> None:
    """Do runs survive worker restarts? Kills worker processes (SIGKILL) in six run states."""
    from host_app.resilience import run_resilience

    sys.exit(0 if run_resilience(_url(db)) else 1)


@main.command()
@click.option("--db", default=None, help="Database URL (a fresh SQLite file by default).")
@click.option("--runs", type=click.IntRange(10, 1_000_000), default=2000, help="Runs to start.")
@click.option("--workers", type=click.IntRange(1, 64), default=2, help="Worker processes.")
@click.option("--duration", type=click.FloatRange(0, 86_400), default=30.0,
              help="Seconds over which the runs are started.")  # fmt: skip
def soak(db: str | None, runs: int, workers: int, duration: float) -> None:
    """Is the runtime stable under a bounded mix of traffic? Figures, then a verify."""
    from host_app.soak import run_soak

    sys.exit(0 if run_soak(_url(db), runs, workers, duration) else 1)


if __name__ == "__main__":
    main()
