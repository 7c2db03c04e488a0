"""The lead sweep: expired offers re-routed, missed first-contact SLAs re-routed, quiet
leads returned to the public pool, queued leads offered.

The body of the "lead-sweep" job; when and where it runs is scheduler.jobs' business.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from handlers.assignment import drain_queue, expire_offers
from handlers.lifecycle import miss_sla, return_to_pool

if TYPE_CHECKING:
    from bot.runtime import Runtime

log = logging.getLogger(__name__)


async def sweep_once(rt: Runtime) -> tuple[int, int]:
    """One pass; returns (offers expired, queued leads offered). The SLA misses and pool
    returns are routed on the spot and logged."""
    from bot.uploads import clean_spool
    from handlers.import_chat import finish_interrupted
    from handlers.lead_import import index_imports, purge_imports, resume_imports

    await resume_imports(rt)
    await finish_interrupted(rt)
    await index_imports(rt)
    await purge_imports(rt)
    await clean_spool(rt)
    expired = await expire_offers(rt)
    missed = await miss_sla(rt)
    pooled = await return_to_pool(rt)
    offered = await drain_queue(rt)
    if expired or missed or pooled or offered:
        log.info("sweep: %d offers expired, %d first-contact SLAs missed, %d leads back in "
                 "the pool, %d queued leads offered", expired, missed, pooled, offered)
    return expired, offered
