"""Two bot processes on one PostgreSQL database: the door holds between them.

Each "process" here is a runtime of its own with its own connection pool, as two
`salesbot serve` behind a load balancer (or a CLI import beside the server) would be.
"""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import func, select

from bot.app import RUNTIME, build_runtime, create_app
from handlers.lead_import import ImportOptions, check_import, publish_import
from storage.models import Lead, Member
from tests.conftest import make_settings
from tests.harness import WORKDAY_MORNING, FrozenClock

pytestmark = pytest.mark.postgres

TOKEN = "test-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def pg_settings(pg_url):
    return make_settings(pg_url, api={"token": TOKEN})


async def _two_servers(aiohttp_client, settings):
    clients = []
    for _ in range(2):
        rt = build_runtime(settings)
        rt.clock = FrozenClock(WORKDAY_MORNING)
        clients.append(await aiohttp_client(create_app(settings, rt)))
    async with clients[0].app[RUNTIME].sessions() as session, session.begin():
        session.add_all([Member(name="李经理", role="manager", status="active", industries=[]),
                         Member(name="王芳", role="rep", status="active", industries=[])])
    return clients


async def _count(client, phone: str) -> int:
    async with client.app[RUNTIME].sessions() as session:
        return await session.scalar(
            select(func.count()).select_from(Lead).where(Lead.phone == phone))


async def test_one_customer_posted_to_two_processes_at_once_is_stored_once(
        aiohttp_client, pg_settings):
    clients = await _two_servers(aiohttp_client, pg_settings)
    for n in range(4):
        phone = f"1380000910{n}"
        body = {"company": f"苏州双进程{n}号医疗有限公司", "contact": "吴双", "phone": phone,
                "industry": "医疗", "urgency": "中", "source": "展会"}

        async def post(client, body=body):
            response = await client.post("/api/v1/leads", json=body, headers=AUTH)
            return response.status, await response.json()

        answers = await asyncio.gather(*(post(clients[i % 2]) for i in range(6)))

        assert sorted(status for status, _ in answers) == [200] * 5 + [201], answers
        created = next(body for status, body in answers if status == 201)
        for status, answer in answers:
            if status == 200:
                assert answer["linked"] is True and answer["id"] == created["id"]
        assert await _count(clients[0], phone) == 1


async def test_two_imports_of_one_file_at_once_write_each_lead_once(pg_settings):
    header = "公司名称,联系人,手机号,行业,紧急程度,来源渠道"
    rows = [f"双写{n}号示例有限公司,并{n},1310000{n:04d},教育,中,转介绍" for n in range(300)]
    data = ("\n".join([header, *rows]) + "\n").encode("utf-8")
    runtimes = [build_runtime(pg_settings) for _ in range(2)]
    for rt in runtimes:
        rt.clock = FrozenClock(WORKDAY_MORNING)
    try:
        checked = await asyncio.gather(*(
            check_import(rt, data, "pg.csv", ImportOptions(), actor=None, origin="cli")
            for rt in runtimes))
        assert [report.accepted for report in checked] == [300, 300]

        published = await asyncio.gather(*(
            publish_import(rt, report.import_id, actor=None)
            for rt, report in zip(runtimes, checked, strict=True)))

        assert sorted(report.written for report in published) == [0, 300]
        async with runtimes[0].sessions() as session:
            stored = await session.scalar(select(func.count()).select_from(Lead))
            phones = await session.scalar(select(func.count(func.distinct(Lead.phone))))
        assert stored == phones == 300
    finally:
        for rt in runtimes:
            await rt.close()
