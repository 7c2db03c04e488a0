"""Alerts to the admins: one message per episode, not one per occurrence.

An episode opens with the first alert under its key and closes with resolve(); while
open, further alerts under the same key are silent.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from sqlalchemy import delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from bot.outbox import enqueue
from storage.models import Alert, Member

if TYPE_CHECKING:
    from bot.runtime import Runtime

log = logging.getLogger(__name__)


async def alert_admins(session: AsyncSession, rt: Runtime, key: str, text: str) -> bool:
    """Tell every admin once per episode; True if this call opened the episode."""
    dialect = sqlite if rt.is_sqlite else postgresql
    opened = await session.execute(
        dialect.insert(Alert).values(key=key, opened_at=rt.now(), detail=text[:500])
        .on_conflict_do_nothing(index_elements=["key"]).returning(Alert.key)
    )
    if opened.scalar() is None:
        return False
    admins = (await session.scalars(
        select(Member).where(Member.role == "admin", Member.status != "left")
    )).all()
    for admin in admins:
        await enqueue(session, rt, admin, text)
    log.warning("alert %s opened; %d admins told", key, len(admins))
    return True


async def resolve(session: AsyncSession, key: str) -> None:
    await session.execute(delete(Alert).where(Alert.key == key))
