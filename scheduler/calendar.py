"""Working time: which days are working days and how working minutes add up.

Pure functions of plain values (no clock reads). Until the statutory calendar arrives
with the engine, working days are Monday to Friday.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from config.settings import WorkingHours


def is_working_day(day: date) -> bool:
    return day.weekday() < 5


def in_working_hours(moment: datetime, hours: WorkingHours, zone: ZoneInfo) -> bool:
    local = moment.astimezone(zone)
    return is_working_day(local.date()) and hours.start <= local.time() < hours.end


def _window(day: date, hours: WorkingHours, zone: ZoneInfo) -> tuple[datetime, datetime]:
    return (datetime.combine(day, hours.start, zone), datetime.combine(day, hours.end, zone))


def add_working_minutes(
    start: datetime, minutes: float, hours: WorkingHours, zone: ZoneInfo
) -> datetime:
    """The moment `minutes` working minutes after `start` (a lead at 22:00 waits for 09:00)."""
    remaining = timedelta(minutes=minutes)
    local = start.astimezone(zone)
    day = local.date()
    for _ in range(3660):  # ten years of days: a bound, never reached with real settings
        if is_working_day(day):
            opens, closes = _window(day, hours, zone)
            begin = max(opens, local)
            if begin < closes:
                available = closes - begin
                if remaining <= available:
                    return (begin + remaining).astimezone(start.tzinfo)
                remaining -= available
        day += timedelta(days=1)
        local = datetime.combine(day, time(0), zone)
    raise ValueError("no working time found: check the working hours")


def working_minutes_between(
    start: datetime, end: datetime, hours: WorkingHours, zone: ZoneInfo
) -> float:
    if end <= start:
        return 0.0
    total = timedelta()
    day = start.astimezone(zone).date()
    last = end.astimezone(zone).date()
    while day <= last:
        if is_working_day(day):
            opens, closes = _window(day, hours, zone)
            begin, finish = max(opens, start), min(closes, end)
            if finish > begin:
                total += finish - begin
        day += timedelta(days=1)
    return total.total_seconds() / 60
