"""Running one step callable and turning whatever it does into a :class:`StepResult`."""

from __future__ import annotations

import contextvars
import json
import threading
import traceback
from collections.abc import Mapping
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from squid_mesh.definition.outcomes import Fail, Retry
from squid_mesh.definition.payload import non_string_key
from squid_mesh.definition.workflow import Step
from squid_mesh.engine.context import StepContext
from squid_mesh.engine.planner import StepResult
from squid_mesh.errors import redact

if TYPE_CHECKING:
    import asyncio

_MAX_MESSAGE = 2_000
_MAX_TRACE = 4_000

# The event loop async steps run on in this thread (a Worker sets one shared loop for all its
# lanes, so async clients a step keeps between runs stay bound to one loop); None: a fresh loop.
step_loop: ContextVar[asyncio.AbstractEventLoop | None] = ContextVar("step_loop", default=None)


def run_step(step: Step, step_input: dict[str, Any], ctx: StepContext) -> StepResult:
    """Call the step (sync, or async on an event loop) and classify the outcome.

    ``Retry`` asks for another attempt; ``Fail`` is final; any other exception is retryable under the
    step's policy. ``KeyboardInterrupt`` and ``SystemExit`` are not caught: the process is going away
    and the lease will hand the attempt to another worker.
    """
    try:
        returned = _call(step, step_input, ctx)
    except Retry as exc:
        return StepResult(
            error=_json_safe({"type": "Retry", "code": "retry_requested", "message": exc.reason}),
            retryable=True,
            retry_after=exc.after,
        )
    except Fail as exc:
        error: dict[str, Any] = {"type": "Fail", "code": exc.code, "message": exc.reason}
        if exc.details:
            error["details"] = redact(exc.details)
        return StepResult(error=_json_safe(error), retryable=False)
    except Exception as exc:
        return StepResult(error=exception_error(exc), retryable=True)
    return _check_output(step, returned)


def _json_safe(error: dict[str, Any]) -> dict[str, Any]:
    # A reason or detail the step gave as a datetime, a set, bytes ... is kept as its repr: the
    # error must be recordable, or the attempt could never be finished (and would be re-run).
    return dict(json.loads(json.dumps(error, default=repr, allow_nan=False, ensure_ascii=True)))


def exception_error(exc: BaseException) -> dict[str, Any]:
    """Type, message and a bounded traceback of an exception, JSON-safe."""
    cls = type(exc)
    trace = "".join(traceback.format_exception(exc))
    return {
        "type": f"{cls.__module__}.{cls.__qualname__}",
        "code": "exception",
        "message": str(exc)[:_MAX_MESSAGE],
        "traceback": trace[-_MAX_TRACE:],
    }


def _call(step: Step, step_input: dict[str, Any], ctx: StepContext) -> Any:
    if not step.is_async:
        return step.fn(step_input, ctx)
    # Loaded on the first async step: asyncio is a third of `import squid_mesh` otherwise.
    import asyncio

    loop = step_loop.get()
    if loop is not None:
        return _on_loop(loop, step.fn(step_input, ctx))
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(step.fn(step_input, ctx))
    # Called from inside a running loop (an async host calling execute_next synchronously):
    # run the coroutine on a loop of its own in a helper thread rather than fail.
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(step.fn(step_input, ctx))
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=target, name=f"squid-mesh-step-{step.name}")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box.get("value")


def _on_loop(loop: asyncio.AbstractEventLoop, coro: Any) -> Any:
    """Run ``coro`` on another thread's loop, in a copy of this thread's context, and wait.

    The context carries the current span, so child runs an async step starts join its trace
    (``run_coroutine_threadsafe`` would run it in the loop's own context instead).
    """
    import concurrent.futures

    done: concurrent.futures.Future[Any] = concurrent.futures.Future()
    context = contextvars.copy_context()

    def settle(task: asyncio.Task[Any]) -> None:
        if task.cancelled():
            done.cancel()
        elif (error := task.exception()) is not None:
            done.set_exception(error)
        else:
            done.set_result(task.result())

    def launch() -> None:
        loop.create_task(coro, context=context).add_done_callback(settle)

    loop.call_soon_threadsafe(launch)
    return done.result()


def _check_output(step: Step, returned: Any) -> StepResult:
    if returned is None:
        return StepResult(output={})
    if not isinstance(returned, Mapping) or not all(isinstance(k, str) for k in returned):
        return StepResult(
            error={
                "type": "SquidMeshError",
                "code": "invalid_output",
                "message": f"step {step.name!r} must return a dict with string keys or None, "
                f"got {type(returned).__name__}",
            }
        )
    try:
        output = json.loads(json.dumps(dict(returned), allow_nan=False))
        # As for payloads: a nested non-string key would come back as a string; refused instead.
        where = None if output == returned else non_string_key(returned)
        if where is not None:
            raise ValueError(f"{where}: keys must be strings")
        return StepResult(output=output)
    except (TypeError, ValueError) as exc:
        return StepResult(
            error={
                "type": "SquidMeshError",
                "code": "invalid_output",
                "message": f"step {step.name!r} returned a value that is not JSON-serialisable: {exc}",
            }
        )
