"""A payment-recovery run on a SQLite file, drained by one worker, then inspected (`make demo`)."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import squid_mesh as sm

wf = sm.Workflow("payment_recovery", version="1", payload={"invoice_id": sm.Field(str)})


@wf.step(output="invoice")
def load_invoice(input: dict, ctx: sm.StepContext) -> dict:
    return {"id": input["invoice_id"], "amount": 120, "currency": "EUR"}


@wf.step(retry=sm.RetryPolicy(max_attempts=3, backoff=sm.Backoff.fixed(0.05)))
def check_gateway(input: dict, ctx: sm.StepContext) -> dict:
    if ctx.attempt == 1:
        raise ConnectionError("gateway timed out")  # retried after 0.05 s
    return {"gateway": "up"}


@wf.step()
def escalate(input: dict, ctx: sm.StepContext) -> dict:
    return {"route": "finance_review"}


@wf.step()
def charge_again(input: dict, ctx: sm.StepContext) -> dict:
    return {"route": "automatic_retry", "charge_key": ctx.idempotency_key}


@wf.step(input={"invoice_id": "invoice.id", "route": "route"})
def notify(input: dict, ctx: sm.StepContext) -> dict:
    return {"notified": f"{input['invoice_id']} via {input['route']}"}


wf.transition("load_invoice", to="check_gateway")
wf.transition("check_gateway", to="escalate", when=sm.Condition("invoice.amount", greater_than=100))
wf.transition("check_gateway", to="charge_again")  # the fallback when no condition matches
wf.transition("escalate", to="notify")
wf.transition("charge_again", to="notify")
wf.transition("notify", to=sm.COMPLETE)


def main() -> None:
    url = f"sqlite:///{Path(tempfile.mkdtemp(prefix='squid-mesh-demo-')) / 'demo.db'}"
    with sm.connect(url, workflows=[wf]) as mesh:
        mesh.migrate()
        run = mesh.start("payment_recovery", {"invoice_id": "inv_1"}, idempotency_key="inv_1")
        while not mesh.inspect_run(run.id).terminal:
            if mesh.execute_next(owner_id="demo-worker") is None:
                time.sleep(0.01)  # nothing visible yet: the retry is waiting for its backoff

        snap = mesh.inspect_run(run.id, history=True)
        print(f"database: {url}\nrun {snap.id}: {snap.status.value}")
        print(f"context: {snap.context}")
        for step in snap.steps:
            print(f"  step {step.name} (visit {step.visit}): {step.status.value}")
            for a in step.attempts:
                error = f" - {a.error['message']}" if a.error else ""
                print(f"    attempt {a.number}: {a.status.value}{error}")
        print("journal:")
        for entry in snap.history or ():
            print(f"  {entry.seq:>2} {entry.kind} {entry.data.get('key', '')}".rstrip())
        print(f"verify(): {mesh.verify() or 'journal and projections agree'}")


if __name__ == "__main__":
    main()
