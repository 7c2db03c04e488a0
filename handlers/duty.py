"""Duty and leave: /上班, /下班, /请假 到 YYYY-MM-DD, /销假. Queued leads follow at once."""

from __future__ import annotations

import re
from datetime import date, datetime, time, timedelta

from bot.context import Context
from bot.router import Router
from handlers.assignment import drain_queue
from storage.models import Presence

router = Router("duty")

T_ON = "已上班，开始接收线索。"
T_OFF = "已下班，今天不再给您分配新线索。明天按工作时间自动上班。"
T_LEAVE_USAGE = "用法：/请假 到 YYYY-MM-DD，例如：/请假 到 2026-12-10"
T_LEAVE_PAST = "请假结束日期不能早于今天。"
T_LEAVE = "已登记请假到 {day}，期间不会给您分配新线索。回来后发送 /销假。"
T_BACK = "已销假，欢迎回来！"
T_NOT_ON_LEAVE = "您目前没有请假。"
T_ON_LEAVE = "您正在休假（到 {day}），休假期间不分配线索。要提前回来请发送 /销假。"
T_LEAVE_TOO_FAR = "请假结束日期最多到一年以后（{day}）。"


@router.command("上班", roles={"rep"}, usage="/上班", summary="/上班 /下班：开始或停止接收线索")
async def on_duty(ctx: Context, args: str) -> None:
    until = ctx.member.leave_until
    if until is not None and until > ctx.now:
        last_day = (until.astimezone(ctx.settings.zone) - timedelta(days=1)).date()
        await ctx.reply(T_ON_LEAVE.format(day=last_day.isoformat()))
        return
    ctx.member.duty, ctx.member.duty_at = "on", ctx.now
    ctx.session.add(Presence(member_id=ctx.member.id, kind="on", at=ctx.now))
    ctx.audit("member.duty", "member", ctx.member.id, None, {"duty": "on"})
    await ctx.reply(T_ON)
    ctx.after_commit(drain_queue)


@router.command("下班", roles={"rep"}, usage="/下班", summary="")
async def off_duty(ctx: Context, args: str) -> None:
    ctx.member.duty, ctx.member.duty_at = "off", ctx.now
    ctx.session.add(Presence(member_id=ctx.member.id, kind="off", at=ctx.now))
    ctx.audit("member.duty", "member", ctx.member.id, None, {"duty": "off"})
    await ctx.reply(T_OFF)


def parse_leave_end(args: str) -> date | None:
    match = re.fullmatch(r"(?:到|至)?\s*(\d{4})[-/.](\d{1,2})[-/.](\d{1,2})", args.strip())
    if not match:
        return None
    try:
        return date(*(int(g) for g in match.groups()))
    except ValueError:
        return None


@router.command("请假", roles={"rep"}, usage=T_LEAVE_USAGE,
                summary="/请假 到 YYYY-MM-DD，/销假：休假期间不接线索")
async def leave(ctx: Context, args: str) -> None:
    last_day = parse_leave_end(args)
    if last_day is None:
        await ctx.reply(T_LEAVE_USAGE)
        return
    zone = ctx.settings.zone
    today = ctx.now.astimezone(zone).date()
    if last_day < today:
        await ctx.reply(T_LEAVE_PAST)
        return
    if last_day > today + timedelta(days=366):
        await ctx.reply(T_LEAVE_TOO_FAR.format(day=(today + timedelta(days=366)).isoformat()))
        return
    until = datetime.combine(last_day + timedelta(days=1), time(0), zone)
    ctx.member.leave_until = until
    ctx.audit("member.leave", "member", ctx.member.id, None, {"until": last_day.isoformat()})
    await ctx.reply(T_LEAVE.format(day=last_day.isoformat()))


@router.command("销假", roles={"rep"}, usage="/销假", summary="")
async def back(ctx: Context, args: str) -> None:
    if ctx.member.leave_until is None or ctx.member.leave_until <= ctx.now:
        await ctx.reply(T_NOT_ON_LEAVE)
        return
    ctx.member.leave_until = None
    ctx.audit("member.leave", "member", ctx.member.id, None, {"until": None})
    await ctx.reply(T_BACK)
    ctx.after_commit(drain_queue)
