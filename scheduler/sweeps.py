"""The lead sweep: expired offers re-routed, queued leads offered.

The body of the "lead-sweep" job; when and where it runs is scheduler.jobs' business.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from handlers.assignment import drain_queue, expire_offers

if TYPE_CHECKING:
    from bot.runtime import Runtime

log = logging.getLogger(__name__)


async def sweep_once(rt: Runtime) -> tuple[int, int]:
    expired = await expire_offers(rt)
    offered = await drain_queue(rt)
    if expired or offered:
        log.info("sweep: %d offers expired, %d queued leads offered", expired, offered)
    return expired, offered
