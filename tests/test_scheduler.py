"""Scheduled jobs: one runner per shared database, Beijing time, late runs not lost."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from apscheduler.events import EVENT_JOB_EXECUTED, EVENT_JOB_MISSED
from apscheduler.triggers.date import DateTrigger
from sqlalchemy import select

from bot.app import build_runtime
from bot.runtime import Runtime
from scheduler.calendar import CONFIG_KEY
from scheduler.jobs import (
    CALENDAR_ALERT_KEY,
    SWEEP_TIMING,
    JobRunner,
    JobTiming,
    add_job,
    build_scheduler,
    check_calendar,
    cron_trigger,
    guarded,
    job_list,
)
from scheduler.leader import AdvisoryLock, FileLock
from storage.models import Alert, ConfigValue, Member, Outgoing
from tests.conftest import make_settings
from tests.harness import FrozenClock

SHANGHAI = ZoneInfo("Asia/Shanghai")


async def _settle_until(condition, rounds: int = 40) -> bool:
    """Poll a condition the database server settles by itself (a closed connection)."""
    for _ in range(rounds):
        if await condition():
            return True
        await asyncio.sleep(0.05)
    return False


@pytest.fixture
def shared_settings(db_url):
    """One database (a SQLite file, or PostgreSQL) that two processes are started on."""
    return make_settings(db_url)


@pytest.fixture
def pg_settings(pg_url):
    return make_settings(pg_url)


async def test_only_one_of_two_processes_on_one_database_runs_the_jobs(shared_settings):
    settings = shared_settings
    first, second = Runtime(settings), Runtime(settings)
    a = JobRunner(first, paused=True)
    b = JobRunner(second, paused=True)
    try:
        assert await a.step() is True
        assert await b.step() is False
        assert await b.step() is False  # retrying does not steal the role
        assert [a.is_runner, b.is_runner] == [True, False]
        assert b.jobs() == []

        await a.stop()
        assert await b.step() is True
        assert await a.step() is False
    finally:
        await a.stop()
        await b.stop()
        await first.close()
        await second.close()


@pytest.mark.postgres
async def test_a_crashed_postgres_runner_is_replaced(pg_settings):
    settings = pg_settings
    first, second = Runtime(settings), Runtime(settings)
    url = settings.database.url
    holder, waiting = AdvisoryLock(url), AdvisoryLock(url)
    a = JobRunner(first, holder, paused=True)
    b = JobRunner(second, waiting, paused=True)
    try:
        assert await a.step() and not await b.step()

        holder.connection.terminate()  # the process dies: its connection goes with it
        assert await _settle_until(b.step)
        assert await a.step() is False  # the old holder notices and stops its scheduler
        assert a.scheduler is None
    finally:
        await a.stop()
        await b.stop()
        await first.close()
        await second.close()


async def test_a_crashed_sqlite_runner_is_replaced(tmp_path):
    import os

    holder, waiting = FileLock(tmp_path / "x.lock"), FileLock(tmp_path / "x.lock")
    assert await holder.try_acquire() and not await waiting.try_acquire()
    os.close(holder._fd)  # what the kernel does when the holding process exits
    holder._fd = None
    assert await waiting.try_acquire()
    await waiting.release()


async def test_the_jobs_are_listed_by_name_with_their_next_run(settings):
    rt = Runtime(settings)
    runner = JobRunner(rt, paused=True)
    try:
        await runner.step()
        listed = dict(runner.jobs())
        assert set(listed) == {"lead-sweep", "calendar-check", "assignment-analysis",
                               "merge-review"}
        assert all(isinstance(when, datetime) for when in listed.values())
        assert listed["lead-sweep"].utcoffset() == timedelta(hours=8)
    finally:
        await runner.stop()
        await rt.close()


def test_friday_four_pm_is_beijing_time_on_a_host_in_utc(monkeypatch):
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    try:
        scheduler = build_scheduler(SHANGHAI)
        assert str(scheduler.timezone) == "Asia/Shanghai"
        trigger = cron_trigger(scheduler.timezone, day_of_week="fri", hour=16)
        thursday_noon_utc = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
        fire = trigger.get_next_fire_time(None, thursday_noon_utc)
        assert fire == datetime(2026, 12, 4, 16, 0, tzinfo=SHANGHAI)
        assert fire.astimezone(UTC) == datetime(2026, 12, 4, 8, 0, tzinfo=UTC)
    finally:
        monkeypatch.undo()
        time.tzset()


async def _run_a_job_due_in_the_past(grace: int) -> int:
    scheduler = build_scheduler(SHANGHAI)
    outcome: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    scheduler.add_listener(lambda event: outcome.done() or outcome.set_result(event.code),
                           EVENT_JOB_EXECUTED | EVENT_JOB_MISSED)
    ran = []

    async def remind() -> None:
        ran.append(True)

    due = datetime.now(SHANGHAI) - timedelta(seconds=5)
    scheduler.start()
    try:
        add_job(scheduler, "reminder", remind, DateTrigger(due, timezone=SHANGHAI),
                JobTiming(misfire_grace_seconds=grace, timeout_seconds=5))
        code = await asyncio.wait_for(outcome, 5)
    finally:
        scheduler.shutdown(wait=False)
        await asyncio.sleep(0)
    assert bool(ran) == (code == EVENT_JOB_EXECUTED)
    return code


async def test_a_job_due_five_seconds_ago_still_runs_with_our_grace_time():
    assert await _run_a_job_due_in_the_past(SWEEP_TIMING.misfire_grace_seconds) == (
        EVENT_JOB_EXECUTED)


async def test_with_apschedulers_one_second_default_the_same_job_is_missed():
    assert await _run_a_job_due_in_the_past(1) == EVENT_JOB_MISSED


async def test_the_sweep_job_settings_are_what_we_claim(settings):
    rt = Runtime(settings)
    runner = JobRunner(rt, paused=True)
    try:
        await runner.step()
        sweep = runner.scheduler.get_job("lead-sweep")
        assert (sweep.misfire_grace_time, sweep.coalesce, sweep.max_instances) == (30, True, 1)
        assert sweep.trigger.interval == timedelta(seconds=30)
        calendar = runner.scheduler.get_job("calendar-check")
        assert (calendar.misfire_grace_time, calendar.coalesce, calendar.max_instances) == (
            3600, True, 1)
        analysis = runner.scheduler.get_job("assignment-analysis")
        assert (analysis.misfire_grace_time, analysis.coalesce) == (6 * 3600, True)
        wednesday = datetime(2026, 12, 2, 10, 0, tzinfo=SHANGHAI)
        assert analysis.trigger.get_next_fire_time(None, wednesday) == datetime(
            2026, 12, 7, 12, 0, tzinfo=SHANGHAI)  # Monday noon
        # The merge review checks daily at 10:00 whether its day has come, and at start.
        review = runner.scheduler.get_job("merge-review")
        assert (review.misfire_grace_time, review.coalesce, review.max_instances) == (
            6 * 3600, True, 1)
        assert review.next_run_time <= datetime.now(SHANGHAI)
        friday_evening = datetime(2026, 12, 4, 18, 0, tzinfo=SHANGHAI)
        assert review.trigger.get_next_fire_time(None, friday_evening) == datetime(
            2026, 12, 5, 10, 0, tzinfo=SHANGHAI)
    finally:
        await runner.stop()
        await rt.close()


async def test_a_hung_job_is_cancelled_so_the_next_tick_runs(caplog):
    async def hang() -> None:
        await asyncio.Event().wait()

    await asyncio.wait_for(guarded("hung", hang, 0.05)(), 2)
    assert "job hung ran longer than" in caplog.text


async def test_an_unknown_year_tells_the_admins_once_and_the_list_is_loaded(settings):
    rt = build_runtime(settings)
    rt.clock = FrozenClock(datetime(2026, 12, 20, 2, 0, tzinfo=UTC))
    try:
        async with rt.sessions() as session, session.begin():
            session.add(Member(name="管理员", role="admin", status="active", industries=[],
                               channel="console"))
            session.add(ConfigValue(key=CONFIG_KEY,
                                    value={"holidays": ["2027-01-01"], "workdays": []}))
        assert await check_calendar(rt) is False
        assert await check_calendar(rt) is False
        assert rt.calendar_extra.holidays == {date(2027, 1, 1)}
        async with rt.sessions() as session:
            sent = (await session.scalars(select(Outgoing.payload))).all()
            assert len(sent) == 1 and "2027" in str(sent[0])
            assert await session.get(Alert, CALENDAR_ALERT_KEY) is not None

        rt.clock = FrozenClock(datetime(2026, 12, 1, 2, 0, tzinfo=UTC))
        assert await check_calendar(rt) is True
        async with rt.sessions() as session:
            assert await session.get(Alert, CALENDAR_ALERT_KEY) is None
    finally:
        await rt.close()


def test_job_list_of_a_scheduler_not_started_has_no_times():
    scheduler = build_scheduler(SHANGHAI)

    async def nothing() -> None:
        return None

    add_job(scheduler, "noop", nothing, cron_trigger(SHANGHAI, hour=9),
            JobTiming(misfire_grace_seconds=60, timeout_seconds=1))
    assert job_list(scheduler) == [("noop", None)]
