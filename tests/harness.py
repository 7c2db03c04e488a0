"""A chat-like harness: push a member's message into the real dispatcher, pop replies.

It drives the same Inbox → Dispatcher → Outbox path as a platform callback, on the
console channel, with a clock the test can move.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select

from bot.events import Event
from bot.runtime import Runtime
from cards.model import CardModel
from cards.text import render_text
from storage.models import Card, Member, Outgoing

_keys = itertools.count(1)


@dataclass
class Sent:
    id: int
    kind: str
    text: str
    card: CardModel | None
    card_id: int | None

    def button(self, label_part: str) -> str:
        assert self.card is not None, f"message {self.id} is not a card: {self.text}"
        for button in self.card.buttons:
            if label_part in button.label:
                return button.key
        raise AssertionError(f"no button {label_part!r} on {self.text}")


class FrozenClock:
    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


class Chat:
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self._seen: dict[str, int] = {}

    async def add_members(self, *rows: dict[str, Any]) -> dict[str, Member]:
        async with self.rt.sessions() as session, session.begin():
            members = []
            for row in rows:
                values = {"role": "rep", "status": "active", "industries": []} | row
                manager = values.pop("manager", None)
                member = Member(**values)
                if manager:
                    boss = await session.scalar(select(Member).where(Member.name == manager))
                    member.manager_id = boss.id
                session.add(member)
                await session.flush()
                members.append(member)
        return {m.name: m for m in members}

    async def event(self, name: str, **fields: Any) -> None:
        event = Event(channel="console", sender=name, key=f"t{next(_keys)}", **fields)
        await self.rt.inbox.record(event)
        await self.settle()

    async def say(self, name: str, text: str) -> list[Sent]:
        await self.event(name, kind="text", text=text)
        return await self.inbox(name)

    async def click(self, name: str, key: str, card_id: int | None = None) -> list[Sent]:
        ref = None
        if card_id is not None:
            async with self.rt.sessions() as session:
                ref = (await session.get(Card, card_id)).ref
        await self.event(name, kind="card_action", action=key, card_ref=ref)
        return await self.inbox(name)

    async def settle(self) -> None:
        await self.rt.inbox.drain()
        while await self.rt.outbox.run_once():
            pass

    async def inbox(self, name: str) -> list[Sent]:
        """Messages delivered to the member since the last look, cards as sent now."""
        async with self.rt.sessions() as session:
            member = await session.scalar(select(Member).where(Member.name == name))
            rows = (await session.execute(
                select(Outgoing, Card)
                .outerjoin(Card, Card.id == Outgoing.card_id)
                .where(Outgoing.recipient == f"member:{member.id}", Outgoing.state == "sent",
                       Outgoing.kind != "card_update",
                       Outgoing.id > self._seen.get(name, 0))
                .order_by(Outgoing.id)
            )).all()
        out = []
        for row, card in rows:
            self._seen[name] = row.id
            model = CardModel.from_json(card.body) if card else None
            text = render_text(model) if model else row.payload.get("text", "")
            out.append(Sent(row.id, row.kind, text, model, card.id if card else None))
        return out

    async def card(self, card_id: int) -> CardModel:
        async with self.rt.sessions() as session:
            return CardModel.from_json((await session.get(Card, card_id)).body)


# A Wednesday at 10:00 in Beijing: inside the default working hours.
WORKDAY_MORNING = datetime(2026, 12, 2, 2, 0, tzinfo=UTC)
