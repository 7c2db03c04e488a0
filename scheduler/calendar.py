"""Working time: which days are working days and how working minutes add up.

Pure functions of plain values (no clock reads, no database). Working days follow the
Chinese statutory calendar (chinesecalendar, with make-up working days); for a year the
package has no data for, Monday to Friday corrected by the admins' own list.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import chinese_calendar

from config.settings import WorkingHours

CONFIG_KEY = "calendar.extra"


@dataclass(slots=True, frozen=True)
class CalendarExtra:
    """Days the admins keep for years the statutory data does not cover yet."""

    holidays: frozenset[date] = field(default_factory=frozenset)
    workdays: frozenset[date] = field(default_factory=frozenset)  # make-up working days

    @classmethod
    def from_value(cls, value: dict[str, Any] | None) -> CalendarExtra:
        """From the ConfigValue JSON: {"holidays": ["2027-01-01", …], "workdays": […]}."""
        value = value or {}
        return cls(
            holidays=frozenset(date.fromisoformat(d) for d in value.get("holidays", [])),
            workdays=frozenset(date.fromisoformat(d) for d in value.get("workdays", [])),
        )

    def to_value(self) -> dict[str, list[str]]:
        return {
            "holidays": sorted(d.isoformat() for d in self.holidays),
            "workdays": sorted(d.isoformat() for d in self.workdays),
        }


NO_EXTRA = CalendarExtra()


def statutory_covers(day: date) -> bool:
    """Whether chinesecalendar has the State Council's data for this day's year."""
    try:
        chinese_calendar.is_workday(day)
    except NotImplementedError:
        return False
    return True


def is_working_day(day: date, extra: CalendarExtra = NO_EXTRA) -> bool:
    """Statutory where the package knows the year; else Monday–Friday plus `extra`.

    The admins' list only fills years the package does not cover: where it has data, the
    State Council's notice decides.
    """
    try:
        return chinese_calendar.is_workday(day)
    except NotImplementedError:
        pass
    if day in extra.workdays:
        return True
    if day in extra.holidays:
        return False
    return day.weekday() < 5


def in_working_hours(
    moment: datetime, hours: WorkingHours, zone: ZoneInfo, extra: CalendarExtra = NO_EXTRA
) -> bool:
    local = moment.astimezone(zone)
    return is_working_day(local.date(), extra) and hours.start <= local.time() < hours.end


def _window(day: date, hours: WorkingHours, zone: ZoneInfo) -> tuple[datetime, datetime]:
    return (datetime.combine(day, hours.start, zone), datetime.combine(day, hours.end, zone))


def add_working_minutes(
    start: datetime, minutes: float, hours: WorkingHours, zone: ZoneInfo,
    extra: CalendarExtra = NO_EXTRA,
) -> datetime:
    """The moment `minutes` working minutes after `start` (a lead at 22:00 waits for 09:00)."""
    remaining = timedelta(minutes=minutes)
    local = start.astimezone(zone)
    day = local.date()
    for _ in range(3660):  # ten years of days: a bound, never reached with real settings
        if is_working_day(day, extra):
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
    start: datetime, end: datetime, hours: WorkingHours, zone: ZoneInfo,
    extra: CalendarExtra = NO_EXTRA,
) -> float:
    if end <= start:
        return 0.0
    total = timedelta()
    day = start.astimezone(zone).date()
    last = end.astimezone(zone).date()
    while day <= last:
        if is_working_day(day, extra):
            opens, closes = _window(day, hours, zone)
            begin, finish = max(opens, start), min(closes, end)
            if finish > begin:
                total += finish - begin
        day += timedelta(days=1)
    return total.total_seconds() / 60


def add_working_days(day: date, count: int, extra: CalendarExtra = NO_EXTRA) -> date:
    """The `count`-th working day after `day`; 0 gives `day` itself or the next working day."""
    if count == 0:
        while not is_working_day(day, extra):
            day += timedelta(days=1)
        return day
    left = count
    while left:
        day += timedelta(days=1)
        if is_working_day(day, extra):
            left -= 1
    return day


def working_days(first: date, last: date, extra: CalendarExtra = NO_EXTRA) -> list[date]:
    """The working days from `first` to `last`, both included (make-up Saturdays too)."""
    days = []
    day = first
    while day <= last:
        if is_working_day(day, extra):
            days.append(day)
        day += timedelta(days=1)
    return days
