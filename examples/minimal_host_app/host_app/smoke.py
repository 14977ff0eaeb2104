"""smoke: does the basic embedded path work? Every workflow, run to its expected end, checked."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import click

import squid_mesh as sm
from host_app import db
from host_app.gateway import Gateway
from host_app.workflows import COOL_OFF, QUEUES, all_workflows


@dataclass
class Report:
    """Named checks with their result; printed as a table at the end."""

    rows: list[tuple[str, bool, str]] = field(default_factory=list)

    def check(self, name: str, ok: bool, detail: Any = "") -> None:
        self.rows.append((name, bool(ok), "" if ok else str(detail)))

    @property
    def ok(self) -> bool:
        return all(ok for _, ok, _ in self.rows)

    def print(self, title: str) -> None:
        width = max(len(name) for name, _, _ in self.rows)
        click.echo(f"\n{title}")
        for name, ok, detail in self.rows:
            mark = "ok  " if ok else "FAIL"
            click.echo(f"  {mark}  {name:<{width}}  {detail}")
        passed = sum(ok for _, ok, _ in self.rows)
        click.echo(f"  {passed}/{len(self.rows)} checks passed")


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise click.ClickException(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.02)


def steps_named(snap: sm.RunSnapshot, name: str) -> list[sm.StepView]:
    return [s for s in snap.steps if s.name == name]


def start_scenarios(mesh: sm.Mesh, url: str, gateway: str, tag: str) -> dict[str, str]:
    """One run of every scenario; ``tag`` keeps ids and keys unique between calls."""
    invoices = {k: f"{k}-{tag}" for k in ("ok", "flaky", "pending", "declined")}
    for invoice in invoices.values():
        db.execute(
            url,
            "INSERT INTO host_invoices (id, amount, status) VALUES ({}, {}, {})",
            (invoice, 120, "open"),
        )
    pay = {"amount": 120, "gateway_url": gateway}
    return {
        "payment: paid": mesh.start("payment_recovery", {"invoice_id": invoices["ok"], **pay}).id,
        "payment: paid after retries": mesh.start(
            "payment_recovery", {"invoice_id": invoices["flaky"], **pay}
        ).id,
        "payment: still pending": mesh.start(
            "payment_recovery", {"invoice_id": invoices["pending"], **pay}
        ).id,
        "payment: declined, escalated": mesh.start(
            "payment_recovery", {"invoice_id": invoices["declined"], **pay}
        ).id,
        "dependency recovery (DAG join)": mesh.start("dependency_recovery", {"service": "api"}).id,
        "refund: approved": mesh.start("refund_approval", {"ticket": f"T1-{tag}"}).id,
        "refund: rejected": mesh.start("refund_approval", {"ticket": f"T2-{tag}"}).id,
        "digest: manual": mesh.start("daily_digest", {}).id,
        "ledger: posted": mesh.start("ledger_posting", {"amount": 50, "memo": "fees"}).id,
        "ledger: refused, rolled back": mesh.start("ledger_posting", {"amount": 0, "memo": "x"}).id,
        "checkout: shipped": mesh.start(
            "checkout", {"order": f"o1-{tag}", "address": "1 Main St"}
        ).id,
        "checkout: compensated": mesh.start("checkout", {"order": f"o2-{tag}", "address": ""}).id,
        "team invite (child runs)": mesh.start(
            "team_invite", {"emails": [f"a-{tag}@x.io", f"b-{tag}@x.io", f"c-{tag}@x.io"]}
        ).id,
        "reminder (durable wait)": mesh.start("reminder", {"recipient": f"ann-{tag}"}).id,
    }


def decide_gates(mesh: sm.Mesh, runs: dict[str, str], timeout: float = 60) -> None:
    """Approve one refund and reject the other once they are paused at their gate."""
    for name, decide in (("refund: approved", mesh.approve), ("refund: rejected", mesh.reject)):
        rid = runs[name]
        wait_until(
            lambda rid=rid: mesh.inspect_run(rid).status == sm.RunStatus.PAUSED, timeout, name
        )
        decide(rid, actor="maria", comment="smoke", idempotency_key=f"decide-{rid}")


def check_outcomes(
    mesh: sm.Mesh, url: str, gateway: Gateway, runs: dict[str, str], report: Report
) -> None:
    """Every scenario's expected end, with the evidence each one should leave."""
    snap = {name: mesh.inspect_run(rid) for name, rid in runs.items()}
    ctx = {name: s.context for name, s in snap.items()}
    status = {name: s.status.value for name, s in snap.items()}

    name = "payment: paid"
    edges = {(e.source, e.target): e.status for e in mesh.run_graph(runs[name]).edges}
    invoice = snap[name].payload["invoice_id"]
    rows = db.query(url, "SELECT status FROM host_invoices WHERE id = {}", (invoice,))
    ledger = db.query(url, "SELECT entry, amount FROM host_ledger WHERE run_id = {}", (runs[name],))
    report.check(
        name,
        status[name] == "completed"
        and ctx[name].get("recorded") is True
        and edges.get(("check_gateway", "record_payment")) == "selected"
        and edges.get(("check_gateway", "remind_customer")) == "skipped"
        and rows == [("paid",)]
        and ledger == [("payment", 120)],
        (status[name], edges, rows, ledger),
    )
    name = "payment: paid after retries"
    [check] = steps_named(snap[name], "check_gateway")
    invoice = snap[name].payload["invoice_id"]
    same_key = gateway.keys[f"{runs[name]}:check_gateway:1"]
    report.check(
        name,
        status[name] == "completed"
        and len(check.attempts) == 3
        and gateway.calls[invoice] == 3
        and same_key == 3,
        (status[name], len(check.attempts), gateway.calls[invoice], same_key),
    )
    name = "payment: still pending"
    report.check(name, status[name] == "completed" and "reminded" in ctx[name], status[name])
    name = "payment: declined, escalated"
    [check] = steps_named(snap[name], "check_gateway")
    error = check.attempts[-1].error or {}
    report.check(
        name,
        status[name] == "completed"
        and "escalated" in ctx[name]
        and len(check.attempts) == 1
        and error.get("code") == "http_402",
        (status[name], error.get("code")),
    )
    _check_others(mesh, url, runs, snap, report)


def _check_others(
    mesh: sm.Mesh,
    url: str,
    runs: dict[str, str],
    snap: dict[str, sm.RunSnapshot],
    report: Report,
) -> None:
    ctx = {name: s.context for name, s in snap.items()}
    status = {name: s.status.value for name, s in snap.items()}
    name = "dependency recovery (DAG join)"
    report.check(
        name,
        status[name] == "completed" and ctx[name].get("because") == ["cache"],
        (status[name], ctx[name].get("because")),
    )
    name = "refund: approved"
    report.check(
        name,
        status[name] == "completed" and ctx[name].get("approved_by") == "maria",
        (status[name], ctx[name].get("approval")),
    )
    name = "refund: rejected"
    report.check(name, status[name] == "completed" and "closed" in ctx[name], status[name])
    name = "digest: manual"
    report.check(name, status[name] == "completed" and ctx[name].get("sent") is True, status[name])
    name = "ledger: posted"
    rows = db.query(
        url, "SELECT entry, amount FROM host_ledger WHERE run_id = {} ORDER BY id", (runs[name],)
    )
    report.check(
        name,
        status[name] == "completed" and rows == [("debit", 50), ("credit", -50)],
        (status[name], rows),
    )
    name = "ledger: refused, rolled back"
    rows = db.query(url, "SELECT entry FROM host_ledger WHERE run_id = {}", (runs[name],))
    report.check(name, status[name] == "failed" and rows == [], (status[name], rows))
    name = "checkout: shipped"
    report.check(
        name, status[name] == "completed" and snap[name].compensation is None, status[name]
    )
    name = "checkout: compensated"
    undo = [s.name for s in snap[name].steps if s.name.endswith("#compensate")]
    report.check(
        name,
        status[name] == "failed"
        and snap[name].compensation == "completed"
        and undo == ["charge_card#compensate", "reserve_stock#compensate"],
        (status[name], snap[name].compensation, undo),
    )
    name = "team invite (child runs)"
    children = snap[name].children
    report.check(
        name,
        status[name] == "completed"
        and len(ctx[name].get("accepted", [])) == 3
        and {mesh.inspect_run(c.run_id).queue for c in children} == {"invites"}
        and all(c.status == sm.RunStatus.COMPLETED for c in children),
        (status[name], ctx[name].get("accepted"), [c.status for c in children]),
    )
    name = "reminder (durable wait)"
    [cool] = steps_named(snap[name], "cool_off")
    [deliver] = steps_named(snap[name], "deliver")
    finished = cool.attempts[-1].finished_at
    began = deliver.attempts[-1].started_at
    waited = None if finished is None or began is None else (began - finished).total_seconds()
    rows = db.query(url, "SELECT recipient FROM host_deliveries WHERE run_id = {}", (runs[name],))
    report.check(
        name,
        status[name] == "completed"
        and waited is not None
        and waited >= COOL_OFF - 0.01
        and len(rows) == 1,
        (status[name], waited, rows),
    )


def run_smoke(url: str) -> bool:
    """The whole smoke check against ``url``; prints a table, returns whether everything passed."""
    db.migrate(url)
    report = Report()
    with (
        sm.connect(url, workflows=all_workflows(), max_connections=8) as mesh,
        Gateway() as gateway,
    ):
        mesh.migrate()
        tag = str(int(time.time() * 1000))
        runs = start_scenarios(mesh, url, gateway.url, tag)
        # Cron: a tick as of yesterday learns the trigger; today's tick starts the slot in between
        # (every 24 hours hold exactly one 07:00).
        mesh.cron_tick(now=time.time() - 86_400)
        scheduled = mesh.cron_tick()
        again = mesh.cron_tick()
        # On a database reused from an earlier smoke, today's slot may have been taken already.
        report.check("digest: a cron slot yields one run", len(again) == 0, again)
        if scheduled:
            runs["digest: cron"] = scheduled[0].id
        worker = sm.Worker(mesh, queues=QUEUES, concurrency=4, poll_interval=0.1, cron_every=None)
        worker.start()
        try:
            decide_gates(mesh, runs)
            try:
                wait_until(
                    lambda: all(mesh.inspect_run(r).terminal for r in runs.values()),
                    60,
                    "every run",
                )
            except click.ClickException:
                for name, rid in runs.items():
                    if not mesh.inspect_run(rid).terminal:
                        why = mesh.explain_run(rid)
                        click.echo(f"  not finished: {name}: {why.reason.value}: {why.summary}")
                raise
        finally:
            worker.stop()
        check_outcomes(mesh, url, gateway, runs, report)
        if "digest: cron" in runs:
            snap = mesh.inspect_run(runs["digest: cron"])
            report.check(
                "digest: cron",
                snap.status == sm.RunStatus.COMPLETED and snap.context.get("for_slot") is not None,
                (snap.status, snap.context),
            )
        problems = mesh.verify()
        report.check("verify: journals refold to the projections", problems == [], problems[:3])
    report.print(f"smoke on {url.split('://', 1)[0]}: {len(runs)} runs")
    return report.ok
