"""The aiohttp application: routes, the runtime's start and stop, the router list.

Owns wiring only. What the bot does is in handlers/; platform details in bot/channels/.
"""

from __future__ import annotations

import logging
import time

from aiohttp import web
from sqlalchemy import func, select, text

from bot.channels.console import ConsoleChannel
from bot.dispatch import Dispatcher
from bot.inbox import Inbox
from bot.outbox import OutboxWorker, outbox_depth
from bot.router import Router
from bot.runtime import Runtime
from config.settings import Settings
from storage.models import Alert, Lead

log = logging.getLogger(__name__)

RUNTIME = web.AppKey("runtime", Runtime)


def routers() -> list[Router]:
    """Every capability's router, in the order their commands appear in /帮助."""
    from handlers import (
        analysis,
        conversion,
        door,
        duty,
        engine_admin,
        entry,
        help,
        import_chat,
        leads,
        lifecycle,
        lookup,
        merge_chat,
    )

    return [help.router, leads.router, lookup.router, lifecycle.router, entry.router,
            conversion.router, door.router, duty.router, import_chat.router,
            engine_admin.router, analysis.router, merge_chat.router]


def build_runtime(settings: Settings) -> Runtime:
    rt = Runtime(settings)
    rt.channels["console"] = ConsoleChannel()
    if settings.wecom.enabled:
        from bot.channels.wecom import WeComChannel

        rt.channels["wecom"] = WeComChannel(rt)
    if settings.dingtalk.enabled:
        from bot.channels.dingtalk import DingTalkChannel

        rt.channels["dingtalk"] = DingTalkChannel(rt)
    rt.inbox = Inbox(rt)
    rt.outbox = OutboxWorker(rt)
    rt.dispatcher = Dispatcher(rt, routers())
    return rt


def create_app(settings: Settings, rt: Runtime | None = None) -> web.Application:
    rt = rt or build_runtime(settings)
    app = web.Application(client_max_size=settings.http.max_body_bytes)
    app[RUNTIME] = rt
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    for channel in rt.channels.values():
        channel.add_routes(app)
    from bot import api, merge_pages, uploads

    api.add_routes(app)
    uploads.add_routes(app)
    merge_pages.add_routes(app)
    if settings.sim_enabled:
        from bot import sim

        sim.add_routes(app)
    app.cleanup_ctx.append(_lifecycle)
    return app


async def _lifecycle(app: web.Application):  # noqa: ANN201 - aiohttp cleanup context
    rt = app[RUNTIME]
    from handlers.engine_admin import seed_rules

    await seed_rules(rt)
    for channel in rt.channels.values():
        await channel.start(app)
    rt.inbox.start()
    await rt.inbox.recover()
    rt.outbox.start()
    from scheduler.jobs import JobRunner, load_calendar_extra

    await load_calendar_extra(rt)
    runner = JobRunner(rt)
    await runner.start()
    log.info("salesbot started: channels=%s", ",".join(rt.channels))
    yield
    await runner.stop()
    await rt.outbox.stop()
    await rt.inbox.stop()
    await rt.close()


async def healthz(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    started = time.perf_counter()
    try:
        async with rt.sessions() as session:
            await session.execute(text("SELECT 1"))
            # Open alert episodes (credentials refused, …): visible even when the
            # channel that would carry the alert to the admins is the broken one.
            alerts = sorted((await session.scalars(select(Alert.key))).all())
    except Exception as exc:  # the database is the one thing health depends on
        log.warning("health check: database unreachable: %s", type(exc).__name__)
        return web.json_response({"status": "unavailable", "database": "down"}, status=503)
    return web.json_response({
        "status": "ok",
        "database": "up",
        "channels": sorted(rt.channels),
        "alerts": alerts,
        "db_ms": round((time.perf_counter() - started) * 1000, 1),
    })


async def metrics(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    async with rt.sessions() as session:
        depth = await outbox_depth(session)
        queued = await session.scalar(
            select(func.count()).select_from(Lead)
            .where(Lead.status == "new", Lead.assignee_id.is_(None))
        )
    for state in ("pending", "sending", "failed"):
        rt.metrics.outbox_depth.labels(state).set(depth.get(state, 0))
    rt.metrics.leads_queued.set(queued or 0)
    return web.Response(body=rt.metrics.render(), content_type="text/plain",
                        headers={"X-Format": "prometheus-0.0.4"})
