"""The Runtime: settings, database, channels, clock, metrics and the background workers.

One per process, built by bot.app and handed to every handler through the Context.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy.ext.asyncio import AsyncEngine

from bot.metrics import Metrics
from config.settings import Settings
from handlers.matching import keep_keys_current
from scheduler.calendar import NO_EXTRA, CalendarExtra
from storage.db import Sessions, create_engine, is_sqlite

if TYPE_CHECKING:
    from bot.channels.base import Channel
    from bot.dispatch import Dispatcher
    from bot.inbox import Inbox
    from bot.outbox import OutboxWorker
    from storage.models import Member

log = logging.getLogger(__name__)

PLATFORMS = ("wecom", "dingtalk")


def system_clock() -> datetime:
    return datetime.now(UTC)


class Runtime:
    def __init__(self, settings: Settings, engine: AsyncEngine | None = None) -> None:
        self.settings = settings
        self.engine = engine or create_engine(settings.database.url)
        self.sessions = Sessions(self.engine)
        keep_keys_current()  # the duplicate checks' keys follow every ORM write
        self.is_sqlite = is_sqlite(settings.database.url)
        self.metrics = Metrics()
        self.clock: Callable[[], datetime] = system_clock
        # The admins' holidays and make-up days for years the statutory data lacks.
        self.calendar_extra: CalendarExtra = NO_EXTRA
        # Whether this process may have left the engine's error alert open (None: unknown
        # yet), so that a working engine does not delete it on every batch.
        self.engine_failing: bool | None = None
        # What the engine reads for every batch, kept briefly (handlers.choosing).
        self.engine_inputs: dict[object, tuple[float, Any]] = {}
        self.channels: dict[str, Channel] = {}
        self.tasks: set[asyncio.Task[Any]] = set()
        self.inbox: Inbox
        self.outbox: OutboxWorker
        self.dispatcher: Dispatcher

    def now(self) -> datetime:
        return self.clock()

    @property
    def platforms_enabled(self) -> list[str]:
        return [name for name in PLATFORMS if name in self.channels]

    def route(self, member: Member, prefer: str | None = None) -> str | None:
        """The channel that reaches this member, or None when none does."""
        def reaches(name: str | None) -> bool:
            channel = self.channels.get(name or "")
            return channel is not None and channel.address_of(member) is not None

        if prefer and reaches(prefer):
            return prefer
        if member.channel in PLATFORMS and reaches(member.channel):
            return member.channel
        for name in PLATFORMS:
            if reaches(name):
                return name
        if not self.platforms_enabled and reaches("console"):
            return "console"
        return None

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        """Run slow work in the background, tracked so shutdown can cancel it."""
        task = asyncio.create_task(coro, name=name)
        self.tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task %s failed", task.get_name(), exc_info=task.exception())

    async def close(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)
        for channel in self.channels.values():
            await channel.stop()
        await self.sessions.dispose()
        await self.engine.dispose()
