"""Duplicate detection: the rule, the look-alikes, the stored keys and their blocking, the
monthly groups (PRODUCT.md §2, field reports C14 and C15)."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime

import pytest
from sqlalchemy import event, func, insert, select, text

from bot.runtime import Runtime
from config.settings import load_settings
from handlers import matching
from handlers.matching import (
    Group,
    MatchKeys,
    Similar,
    company_score,
    decide,
    find_similar,
    index_rows,
    keys_for,
    scan_groups,
)
from storage.db import upgrade_async
from storage.models import Customer, Lead, MatchGram

SZ = "深圳市示例科技有限公司"


def keys(company: str = SZ, contact: str = "张伟", phone: str | None = "13800000001",
         email: str | None = None) -> MatchKeys:
    return keys_for(company, contact, phone, email)


# The rule, on plain keys --------------------------------------------------------------

@pytest.mark.parametrize("one, other", [
    ("深圳示例科技有限公司", "深圳示例科技有限责任公司"),
    ("示例科技（深圳）有限公司", "深圳示例科技有限公司"),
    ("示例科技(深圳)有限公司", "示例科技（深圳）有限公司"),
    ("深圳市示例科技有限公司", "示例科技"),
])
def test_c14_same_company_and_one_phone_is_similar(one, other):
    verdict = decide(keys(one, "张伟"), keys(other, "李娜"))
    assert verdict.similar and not verdict.strong
    assert verdict.reasons == ["phone", "company"]
    assert verdict.score == 65


def test_c14_another_brand_with_the_same_phone_is_not_similar():
    assert company_score("示例科技", "样本科技") == 50
    verdict = decide(keys("深圳示例科技有限公司"), keys("深圳样本科技有限公司"))
    assert (verdict.similar, verdict.reasons, verdict.score) == (False, ["phone"], 35)


@pytest.mark.parametrize("raw", ["+86 138-0000-0001", "0086 13800000001", "(+86)13800000001",
                                 "86-138 0000 0001", "１３８０００００００１", "13800000001.0"])
def test_c15_a_mobile_written_any_way_makes_a_strong_match(raw):
    verdict = decide(keys(SZ, "张伟"), keys("示例科技（深圳）有限公司", "张伟先生", raw))
    assert (verdict.similar, verdict.strong, verdict.score) == (True, True, 100)
    assert verdict.reasons == ["strong", "phone", "company"]


def test_strong_needs_a_mobile_the_full_name_and_the_contact():
    landline = decide(keys(phone="0755-12345678"), keys(phone="075512345678转801"))
    assert landline.similar and not landline.strong
    other_city = decide(keys(SZ), keys("广州示例科技有限公司"))
    assert other_city.similar and not other_city.strong  # the core agrees, the full does not
    other_contact = decide(keys(contact="张伟"), keys(contact="王芳"))
    assert other_contact.similar and not other_contact.strong


def test_phone_and_email_agree_across_a_renamed_company():
    verdict = decide(keys("示例科技", email="zw@example.com"),
                     keys("样本网络", email=" ZW@Example.com", phone="+86 138 0000 0001"))
    assert (verdict.similar, verdict.reasons, verdict.score) == (True, ["phone", "email"], 70)


def test_all_three_agree_without_the_contact_scores_just_below_strong():
    verdict = decide(keys(contact="张伟", email="zw@example.com"),
                     keys(contact="王芳", email="zw@example.com"))
    assert (verdict.similar, verdict.strong, verdict.score) == (True, False, 99)


def test_a_company_alone_is_never_similar():
    verdict = decide(keys(SZ, phone="13800000001"), keys("示例科技", phone="13900000002"))
    assert (verdict.similar, verdict.reasons) == (False, ["company"])


def test_a_typo_in_the_brand_still_agrees_two_do_not():
    assert company_score("示例科技", "示利科技") == 75
    assert decide(keys("深圳示例科技有限公司"), keys("深圳示利科技有限公司")).similar
    assert not decide(keys("深圳示例科技有限公司"), keys("深圳样本科技有限公司")).similar


def test_a_short_name_inside_the_long_one_agrees():
    assert company_score("示例科技", "示例科技发展") == 90
    assert company_score("示例", "示例网络科技发展") < matching.COMPANY_THRESHOLD


def test_look_alike_branches_in_two_cities_are_not_similar():
    shenzhen = keys("示例科技有限公司深圳分公司", "张伟", "13800000001", "sz@example.com")
    guangzhou = keys("示例科技有限公司广州分公司", "张伟", "13900000002", "gz@example.com")
    assert decide(shenzhen, guangzhou).similar is False
    # Even under one head-office switchboard, two branches do not agree on the company.
    one = keys("示例科技有限公司深圳分公司", "张伟", "020-88886666")
    two = keys("示例科技有限公司广州分公司", "李娜", "020-88886666")
    assert company_score(one.company_core, two.company_core) < matching.COMPANY_THRESHOLD
    assert decide(one, two).similar is False


def test_namesake_contacts_at_different_companies_are_not_similar():
    verdict = decide(keys("深圳示例科技有限公司", "张伟", "13800000001", "zw@example.com"),
                     keys("杭州样本贸易有限公司", "张伟", "13900000002", "zhangw@sample.cn"))
    assert (verdict.similar, verdict.reasons) == (False, [])


def test_a_shared_switchboard_across_companies_is_not_similar():
    verdict = decide(keys("深圳示例科技有限公司", "张伟", "0755-88886666"),
                     keys("深圳样本电子有限公司", "李娜", "0755 8888 6666"))
    assert (verdict.similar, verdict.reasons) == (False, ["phone"])


# On a database --------------------------------------------------------------------------

@pytest.fixture
async def rt(sqlite_url):
    await upgrade_async(sqlite_url)
    runtime = Runtime(load_settings(database={"url": sqlite_url}))
    yield runtime
    await runtime.engine.dispose()


async def _add(rt: Runtime, *objects: Lead | Customer) -> list[int]:
    async with rt.sessions() as session, session.begin():
        session.add_all(objects)
        await session.flush()
        return [obj.id for obj in objects]


def customer(company: str, contact: str = "张伟", phone: str | None = None,
             email: str | None = None, **extra) -> Customer:
    return Customer(company=company, contact=contact, phone=phone, email=email, **extra)


def lead(company: str, contact: str = "张伟", phone: str | None = None,
         email: str | None = None, **extra) -> Lead:
    return Lead(company=company, contact=contact, phone=phone, email=email, **extra)


async def _grams(rt: Runtime, kind: str, object_id: int) -> list[str]:
    async with rt.sessions() as session:
        return sorted((await session.scalars(select(MatchGram.gram).where(
            MatchGram.kind == kind, MatchGram.object_id == object_id))).all())


async def test_the_orm_hook_fills_keys_on_insert_and_follows_updates(rt):
    [cid] = await _add(rt, customer("示例科技（深圳）有限公司", "张伟先生", "+86 138 0000 0001",
                                    "ZW@Example.com"))
    async with rt.sessions() as session:
        stored = await session.get(Customer, cid)
    assert (stored.phone_key, stored.email_key, stored.company_full, stored.company_core,
            stored.contact_key) == ("13800000001", "zw@example.com", "深圳示例科技", "示例科技",
                                    "张伟")
    assert await _grams(rt, "customer", cid) == ["例科", "示例", "科技"]

    async with rt.sessions() as session, session.begin():
        stored = await session.get(Customer, cid)
        stored.company = "广州样本电子有限公司"
        stored.phone = "0755-12345678转801"
    async with rt.sessions() as session:
        stored = await session.get(Customer, cid)
    assert (stored.phone_key, stored.company_full, stored.company_core) == (
        "075512345678", "广州样本电子", "样本电子")
    assert await _grams(rt, "customer", cid) == ["本电", "样本", "电子"]

    async with rt.sessions() as session, session.begin():
        await session.delete(await session.get(Customer, cid))
    assert await _grams(rt, "customer", cid) == []


async def test_the_orm_hook_keys_a_lead_by_its_landline_when_it_has_no_mobile(rt):
    [lid] = await _add(rt, lead("示例科技", "王总", None, None, landline="0755-12345678"))
    async with rt.sessions() as session:
        stored = await session.get(Lead, lid)
    assert (stored.phone_key, stored.contact_key, stored.email_key) == ("075512345678", "王",
                                                                         None)


async def test_the_migration_keys_the_rows_already_stored(db_url):
    from storage.db import create_engine, upgrade

    await asyncio.to_thread(upgrade, db_url, "0003")
    engine = create_engine(db_url)
    now = {"now": datetime(2026, 12, 1, tzinfo=UTC)}
    async with engine.begin() as conn:
        await conn.execute(text(
            "INSERT INTO leads (id, company, contact, phone, landline, status, origin,"
            " reroutes, pool_returns, created_at, updated_at) VALUES (1, '示例科技（深圳）"
            "有限公司', '张伟先生', NULL, '0755-12345678', 'new', 'api', 0, 0, :now, :now)"), now)
        await conn.execute(text(
            "INSERT INTO customers (id, company, contact, phone, email, status, created_at,"
            " updated_at) VALUES (1, '深圳市样本电子有限公司', '王总', '+86 138 0000 0001',"
            " ' WF@Example.com', 'active', :now, :now)"), now)
    await engine.dispose()

    await upgrade_async(db_url)

    engine = create_engine(db_url)
    async with engine.connect() as conn:
        lead_keys = (await conn.execute(text(
            "SELECT phone_key, email_key, company_full, company_core, contact_key FROM leads"
        ))).one()
        customer_keys = (await conn.execute(text(
            "SELECT phone_key, email_key, company_full, company_core, contact_key,"
            " merged_into_id FROM customers"))).one()
        grams = (await conn.execute(text(
            "SELECT kind, object_id, gram FROM match_grams ORDER BY kind, gram"))).all()
    await engine.dispose()
    assert tuple(lead_keys) == ("075512345678", None, "深圳示例科技", "示例科技", "张伟")
    assert tuple(customer_keys) == ("13800000001", "wf@example.com", "深圳样本电子", "样本电子",
                                    "王", None)
    assert [tuple(g) for g in grams] == [
        ("customer", 1, "本电"), ("customer", 1, "样本"), ("customer", 1, "电子"),
        ("lead", 1, "例科"), ("lead", 1, "示例"), ("lead", 1, "科技")]


async def test_index_rows_keys_rows_written_with_core_sql(rt):
    async with rt.sessions() as session, session.begin():
        await session.execute(insert(Lead), [
            {"company": f"深圳示例{n}科技有限公司", "contact": "李娜女士",
             "phone": f"1380000{n:04d}", "email": f"Lead{n}@Example.com", "status": "new",
             "origin": "import", "reroutes": 0, "pool_returns": 0} for n in range(5)])
        ids = (await session.scalars(select(Lead.id).order_by(Lead.id))).all()
        assert (await session.get(Lead, ids[0])).phone_key is None  # Core SQL: no hook
        assert await index_rows(session, "lead", ids) == 5
    async with rt.sessions() as session:
        rows = (await session.execute(select(Lead.phone_key, Lead.email_key, Lead.company_core,
                                             Lead.contact_key).order_by(Lead.id))).all()
        grams = await session.scalar(select(func.count()).select_from(MatchGram))
    assert rows[3] == ("13800000003", "lead3@example.com", "示例3科技", "李娜")
    assert grams == 5 * 4  # 示例, 例n, n科, 科技


async def test_find_similar_finds_each_kind_best_first(rt):
    ids = await _add(
        rt,
        customer("示例科技（深圳）有限公司", "张伟", "13800000001", "zw@example.com"),
        customer("深圳示例科技有限公司", "王芳", "13800000001"),
        customer("广州示例科技有限公司", "李娜", "13900000009"),  # the brand elsewhere
        customer("深圳样本电子有限公司", "赵强", "13800000001"),  # the number only
        lead("深圳市示例科技有限公司", "张伟先生", "+86 138 0000 0001"),
    )
    probe = keys_for("深圳示例科技有限公司", "张伟", "138 0000 0001", "ZW@example.com")
    async with rt.sessions() as session:
        found = await find_similar(session, probe)
    assert found == [
        Similar("customer", ids[0], 100, ["strong", "phone", "email", "company"], True),
        Similar("lead", ids[4], 100, ["strong", "phone", "company"], True),
        Similar("customer", ids[1], 65, ["phone", "company"], False),
    ]
    async with rt.sessions() as session:
        assert len(await find_similar(session, probe, limit=1)) == 1
        left = await find_similar(session, probe, exclude={("customer", ids[0])})
    assert [(s.kind, s.id) for s in left] == [("lead", ids[4]), ("customer", ids[1])]


async def test_a_converted_lead_is_reported_as_its_customer_and_merged_ones_as_the_survivor(rt):
    [survivor, merged] = await _add(
        rt, customer("样本电子", "赵强", "13700000005", "zq@sample.cn"),
        customer("样本电子有限公司", "赵强", "13700000005", "zq@sample.cn", status="merged"))
    async with rt.sessions() as session, session.begin():
        (await session.get(Customer, merged)).merged_into_id = survivor
    [converted, other] = await _add(
        rt, lead("样本电子", "赵强", "13700000005", customer_id=merged),
        lead("样本电子(深圳)", "赵强", "13600000006", "zq@sample.cn"))
    async with rt.sessions() as session:
        found = await find_similar(session, keys_for("深圳样本电子有限公司", "赵总",
                                                     "13700000005", "zq@sample.cn"))
    assert [(s.kind, s.id, s.reasons) for s in found] == [
        ("customer", survivor, ["phone", "email", "company"]),
        ("lead", other, ["email", "company"]),
    ]
    assert converted not in [s.id for s in found if s.kind == "lead"]


async def test_find_similar_reads_only_through_indexes(rt):
    await _add(rt, *(customer(f"深圳市样本{n:03d}电子有限公司", "赵强", f"1370000{n:04d}")
                     for n in range(30)))
    await _add(rt, lead("示例科技", "张伟", "13800000001", "zw@example.com"))
    statements: list[tuple[str, object]] = []

    def record(conn, cursor, statement, parameters, context, executemany):  # noqa: ANN001
        statements.append((statement, parameters))

    probe = keys_for("示例科技（深圳）有限公司", "张伟", "13800000001", "zw@example.com")
    async with rt.sessions() as session:
        sync_engine = rt.engine.sync_engine
        event.listen(sync_engine, "before_cursor_execute", record)
        try:
            found = await find_similar(session, probe)
        finally:
            event.remove(sync_engine, "before_cursor_execute", record)
        assert [s.kind for s in found] == ["lead"]
        connection = await session.connection()
        plans = []
        for statement, parameters in statements:
            result = await connection.exec_driver_sql("EXPLAIN QUERY PLAN " + statement,
                                                      parameters)
            plans += [row[3] for row in result.all()]
    assert statements, "find_similar ran no query"
    assert not [p for p in plans if re.match(r"SCAN (leads|customers|match_grams)\b", p)], plans
    assert any("USING INDEX ix_customers_phone_key" in p for p in plans), plans
    assert any("ix_match_grams_gram" in p for p in plans), plans


async def test_a_common_gram_does_not_pull_every_company_with_it(rt, monkeypatch):
    monkeypatch.setattr(matching, "GRAM_CAP", 10)
    await _add(rt, *(customer(f"样本{n:02d}科技", "赵强") for n in range(20)))
    [near] = await _add(rt, customer("示例网络", "张伟"))
    async with rt.sessions() as session:
        found = await matching._gram_candidates(session, "示例科技")
    assert found == {"customer": [near]}  # through 示例; 科技 is on 20 records, over the cap


async def test_a_switchboard_shared_by_many_still_finds_the_real_duplicate(rt, monkeypatch):
    monkeypatch.setattr(matching, "KEY_CAP", 5)
    [real] = await _add(rt, customer("示例科技", "张伟", "0755-88886666"))
    await _add(rt, *(customer(f"样本{n:02d}电子", "赵强", "0755-88886666") for n in range(20)))
    async with rt.sessions() as session:
        found = await find_similar(session, keys_for("深圳示例科技", "王芳", "075588886666", None))
    assert [(s.id, s.reasons) for s in found] == [(real, ["phone", "company"])]


async def test_scan_groups_joins_three_records_and_leaves_the_look_alikes(rt, monkeypatch):
    monkeypatch.setattr(matching, "BLOCK_CAP", 8)
    ids = await _add(
        rt,
        customer("深圳市示例科技有限公司", "张伟", "13800000001", "zw@example.com"),
        customer("示例科技（深圳）有限公司", "张伟先生", "+86 138 0000 0001"),
        customer("示例科技", "张总", "13900000002", "ZW@example.com"),
        customer("示例科技有限公司广州分公司", "李娜", "13700000003", "gz@example.com"),
        customer("示例科技有限公司杭州分公司", "李娜", "13600000004", "hz@example.com"),
        customer("样本电子", "张伟", "13500000005", "zw@sample.cn"),
        customer("示例科技", "张伟", "13800000001", "zw@example.com", status="merged"),
        *(customer(f"楼宇{n:02d}贸易", "前台", "0755-88886666") for n in range(10)),
        customer("楼宇00贸易有限公司", "王芳", "0755 8888 6666"),
    )
    progress: list[tuple[int, int]] = []

    async def report(done: int, total: int) -> None:
        progress.append((done, total))

    async with rt.sessions() as session:
        groups = await scan_groups(session, progress=report)
    a, b, c = ids[:3]
    switch_a, switch_b = ids[7], ids[-1]
    assert groups == [
        Group((a, b, c), [(a, b, ["strong", "phone", "company"], 100),
                          (a, c, ["email", "company"], 65)]),
        Group((switch_a, switch_b), [(switch_a, switch_b, ["phone", "company"], 65)]),
    ]
    assert progress and progress[-1][0] == progress[-1][1] > 0


@pytest.mark.postgres
async def test_find_similar_on_postgresql(pg_url):
    await upgrade_async(pg_url)
    runtime = Runtime(load_settings(database={"url": pg_url}))
    try:
        ids = await _add(
            runtime,
            customer("示例科技（深圳）有限公司", "张伟", "13800000001", "zw@example.com"),
            customer("广州示例科技有限公司", "李娜", "13900000009"),
            lead("深圳样本电子", "王芳", "13700000003", "zw@example.com"),
        )
        probe = keys_for("深圳市示例科技有限公司", "张伟先生", "+86 138 0000 0001",
                         "ZW@example.com")
        async with runtime.sessions() as session:
            found = await find_similar(session, probe)
            groups = await scan_groups(session)
    finally:
        await runtime.engine.dispose()
    assert found == [
        Similar("customer", ids[0], 100, ["strong", "phone", "email", "company"], True),
    ]
    assert groups == []


async def test_the_0007_migration_keys_anew_what_the_new_rules_read_differently(db_url):
    """北京大学 was keyed 大学 before 0007 (any city's university matched it)."""
    from storage.db import create_engine, upgrade

    await asyncio.to_thread(upgrade, db_url, "0006")
    engine = create_engine(db_url)
    now = {"now": datetime(2026, 12, 1, tzinfo=UTC)}
    async with engine.begin() as conn:
        for cid, company in ((1, "北京大学"), (2, "深圳市样本电子有限公司")):
            await conn.execute(text(
                "INSERT INTO customers (id, company, contact, phone, status, created_at,"
                " updated_at, company_full, company_core) VALUES (:id, :company, '王总',"
                " '13800000001', 'active', :now, :now, 'stale', 'stale')"),
                {"id": cid, "company": company, **now})
        await conn.execute(text(
            "INSERT INTO match_grams (kind, object_id, gram) VALUES ('customer', 1, '大学')"))
    await engine.dispose()

    await upgrade_async(db_url)

    engine = create_engine(db_url)
    async with engine.connect() as conn:
        keys = (await conn.execute(text(
            "SELECT id, company_full, company_core, phone_key FROM customers ORDER BY id"
        ))).all()
        grams = (await conn.execute(text(
            "SELECT object_id, gram FROM match_grams ORDER BY object_id, gram"))).all()
    await engine.dispose()
    assert [tuple(k) for k in keys] == [(1, "北京大学", "北京大学", "13800000001"),
                                        (2, "深圳样本电子", "样本电子", "13800000001")]
    assert [tuple(g) for g in grams] == [(1, "京大"), (1, "北京"), (1, "大学"),
                                         (2, "本电"), (2, "样本"), (2, "电子")]
