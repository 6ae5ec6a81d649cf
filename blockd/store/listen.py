"""Learn of new journal entries from PostgreSQL at once: LISTEN on the channel every write
that appends to the journal NOTIFYs when it commits (:data:`blockd.store.store.NOTIFY_CHANNEL`).

Appliances sharing one store are on other hosts, so SQLite's file probe cannot tell them;
a notification wakes the follower the moment another machine's write commits. It only
wakes: the follower still reads the journal itself (a lost notification, a listener that
is reconnecting, costs at most one poll interval), and the regular poll keeps judging the
store's health. One connection per process, on the event loop (psycopg's async API).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from blockd.store.engine import CONNECT_TIMEOUT_S, database_url, redact
from blockd.store.store import NOTIFY_CHANNEL

log = logging.getLogger("blockd.follow")

RETRY = 1.0  # seconds before connecting again after the server went away
IDLE_CHECK = 30.0  # seconds without a notification before the connection is tested


def conninfo(db: str) -> str:
    """The libpq URI of a ``postgresql://`` store (psycopg does not take SQLAlchemy's
    ``+psycopg`` dialect suffix)."""
    url, _ = database_url(db)
    return "postgresql://" + url.split("://", 1)[1]


async def listen(db: str, wake: Callable[[], None],
                 on_state: Callable[[bool], None] | None = None) -> None:
    """Call ``wake()`` on every notification, until cancelled; reconnects after errors.
    ``on_state(True/False)`` says whether a LISTEN is in place (metrics)."""
    import psycopg

    was_up = True
    while True:
        try:
            conn = await psycopg.AsyncConnection.connect(
                conninfo(db), autocommit=True, connect_timeout=CONNECT_TIMEOUT_S,
                application_name="blockd-listen")
            async with conn:
                await conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                if on_state is not None:
                    on_state(True)
                if not was_up:
                    log.info("listening for journal notifications again")
                was_up = True
                wake()  # whatever was committed while nobody listened
                while True:
                    async for _ in conn.notifies(timeout=IDLE_CHECK):
                        wake()
                    await conn.execute("SELECT 1")  # still there?
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the server is down or unreachable: poll meanwhile
            if on_state is not None:
                on_state(False)
            if was_up:
                log.warning("journal notifications from %s unavailable (%s); following by "
                            "polling until it is back", redact(db), " ".join(str(exc).split()))
            was_up = False
            await asyncio.sleep(RETRY)
