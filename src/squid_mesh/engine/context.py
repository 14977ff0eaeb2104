"""What a running step sees of its run: ids, attempt number, state, heartbeat, cancellation."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


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
        >>> def charge(input, ctx):
        ...     ctx.heartbeat()                    # extend the lease during long work
        ...     if ctx.cancelled:
        ...         return {}
        ...     return {"charge_id": f"ch_{ctx.idempotency_key}"}
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
        heartbeat: Callable[[], bool],
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
        self._cancelled = False

    @property
    def cancelled(self) -> bool:
        """True once a heartbeat has seen that the run was cancelled (or failed) meanwhile."""
        return self._cancelled

    def heartbeat(self) -> None:
        """Extend this attempt's lease; sets :attr:`cancelled` if the run ended meanwhile.

        Raises :class:`~squid_mesh.errors.LeaseLostError` when another worker has taken the attempt
        over (the lease had expired): stop work, the result would be refused.
        """
        if not self._heartbeat():
            self._cancelled = True

    def __repr__(self) -> str:
        return (
            f"StepContext(run_id={self.run_id!r}, step={self.step!r}, attempt={self.attempt}, "
            f"visit={self.visit})"
        )
