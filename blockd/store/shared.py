"""One store handle per daemon process, shared by the follower, the hit writer, the notice
server's "blocked before?" lookup and the nftables reconciler.

Opened lazily and probed before use (a replaced or damaged file is noticed). When a
reader finds the store broken it calls :meth:`SharedStore.drop`, and the next user opens
it afresh: the file may have been restored. Safe to use from worker threads.

A dropped handle is retired, not closed, until the process stops: closing the last
connection of a WAL-mode SQLite file checkpoints and removes the WAL, and doing that while
the file is damaged or being restored loses the data that lived only in the WAL.
"""

from __future__ import annotations

import threading

from blockd.store.store import Store

RETIRED = 8  # handles kept open after a failure (older ones are left to the GC)


class SharedStore:
    def __init__(self, db: str) -> None:
        self.db = db
        self._store: Store | None = None
        self._retired: list[Store] = []
        self._lock = threading.Lock()

    def get(self) -> Store:
        """The open store, probed; raises StoreError if it cannot be used now."""
        with self._lock:
            if self._store is None:
                self._store = Store.open(self.db)
            store = self._store
        try:
            store.probe()
        except Exception:
            self.drop(store)
            raise
        return store

    def drop(self, store: Store | None = None) -> None:
        """Forget the handle (``store``: only if it is still the current one). A
        PostgreSQL handle is closed at once: retiring is for SQLite's WAL, and a retired
        pool would hold its server connections."""
        with self._lock:
            if self._store is None or (store is not None and store is not self._store):
                return
            dropped, self._store = self._store, None
            if not dropped.postgres:
                self._retired.append(dropped)
                del self._retired[:-RETIRED]
        if dropped.postgres:
            dropped.close()

    def named_before(self, subject: str) -> bool:
        """:class:`blockd.core.ports.PastBlocks` for the notice server."""
        return self.get().named_before(subject)

    def close(self) -> None:
        """At shutdown: close the current and the retired handles."""
        with self._lock:
            stores = [*self._retired, *([self._store] if self._store else [])]
            self._store = None
            self._retired.clear()
        for store in stores:
            store.close()
