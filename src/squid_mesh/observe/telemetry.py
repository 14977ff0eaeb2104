"""Where the engine reports what it does: logs, OpenTelemetry spans and metrics, Prometheus text.

OpenTelemetry is optional (``pip install 'squid-mesh[otel]'``): without it, or with tracing
switched off, spans and OTel instruments are skipped and only logs and the registry remain. The
OTel API is imported on first use, not at ``import squid_mesh``.

What may appear where: metric labels are queue, workflow, step, outcome and state only; span
attributes add the run id and attempt number. Payloads, step inputs and outputs, claim tokens,
idempotency keys and baggage never do: the trace context stored with a run is the W3C
``traceparent``/``tracestate`` pair alone.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from squid_mesh.observe.metrics import (
    ATTEMPTS,
    CLAIM_LATENCY,
    QUEUE_ATTEMPTS,
    STEP_DURATION,
    Family,
    Registry,
)

logger = logging.getLogger("squid_mesh")

# Outcomes worth a line at WARNING: the step did not do what it was asked.
_LOUD = {"retry_scheduled": logging.WARNING, "failed": logging.ERROR, "lease_lost": logging.WARNING}

QueueCounts = Callable[[], Mapping[tuple[str, str], int]]


class _Otel:
    """The OpenTelemetry objects squid-mesh uses, built once per Telemetry."""

    def __init__(self, tracer_provider: Any, meter_provider: Any, telemetry: Telemetry) -> None:
        from opentelemetry import context, metrics, trace
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self.trace = trace
        self.context = context
        self.metrics = metrics
        self.propagator = TraceContextTextMapPropagator()
        self.tracer = trace.get_tracer("squid_mesh", tracer_provider=tracer_provider)
        self._tracing = tracer_provider is not None
        self._measuring = meter_provider is not None
        try:
            from opentelemetry.metrics._internal import _ProxyMeterProvider

            self._proxy_meters: type | None = _ProxyMeterProvider
        except ImportError:  # a future API without it: always record
            self._proxy_meters = None
        meter = metrics.get_meter("squid_mesh", meter_provider=meter_provider)
        self.attempts = meter.create_counter(
            "squid_mesh.attempts", unit="{attempt}", description=ATTEMPTS.help
        )
        self.duration = meter.create_histogram(
            "squid_mesh.step.duration", unit="s", description=STEP_DURATION.help
        )
        self.latency = meter.create_histogram(
            "squid_mesh.claim.latency", unit="s", description=CLAIM_LATENCY.help
        )

        def observe(_options: Any) -> list[Any]:
            return [
                metrics.Observation(value, {"queue": queue, "state": state})
                for (queue, state), value in telemetry.queue_counts().items()
            ]

        meter.create_observable_gauge(
            "squid_mesh.queue.attempts",
            callbacks=[observe],
            unit="{attempt}",
            description=QUEUE_ATTEMPTS.help,
        )

    def tracing(self) -> bool:
        """Whether spans go anywhere: an explicit provider, or a global one set by the host.

        Until the host installs an SDK, the global provider is a placeholder and every span
        would be a no-op costing a few microseconds per attempt; checked per call because
        the host may install one later.
        """
        if not self._tracing:
            # A global provider, once set, stays set (OTel refuses to replace it).
            self._tracing = not isinstance(
                self.trace.get_tracer_provider(), self.trace.ProxyTracerProvider
            )
        return self._tracing

    def measuring(self) -> bool:
        """Whether OTel metrics go anywhere (as :meth:`tracing`, for the meter provider)."""
        if not self._measuring:
            self._measuring = self._proxy_meters is None or not isinstance(
                self.metrics.get_meter_provider(), self._proxy_meters
            )
        return self._measuring


class AttemptScope:
    """One claimed attempt while it runs: its log fields, its span, its clock."""

    def __init__(self, fields: dict[str, Any], span: Any) -> None:
        self.fields = fields
        self.span = span
        self.started = time.perf_counter()


class Telemetry:
    """Logs, spans and metrics of one mesh.

    Example:
        >>> from opentelemetry.sdk.trace import TracerProvider  # doctest: +SKIP
        >>> mesh = sm.connect(url, workflows=[wf], tracer_provider=TracerProvider())  # doctest: +SKIP
    """

    def __init__(
        self, *, tracer_provider: Any = None, meter_provider: Any = None, otel: bool = True
    ) -> None:
        self.registry = Registry()
        self._providers = (tracer_provider, meter_provider)
        self._want_otel = otel
        self._otel: _Otel | None = None
        self._loaded = False
        self._load_lock = threading.Lock()
        # Queues whose gauges are reported, and how to count them (set by a Worker).
        self._queue_counts: QueueCounts | None = None

    @property
    def otel(self) -> _Otel | None:
        """The OpenTelemetry objects, or None when the API is not installed or switched off."""
        if not self._loaded:
            with self._load_lock:  # lanes may get here at once
                if not self._loaded:
                    if self._want_otel:
                        try:
                            self._otel = _Otel(*self._providers, self)
                        except ImportError:
                            self._otel = None
                    self._loaded = True
        return self._otel

    # -- traces -----------------------------------------------------------------------------

    def trace_context(self) -> dict[str, str] | None:
        """The current span's W3C trace context (stored with a new run), or None."""
        otel = self.otel
        if otel is None or not otel.tracing():
            return None
        carrier: dict[str, str] = {}
        otel.propagator.inject(carrier)
        return carrier or None

    @contextmanager
    def command(self, name: str, **attributes: str | None) -> Iterator[None]:
        """A span around one command (start, cancel, resume, approve, reject, replay, ...)."""
        otel = self.otel
        if otel is None or not otel.tracing():
            yield
            return
        attrs = {f"squid_mesh.{k}": v for k, v in attributes.items() if v is not None}
        with otel.tracer.start_as_current_span(
            f"squid_mesh.{name}", kind=otel.trace.SpanKind.PRODUCER, attributes=attrs
        ):
            yield

    # -- attempts ---------------------------------------------------------------------------

    @contextmanager
    def attempt(
        self,
        *,
        run_id: str,
        workflow: str,
        step: str,
        attempt: int,
        queue: str,
        trace: Mapping[str, str] | None,
        waited: float,
    ) -> Iterator[AttemptScope]:
        """Everything around one claimed attempt, from claim to recorded outcome.

        The span is a child of the run's start span (from ``trace``) and is current while the
        step runs, so child runs it starts join the same trace.
        """
        fields: dict[str, Any] = {
            "run_id": run_id,
            "workflow": workflow,
            "step": step,
            "attempt": attempt,
            "queue": queue,
        }
        self.registry.observe(CLAIM_LATENCY, {"queue": queue}, max(waited, 0.0))
        otel = self.otel
        if otel is not None and otel.measuring():
            otel.latency.record(max(waited, 0.0), {"queue": queue})
        logger.debug("claimed %s attempt %d of run %s", step, attempt, run_id, extra=fields)
        if otel is None or not otel.tracing():
            yield AttemptScope(fields, None)
            return
        parent = otel.propagator.extract(dict(trace)) if trace else None
        with otel.tracer.start_as_current_span(
            "squid_mesh.step",
            context=parent,
            kind=otel.trace.SpanKind.CONSUMER,
            attributes={
                "squid_mesh.workflow": workflow,
                "squid_mesh.step": step,
                "squid_mesh.queue": queue,
                "squid_mesh.run_id": run_id,
                "squid_mesh.attempt": attempt,
            },
            record_exception=False,
            set_status_on_exception=True,
        ) as span:
            yield AttemptScope(fields, span)

    def attempt_done(
        self, scope: AttemptScope, outcome: str, error: Mapping[str, Any] | None
    ) -> None:
        """Count the outcome, time the attempt, log it, and close its span's attributes."""
        elapsed = time.perf_counter() - scope.started
        f = scope.fields
        labels = {"queue": f["queue"], "workflow": f["workflow"], "step": f["step"]}
        self.registry.add(ATTEMPTS, {**labels, "outcome": outcome})
        self.registry.observe(STEP_DURATION, labels, elapsed)
        otel = self.otel
        if otel is not None and otel.measuring():
            otel.attempts.add(1, {**labels, "outcome": outcome})
            otel.duration.record(elapsed, labels)
        if scope.span is not None:
            scope.span.set_attribute("squid_mesh.outcome", outcome)
            if error is not None and otel is not None:
                scope.span.set_status(otel.trace.Status(otel.trace.StatusCode.ERROR))
                scope.span.set_attribute("error.type", str(error.get("type", "error")))
        extra = {**f, "outcome": outcome, "duration": round(elapsed, 6)}
        level = _LOUD.get(outcome, logging.DEBUG)
        if error is not None and level > logging.DEBUG:
            # Type and code only: an exception's message often quotes what it choked on (a URL
            # with a token, a payload value). The message is in the journal, for inspect_run.
            extra["error_type"] = error.get("type")
            extra["error_code"] = error.get("code")
            logger.log(
                level,
                "%s attempt %d of run %s: %s (%s, %s)",
                f["step"],
                f["attempt"],
                f["run_id"],
                outcome,
                error.get("type"),
                error.get("code"),
                extra=extra,
            )
        else:
            logger.log(
                level,
                "%s attempt %d of run %s: %s",
                f["step"],
                f["attempt"],
                f["run_id"],
                outcome,
                extra=extra,
            )

    # -- gauges -----------------------------------------------------------------------------

    def watch_queues(self, counts: QueueCounts) -> None:
        """Report the per-queue gauges through ``counts`` (a Worker sets it for its queues)."""
        self._queue_counts = counts
        _ = self.otel  # the observable gauge exists from now on

    def queue_counts(self) -> Mapping[tuple[str, str], int]:
        """``(queue, state) -> attempts`` for the watched queues (empty when none are)."""
        if self._queue_counts is None:
            return {}
        try:
            return self._queue_counts()
        except Exception:
            logger.warning("squid-mesh: could not read queue gauges", exc_info=True)
            return {}

    def prometheus_text(self) -> str:
        """The Prometheus text exposition of this process's metrics and the queue gauges."""
        gauges: list[tuple[Family, Mapping[str, str], float]] = [
            (QUEUE_ATTEMPTS, {"queue": queue, "state": state}, float(value))
            for (queue, state), value in sorted(self.queue_counts().items())
        ]
        return self.registry.render(gauges)
