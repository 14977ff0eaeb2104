"""The error hierarchy: one base class with a stable ``code``, one subclass per kind of refusal.

Every refusal names the field or option at fault, and never echoes secrets (passwords, tokens).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class SquidMeshError(Exception):
    """Base class of every error squid-mesh raises.

    Each subclass has a stable machine-readable ``code``; the message is written for a person.

    Example:
        >>> try:
        ...     raise InvalidOptionError("queue", "must match [A-Za-z0-9][A-Za-z0-9_.-]*")
        ... except SquidMeshError as err:
        ...     err.code
        'invalid_option'
    """

    code = "squid_mesh_error"

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or self.code).strip().splitlines()[0])

    @property
    def message(self) -> str:
        """The human-readable message."""
        return str(self.args[0])


class DefinitionError(SquidMeshError):
    """A workflow definition is invalid; the message names the step, transition or option."""

    code = "invalid_definition"


class InvalidOptionError(SquidMeshError):
    """An option passed to a command has a bad value; ``option`` names it."""

    code = "invalid_option"

    def __init__(self, option: str, problem: str) -> None:
        self.option = option
        super().__init__(f"invalid option {option!r}: {problem}")


class UnknownWorkflowError(SquidMeshError):
    """The workflow named in a command is not registered with this mesh."""

    code = "unknown_workflow"

    def __init__(self, workflow: str, known: list[str]) -> None:
        self.workflow = workflow
        listed = ", ".join(sorted(known)) or "none"
        super().__init__(f"unknown workflow {workflow!r} (registered: {listed})")


class PayloadError(SquidMeshError):
    """A start payload does not match the workflow's payload schema.

    ``fields`` maps each offending field to its problem (``missing``, ``unknown`` or a type message).
    """

    code = "invalid_payload"

    def __init__(self, workflow: str, fields: Mapping[str, str]) -> None:
        self.workflow = workflow
        self.fields = dict(fields)
        detail = "; ".join(f"{name}: {problem}" for name, problem in sorted(self.fields.items()))
        super().__init__(f"invalid payload for workflow {workflow!r}: {detail}")


class InputMappingError(SquidMeshError):
    """A step's input mapping names a context path that does not exist."""

    code = "missing_input_path"

    def __init__(self, step: str, target: str, path: str) -> None:
        self.step = step
        self.target = target
        self.path = path
        super().__init__(
            f"step {step!r}: input {target!r} maps path {path!r}, which is not in the context"
        )


class RunNotFoundError(SquidMeshError):
    """No run has the given id."""

    code = "run_not_found"

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        super().__init__(f"run_id {run_id!r}: no such run")


class WaitTimeoutError(SquidMeshError, TimeoutError):
    """``wait_run`` gave up: the run did not reach the awaited status in time.

    Also a :class:`TimeoutError`. ``status`` is the run's status when the wait ended.
    """

    code = "wait_timeout"

    def __init__(self, run_id: str, status: str, timeout: float, awaited: list[str]) -> None:
        self.run_id = run_id
        self.status = status
        super().__init__(
            f"run {run_id!r} is still {status} after {timeout:g} s "
            f"(waited for: {', '.join(awaited)})"
        )


class IdempotencyConflictError(SquidMeshError):
    """An idempotency key (or explicit run id) is already used by a run with a different payload."""

    code = "idempotency_conflict"

    def __init__(self, what: str, run_id: str, problem: str) -> None:
        self.run_id = run_id
        super().__init__(f"{what} is already used by run {run_id}: {problem}")


class RunFinishedError(SquidMeshError):
    """The command cannot apply to a run that already finished."""

    code = "run_finished"

    def __init__(self, run_id: str, status: str, command: str) -> None:
        self.run_id = run_id
        self.status = status
        super().__init__(f"cannot {command} run {run_id}: it is already {status}")


class RunNotPausedError(SquidMeshError):
    """Resume, approve or reject reached a run that is not waiting at a gate."""

    code = "not_paused"

    def __init__(self, run_id: str, status: str, command: str) -> None:
        self.run_id = run_id
        self.status = status
        super().__init__(f"cannot {command} run {run_id}: it is not paused (it is {status})")


class WrongGateError(SquidMeshError):
    """The run waits at a gate of the other kind (resume is for pauses, approve/reject for approvals)."""

    code = "wrong_gate"

    def __init__(self, run_id: str, gate: str, step: str, command: str) -> None:
        self.run_id = run_id
        use = "resume" if gate == "pause" else "approve or reject"
        super().__init__(
            f"cannot {command} run {run_id}: it waits at {gate} step {step!r}; use {use}"
        )


class Cancelled(SquidMeshError):
    """Raised by ``ctx.heartbeat()`` in a step whose run was cancelled (or ended) meanwhile.

    Let it propagate (or return early): whatever the step does now is recorded as discarded.
    """

    code = "cancelled"

    def __init__(self, run_id: str, status: str) -> None:
        self.run_id = run_id
        self.status = status
        super().__init__(f"run {run_id} is {status}: stop this step, its result will be discarded")


class ReplayRefusedError(SquidMeshError):
    """A replay was refused: the source run has not finished, or it did what cannot be redone."""

    code = "replay_refused"

    def __init__(self, run_id: str, problem: str, steps: list[str] | None = None) -> None:
        self.run_id = run_id
        self.steps = steps or []
        super().__init__(f"cannot replay run {run_id}: {problem}")


class MigrationRefusedError(SquidMeshError):
    """``migrate_run`` cannot move the run: the target version lacks what the run is waiting on."""

    code = "migration_refused"

    def __init__(self, run_id: str, problem: str, steps: list[str] | None = None) -> None:
        self.run_id = run_id
        self.steps = steps or []
        super().__init__(f"cannot migrate run {run_id}: {problem}")


class DefinitionDriftWarning(UserWarning):
    """A definition changed without a new version.

    It was registered with another fingerprint than the one recorded for its (workflow, version).
    """


class LeaseLostError(SquidMeshError):
    """The worker's claim on an attempt was replaced (its lease expired and another worker took it)."""

    code = "lease_lost"


class StoreError(SquidMeshError):
    """The database failed; the message names the store, never its credentials."""

    code = "store_error"


def redact(value: Any, *, _depth: int = 0) -> Any:
    """Replace the values of secret-looking keys with ``"[REDACTED]"``, recursively.

    Example:
        >>> redact({"user": "ann", "API_KEY": "k", "nested": [{"password": "p"}]})
        {'user': 'ann', 'API_KEY': '[REDACTED]', 'nested': [{'password': '[REDACTED]'}]}
    """
    if _depth > 32:
        return value
    if isinstance(value, Mapping):
        return {
            key: "[REDACTED]"
            if isinstance(key, str) and _is_secret_key(key)
            else redact(item, _depth=_depth + 1)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [redact(item, _depth=_depth + 1) for item in value]
    return value


_SECRET_KEYS = frozenset(
    {
        "password",
        "passwd",
        "token",
        "secret",
        "api_key",
        "apikey",
        "authorization",
        "access_token",
        "refresh_token",
        "claim_token",
        "credential",
        "credentials",
        "private_key",
        "client_secret",
    }
)


def _is_secret_key(key: str) -> bool:
    return key.lower().replace("-", "_") in _SECRET_KEYS
