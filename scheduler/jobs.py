"""The scheduled jobs inside `serve`: APScheduler 3 on the running loop, one runner.

It owns the job list, each job's timing settings and the runner role's life; what a
job does lives with its capability (the lead sweep in scheduler.sweeps).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from apscheduler.events import (
    EVENT_JOB_ERROR,
    EVENT_JOB_EXECUTED,
    EVENT_JOB_MISSED,
    EVENT_JOB_SUBMITTED,
    JobEvent,
)
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from bot.alerts import alert_admins, resolve
from handlers.analysis import review_assignments
from handlers.merge_chat import monthly_review
from scheduler.calendar import CONFIG_KEY, CalendarExtra, statutory_covers
from scheduler.leader import RunnerLock, lock_for
from scheduler.sweeps import sweep_once
from storage.models import ConfigValue

if TYPE_CHECKING:
    from bot.runtime import Runtime

log = logging.getLogger(__name__)

ROLE_RETRY_SECONDS = 15.0
STOP_WAIT_SECONDS = 10.0
# The statutory data must reach this far ahead; the package's yearly release usually
# comes in November, so the alert gives the admins about two weeks to upgrade.
CALENDAR_HORIZON_DAYS = 14
CALENDAR_ALERT_KEY = "calendar_outdated"

T_CALENDAR_OUTDATED = (
    "工作日历需要更新：chinesecalendar 没有 {year} 年的法定节假日和调休数据。"
    "在升级之前，{year} 年按周一至周五计算，并参考管理员维护的节假日和调休清单。"
    "请升级 chinesecalendar 后重启机器人。"
)


@dataclass(slots=True, frozen=True)
class JobTiming:
    """What APScheduler does with a late or overlapping run, said for every job."""

    misfire_grace_seconds: int  # a run later than this is skipped (the default is 1 s)
    timeout_seconds: float  # the body is cancelled after this, so the next tick can run
    coalesce: bool = True  # several missed runs become one
    max_instances: int = 1  # never two copies of the same job at once


SWEEP_TIMING = JobTiming(misfire_grace_seconds=30, timeout_seconds=120)
CALENDAR_TIMING = JobTiming(misfire_grace_seconds=3600, timeout_seconds=60)
# A restart on Monday afternoon still runs the weekly review; its alert is once a week.
ANALYSIS_TIMING = JobTiming(misfire_grace_seconds=6 * 3600, timeout_seconds=300)
# The scan of 100,000 customers takes under a minute; the cards go out after it.
MERGE_REVIEW_TIMING = JobTiming(misfire_grace_seconds=6 * 3600, timeout_seconds=900)


def cron_trigger(zone: ZoneInfo, **fields: Any) -> CronTrigger:
    """A cron trigger read in the team's zone: day_of_week="fri", hour=16 is Beijing 16:00
    on a host in UTC. Use day names: APScheduler numbers Monday 0, crontab Sunday 0."""
    fields.setdefault("minute", 0)
    return CronTrigger(timezone=zone, **fields)


def build_scheduler(zone: ZoneInfo) -> AsyncIOScheduler:
    # The job defaults repeat the timing on purpose: a job added without add_job below
    # still never inherits APScheduler's 1 s grace or the host's timezone.
    return AsyncIOScheduler(
        timezone=zone,
        job_defaults={"misfire_grace_time": 60, "coalesce": True, "max_instances": 1},
    )


def guarded(
    name: str, body: Callable[..., Awaitable[Any]], timeout: float
) -> Callable[..., Awaitable[None]]:
    """The job as APScheduler runs it: bounded in time, its failure logged, never raised."""
    async def run(*args: Any) -> None:
        try:
            await asyncio.wait_for(body(*args), timeout)
        except TimeoutError:
            log.error("job %s ran longer than %.0f s and was cancelled", name, timeout)
        except Exception:
            log.exception("job %s failed", name)

    run.__name__ = run.__qualname__ = name
    return run


def add_job(
    scheduler: AsyncIOScheduler, name: str, body: Callable[..., Awaitable[Any]],
    trigger: BaseTrigger, timing: JobTiming, *args: Any, **options: Any,
) -> None:
    scheduler.add_job(
        guarded(name, body, timing.timeout_seconds), trigger, args=args, id=name, name=name,
        misfire_grace_time=timing.misfire_grace_seconds, coalesce=timing.coalesce,
        max_instances=timing.max_instances, replace_existing=True, **options,
    )


def add_salesbot_jobs(scheduler: AsyncIOScheduler, rt: Runtime) -> None:
    zone = rt.settings.zone
    add_job(scheduler, "lead-sweep", sweep_once, IntervalTrigger(seconds=30, timezone=zone),
            SWEEP_TIMING, rt)
    # Daily before the working day, and once at start so an outdated calendar is told.
    add_job(scheduler, "calendar-check", check_calendar,
            cron_trigger(zone, hour=8, minute=30), CALENDAR_TIMING, rt,
            next_run_time=datetime.now(zone))
    # Monday 12:00, not 09:00: by then the weekend's leads have had their 2 working
    # hours (Monday 09:00-11:00), so last week's contact share is final.
    add_job(scheduler, "assignment-analysis", review_assignments,
            cron_trigger(zone, day_of_week="mon", hour=12), ANALYSIS_TIMING, rt)
    # The monthly merge review is due from 10:00 on the 5th or the next working day
    # (handlers.merging.review_period). A daily check at 10:00 finds that day whatever the
    # admins' holiday list says by then, and the check at start catches up a review the
    # bot was down for; the review claims its month, so it runs once.
    add_job(scheduler, "merge-review", monthly_review, cron_trigger(zone, hour=10),
            MERGE_REVIEW_TIMING, rt, next_run_time=datetime.now(zone))


def job_list(scheduler: AsyncIOScheduler) -> list[tuple[str, datetime | None]]:
    """Every job by name with its next run time (None while paused or not started)."""
    return [(job.name, getattr(job, "next_run_time", None)) for job in scheduler.get_jobs()]


async def load_calendar_extra(rt: Runtime) -> CalendarExtra:
    """The admins' holiday and make-up day list from the live configuration."""
    async with rt.sessions() as session:
        row = await session.get(ConfigValue, CONFIG_KEY)
    try:
        extra = CalendarExtra.from_value(row.value if row else None)
    except (ValueError, TypeError, AttributeError):
        log.error("config %s is malformed; keeping the previous list", CONFIG_KEY)
        return rt.calendar_extra
    rt.calendar_extra = extra
    return extra


async def check_calendar(rt: Runtime) -> bool:
    """Reload the admins' list; True if the statutory data covers the coming weeks, else
    the admins are told once (the episode closes when an upgraded package covers them)."""
    await load_calendar_extra(rt)
    horizon = rt.now().astimezone(rt.settings.zone).date() + timedelta(
        days=CALENDAR_HORIZON_DAYS)
    covered = statutory_covers(horizon)
    async with rt.sessions() as session, session.begin():
        if covered:
            await resolve(session, CALENDAR_ALERT_KEY)
        else:
            await alert_admins(session, rt, CALENDAR_ALERT_KEY,
                               T_CALENDAR_OUTDATED.format(year=horizon.year))
    if not covered:
        log.warning("calendar: no statutory data for %s; weekdays and the admins' list apply",
                    horizon.year)
        rt.outbox.wake()
    return covered


class JobRunner:
    """Holds the runner role when it can and runs the scheduler only while holding it."""

    def __init__(
        self, rt: Runtime, lock: RunnerLock | None = None,
        retry_seconds: float = ROLE_RETRY_SECONDS,
        setup: Callable[[AsyncIOScheduler, Runtime], None] = add_salesbot_jobs,
        paused: bool = False,
    ) -> None:
        self.rt = rt
        self.lock = lock or lock_for(rt.settings.database.url)
        self.retry_seconds = retry_seconds
        self.setup = setup
        self.paused = paused
        self.scheduler: AsyncIOScheduler | None = None
        self._task: asyncio.Task[None] | None = None
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def is_runner(self) -> bool:
        return self.scheduler is not None

    async def start(self) -> None:
        await self.step()
        self._task = asyncio.create_task(self._watch(), name="job-runner-role")

    async def step(self) -> bool:
        """One look at the role: take it if free, give it up if the lock was lost."""
        if self.scheduler is not None:
            if not await self.lock.still_held():
                log.error("runner role lost; scheduled jobs stop here until it is regained")
                self._stop_scheduler()
            return self.is_runner
        if await self.lock.try_acquire():
            scheduler = build_scheduler(self.rt.settings.zone)
            self.setup(scheduler, self.rt)
            scheduler.add_listener(self._count, EVENT_JOB_SUBMITTED | EVENT_JOB_EXECUTED
                                   | EVENT_JOB_ERROR | EVENT_JOB_MISSED)
            scheduler.start(paused=self.paused)  # needs the running loop (APScheduler 3.11)
            self.scheduler = scheduler
            log.info("runner role taken; jobs: %s", ", ".join(n for n, _ in job_list(scheduler)))
        return self.is_runner

    def jobs(self) -> list[tuple[str, datetime | None]]:
        return job_list(self.scheduler) if self.scheduler else []

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self.scheduler is not None and self.scheduler.running:
            # Let a running job finish its transaction: cancelling it mid-query can leave
            # an aiosqlite connection that never closes.
            self.scheduler.pause()
            try:
                await asyncio.wait_for(self._idle.wait(), STOP_WAIT_SECONDS)
            except TimeoutError:
                log.warning("a job was still running at shutdown and is cancelled")
        self._stop_scheduler()
        await asyncio.sleep(0)  # AsyncIOScheduler shuts down on the loop's next turn
        await self.lock.release()

    def _count(self, event: JobEvent) -> None:
        self._in_flight += 1 if event.code == EVENT_JOB_SUBMITTED else -1
        if self._in_flight > 0:
            self._idle.clear()
        else:
            self._in_flight = 0
            self._idle.set()

    def _stop_scheduler(self) -> None:
        scheduler, self.scheduler = self.scheduler, None
        if scheduler is not None and scheduler.running:
            scheduler.shutdown(wait=False)

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.retry_seconds)
            try:
                await self.step()
                if not self.is_runner:
                    # Chat on this process still judges working days by the live list.
                    await load_calendar_extra(self.rt)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("runner role check failed")
