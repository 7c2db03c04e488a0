"""`salesbot console --as NAME`: one roster member chats with the bot in the terminal.

Owns the terminal loop and the reading of what the console channel delivered to a member
(the web simulator reads it the same way). What the bot answers is the handlers' business.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
import unicodedata
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, TextIO

from aiohttp import web
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.events import Event
from bot.router import ROLE_NAMES
from cards.model import CardModel
from cards.text import render_text
from storage.models import Card, Member, Outgoing

if TYPE_CHECKING:
    from bot.runtime import Runtime
    from config.settings import Settings

log = logging.getLogger(__name__)

CHANNEL = "console"
SETTLE_SECONDS = 10.0  # longest wait for the bot's answer before reading the next line
POLL_SECONDS = 0.5  # messages queued by other processes show up within this

T_UNKNOWN = "salesbot: 名单中没有「{name}」。{known}"
T_KNOWN = "可用的名字有：{names}。"
T_EMPTY_ROSTER = "名单是空的，请先运行 salesbot demo 或 salesbot team import 导入团队。"
T_WELCOME = (
    "您以 {name}（{role}）的身份和机器人对话。输入消息后回车；"
    "输入卡片按钮前的数字即可点击；Ctrl-D 退出。"
)
T_BYE = "再见！"
T_UPDATED = "（卡片已更新）"
T_NO_BUTTONS = "最近的卡片已经没有可点的按钮了。"
T_NO_SUCH_BUTTON = "最近的卡片没有按钮 [{n}]，请输入 1 到 {count} 之间的数字。"
T_SLOW = "（机器人还在处理，回复稍后显示）"


# ---- what the console channel delivered -------------------------------------------------


@dataclass(slots=True)
class Delivered:
    """One sent outbox row for a member, with its card as the cards table holds it now."""

    id: int
    kind: str  # text | markdown | card | card_update
    text: str
    card: CardModel | None
    card_id: int | None
    card_ref: str | None
    card_state: str | None
    sent_at: datetime | None


def recipient_of(member: Member) -> str:
    return f"member:{member.id}"


async def delivered_since(
    session: AsyncSession, member: Member, after: int = 0, limit: int = 200
) -> list[Delivered]:
    """Messages the console channel delivered to the member after outbox id `after`."""
    rows = (await session.execute(
        select(Outgoing, Card)
        .outerjoin(Card, Card.id == Outgoing.card_id)
        .where(Outgoing.channel == CHANNEL, Outgoing.recipient == recipient_of(member),
               Outgoing.state == "sent", Outgoing.id > after)
        .order_by(Outgoing.id)
        .limit(limit)
    )).all()
    out = []
    for row, card in rows:
        model = CardModel.from_json(card.body) if card is not None else None
        text = render_text(model) if model else str(row.payload.get("text", ""))
        out.append(Delivered(
            id=row.id, kind=row.kind, text=text, card=model,
            card_id=card.id if card is not None else None,
            card_ref=card.ref if card is not None else None,
            card_state=card.state if card is not None else None,
            sent_at=row.sent_at,
        ))
    return out


async def last_delivered_id(session: AsyncSession, member: Member) -> int:
    last = await session.scalar(
        select(func.max(Outgoing.id))
        .where(Outgoing.channel == CHANNEL, Outgoing.recipient == recipient_of(member),
               Outgoing.state == "sent")
    )
    return last or 0


async def undelivered_count(session: AsyncSession, member: Member, now: datetime) -> int:
    """Rows for the member that are due and not yet delivered."""
    count = await session.scalar(
        select(func.count()).select_from(Outgoing)
        .where(Outgoing.channel == CHANNEL, Outgoing.recipient == recipient_of(member),
               Outgoing.state.in_(("pending", "sending")), Outgoing.next_at <= now)
    )
    return count or 0


def new_event_key(prefix: str) -> str:
    return f"{prefix}:{uuid.uuid4().hex}"


def text_event(member: Member, text: str, prefix: str) -> Event:
    return Event(channel=CHANNEL, kind="text", sender=member.name, key=new_event_key(prefix),
                 text=text, created_at=time.time())


def click_event(member: Member, key: str, card_ref: str | None, prefix: str) -> Event:
    return Event(channel=CHANNEL, kind="card_action", sender=member.name,
                 key=new_event_key(prefix), action=key, card_ref=card_ref,
                 created_at=time.time())


def button_number(line: str) -> int | None:
    """`2` or `２` alone is a button number; anything else is a message."""
    text = unicodedata.normalize("NFKC", line).strip()
    if text.isdigit() and len(text) <= 2:
        return int(text)
    return None


# ---- the terminal ---------------------------------------------------------------------


class ConsoleSession:
    """One member's terminal chat: input lines become events, deliveries are printed."""

    def __init__(self, rt: Runtime, member: Member, out: TextIO) -> None:
        self.rt = rt
        self.member = member
        self.out = out
        self.seen = 0
        self.last_card_id: int | None = None
        # Set while a terminal waits for the member's line: what arrives meanwhile is
        # printed on its own lines and the prompt is shown again.
        self.prompt: str | None = None
        self._print_lock = asyncio.Lock()

    async def mark_seen(self) -> None:
        """Start after what was delivered before: the terminal shows only what is new."""
        async with self.rt.sessions() as session:
            self.seen = await last_delivered_id(session, self.member)

    async def print_new(self) -> None:
        async with self._print_lock:
            async with self.rt.sessions() as session:
                messages = await delivered_since(session, self.member, self.seen)
            prompt = self.prompt
            if messages and prompt:
                self.out.write("\n")
            for message in messages:
                self.seen = message.id
                if message.kind == "card_update":
                    self.show(f"{T_UPDATED}\n{message.text}")
                    continue
                if message.card_id is not None:
                    self.last_card_id = message.card_id
                self.show(message.text)
            if messages and prompt:
                self.out.write(prompt)
                self.out.flush()

    def show(self, text: str) -> None:
        self.out.write(text.rstrip("\n") + "\n\n")
        self.out.flush()

    async def watch(self) -> None:
        """Print what arrives between lines: woken by the channel, or by polling the
        database for what other processes delivered."""
        channel = self.rt.channels[CHANNEL]
        address = channel.address_of(self.member)
        flag = channel.listen(address)
        try:
            while True:
                try:
                    await asyncio.wait_for(flag.wait(), timeout=POLL_SECONDS)
                    # The channel wakes us before the row is marked sent.
                    await asyncio.sleep(0.05)
                except TimeoutError:
                    pass
                flag.clear()
                await self.print_new()
        finally:
            channel.unlisten(address, flag)

    async def handle_line(self, line: str) -> None:
        text = line.strip()
        if not text:
            return
        number = button_number(text)
        if number is not None and self.last_card_id is not None:
            await self._click(number)
            return
        await self._record(text_event(self.member, text, CHANNEL))

    async def _click(self, number: int) -> None:
        async with self.rt.sessions() as session:
            card = await session.get(Card, self.last_card_id)
        model = CardModel.from_json(card.body) if card is not None else None
        if card is None or model is None or not model.buttons:
            self.show(T_NO_BUTTONS)
            return
        if not 1 <= number <= len(model.buttons):
            self.show(T_NO_SUCH_BUTTON.format(n=number, count=len(model.buttons)))
            return
        key = model.buttons[number - 1].key
        await self._record(click_event(self.member, key, card.ref, CHANNEL))

    async def _record(self, event: Event) -> None:
        await self.rt.inbox.record(event)
        await self.rt.inbox.drain()
        self.rt.outbox.wake()
        if not await self.settle():
            self.show(T_SLOW)
        await self.print_new()

    async def settle(self) -> bool:
        """Wait until everything due for the member has been delivered."""
        deadline = time.monotonic() + SETTLE_SECONDS
        while time.monotonic() < deadline:
            async with self.rt.sessions() as session:
                if not await undelivered_count(session, self.member, self.rt.now()):
                    return True
            await asyncio.sleep(0.05)
        return False


def _start_reader(loop: asyncio.AbstractEventLoop, source: TextIO) -> asyncio.Queue[str | None]:
    """Read stdin in a daemon thread: works for a terminal, a pipe and a file alike, and
    never keeps the process alive after the chat ends."""
    lines: asyncio.Queue[str | None] = asyncio.Queue()

    def read() -> None:
        try:
            for line in source:
                loop.call_soon_threadsafe(lines.put_nowait, line)
        except (OSError, ValueError):
            pass
        finally:
            try:
                loop.call_soon_threadsafe(lines.put_nowait, None)
            except RuntimeError:  # the loop is already closed
                pass

    threading.Thread(target=read, name="console-stdin", daemon=True).start()
    return lines


async def _find_member(rt: Runtime, name: str) -> tuple[Member | None, list[str]]:
    async with rt.sessions() as session:
        member = await session.scalar(select(Member).where(Member.name == name.strip()))
        names = [] if member else list((await session.scalars(
            select(Member.name).where(Member.status != "left").order_by(Member.id).limit(12)
        )).all())
    return member, names


async def run_console(settings: Settings, name: str) -> int:
    from bot.app import build_runtime

    # The chat owns the terminal: log lines would interleave with the conversation.
    logging.getLogger().setLevel(logging.WARNING)
    rt = build_runtime(settings)
    try:
        member, names = await _find_member(rt, name)
        if member is None:
            known = T_KNOWN.format(names="、".join(names)) if names else T_EMPTY_ROSTER
            print(T_UNKNOWN.format(name=name, known=known), file=sys.stderr)
            return 1
        return await _chat(rt, member)
    finally:
        await rt.close()


async def _chat(rt: Runtime, member: Member) -> int:
    from bot.app import RUNTIME

    out = sys.stdout
    session = ConsoleSession(rt, member, out)
    await session.mark_seen()
    # Channels get an app without routes: the console has no HTTP server, but the
    # outbox here may deliver to members on the platform channels too.
    app = web.Application()
    app[RUNTIME] = rt
    for channel in rt.channels.values():
        await channel.start(app)
    # Limitation: events another process recorded and never processed are not
    # recovered here (`serve` does that at start), so two processes never race for them.
    rt.inbox.start()
    rt.outbox.start()
    watcher = asyncio.create_task(session.watch(), name="console-watch")
    interactive = sys.stdin.isatty()
    try:
        session.show(T_WELCOME.format(name=member.name,
                                     role=ROLE_NAMES.get(member.role, member.role)))
        # What was waiting for the member (a lead card, say) comes before the first line.
        await session.settle()
        await session.print_new()
        lines = _start_reader(asyncio.get_running_loop(), sys.stdin)
        while True:
            if interactive:
                session.prompt = f"{member.name}> "
                out.write(session.prompt)
                out.flush()
            line = await lines.get()
            session.prompt = None
            if line is None:
                break
            if not interactive and line.strip():
                out.write(f"{member.name}> {line.strip()}\n")
            await session.handle_line(line)
        await session.print_new()
        if interactive:
            out.write("\n" + T_BYE + "\n")
        return 0
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
        await rt.outbox.stop()
        await rt.inbox.stop()
