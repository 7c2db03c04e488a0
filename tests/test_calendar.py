"""Working time: working minutes skip nights and weekends."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from config.settings import parse_working_hours
from scheduler.calendar import add_working_minutes, in_working_hours, working_minutes_between

ZONE = ZoneInfo("Asia/Shanghai")
HOURS = parse_working_hours("09:00-18:00")


def bj(*args):
    return datetime(*args, tzinfo=ZONE)


def test_thirty_minutes_inside_the_day():
    assert add_working_minutes(bj(2026, 12, 2, 10, 0), 30, HOURS, ZONE) == bj(2026, 12, 2, 10, 30)


def test_a_lead_at_ten_at_night_waits_for_the_morning():
    assert add_working_minutes(bj(2026, 12, 2, 22, 0), 30, HOURS, ZONE) == bj(2026, 12, 3, 9, 30)


def test_friday_evening_runs_into_monday():
    assert add_working_minutes(bj(2026, 12, 4, 17, 45), 30, HOURS, ZONE) == bj(2026, 12, 7, 9, 15)


def test_working_minutes_between_counts_only_open_hours():
    assert working_minutes_between(bj(2026, 12, 4, 17, 0), bj(2026, 12, 7, 10, 0),
                                   HOURS, ZONE) == 120


def test_utc_moments_are_judged_in_the_team_zone():
    assert in_working_hours(datetime(2026, 12, 2, 2, 0, tzinfo=UTC), HOURS, ZONE)
    assert not in_working_hours(datetime(2026, 12, 2, 12, 0, tzinfo=UTC), HOURS, ZONE)
