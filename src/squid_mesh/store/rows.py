"""Conversion between run state and projection rows, the same for every SQL backend."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from squid_mesh.journal.facts import Entry, decode, encode
from squid_mesh.journal.fold import AttemptState, AttemptStatus, RunState, RunStatus


def dump(value: Any) -> str | None:
    """JSON text for a column, ``None`` for NULL."""
    if value is None:
        return None
    return json.dumps(value, separators=(",", ":"), allow_nan=False)


def _load(value: Any) -> Any:
    if value is None or not isinstance(value, str):
        return value
    return json.loads(value)


RUN_COLUMNS = (
    "run_id, workflow, version, fingerprint, queue, trigger, status, payload, context, error, "
    "idempotency_key, payload_hash, rev, created_at, updated_at, gate, command_keys, parent, "
    "replayed_from, priority, trace"
)


def run_params(state: RunState) -> dict[str, Any]:
    """Parameters of insert_run / update_run."""
    return {
        "run_id": state.run_id,
        "workflow": state.workflow,
        "version": state.version,
        "fingerprint": state.fingerprint,
        "queue": state.queue,
        "trigger": state.trigger,
        "status": state.status.value,
        "payload": dump(state.payload),
        "context": dump(state.context),
        "error": dump(state.error),
        "idempotency_key": state.idempotency_key,
        "payload_hash": state.payload_hash,
        "rev": state.rev,
        "created_at": state.created_at,
        "updated_at": state.updated_at,
        "gate": dump(state.gate),
        "command_keys": dump(state.command_keys),
        "parent": dump(state.parent),
        "parent_id": None if state.parent is None else state.parent["run_id"],
        "replayed_from": state.replayed_from,
        "priority": state.priority,
        "trace": dump(state.trace),
    }


def run_update_params(state: RunState, expected_rev: int) -> dict[str, Any]:
    """Parameters of update_run: only what a command can change (never the payload)."""
    return {
        "run_id": state.run_id,
        "version": state.version,
        "fingerprint": state.fingerprint,
        "status": state.status.value,
        "context": dump(state.context),
        "error": dump(state.error),
        "rev": state.rev,
        "updated_at": state.updated_at,
        "gate": dump(state.gate),
        "command_keys": dump(state.command_keys),
        "expected_rev": expected_rev,
    }


def changed_attempts(before: RunState, after: RunState) -> list[AttemptState]:
    """The attempts a write must upsert.

    Those that changed, and when the run moved to another version, every live one (their claim
    key, ``workflow@version``, changed with it).
    """
    moved = before.version != after.version
    return [
        a
        for key, a in after.attempts.items()
        if before.attempts.get(key) != a or (moved and a.status.live)
    ]


def attempt_params(state: RunState, a: AttemptState) -> dict[str, Any]:
    """Parameters of upsert_attempt."""
    return {
        "run_id": state.run_id,
        "key": a.key,
        "step": a.step,
        "visit": a.visit,
        "number": a.number,
        "queue": a.queue,
        "wf_key": f"{state.workflow}@{state.version}",
        "status": a.status.value,
        "input": dump(a.input),
        "visible_at": a.visible_at,
        "due_at": a.due_at,
        "claim_hash": a.claim_hash,
        "owner": a.owner,
        "lease_until": a.lease_until,
        "claims": a.claims,
        "started_at": a.started_at,
        "finished_at": a.finished_at,
        "output": dump(a.output),
        "error": dump(a.error),
        "finished_rev": a.finished_rev,
        # Every attempt of a run is claimed at the run's priority.
        "priority": state.priority,
    }


def state_from_rows(run: Sequence[Any], attempts: Sequence[Sequence[Any]]) -> RunState:
    """A run state from its ``runs`` row and its ``attempts`` rows."""
    (
        run_id,
        workflow,
        version,
        fingerprint,
        queue,
        trigger,
        status,
        payload,
        context,
        error,
        idempotency_key,
        payload_hash,
        rev,
        created_at,
        updated_at,
        gate,
        command_keys,
        parent,
        replayed_from,
        priority,
        trace,
    ) = run
    loaded = {}
    for row in attempts:
        a = AttemptState(
            key=row[0],
            step=row[1],
            visit=row[2],
            number=row[3],
            queue=row[4],
            status=AttemptStatus(row[5]),
            input=_load(row[6]),
            visible_at=row[7],
            claim_hash=row[8],
            owner=row[9],
            lease_until=row[10],
            claims=row[11],
            started_at=row[12],
            finished_at=row[13],
            output=_load(row[14]),
            error=_load(row[15]),
            finished_rev=row[16],
        )
        loaded[a.key] = a
    return RunState(
        run_id=run_id,
        workflow=workflow,
        version=version,
        fingerprint=fingerprint,
        queue=queue,
        trigger=trigger,
        payload=_load(payload),
        idempotency_key=idempotency_key,
        payload_hash=payload_hash,
        created_at=created_at,
        updated_at=updated_at,
        rev=rev,
        status=RunStatus(status),
        context=_load(context),
        error=_load(error),
        gate=_load(gate),
        command_keys=_load(command_keys),
        parent=_load(parent),
        replayed_from=replayed_from,
        priority=priority,
        trace=_load(trace),
        attempts=dict(sorted(loaded.items())),
    )


def fact_params(run_id: str, entry: Entry) -> dict[str, Any]:
    """Parameters of insert_fact."""
    return {
        "run_id": run_id,
        "seq": entry.seq,
        "kind": entry.fact.kind,
        "at": entry.at,
        "data": encode(entry.fact),
    }


def entry_from_row(row: Sequence[Any]) -> Entry:
    """A journal entry from a ``facts`` row."""
    seq, kind, at, data = row
    return Entry(seq=seq, at=at, fact=decode(kind, data))
