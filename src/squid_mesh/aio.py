"""``mesh.aio``: every command of a :class:`~squid_mesh.Mesh` as a coroutine, for asyncio hosts.

Each method runs the synchronous command in a worker thread (``asyncio.to_thread``), so the event
loop never waits on the database; the logic is the synchronous core's, not a copy. Signatures,
return types and errors are the same as on ``Mesh``.

Example:
    >>> async def checkout(order_id: str) -> str:  # doctest: +SKIP
    ...     run = await mesh.aio.start("checkout", {"order_id": order_id},
    ...                                idempotency_key=order_id)
    ...     return (await mesh.aio.explain_run(run.id)).summary
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine, Iterable
from datetime import timedelta
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar, overload

# mesh.py imports this module lazily (in ``Mesh.aio``), so this import is not circular.
from squid_mesh.mesh import Mesh
from squid_mesh.read.snapshot import RunSnapshot
from squid_mesh.read.waiting import wait_flow

P = ParamSpec("P")
T = TypeVar("T")


class _Offloaded(Generic[P, T]):
    """A ``Mesh`` method seen from ``AsyncMesh``: same parameters, awaited in a thread."""

    def __init__(self, method: Callable[Concatenate[Mesh, P], T]) -> None:
        self._method = method
        self.__doc__ = f"Awaitable :meth:`Mesh.{method.__name__}`, run in a worker thread."

    @overload
    def __get__(self, owner: None, kind: type[AsyncMesh]) -> _Offloaded[P, T]: ...
    @overload
    def __get__(
        self, owner: AsyncMesh, kind: type[AsyncMesh]
    ) -> Callable[P, Coroutine[Any, Any, T]]: ...
    def __get__(
        self, owner: AsyncMesh | None, kind: type[AsyncMesh]
    ) -> _Offloaded[P, T] | Callable[P, Coroutine[Any, Any, T]]:
        if owner is None:
            return self
        bound = functools.partial(self._method, owner.mesh)

        @functools.wraps(self._method)
        async def call(*args: P.args, **kwargs: P.kwargs) -> T:
            return await asyncio.to_thread(bound, *args, **kwargs)

        return call


class AsyncMesh:
    """The commands of one :class:`~squid_mesh.Mesh` as coroutines: ``mesh.aio``.

    Example:
        >>> run = await mesh.aio.start("hello", {"name": "ann"})  # doctest: +SKIP
        >>> snap = await mesh.aio.inspect_run(run.id)  # doctest: +SKIP
    """

    def __init__(self, mesh: Mesh) -> None:
        self.mesh = mesh

    migrate = _Offloaded(Mesh.migrate)
    migrate_run = _Offloaded(Mesh.migrate_run)
    start = _Offloaded(Mesh.start)
    execute_next = _Offloaded(Mesh.execute_next)
    cron_tick = _Offloaded(Mesh.cron_tick)
    replay = _Offloaded(Mesh.replay)
    cancel = _Offloaded(Mesh.cancel)
    resume = _Offloaded(Mesh.resume)
    approve = _Offloaded(Mesh.approve)
    reject = _Offloaded(Mesh.reject)
    explain_run = _Offloaded(Mesh.explain_run)
    run_graph = _Offloaded(Mesh.run_graph)
    inspect_run = _Offloaded(Mesh.inspect_run)
    list_runs = _Offloaded(Mesh.list_runs)
    run_counts = _Offloaded(Mesh.run_counts)
    purge = _Offloaded(Mesh.purge)
    set_queue_limits = _Offloaded(Mesh.set_queue_limits)
    queue_limits = _Offloaded(Mesh.queue_limits)
    queue_stats = _Offloaded(Mesh.queue_stats)
    workers = _Offloaded(Mesh.workers)
    schedules = _Offloaded(Mesh.schedules)
    verify = _Offloaded(Mesh.verify)

    async def wait_run(
        self,
        run_id: str,
        *,
        timeout: float | timedelta | None = None,
        until: Iterable[str] | str | None = None,
        poll_interval: float | timedelta = 0.5,
    ) -> RunSnapshot:
        """:meth:`Mesh.wait_run`, sleeping on the event loop between looks (no thread held).

        Example:
            >>> done = await mesh.aio.wait_run(run.id, timeout=30)  # doctest: +SKIP
        """
        flow = wait_flow(run_id, until=until, timeout=timeout, poll_interval=poll_interval)
        delay = next(flow)
        while True:
            await asyncio.sleep(delay)
            try:
                delay = flow.send(await self.inspect_run(run_id))
            except StopIteration as done:
                found: RunSnapshot = done.value
                return found
