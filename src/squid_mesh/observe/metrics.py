"""The in-process counters and histograms behind the Prometheus text, and its rendering.

Labels are low-cardinality by construction: queue, workflow, step, outcome and state. Run ids,
payloads, tokens and idempotency keys never become labels.
"""

from __future__ import annotations

import bisect
import math
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

Labels = tuple[tuple[str, str], ...]

# Seconds: a step of a few milliseconds and one of a few minutes both land in a useful bucket.
BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


@dataclass
class _Histogram:
    counts: list[int] = field(default_factory=lambda: [0] * len(BUCKETS))
    total: float = 0.0
    n: int = 0


@dataclass(frozen=True)
class Family:
    """One metric's name, type and help text."""

    name: str
    kind: str  # "counter", "histogram" or "gauge"
    help: str


ATTEMPTS = Family("squid_mesh_attempts_total", "counter", "Step attempts recorded, by outcome.")
STEP_DURATION = Family(
    "squid_mesh_step_duration_seconds", "histogram", "From claim to recorded outcome, by step."
)
CLAIM_LATENCY = Family(
    "squid_mesh_claim_latency_seconds",
    "histogram",
    "From the moment an attempt was due to its claim, by queue.",
)
QUEUE_ATTEMPTS = Family(
    "squid_mesh_queue_attempts",
    "gauge",
    "Unfinished attempts per queue: visible (due, unclaimed), claimed, scheduled (due later).",
)


class Registry:
    """Counters and histograms kept in this process (thread-safe); gauges are read on demand."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counters: dict[tuple[str, Labels], float] = {}
        self._histograms: dict[tuple[str, Labels], _Histogram] = {}

    def add(self, family: Family, labels: Mapping[str, str], amount: float = 1.0) -> None:
        """Increase a counter."""
        key = (family.name, tuple(sorted(labels.items())))
        with self._lock:
            self._counters[key] = self._counters.get(key, 0.0) + amount

    def observe(self, family: Family, labels: Mapping[str, str], value: float) -> None:
        """Add one observation to a histogram."""
        key = (family.name, tuple(sorted(labels.items())))
        with self._lock:
            h = self._histograms.setdefault(key, _Histogram())
            i = bisect.bisect_left(BUCKETS, value)
            if i < len(BUCKETS):
                h.counts[i] += 1
            h.total += value
            h.n += 1

    def counter_value(self, family: Family, labels: Mapping[str, str]) -> float:
        """A counter's current value (0 when never increased)."""
        with self._lock:
            return self._counters.get((family.name, tuple(sorted(labels.items()))), 0.0)

    def render(self, gauges: Iterable[tuple[Family, Mapping[str, str], float]] = ()) -> str:
        """The Prometheus text exposition (version 0.0.4) of everything, gauges included."""
        with self._lock:
            counters = sorted(self._counters.items())
            histograms = sorted(
                (k, _Histogram(list(h.counts), h.total, h.n)) for k, h in self._histograms.items()
            )
        lines: list[str] = []
        described: set[str] = set()

        def describe(family: Family) -> None:
            if family.name not in described:
                described.add(family.name)
                lines.append(f"# HELP {family.name} {family.help}")
                lines.append(f"# TYPE {family.name} {family.kind}")

        families = {f.name: f for f in (ATTEMPTS, STEP_DURATION, CLAIM_LATENCY, QUEUE_ATTEMPTS)}
        for (name, labels), value in counters:
            describe(families[name])
            lines.append(f"{name}{_labels(labels)} {_number(value)}")
        for (name, labels), h in histograms:
            describe(families[name])
            running = 0
            for bound, count in zip(BUCKETS, h.counts, strict=True):
                running += count
                lines.append(f"{name}_bucket{_labels((*labels, ('le', _number(bound))))} {running}")
            lines.append(f"{name}_bucket{_labels((*labels, ('le', '+Inf')))} {h.n}")
            lines.append(f"{name}_sum{_labels(labels)} {_number(h.total)}")
            lines.append(f"{name}_count{_labels(labels)} {h.n}")
        for family, gauge_labels, value in gauges:
            describe(family)
            lines.append(
                f"{family.name}{_labels(tuple(sorted(gauge_labels.items())))} {_number(value)}"
            )
        return "\n".join(lines) + "\n"


def _labels(labels: Labels) -> str:
    if not labels:
        return ""
    body = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
    return "{" + body + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value)) if value != int(value) else str(int(value))


GaugeReader = Callable[[], Iterable[tuple[Family, Mapping[str, str], float]]]
