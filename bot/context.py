"""The one typed context every handler receives with its event."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.events import Event
from bot.outbox import Content, Markdown, enqueue, enqueue_group
from config.settings import Settings
from storage.models import AuditLog, Card, Member, PendingReply

if TYPE_CHECKING:
    from bot.runtime import Runtime

log = logging.getLogger("salesbot.handlers")


@dataclass
class Context:
    rt: Runtime
    session: AsyncSession
    event: Event
    member: Member
    now: datetime
    outcome: str = "ok"
    hooks: list[Callable[[Runtime], Awaitable[Any]]] = field(default_factory=list)

    def after_commit(self, hook: Callable[[Runtime], Awaitable[Any]]) -> None:
        """Run `hook(rt)` once this event's transaction has committed."""
        self.hooks.append(hook)

    @property
    def settings(self) -> Settings:
        return self.rt.settings

    async def reply(self, content: Content) -> Card | None:
        """Answer the sender on the channel the event came from."""
        return await enqueue(self.session, self.rt, self.member, content,
                             channel=self.event.channel)

    async def send(self, member: Member, content: Content) -> Card | None:
        return await enqueue(self.session, self.rt, member, content)

    async def send_group(self, team: str | None, content: Markdown | str) -> bool:
        return await enqueue_group(self.session, self.rt, team, content)

    async def clicked_card(self) -> Card | None:
        """The card this click came from, keeping the click's WeCom ResponseCode on it:
        that code is what lets us update the card in place."""
        if not self.event.card_ref:
            return None
        card = await self.session.scalar(select(Card).where(Card.ref == self.event.card_ref))
        if card is not None and self.event.response_code:
            card.response_code = self.event.response_code
        return card

    async def expect(self, kind: str, object_id: int) -> None:
        """Remember that the next free text from this member answers `kind`."""
        await self.session.merge(PendingReply(
            member_id=self.member.id, kind=kind, object_id=object_id, created_at=self.now,
        ))

    async def clear_expectation(
        self, kind: str | None = None, object_id: int | None = None
    ) -> None:
        """Forget what the bot waits for; with `kind` / `object_id`, only if it is that."""
        query = delete(PendingReply).where(PendingReply.member_id == self.member.id)
        if kind is not None:
            query = query.where(PendingReply.kind == kind)
        if object_id is not None:
            query = query.where(PendingReply.object_id == object_id)
        await self.session.execute(query)

    def audit(
        self, action: str, object_type: str, object_id: Any,
        before: dict[str, Any] | None = None, after: dict[str, Any] | None = None,
    ) -> None:
        audit(self.session, self.member, action, object_type, object_id, before, after,
              self.now)


def audit(
    session: AsyncSession, actor: Member | None, action: str, object_type: str,
    object_id: Any, before: dict[str, Any] | None, after: dict[str, Any] | None,
    at: datetime,
) -> None:
    session.add(AuditLog(
        actor_id=actor.id if actor else None, actor=actor.name if actor else "system",
        action=action, object_type=object_type,
        object_id=None if object_id is None else str(object_id),
        before=before, after=after, at=at,
    ))
