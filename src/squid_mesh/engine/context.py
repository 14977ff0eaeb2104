"""What a running step sees of its run: ids, attempt number, state, heartbeat, cancellation."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from squid_mesh.errors import Cancelled

_ENDED = ("cancelled", "failed", "completed")
_STEP_LOGGER = logging.getLogger("squid_mesh.steps")


class StepContext:
    """Passed to every step as its second argument.

    Attributes:
        run_id: the run's id.
        workflow: the workflow's name.
        version: the definition version the run is pinned to.
        step: this step's name.
        attempt: 1 for the first try, 2 for the first retry, ...
        visit: 1 for the first visit of this step in the run (loops visit again).
        idempotency_key: stable across retries of this step visit; pass it to external APIs.
        state: the run's accumulated state (payload overlaid with applied results), read-only use.

    Example:
        >>> def export(input, ctx):
        ...     for page in range(input["pages"]):
        ...         ctx.heartbeat()                # extend the lease; raises sm.Cancelled
        ...     return {"exported": input["pages"]}
    """

    def __init__(
        self,
        *,
        run_id: str,
        workflow: str,
        version: str,
        step: str,
        attempt: int,
        visit: int,
        state: dict[str, Any],
        heartbeat: Callable[[], str | None],
        run_status: Callable[[], str],
        start_child: Callable[[Any, Any, Any, Any], str] | None = None,
        db: Any = None,
    ) -> None:
        self.run_id = run_id
        self.workflow = workflow
        self.version = version
        self.step = step
        self.attempt = attempt
        self.visit = visit
        self.idempotency_key = f"{run_id}:{step}:{visit}"
        self.state = state
        self._heartbeat = heartbeat
        self._run_status = run_status
        self._start_child = start_child
        self._db = db
        self._ended: str | None = None

    @property
    def log(self) -> logging.LoggerAdapter[logging.Logger]:
        """A logger (``squid_mesh.steps``) whose records carry this attempt's run metadata.

        Each record has ``run_id``, ``workflow``, ``step`` and ``attempt`` attributes, as the
        engine's own records do, for a structured log formatter to pick up.

        Example:
            >>> def charge(input, ctx):
            ...     ctx.log.info("charging %s", input["invoice_id"])
        """
        return logging.LoggerAdapter(
            _STEP_LOGGER,
            {
                "run_id": self.run_id,
                "workflow": self.workflow,
                "step": self.step,
                "attempt": self.attempt,
            },
        )

    @property
    def db(self) -> Any:
        """In a ``transactional=True`` step: a cursor on the transaction that records the step.

        What the step writes through it commits together with the step's completion, or not at
        all (a failure rolls it back; a crash before the commit leaves nothing). It is the
        store's own DB-API cursor: ``sqlite3`` (``?`` or ``:name`` parameters) or psycopg
        (``%s`` or ``%(name)s``).

        Example:
            >>> def reserve(input, ctx):
            ...     ctx.db.execute("INSERT INTO ledger (entry) VALUES (?)", ("reserve",))
        """
        if self._db is None:
            raise RuntimeError(
                f"step {self.step!r}: ctx.db exists only in steps declared transactional=True"
            )
        return self._db

    def start_child(
        self,
        workflow: Any,
        payload: dict[str, Any] | None = None,
        *,
        child_key: str,
        queue: str | None = None,
    ) -> str:
        """Start a child run of ``workflow`` (any registered workflow, on any queue); return its id.

        ``child_key`` names the child within this run: starting the same key again (a retried
        step, a step that runs again after a crash) returns the same child run instead of a new
        one, for the parent's whole lifetime. The child's start commits at once, in its own
        transaction. Cancelling the parent cancels its unfinished children; a
        ``wf.await_children`` step waits for them.

        Example:
            >>> def send_invites(input, ctx):
            ...     for email in input["emails"]:
            ...         ctx.start_child("invite", {"email": email}, child_key=email)
            ...     return {"invited": len(input["emails"])}
        """
        if self._start_child is None:
            raise RuntimeError(
                f"step {self.step!r}: start_child is not available in a transactional step "
                "(the child would start in another transaction)"
            )
        return self._start_child(workflow, payload, child_key, queue)

    @property
    def cancelled(self) -> bool:
        """Whether the run was cancelled (or otherwise ended) since this step started.

        Each look reads the run's status from the store (one short read), so check it between units
        of work, not in a tight loop. Once true it stays true.
        """
        if self._ended is None:
            status = self._run_status()
            if status in _ENDED:
                self._ended = status
        return self._ended is not None

    def heartbeat(self) -> None:
        """Extend this attempt's lease (tell the store this step is still at work).

        Raises :class:`~squid_mesh.Cancelled` when the run was cancelled (or ended) meanwhile, and
        :class:`~squid_mesh.LeaseLostError` when another worker has taken the attempt over (the
        lease had expired). Either way, stop: the step's result would not be applied.
        """
        ended = self._heartbeat()
        if ended is not None:
            self._ended = ended
            raise Cancelled(self.run_id, ended)

    def __repr__(self) -> str:
        return (
            f"StepContext(run_id={self.run_id!r}, step={self.step!r}, attempt={self.attempt}, "
            f"visit={self.visit})"
        )
