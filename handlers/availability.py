"""Who can take a lead right now: pure functions over a member's plain values."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from config.settings import WorkingHours
from scheduler.calendar import NO_EXTRA, CalendarExtra, in_working_hours


@dataclass(slots=True, frozen=True)
class RepState:
    member_id: int
    role: str
    status: str
    duty: str | None
    duty_at: datetime | None
    leave_until: datetime | None
    reachable: bool
    open_leads: int
    cap: int | None


def on_duty(
    duty: str | None, duty_at: datetime | None, now: datetime, hours: WorkingHours,
    zone: ZoneInfo, extra: CalendarExtra = NO_EXTRA,
) -> bool:
    """/上班 and /下班 hold until local midnight; without either, the working hours decide."""
    if duty in ("on", "off") and duty_at is not None:
        if duty_at.astimezone(zone).date() == now.astimezone(zone).date():
            return duty == "on"
    return in_working_hours(now, hours, zone, extra)


def on_leave(status: str, leave_until: datetime | None, now: datetime) -> bool:
    return status == "leave" or (leave_until is not None and now < leave_until)


def is_available(
    rep: RepState, now: datetime, hours: WorkingHours, zone: ZoneInfo,
    extra: CalendarExtra = NO_EXTRA,
) -> bool:
    return (
        rep.role == "rep"
        and rep.status == "active"
        and not on_leave(rep.status, rep.leave_until, now)
        and rep.reachable
        and on_duty(rep.duty, rep.duty_at, now, hours, zone, extra)
        and (rep.cap is None or rep.open_leads < rep.cap)
    )


def unavailable_reason(
    rep: RepState, now: datetime, hours: WorkingHours, zone: ZoneInfo,
    extra: CalendarExtra = NO_EXTRA,
) -> str:
    """Why a rep cannot take a lead now, in the words a colleague understands."""
    if rep.role != "rep":
        return "不是销售"
    if rep.status == "left":
        return "已离职"
    if on_leave(rep.status, rep.leave_until, now):
        return "正在休假"
    if not rep.reachable:
        return "暂时联系不到"
    if not on_duty(rep.duty, rep.duty_at, now, hours, zone, extra):
        return "不在班"
    if rep.cap is not None and rep.open_leads >= rep.cap:
        return "未跟进线索已满"
    return ""


def round_robin(
    candidates: list[RepState], last_offered: dict[int, int], exclude: set[int]
) -> RepState | None:
    """The candidate whose last offer is oldest (never offered comes first), ties by id.

    `last_offered` holds each rep's latest offer as an increasing number (assignment ids).
    """
    eligible = [c for c in candidates if c.member_id not in exclude]
    if not eligible:
        return None
    return min(
        eligible,
        key=lambda c: (last_offered.get(c.member_id) is not None,
                       last_offered.get(c.member_id) or 0, c.member_id),
    )
