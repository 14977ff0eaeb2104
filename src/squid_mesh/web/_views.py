"""The read model as JSON-safe dicts, for the API and the templates alike.

Payloads, context, step inputs and outputs are dropped unless the user may see them; lists never
carry them (a ``RunSummary`` has none to begin with).
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from enum import Enum
from typing import Any

from squid_mesh.read.explain import Explanation
from squid_mesh.read.graph import RunGraph
from squid_mesh.read.listing import RunSummary
from squid_mesh.read.snapshot import RunSnapshot

HIDDEN = "hidden"


def plain(value: Any) -> Any:
    """JSON-safe form of the read model's dataclasses (datetimes as ISO 8601, enums by value)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    return value


def summary(run: RunSummary) -> dict[str, Any]:
    """A list entry: no payload, context, error or idempotency key."""
    return dict(plain(run))


def run_detail(snap: RunSnapshot, *, payloads: bool) -> dict[str, Any]:
    """A run's snapshot; without ``payloads`` its data is replaced by ``"hidden"``."""
    data: dict[str, Any] = plain(snap)
    data["compensation"] = snap.compensation
    data["terminal"] = snap.terminal
    # A gate step's attempt completes before the run pauses on it: the open gate is marked on
    # its latest visit, so the step table does not read as if the step were simply done.
    gated = [v for v in data["steps"] if snap.gate is not None and v["name"] == snap.gate.step]
    for step in data["steps"]:
        step["gate_open"] = bool(gated) and step is gated[-1]
    if not payloads:
        data["payload"] = HIDDEN
        data["context"] = HIDDEN
        data["idempotency_key"] = HIDDEN if snap.idempotency_key else None
        for step in data["steps"]:
            step["input"] = HIDDEN
            for attempt in step["attempts"]:
                if attempt["output"] is not None:
                    attempt["output"] = HIDDEN
        for command in data["commands"]:
            command["metadata"] = HIDDEN if command["metadata"] else {}
            if command["idempotency_key"]:
                command["idempotency_key"] = HIDDEN
    return data


def explanation(exp: Explanation) -> dict[str, Any]:
    """``explain_run`` as JSON."""
    return dict(plain(exp))


def graph(g: RunGraph) -> dict[str, Any]:
    """``run_graph`` as JSON, with its DOT and Mermaid renderings."""
    data: dict[str, Any] = plain(g)
    data["dot"] = g.to_dot()
    data["mermaid"] = g.to_mermaid()
    return data
