"""The overblocking guard at the kernel's door: what may go into table inet blockd."""

from __future__ import annotations

import logging
from collections.abc import Callable

from blockd.core.guard import Guard
from blockd.core.model import Target

log = logging.getLogger("blockd.nft")


def refuser(guard: Guard, forced: set[str]) -> Callable[[Target], bool]:
    """True for a target the guard refuses and nobody forced (logged once per target)."""
    seen: set[str] = set()

    def refused(target: Target) -> bool:
        if target.spec in forced:
            return False
        reasons = guard.check(target)
        if reasons and target.spec not in seen:
            seen.add(target.spec)
            log.warning("not put into nftables: %s", "; ".join(str(r) for r in reasons))
        return bool(reasons)

    return refused
