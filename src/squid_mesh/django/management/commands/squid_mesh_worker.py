"""``manage.py squid_mesh_worker``: run steps until SIGINT/SIGTERM."""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.db import connections

from squid_mesh.errors import SquidMeshError
from squid_mesh.worker import Worker


class Command(BaseCommand):  # type: ignore[misc]  # Django has no type hints
    """A worker on the mesh of ``settings.SQUID_MESH``."""

    help = "Run squid-mesh steps of the given queues until SIGINT/SIGTERM."

    def add_arguments(self, parser: ArgumentParser) -> None:
        """The options of ``squid-mesh worker``."""
        parser.add_argument(
            "--queue", dest="queues", action="append", help="A queue to serve (repeatable)."
        )
        parser.add_argument("--concurrency", type=int, default=1, help="Steps at once.")
        parser.add_argument("--lease", type=float, default=30.0, help="Seconds a claim holds.")
        parser.add_argument(
            "--grace-period", type=float, default=30.0, help="Seconds steps get at SIGTERM."
        )
        parser.add_argument(
            "--poll-interval", type=float, default=1.0, help="Longest idle sleep, in seconds."
        )
        parser.add_argument("--name", default=None, help="Owner id prefix of this worker.")
        parser.add_argument(
            "--max-idle", type=float, default=None, help="Stop after this many idle seconds."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        """Run the worker; its lanes use a Django connection each."""
        from squid_mesh.cli import _run_until_idle
        from squid_mesh.django import get_mesh

        try:
            worker = Worker(
                get_mesh(),
                queues=options["queues"] or ["default"],
                concurrency=options["concurrency"],
                lease=options["lease"],
                grace_period=options["grace_period"],
                poll_interval=options["poll_interval"],
                name=options["name"],
            )
            if options["max_idle"] is None:
                worker.run()
            else:
                _run_until_idle(worker, options["max_idle"])
        except SquidMeshError as exc:
            raise CommandError(str(exc)) from None
        finally:
            connections.close_all()
        self.stdout.write(f"executed {worker.executed} step(s)")
