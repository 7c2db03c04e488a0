"""The dispatcher: one session per event, the sender resolved, the right handler called.

Owns routing and the one error path around handlers; the routers (handlers/) own what
the bot says and does.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bot.context import Context
from bot.events import Event
from bot.outbox import new_ref
from bot.router import ROLE_NAMES, Command, Router, normalize_text, split_command
from cards.model import parse_key
from storage.models import InboundEvent, Member, Outgoing, PendingReply, Presence

if TYPE_CHECKING:
    from bot.runtime import Runtime

log = logging.getLogger("salesbot.events")

T_FAILED = "抱歉，处理这条消息时出错了，请稍后再试；错误已记入日志。"
T_UNKNOWN_MEMBER = "您还不在销售团队名单中，暂时无法使用。请联系管理员{admins}把您加入名单。"
T_NOT_ALLOWED = "「{command}」只对{roles}开放。发送 /帮助 查看您可用的命令。"
T_NOT_UNDERSTOOD = "没看懂「{text}」。发送 /帮助 查看可用的命令。"
T_UNSUPPORTED = "暂不支持该类型消息。"
T_VOICE_NO_TEXT = "收到语音，但平台没有给出识别文字。语音转写即将上线，请先用文字发送。"
T_INACTIVE = "您在名单中的状态是「已离职」，无法使用机器人。如有疑问请联系管理员。"

# A rep's messages count as presence for the engine's online factor; one row per this many
# minutes at most, so a chatty rep does not write a row per message.
PRESENCE_EVERY = timedelta(minutes=5)


ID_COLUMNS = {
    "wecom": Member.wecom_userid,
    "dingtalk": Member.dingtalk_userid,
    "console": Member.name,
}


class Dispatcher:
    def __init__(self, rt: Runtime, routers: list[Router]) -> None:
        self.rt = rt
        self.routers = routers
        self.commands: dict[str, Command] = {}
        self.actions = {}
        self.kinds = {}
        self.replies = {}
        for router in routers:
            for command in router.commands:
                for name in command.names:
                    if name in self.commands:
                        raise ValueError(f"command {name} registered twice")
                    self.commands[name.lower()] = command
            self.actions.update(router.actions)
            self.kinds.update(router.kinds)
            self.replies.update(router.replies)

        # Prefixes tried longest first; one-letter names ("?") only match alone.
        self._by_length = sorted((n for n in self.commands if len(n) >= 2), key=len,
                                 reverse=True)

    def commands_for(self, role: str) -> list[Command]:
        seen: list[Command] = []
        for command in self.commands.values():
            if role in command.roles and command not in seen:
                seen.append(command)
        return seen

    async def process(self, record_id: int, event: Event) -> None:
        """Handle one recorded event; marks it done in the handler's own transaction."""
        started = time.perf_counter()
        outcome = "ok"
        hooks: list = []
        try:
            async with self.rt.sessions() as session, session.begin():
                outcome = await self._handle(session, event, hooks)
                await self._mark(session, record_id, "done", outcome)
            for hook in hooks:
                await hook(self.rt)
        except Exception:
            outcome = "error"
            log.exception("event %s (%s %s) failed", record_id, event.channel, event.kind)
            await self._fail(record_id, event)
        elapsed = time.perf_counter() - started
        self.rt.metrics.events.labels(event.channel, event.kind, outcome).inc()
        self.rt.metrics.event_seconds.observe(elapsed)
        log.info("event id=%s channel=%s kind=%s outcome=%s ms=%.1f", record_id,
                 event.channel, event.kind, outcome, elapsed * 1000)
        self.rt.outbox.wake()

    async def _mark(self, session: AsyncSession, record_id: int, state: str, outcome: str) -> None:
        await session.execute(
            update(InboundEvent).where(InboundEvent.id == record_id)
            .values(state=state, outcome=outcome, done_at=self.rt.now())
        )

    async def _fail(self, record_id: int, event: Event) -> None:
        try:
            async with self.rt.sessions() as session, session.begin():
                await self._mark(session, record_id, "failed", "error")
                member = await self._member(session, event)
                if member is not None:
                    ctx = Context(self.rt, session, event, member, self.rt.now())
                    await ctx.reply(T_FAILED)
        except Exception:
            log.exception("could not record the failure of event %s", record_id)

    async def _member(self, session: AsyncSession, event: Event) -> Member | None:
        column = ID_COLUMNS.get(event.channel)
        if column is None or not event.sender:
            return None
        return await session.scalar(select(Member).where(column == event.sender))

    async def _handle(self, session: AsyncSession, event: Event, hooks: list) -> str:
        member = await self._member(session, event)
        if member is None:
            await self._tell_stranger(session, event)
            return "unknown_member"
        ctx = Context(self.rt, session, event, member, self.rt.now(), hooks=hooks)
        if member.status == "left":
            await ctx.reply(T_INACTIVE)
            return "inactive_member"
        if member.role == "rep" and event.kind not in ("enter", "location_report", "system"):
            self._seen(session, member, ctx.now)
        if event.kind == "card_action":
            return await self._action(ctx)
        if event.kind == "text":
            return await self._text(ctx)
        if event.kind == "voice" and event.text:
            # The platform's own transcript (DingTalk `recognition`): a spoken command is a
            # command; other speech is a follow-up note on the current lead.
            return await self._text(ctx, spoken=True)
        if event.kind == "voice":
            await ctx.reply(T_VOICE_NO_TEXT)
            return "voice_without_text"
        handler = self.kinds.get(event.kind)
        if handler is None:
            if event.kind in ("enter", "location_report", "system"):
                return "ignored"
            await ctx.reply(T_UNSUPPORTED)
            return "unsupported"
        await handler(ctx)
        return ctx.outcome

    @staticmethod
    def _seen(session: AsyncSession, member: Member, now: datetime) -> None:
        if member.last_seen_at is None or now - member.last_seen_at >= PRESENCE_EVERY:
            member.last_seen_at = now
            session.add(Presence(member_id=member.id, kind="active", at=now))

    async def _action(self, ctx: Context) -> str:
        action, object_id, option = parse_key(ctx.event.action or "")
        handler = self.actions.get(action)
        if handler is None:
            await ctx.reply(T_UNSUPPORTED)
            return "unknown_action"
        await handler(ctx, object_id, option)
        return ctx.outcome

    async def _text(self, ctx: Context, spoken: bool = False) -> str:
        """A command by its word; else the answer the bot waits for; else a command typed
        without a space; else "not understood" (spoken: a follow-up note)."""
        text = normalize_text(ctx.event.text)
        if spoken:
            text = text.rstrip("。.！!？?，, ")
        word, args = split_command(text)
        command = self.commands.get(word) or (self.commands["帮助"] if not text else None)
        if command is None:
            pending = await ctx.session.get(PendingReply, ctx.member.id)
            if pending is not None and pending.kind in self.replies:
                await self.replies[pending.kind](ctx, text)
                return ctx.outcome
            # Chinese is typed without spaces: 记录已报价, 请假到2026-12-10, 转给王二.
            name = next((n for n in self._by_length if word.startswith(n)), None)
            if name is not None:
                command = self.commands[name]
                args = text.lstrip("/").lstrip()[len(name):].strip()
        if command is None and spoken and "记录" in self.commands:
            command, args = self.commands["记录"], text
        if command is None:
            await ctx.reply(T_NOT_UNDERSTOOD.format(text=text[:30]))
            return "not_understood"
        if ctx.member.role not in command.roles:
            roles = "、".join(ROLE_NAMES[r] for r in ROLE_NAMES if r in command.roles)
            await ctx.reply(T_NOT_ALLOWED.format(command=command.names[0], roles=roles))
            return "not_allowed"
        await command.handler(ctx, args)
        return ctx.outcome

    async def _tell_stranger(self, session: AsyncSession, event: Event) -> None:
        """Tell someone not on the roster who can add them (reply on the same channel)."""
        channel = self.rt.channels.get(event.channel)
        if channel is None:
            return
        admins = (await session.scalars(
            select(Member.name).where(Member.role == "admin", Member.status != "left")
            .order_by(Member.id).limit(5)
        )).all()
        names = f"（{'、'.join(admins)}）" if admins else ""
        session.add(Outgoing(
            channel=event.channel, recipient=f"stranger:{event.sender}", kind="text",
            payload={"text": T_UNKNOWN_MEMBER.format(admins=names)},
            dedupe_key=new_ref(), next_at=self.rt.now(),
        ))
        log.info("message from %s, who is not on the roster", event.channel)
