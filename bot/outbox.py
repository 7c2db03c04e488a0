"""The outbox: messages written in the handler's transaction, delivered by one worker loop.

Owns enqueueing, claiming, per-recipient budgets, digests, retries and card updates.
It does not decide what to say; handlers do, and channels do the platform calls.
"""

from __future__ import annotations

import asyncio
import logging
import random
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bot.channels.base import Budget, Delivery, Parcel
from cards.model import CardModel
from storage.models import Card, Member, Outgoing

if TYPE_CHECKING:
    from bot.runtime import Runtime

log = logging.getLogger(__name__)

DIGEST_TITLE = "【消息汇总】您有 {n} 条新消息："
DIGEST_LIMIT = 1800  # characters: WeCom text takes 2,048 bytes, markdown 4,096
STALE_CLAIM = timedelta(minutes=2)


@dataclass(slots=True)
class Markdown:
    """A markdown message; in a team channel it @-mentions `mentions` (platform user ids)
    and `people` (members, each mentioned by their own id on every platform)."""

    text: str
    mentions: tuple[str, ...] = ()
    people: tuple[Member, ...] = ()


Content = str | Markdown | CardModel


def new_ref() -> str:
    """A platform idempotency key: WeCom task_id allows [0-9a-zA-Z_-@], 128 bytes."""
    return "sb" + uuid.uuid4().hex


async def enqueue(
    session: AsyncSession,
    rt: Runtime,
    member: Member,
    content: Content,
    *,
    channel: str | None = None,
    dedupe_key: str | None = None,
) -> Card | None:
    """Queue a message or card for a member; returns the Card row for a card."""
    route = rt.route(member, prefer=channel)
    if route is None:
        log.warning("member %s is not reachable on any enabled channel", member.id)
        return None
    card = None
    if isinstance(content, CardModel):
        card = Card(
            ref=new_ref(), kind=content.kind, object_id=content.object_id,
            member_id=member.id, channel=route, body=content.to_json(),
            created_at=rt.now(), updated_at=rt.now(),
        )
        session.add(card)
        kind, payload = "card", {}
    elif isinstance(content, Markdown):
        kind, payload = "markdown", {"text": content.text, "mentions": list(content.mentions)}
    else:
        kind, payload = "text", {"text": content}
    session.add(Outgoing(
        channel=route, recipient=f"member:{member.id}", kind=kind, payload=payload,
        card=card, dedupe_key=dedupe_key or new_ref(), next_at=rt.now(),
    ))
    return card


def _group_payload(channel: Any, content: Markdown | str) -> dict[str, Any]:
    """The text and the mentions as this channel names people: its user ids, and the
    name each id stands for (DingTalk writes "@name" into the text)."""
    if not isinstance(content, Markdown):
        return {"text": content, "mentions": []}
    mentions, names = list(content.mentions), {}
    for person in content.people:
        address = channel.address_of(person)
        if address and address not in mentions:
            mentions.append(address)
            names[address] = person.name
    return {"text": content.text, "mentions": mentions, "names": names}


async def enqueue_group(
    session: AsyncSession, rt: Runtime, team: str | None, content: Markdown | str
) -> bool:
    """Queue a team-channel message on every channel the team has."""
    queued = False
    for name, channel in rt.channels.items():
        if channel.group_address(team) is None:
            continue
        session.add(Outgoing(
            channel=name, recipient=f"group:{team or ''}", kind="markdown",
            payload=_group_payload(channel, content), dedupe_key=new_ref(), next_at=rt.now(),
        ))
        queued = True
    return queued


async def enqueue_teams(
    session: AsyncSession, rt: Runtime, people: dict[str | None, list[Member]], text: str
) -> int:
    """One markdown message per team channel of these teams, each @-mentioning the
    team's people; teams whose messages go to the same group (a shared default robot)
    make one message there that mentions all of them. Returns how many were queued."""
    queued = 0
    for name, channel in rt.channels.items():
        by_address: dict[str, tuple[str | None, list[Member]]] = {}
        for team, members in people.items():
            address = channel.group_address(team)
            if address is None:
                continue
            _, mentioned = by_address.setdefault(address, (team, []))
            mentioned.extend(m for m in members if m not in mentioned)
        for team, mentioned in by_address.values():
            content = Markdown(text, people=tuple(mentioned))
            session.add(Outgoing(
                channel=name, recipient=f"group:{team or ''}", kind="markdown",
                payload=_group_payload(channel, content), dedupe_key=new_ref(),
                next_at=rt.now(),
            ))
            queued += 1
    return queued


async def open_cards(
    session: AsyncSession, kind: str, object_id: int, member_id: int | None = None
) -> list[Card]:
    """The cards of this kind about this object that still have buttons."""
    query = select(Card).where(Card.kind == kind, Card.object_id == object_id,
                               Card.state == "open")
    if member_id is not None:
        query = query.where(Card.member_id == member_id)
    return list((await session.scalars(query.order_by(Card.id))).all())


async def update_card(session: AsyncSession, rt: Runtime, card: Card, model: CardModel) -> None:
    """Change a card in place (who did what); the outbox carries it to the platform."""
    card.body = model.to_json()
    card.state = "closed" if not model.buttons else "open"
    card.updated_at = rt.now()
    session.add(Outgoing(
        channel=card.channel, recipient=f"member:{card.member_id}", kind="card_update",
        payload={}, card_id=card.id, dedupe_key=new_ref(), next_at=rt.now(),
    ))


# ---- pure budget logic -------------------------------------------------------------


@dataclass(slots=True)
class Plan:
    send: list[Outgoing]
    digest: list[Outgoing]  # texts folded into one message (sent as the first of them)
    wait_until: datetime | None  # for the rows neither sent nor folded


def plan_recipient(
    rows: list[Outgoing], sent_last_minute: int, sent_last_hour: int, budget: Budget,
    now: datetime, oldest_in_minute: datetime | None, oldest_in_hour: datetime | None,
) -> Plan:
    """Decide, for one recipient's due rows, what to send now within its budget.

    Card updates do not count: they change a card already received. Texts beyond the
    budget fold into one digest; cards wait for the window to free up.
    """
    left = _left(budget, sent_last_minute, sent_last_hour)
    updates = [r for r in rows if r.kind == "card_update"]
    fresh = [r for r in rows if r.kind != "card_update"]
    if left is None or len(fresh) <= left:
        return Plan(send=updates + fresh, digest=[], wait_until=None)
    texts = [r for r in fresh if r.kind in ("text", "markdown")]
    cards = [r for r in fresh if r.kind == "card"]
    send: list[Outgoing] = list(updates)
    digest: list[Outgoing] = []
    if left > 0 and len(texts) > 1:
        digest, left = texts, left - 1
    elif left > 0 and texts:
        send.append(texts[0])
        left -= 1
    send.extend(cards[:left])
    waiting = len(cards) > left or (left == 0 and texts and not digest)
    wait_until = None
    if waiting:
        wait_until = _window_frees(budget, sent_last_minute, sent_last_hour, now,
                                   oldest_in_minute, oldest_in_hour)
    return Plan(send=send, digest=digest, wait_until=wait_until)


def _left(budget: Budget, minute: int, hour: int) -> int | None:
    limits = []
    if budget.per_minute is not None:
        limits.append(budget.per_minute - minute)
    if budget.per_hour is not None:
        limits.append(budget.per_hour - hour)
    return max(0, min(limits)) if limits else None


def _window_frees(
    budget: Budget, minute: int, hour: int, now: datetime,
    oldest_minute: datetime | None, oldest_hour: datetime | None,
) -> datetime:
    if budget.per_hour is not None and hour >= budget.per_hour and oldest_hour:
        return oldest_hour + timedelta(hours=1, seconds=1)
    if oldest_minute:
        return max(now + timedelta(seconds=1), oldest_minute + timedelta(minutes=1, seconds=1))
    return now + timedelta(seconds=5)


def digest_text(rows: list[Outgoing]) -> str:
    lines = [DIGEST_TITLE.format(n=len(rows))]
    for number, row in enumerate(rows, start=1):
        text = str(row.payload.get("text", "")).strip().replace("\n", " ")
        line = f"{number}. {text}"
        if sum(len(x) + 1 for x in lines) + len(line) > DIGEST_LIMIT:
            lines.append(f"……另有 {len(rows) - number + 1} 条，请发送 /我的线索 查看")
            break
        lines.append(line)
    return "\n".join(lines)


def backoff(attempts: int, retry_after: float | None) -> float:
    base = min(300.0, 2.0 ** attempts)
    return max(retry_after or 0.0, base) * random.uniform(1.0, 1.25)


# ---- the worker ---------------------------------------------------------------------


class OutboxWorker:
    """Claims due rows, plans each recipient's budget, delivers through the channels."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._inflight = asyncio.Semaphore(8)
        self._pass = asyncio.Lock()  # one pass at a time in this process

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="outbox-worker")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def _loop(self) -> None:
        poll = self.rt.settings.outbox.poll_seconds
        while True:
            try:
                worked = await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("outbox pass failed")
                worked = 0
            if worked:
                continue
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=poll)
            except TimeoutError:
                pass
            self._wake.clear()

    async def run_once(self) -> int:
        """One pass: claim due rows, deliver them; returns how many rows were handled."""
        async with self._pass:
            return await self._pass_once()

    async def _pass_once(self) -> int:
        rows = await self._claim()
        if not rows:
            return 0
        groups: dict[tuple[str, str], list[Outgoing]] = defaultdict(list)
        for row in rows:
            groups[(row.channel, row.recipient)].append(row)
        now = self.rt.now()
        async with self.rt.sessions() as session:
            counts = await self._recent_counts(session, list(groups), now)
            cards, members = await self._load(session, rows)
        outcome = _Outcome()
        sends = {key: self._plan(key, group, counts.get(key), now, outcome)
                 for key, group in groups.items()}
        await asyncio.gather(*(
            self._deliver_group(key, group, cards, members, outcome)
            for key, group in sends.items() if group
        ))
        await self._record(outcome, now)
        return len(rows)

    async def _claim(self) -> list[Outgoing]:
        rt = self.rt
        now = rt.now()
        async with rt.sessions() as session, session.begin():
            await session.execute(
                update(Outgoing)
                .where(Outgoing.state == "sending", Outgoing.claimed_at < now - STALE_CLAIM)
                .values(state="pending")
            )
            query = (
                select(Outgoing)
                .where(Outgoing.state == "pending", Outgoing.next_at <= now)
                .order_by(Outgoing.id)
                .limit(rt.settings.outbox.batch)
            )
            if not rt.is_sqlite:
                query = query.with_for_update(skip_locked=True)
            rows = list((await session.scalars(query)).all())
            if rows:
                await session.execute(
                    update(Outgoing)
                    .where(Outgoing.id.in_([r.id for r in rows]))
                    .values(state="sending", claimed_at=now)
                )
        return rows

    # Limitation: with several processes on PostgreSQL, two passes may deliver to one
    # recipient in the same minute, each counting only what was sent before it began;
    # the budget of 25 under WeCom's 30 leaves room for that overlap, not for more.
    async def _recent_counts(
        self, session: AsyncSession, keys: list[tuple[str, str]], now: datetime
    ) -> dict[tuple[str, str], tuple[int, int, datetime | None, datetime | None]]:
        minute, hour = now - timedelta(minutes=1), now - timedelta(hours=1)
        result = await session.execute(
            select(
                Outgoing.channel, Outgoing.recipient,
                func.count().filter(Outgoing.sent_at > minute),
                func.count(),
                func.min(Outgoing.sent_at).filter(Outgoing.sent_at > minute),
                func.min(Outgoing.sent_at),
            )
            .where(
                Outgoing.recipient.in_([r for _, r in keys]),
                Outgoing.sent_at > hour,
                Outgoing.kind != "card_update",
                Outgoing.state == "sent",
            )
            .group_by(Outgoing.channel, Outgoing.recipient)
        )
        return {(c, r): (m, h, om, oh) for c, r, m, h, om, oh in result.all()}

    def _plan(
        self, key: tuple[str, str], rows: list[Outgoing],
        counts: tuple[int, int, datetime | None, datetime | None] | None, now: datetime,
        outcome: _Outcome,
    ) -> list[Outgoing]:
        """This recipient's rows to send now; the rest are folded or postponed."""
        channel = self.rt.channels.get(key[0])
        if channel is None:
            outcome.done.extend(
                (r, Delivery.retry(f"channel {key[0]} is not enabled", 60), now) for r in rows)
            return []
        budget = channel.group_budget if key[1].startswith("group:") else channel.budget
        minute, hour, oldest_minute, oldest_hour = counts or (0, 0, None, None)
        plan = plan_recipient(rows, minute, hour, budget, now, oldest_minute, oldest_hour)
        handled = {id(r) for r in plan.send} | {id(r) for r in plan.digest}
        waiting = [r for r in rows if id(r) not in handled]
        if waiting:
            until = plan.wait_until or now + timedelta(seconds=5)
            outcome.postponed.extend((r, until) for r in waiting)
        send = list(plan.send)
        if plan.digest:
            first, rest = plan.digest[0], plan.digest[1:]
            first.kind, first.payload = "text", {"text": digest_text(plan.digest)}
            outcome.rewritten.append(first)
            outcome.folded.extend((r, first.id) for r in rest)
            send.append(first)
        return sorted(send, key=lambda r: r.id)

    async def _load(
        self, session: AsyncSession, rows: list[Outgoing]
    ) -> tuple[dict[int, Card], dict[int, Member]]:
        card_ids = {r.card_id for r in rows if r.card_id is not None}
        member_ids = {int(r.recipient.removeprefix("member:")) for r in rows
                      if r.recipient.startswith("member:")}
        cards, members = {}, {}
        if card_ids:
            found = await session.scalars(select(Card).where(Card.id.in_(card_ids)))
            cards = {c.id: c for c in found.all()}
        if member_ids:
            found = await session.scalars(select(Member).where(Member.id.in_(member_ids)))
            members = {m.id: m for m in found.all()}
        return cards, members

    async def _deliver_group(
        self, key: tuple[str, str], rows: list[Outgoing], cards: dict[int, Card],
        members: dict[int, Member], outcome: _Outcome,
    ) -> None:
        channel = self.rt.channels[key[0]]
        for row in rows:  # one recipient's messages go in order
            async with self._inflight:
                delivery = await self._deliver_one(channel, row, cards, members)
            # The time it was delivered, not the pass's start: budgets count from here.
            outcome.done.append((row, delivery, self.rt.now()))

    async def _deliver_one(
        self, channel: Any, row: Outgoing, cards: dict[int, Card], members: dict[int, Member],
    ) -> Delivery:
        try:
            parcel = self._parcel(channel, row, cards, members)
            if parcel is None:
                return Delivery.failed("recipient has no address on this channel")
            return await channel.deliver(parcel)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a channel bug must not stall the outbox
            log.exception("delivery of outbox row %s raised", row.id)
            return Delivery.retry(f"{type(exc).__name__}: {exc}", 10)

    def _parcel(
        self, channel: Any, row: Outgoing, cards: dict[int, Card], members: dict[int, Member],
    ) -> Parcel | None:
        card = cards.get(row.card_id) if row.card_id else None
        is_group = row.recipient.startswith("group:")
        if is_group:
            address = channel.group_address(row.recipient.removeprefix("group:") or None)
        elif row.recipient.startswith("stranger:"):
            # Someone not on the roster: answered at the platform id they wrote from.
            address = row.recipient.removeprefix("stranger:")
        else:
            member = members.get(int(row.recipient.removeprefix("member:")))
            address = channel.address_of(member) if member else None
        if address is None:
            return None
        return Parcel(
            outbox_id=row.id, kind=row.kind, address=address, is_group=is_group,
            payload=row.payload, dedupe_key=card.ref if card else row.dedupe_key,
            card=CardModel.from_json(card.body) if card else None,
            card_ref=card.ref if card else None,
            response_code=card.response_code if card else None,
            mentions=list(row.payload.get("mentions") or []),
            mention_names=dict(row.payload.get("names") or {}),
        )

    async def _record(self, outcome: _Outcome, now: datetime) -> None:
        """Write the pass's results in one short transaction."""
        merged: dict[int, dict[str, Any]] = defaultdict(dict)
        card_updates: list[dict[str, Any]] = []
        for row in outcome.rewritten:
            merged[row.id].update(kind=row.kind, payload=row.payload)
        for row, first_id in outcome.folded:
            merged[row.id].update(state="folded", last_error=f"folded into #{first_id}")
        for row, until in outcome.postponed:
            merged[row.id].update(state="pending", next_at=until)
        for row, delivery, at in outcome.done:
            merged[row.id].update(self._result(row, delivery, at))
            if delivery.ok and row.card_id is not None and row.kind == "card":
                card_updates.append({"id": row.card_id, "delivered_at": at,
                                     "response_code": delivery.response_code})
            elif delivery.ok and row.card_id is not None and row.kind == "card_update":
                # A WeCom response code works once.
                card_updates.append({"id": row.card_id, "response_code": None})
        rows = [{"id": row_id, **values} for row_id, values in merged.items()]
        async with self.rt.sessions() as session, session.begin():
            for same_columns in _by_shape(rows):
                await session.execute(update(Outgoing), same_columns)
            for same_columns in _by_shape(card_updates):
                await session.execute(update(Card), same_columns)
        if outcome.folded:
            self.rt.metrics.outbox_folded.inc(len(outcome.folded))

    def _result(self, row: Outgoing, delivery: Delivery, now: datetime) -> dict[str, Any]:
        rt = self.rt
        attempts = row.attempts + 1
        if delivery.ok:
            rt.metrics.outbox_sent.labels(row.channel, row.kind).inc()
            refused = ("refused: " + ",".join(delivery.refused)) if delivery.refused else None
            return {"state": "sent", "sent_at": now, "attempts": attempts,
                    "last_error": refused}
        if delivery.retry_after is not None and attempts < rt.settings.outbox.max_attempts:
            wait = backoff(row.attempts, delivery.retry_after)
            log.warning("outbox row %s retry in %.0fs: %s", row.id, wait, delivery.error)
            return {"state": "pending", "attempts": attempts, "last_error": delivery.error,
                    "next_at": now + timedelta(seconds=wait)}
        rt.metrics.outbox_failed.labels(row.channel).inc()
        log.error("outbox row %s failed for good: %s", row.id, delivery.error)
        return {"state": "failed", "attempts": attempts, "last_error": delivery.error}


@dataclass
class _Outcome:
    """What one pass did, written back in one transaction at its end."""

    done: list[tuple[Outgoing, Delivery, datetime]] = field(default_factory=list)
    postponed: list[tuple[Outgoing, datetime]] = field(default_factory=list)
    folded: list[tuple[Outgoing, int]] = field(default_factory=list)
    rewritten: list[Outgoing] = field(default_factory=list)


def _by_shape(rows: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """A bulk UPDATE by primary key sets the same columns on every row of one call."""
    shapes: dict[tuple[str, ...], list[dict[str, Any]]] = defaultdict(list)
    for values in rows:
        shapes[tuple(sorted(values))].append(values)
    return list(shapes.values())


async def outbox_depth(session: AsyncSession) -> dict[str, int]:
    result = await session.execute(
        select(Outgoing.state, func.count())
        .where(Outgoing.state.in_(("pending", "sending", "failed")))
        .group_by(Outgoing.state)
    )
    return {state: count for state, count in result.all()}
