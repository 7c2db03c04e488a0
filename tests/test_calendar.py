"""Working time: working minutes skip nights, weekends and statutory holidays."""

from __future__ import annotations

from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

from config.settings import parse_working_hours
from scheduler.calendar import (
    CalendarExtra,
    add_working_days,
    add_working_minutes,
    in_working_hours,
    is_working_day,
    statutory_covers,
    working_days,
    working_minutes_between,
)

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


def test_the_spring_festival_make_up_saturday_is_a_working_day():
    assert is_working_day(date(2026, 2, 14))
    assert not is_working_day(date(2026, 2, 16))
    assert not is_working_day(date(2026, 2, 23))  # a Monday off in lieu


def test_five_working_days_from_the_friday_before_spring_festival():
    import chinese_calendar

    assert chinese_calendar.find_workday(5, date(2026, 2, 13)) == date(2026, 2, 27)
    assert add_working_days(date(2026, 2, 13), 5) == date(2026, 2, 27)
    assert working_days(date(2026, 2, 14), date(2026, 2, 27)) == [
        date(2026, 2, 14), date(2026, 2, 24), date(2026, 2, 25), date(2026, 2, 26),
        date(2026, 2, 27),
    ]


def test_friday_evening_runs_into_the_make_up_saturday():
    assert add_working_minutes(bj(2026, 2, 13, 17, 45), 30, HOURS, ZONE) == bj(2026, 2, 14, 9, 15)
    assert in_working_hours(bj(2026, 2, 14, 10, 0), HOURS, ZONE)
    assert not in_working_hours(bj(2026, 2, 16, 10, 0), HOURS, ZONE)


def test_a_year_the_package_does_not_know_falls_back_to_weekdays_and_the_admins_list():
    new_year, make_up_sunday = date(2027, 1, 1), date(2027, 1, 3)
    assert not statutory_covers(new_year)
    assert statutory_covers(date(2026, 12, 31))
    assert is_working_day(new_year)  # a Friday: Monday–Friday without the list
    assert not is_working_day(make_up_sunday)

    extra = CalendarExtra.from_value({"holidays": ["2027-01-01"], "workdays": ["2027-01-03"]})
    assert not is_working_day(new_year, extra)
    assert is_working_day(make_up_sunday, extra)
    assert is_working_day(date(2027, 1, 4), extra)
    assert CalendarExtra.from_value(extra.to_value()) == extra
    assert add_working_minutes(bj(2026, 12, 31, 17, 45), 30, HOURS, ZONE, extra) == bj(
        2027, 1, 3, 9, 15)


def test_the_admins_list_does_not_override_a_year_the_package_knows():
    extra = CalendarExtra(holidays=frozenset({date(2026, 2, 14)}))
    assert is_working_day(date(2026, 2, 14), extra)


def test_without_a_duty_command_the_statutory_calendar_decides_who_is_on_duty():
    from handlers.availability import on_duty

    assert on_duty(None, None, bj(2026, 2, 14, 10, 0), HOURS, ZONE)  # make-up Saturday
    assert not on_duty(None, None, bj(2026, 2, 16, 10, 0), HOURS, ZONE)  # Spring Festival
    new_year = CalendarExtra(holidays=frozenset({date(2027, 1, 1)}))
    assert on_duty(None, None, bj(2027, 1, 1, 10, 0), HOURS, ZONE)
    assert not on_duty(None, None, bj(2027, 1, 1, 10, 0), HOURS, ZONE, new_year)
