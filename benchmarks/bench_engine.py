"""The assignment engine's speed, alone and in the product.

1. Scoring and choosing: 10,000 leads against 200 reps with 30 days of history each, the
   example rule and one more on, in-process (handlers.choosing.EngineChoice over the pure
   handlers.engine.Chooser, as assignment uses them). Target: at least 5,000 leads a second.
2. The backlog: 2,000 leads that arrived at night wait in the queue (SQLite); at 09:00 the
   20 reps (no cap) come on duty and drain_queue hands the queue out into the outbox.
   Target: under 5 s. Then the outbox delivers to the fake WeCom on a simulated clock,
   minute by minute, and we check each rep's busiest minute against the budget (25).
"""

from __future__ import annotations

import asyncio
import json
import random
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import func, select

LEADS, REPS = 10_000, 200
BACKLOG, ON_DUTY = 2000, 20
INDUSTRIES = ("industrial", "medical", "education")


@dataclass
class _Lead:
    id: int
    urgency: str
    industry: str
    source: str


def engine_alone(seed: int = 7) -> dict[str, object]:
    from handlers import engine, rules
    from handlers.choosing import EngineChoice

    rng = random.Random(seed)
    records = []
    for n in range(REPS):
        history = {}
        for industry in INDUSTRIES:
            accepted = rng.randint(0, 40)
            history[industry] = (accepted, rng.randint(0, accepted))
        records.append(engine.RepRecord(
            member_id=n + 1, name=f"销售{n:03d}", open_leads=rng.randint(0, 8),
            history=history, online_minutes=rng.uniform(0, 480),
            team=("华南", "华北")[n % 2], last_offered=rng.randint(1, 10_000) if n % 3 else None))
    vocab = rules.Vocabulary({"industrial": "工业", "medical": "医疗", "education": "教育"},
                             {"expo": "展会", "sem": "SEM", "referral": "转介绍"})
    parsed = [(1, rules.parse_rule(rules.SEED_RULE, vocab)),
              (2, rules.parse_rule("行业=医疗 且 来源=转介绍 → 团队=华北 否则 全部", vocab))]
    leads = [_Lead(n, rng.choice(("high", "medium", "low")), rng.choice(INDUSTRIES),
                   rng.choice(("expo", "sem", "referral"))) for n in range(LEADS)]

    started = time.perf_counter()
    choice = EngineChoice(engine.Chooser(records, engine.DEFAULT_WEIGHTS), parsed, vocab)
    by_rule: dict[str, int] = {}
    for order, lead in enumerate(leads, start=10_001):
        picked = choice.choose(lead, set())
        choice.take(picked.member_id, order)
        outcome = f"{picked.rule_id}:{picked.scores['rule_outcome']}"
        by_rule[outcome] = by_rule.get(outcome, 0) + 1
    seconds = time.perf_counter() - started
    loads = sorted(r.open_leads for r in records)
    return {"leads": LEADS, "reps": REPS, "seconds": round(seconds, 3),
            "leads_per_second": round(LEADS / seconds), "rule_outcomes": by_rule,
            "open_leads_after": {"min": loads[0], "max": loads[-1]}}


async def backlog(seed: int = 7) -> dict[str, object]:
    from aiohttp.test_utils import TestServer

    from bot.app import build_runtime, create_app
    from config.settings import load_settings
    from handlers.assignment import drain_queue
    from handlers.intake import LeadInput, create_leads
    from storage.db import upgrade_async
    from storage.models import Lead, Member, Outgoing
    from tests.fakes.wecom import FakeWeCom
    from tests.harness import FrozenClock

    work = Path(tempfile.mkdtemp(prefix="salesbot-bench-engine-"))
    url = f"sqlite+aiosqlite:///{work}/engine.db"
    await upgrade_async(url)
    fake = FakeWeCom()
    await fake.start()
    settings = load_settings(database={"url": url}, wecom=fake.settings())
    rt = build_runtime(settings)
    night = datetime(2026, 12, 2, 14, 0, tzinfo=UTC)  # Wednesday 22:00 in Beijing
    clock = rt.clock = FrozenClock(night)
    fake.clock = lambda: clock().timestamp()
    server = TestServer(create_app(settings, rt), host="127.0.0.1")
    await server.start_server()
    await rt.outbox.stop()  # run by hand below, on the simulated clock
    try:
        async with rt.sessions() as session, session.begin():
            for n in range(ON_DUTY):
                session.add(Member(name=f"销售{n:02d}", role="rep", wecom_userid=f"rep{n:02d}",
                                   status="active", industries=[]))
        for start in range(0, BACKLOG, 200):
            async with rt.sessions() as session, session.begin():
                await create_leads(session, rt, [
                    LeadInput(company=f"夜间客户{n:04d}有限公司", contact="刘洋",
                              phone=f"137{n:08d}", industry=INDUSTRIES[n % 3],
                              urgency=("high", "medium", "low")[n % 3], source="sem")
                    for n in range(start, start + 200)], rt.now(), origin="api")
        async with rt.sessions() as session:
            queued = await session.scalar(
                select(func.count()).select_from(Lead).where(Lead.assignee_id.is_(None)))

        clock.now = night + timedelta(hours=11)  # Thursday 09:00: everyone on duty
        started = time.perf_counter()
        offered = await drain_queue(rt)
        drain_seconds = time.perf_counter() - started
        async with rt.sessions() as session:
            cards = await session.scalar(
                select(func.count()).select_from(Outgoing).where(Outgoing.kind == "card"))
            per_rep = (await session.execute(
                select(func.count()).select_from(Lead).group_by(Lead.assignee_id))).scalars()
            per_rep = sorted(per_rep.all())

        started = time.perf_counter()
        minutes = 0
        while True:
            while await rt.outbox.run_once():
                pass
            async with rt.sessions() as session:
                left = await session.scalar(
                    select(func.count()).select_from(Outgoing)
                    .where(Outgoing.state.in_(("pending", "sending"))))
            if not left or minutes > 600:
                break
            clock.advance(minutes=1)
            minutes += 1
        delivery_seconds = time.perf_counter() - started
        async with rt.sessions() as session:
            sent = (await session.execute(
                select(Outgoing.recipient, Outgoing.sent_at).where(Outgoing.state == "sent")
            )).all()
    finally:
        await server.close()
        await rt.close()
        await fake.close()
    return {
        "queued_at_night": queued, "offered": offered, "cards_in_outbox": cards,
        "drain_seconds": round(drain_seconds, 2), "leads_per_rep": [per_rep[0], per_rep[-1]],
        "delivered": len(sent), "dropped_by_fake": len(fake.dropped),
        "simulated_minutes": minutes, "delivery_seconds": round(delivery_seconds, 1),
        "busiest_minute_per_rep": _busiest_minute(sent),
    }


def _busiest_minute(sent: list[tuple[str, datetime]]) -> int:
    by_recipient: dict[str, list[datetime]] = {}
    for recipient, at in sent:
        by_recipient.setdefault(recipient, []).append(at)
    busiest = 0
    for times in by_recipient.values():
        times.sort()
        start = 0
        for end, at in enumerate(times):
            while times[start] <= at - timedelta(seconds=60):
                start += 1
            busiest = max(busiest, end - start + 1)
    return busiest


async def run() -> dict[str, object]:
    return {"engine": await asyncio.to_thread(engine_alone), "backlog": await backlog()}


if __name__ == "__main__":
    print(json.dumps(asyncio.run(run()), ensure_ascii=False, indent=2))
