"""Hit retention: delete buckets older than each order's policy keeps them
(``[hits] retention_days``), as one journal entry per run that names how many and which
days, never the rows. Run by the daemons every hour and by ``blockd hits prune``."""

from __future__ import annotations

import socket
from collections.abc import Mapping
from datetime import datetime, timedelta

from blockd.core.enforcement import EnforcementPolicy
from blockd.core.journal import JournalEntry
from blockd.store.store import Store


def prune(store: Store, policies: Mapping[str, EnforcementPolicy], at: datetime,
          actor: str) -> JournalEntry | None:
    """The journal entry of what was deleted, or None if nothing was due."""
    today = at.date()
    cutoffs = {name: today - timedelta(days=p.hit_retention_days)
               for name, p in policies.items()}
    default = cutoffs.get("default", today - timedelta(days=90))
    return store.prune_hits(cutoffs, default, actor=actor, at=at)


def daemon_actor(instance: str) -> str:
    """Who prunes in the journal when a daemon does it."""
    return f"blockd-{instance}@{socket.gethostname()}"
