"""The shop's tests, run by Django's test runner on SQLite or PostgreSQL (SHOP_DATABASE_URL).

In-process tests drive the runs with ``squid_mesh.testing.drain``; the crash test runs the real
``manage.py squid_mesh_worker`` and kills it with SIGKILL inside a transactional step.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from django.db import connection, transaction
from django.test import TestCase, TransactionTestCase

import squid_mesh as sm
from orders.models import Order, Product, Reservation
from squid_mesh.django import get_mesh
from squid_mesh.testing import drain

HERE = Path(__file__).resolve().parent.parent


def test_database_url() -> str:
    """The URL of the database these tests run on, for a worker process."""
    s = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{Path(s['NAME']).resolve()}"
    auth = s["USER"] + (f":{s['PASSWORD']}" if s["PASSWORD"] else "")
    return f"postgresql://{auth}@{s['HOST'] or 'localhost'}:{s['PORT'] or 5432}/{s['NAME']}"


class ShopTestCase(TransactionTestCase):
    """Real commits: what a worker in another process would see."""

    def setUp(self) -> None:
        Product.objects.create(sku="book", stock=5)

    def place(self, sku: str, quantity: int) -> dict[str, Any]:
        response = self.client.post(
            "/orders", json.dumps({"sku": sku, "quantity": quantity}), "application/json"
        )
        self.assertEqual(response.status_code, 202, response.content)
        return dict(response.json())


class PlaceOrderTests(ShopTestCase):
    def test_an_order_is_reserved_charged_and_confirmed(self) -> None:
        placed = self.place("book", 2)
        self.assertEqual(get_mesh().inspect_run(placed["run_id"]).status, "running")
        drain(get_mesh(), until=placed["run_id"])
        status = self.client.get(f"/orders/{placed['order_id']}").json()
        self.assertEqual(status["status"], "confirmed")
        self.assertEqual(status["run"], {**status["run"], "status": "completed"})
        self.assertTrue(status["reserved"])
        self.assertEqual(Product.objects.get(sku="book").stock, 3)
        run = get_mesh().inspect_run(placed["run_id"])
        self.assertEqual(run.context["reserved"], 2)
        self.assertTrue(run.context["charge_id"].startswith("ch-"))

    def test_an_order_that_cannot_be_served_is_rejected_and_takes_nothing(self) -> None:
        placed = self.place("book", 9)
        drain(get_mesh(), until=placed["run_id"])
        self.assertEqual(Order.objects.get(pk=placed["order_id"]).status, "rejected")
        self.assertEqual(Product.objects.get(sku="book").stock, 5)
        self.assertFalse(Reservation.objects.exists())
        run = get_mesh().inspect_run(placed["run_id"])
        self.assertEqual(run.status, "completed")
        self.assertEqual(run.context["rejected"], True)

    def test_the_run_starts_only_if_the_order_commits(self) -> None:
        mesh = get_mesh()
        before = sum(mesh.run_counts().values())
        with self.assertRaises(RuntimeError), transaction.atomic():
            order = Order.objects.create(sku="book", quantity=1)
            started = mesh.start("fulfil_order", {"order_id": order.pk})
            self.assertEqual(mesh.inspect_run(started.id).status, "running")  # seen inside
            raise RuntimeError("the view fails after starting the run")
        self.assertFalse(Order.objects.exists())
        with self.assertRaises(sm.RunNotFoundError):
            mesh.inspect_run(started.id)
        self.assertEqual(sum(mesh.run_counts().values()), before)

    def test_bad_input_is_refused_and_writes_nothing(self) -> None:
        response = self.client.post("/orders", json.dumps({"sku": "book"}), "application/json")
        self.assertEqual(response.status_code, 422)
        self.assertFalse(Order.objects.exists())

    def test_two_orders_never_oversell(self) -> None:
        first, second = self.place("book", 3), self.place("book", 3)
        drain(
            get_mesh(),
            until=lambda mesh: all(
                mesh.inspect_run(p["run_id"]).status == "completed" for p in (first, second)
            ),
        )
        statuses = sorted(Order.objects.values_list("status", flat=True))
        self.assertEqual(statuses, ["confirmed", "rejected"])
        self.assertEqual(Product.objects.get(sku="book").stock, 2)
        self.assertEqual(Reservation.objects.count(), 1)


class InsideTestCaseTests(TestCase):
    """``TestCase`` wraps each test in a transaction: drain runs the steps inside it too."""

    def test_an_order_is_confirmed_inside_the_test_transaction(self) -> None:
        Product.objects.create(sku="pen", stock=1)
        response = self.client.post(
            "/orders", json.dumps({"sku": "pen", "quantity": 1}), "application/json"
        )
        run_id = response.json()["run_id"]
        drain(get_mesh(), until=run_id)
        self.assertEqual(Order.objects.get().status, "confirmed")
        self.assertEqual(get_mesh().inspect_run(run_id).status, "completed")


class WorkerProcessTests(ShopTestCase):
    """``manage.py squid_mesh_worker`` as the host runs it: a process of its own."""

    def worker(self, *args: str, **env: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "manage.py", "squid_mesh_worker", *args],
            cwd=HERE,
            env={
                **os.environ,
                "SHOP_DATABASE_URL": test_database_url(),
                "PYTHONUNBUFFERED": "1",
                **env,
            },
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def wait_for(self, check: Any, what: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            self.assertLess(time.monotonic(), deadline, f"timed out waiting for {what}")
            time.sleep(0.05)

    def test_a_worker_killed_inside_a_transactional_step_leaves_nothing_half_done(self) -> None:
        placed = self.place("book", 2)
        doomed = self.worker("--lease", "2", "--name", "doomed", SHOP_WAREHOUSE_DELAY="60")
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(doomed.stdout or ()), daemon=True)
        reader.start()
        try:
            # The step has written its reservation and the new stock through the ORM, and sleeps
            # before returning: the transaction that holds them has not committed.
            self.wait_for(lambda: any("reserved 2 x book" in line for line in lines), "the step")
        finally:
            doomed.send_signal(signal.SIGKILL)
            doomed.wait(10)
        self.assert_taken_over_and_reserved_once(placed)

    def test_a_worker_that_dies_just_before_recording_the_step_leaves_nothing(self) -> None:
        # squid-mesh's fault-injection hook: the process ends with os._exit(70) once the step's
        # ORM writes and its completion are written, just before their one commit.
        placed = self.place("book", 2)
        doomed = self.worker(
            "--lease", "2", "--name", "doomed", SQUID_MESH_CRASH_AT="record.before_commit"
        )
        out, _ = doomed.communicate(timeout=60)
        self.assertEqual(doomed.returncode, 70, out)
        self.assertIn("reserved 2 x book", out)
        self.assert_taken_over_and_reserved_once(placed)

    def assert_taken_over_and_reserved_once(self, placed: dict[str, Any]) -> None:
        self.assertEqual(Reservation.objects.count(), 0)
        self.assertEqual(Product.objects.get(sku="book").stock, 5)
        self.assertEqual(get_mesh().inspect_run(placed["run_id"]).status, "running")

        # Another worker takes the attempt over once the dead one's lease runs out.
        survivor = self.worker("--lease", "2", "--name", "survivor", "--max-idle", "3")
        out, _ = survivor.communicate(timeout=60)
        self.assertEqual(survivor.returncode, 0, out)
        run = get_mesh().inspect_run(placed["run_id"])
        self.assertEqual(run.status, "completed", out)
        self.assertEqual(Order.objects.get(pk=placed["order_id"]).status, "confirmed")
        self.assertEqual(Reservation.objects.count(), 1)
        self.assertEqual(Product.objects.get(sku="book").stock, 3)
        (reserve,) = (s for s in run.steps if s.name == "reserve_stock")
        # One attempt, claimed twice: the dead worker's claim, then the survivor's.
        self.assertEqual(
            [(a.number, a.claims, a.status) for a in reserve.attempts], [(1, 2, "completed")]
        )
