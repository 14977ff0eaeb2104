"""Injected store faults, for fault-injection tests only.

:class:`FaultyStore` wraps a store and makes a share of its write transactions fail on purpose:
*transient* (an error before anything is written) or *ambiguous* (the commit happened, then the
caller gets an error, as when a connection drops during ``COMMIT``). The seeded simulation uses it
directly; a process started with ``SQUID_MESH_INJECT_FAULTS=<rate>[:<seed>]`` gets it from
``open_store`` (the kill storm's workers). Without the variable nothing is wrapped.
"""

from __future__ import annotations

import os
import random
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager

from squid_mesh.errors import StoreError
from squid_mesh.store.base import Listener, Store, Tx

SETTING = "SQUID_MESH_INJECT_FAULTS"


class FaultyStore:
    """A store whose writes fail now and then, half before the write and half after the commit."""

    def __init__(self, inner: Store, rng: random.Random, rate: float, *, owns: bool = True) -> None:
        self._inner = inner
        self._rng = rng
        self.rate = rate
        self._owns = owns
        self.backend = inner.backend
        self.borrows_connections = inner.borrows_connections
        self.max_connections = inner.max_connections
        self.decides_on_cached_state = inner.decides_on_cached_state
        self.injected: Counter[str] = Counter()

    @contextmanager
    def _faulty(self, begin: Callable[[], AbstractContextManager[Tx]]) -> Iterator[Tx]:
        fault = None
        if self.rate and self._rng.random() < self.rate:
            fault = self._rng.choice(["transient", "ambiguous"])
        if fault == "transient":
            self.injected["transient"] += 1
            raise StoreError("injected fault: connection lost before the write")
        with begin() as tx:
            yield tx
        if fault == "ambiguous":
            self.injected["ambiguous"] += 1
            raise StoreError("injected fault: connection lost after the commit")

    def transaction(self) -> AbstractContextManager[Tx]:
        """See :meth:`Store.transaction`; may fail on purpose."""
        return self._faulty(self._inner.transaction)

    def single_write(self) -> AbstractContextManager[Tx]:
        """See :meth:`Store.single_write`; may fail on purpose."""
        return self._faulty(self._inner.single_write)

    def read_transaction(self) -> AbstractContextManager[Tx]:
        """See :meth:`Store.read_transaction` (reads are left alone)."""
        return self._inner.read_transaction()

    def might_have_due(self, queue: str, wf_keys: Sequence[str], now: float) -> bool:
        """See :meth:`Store.might_have_due`."""
        return self._inner.might_have_due(queue, wf_keys, now)

    def next_due(self, queue: str, wf_keys: Sequence[str]) -> float | None:
        """See :meth:`Store.next_due`."""
        return self._inner.next_due(queue, wf_keys)

    def listen(self) -> Listener | None:
        """See :meth:`Store.listen`."""
        return self._inner.listen()

    def migrate(self) -> list[str]:
        """See :meth:`Store.migrate` (never faulted: tests start from a migrated store)."""
        return self._inner.migrate()

    def describe(self) -> str:
        """See :meth:`Store.describe`."""
        return self._inner.describe()

    def release_thread(self) -> None:
        """See :meth:`Store.release_thread`."""
        self._inner.release_thread()

    def close(self) -> None:
        """Close the wrapped store, if this wrapper owns it."""
        if self._owns:
            self._inner.close()


def from_environment(store: Store) -> Store:
    """``store`` wrapped when ``SQUID_MESH_INJECT_FAULTS`` asks for it, else ``store`` itself."""
    setting = os.environ.get(SETTING)
    if not setting:
        return store
    rate, _, seed = setting.partition(":")
    return FaultyStore(store, random.Random(int(seed) if seed else None), float(rate))
