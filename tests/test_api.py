"""The intake API as another system uses it: POST a lead, read it back (INTERFACE.md HTTP)."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import func, select

from bot.api import token_matches
from bot.app import RUNTIME, build_runtime, create_app
from storage.models import Customer, Lead
from tests.conftest import make_settings
from tests.harness import WORKDAY_MORNING, Chat, FrozenClock

TOKEN = "test-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
LEAD = {
    "company": "深圳示例科技有限公司",
    "contact": "张伟",
    "phone": "+86 138-0000-0000",
    "industry": "工业",
    "urgency": "高",
    "source": "展会",
}
REPS = [
    {"name": "李经理", "role": "manager"},
    {"name": "王芳", "role": "rep", "manager": "李经理"},
    {"name": "赵强", "role": "rep", "manager": "李经理"},
]


async def start(aiohttp_client, settings):
    rt = build_runtime(settings)
    rt.clock = FrozenClock(WORKDAY_MORNING)
    return await aiohttp_client(create_app(settings, rt))


@pytest.fixture
def api_settings(sqlite_url):
    return make_settings(sqlite_url, api={"token": TOKEN})  # migrates: outside the loop


@pytest.fixture
def both_db_settings(db_url):
    """On SQLite and on PostgreSQL."""
    return make_settings(db_url, api={"token": TOKEN})


@pytest.fixture
async def api(aiohttp_client, api_settings):
    return await start(aiohttp_client, api_settings)


@pytest.fixture
def chat(api) -> Chat:
    return Chat(api.app[RUNTIME])


async def post(api, body, headers=AUTH):
    response = await api.post("/api/v1/leads", json=body, headers=headers)
    return response.status, await response.json()


async def lead_count(api) -> int:
    async with api.app[RUNTIME].sessions() as session:
        return await session.scalar(select(func.count()).select_from(Lead))


# --- the token --------------------------------------------------------------------------


async def test_without_a_configured_token_every_api_route_answers_401(app_client):
    for method, path in (("POST", "/api/v1/leads"), ("GET", "/api/v1/leads/1"),
                         ("GET", "/api/v1/anything")):
        response = await app_client.request(method, path, json=LEAD, headers=AUTH)
        assert response.status == 401
        body = await response.json()
        assert body["errors"][0]["field"] == "Authorization"
        assert "SALESBOT_API__TOKEN" in body["errors"][0]["message"]
    assert (await app_client.get("/healthz")).status == 200


@pytest.mark.parametrize("headers", [
    {},
    {"Authorization": "Bearer wrong-token-0123456789"},
    {"Authorization": f"Bearer {TOKEN}x"},
    {"Authorization": f"Basic {TOKEN}"},
    {"Authorization": TOKEN},
])
async def test_a_missing_or_wrong_token_answers_401_and_stores_nothing(api, headers):
    response = await api.post("/api/v1/leads", json=LEAD, headers=headers)
    assert response.status == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert (await response.json())["errors"][0]["field"] == "Authorization"
    assert (await api.get("/api/v1/leads/1", headers=headers)).status == 401
    assert await lead_count(api) == 0


def test_token_comparison():
    assert token_matches(f"Bearer {TOKEN}", TOKEN)
    assert token_matches(f"bearer  {TOKEN} ", TOKEN)
    assert not token_matches(f"Bearer {TOKEN[:-1]}", TOKEN)
    assert not token_matches("", TOKEN)


# --- a new lead -------------------------------------------------------------------------


async def test_a_new_lead_with_nobody_on_the_roster_waits_in_the_queue(api):
    status, body = await post(api, LEAD | {"email": " zhang.wei@example.com ",
                                           "note": "展会扫码", "external_id": "expo-001"})
    assert status == 201
    assert body == {
        "id": body["id"], "status": "new", "assignee": None, "similar": [],
        "company": "深圳示例科技有限公司", "contact": "张伟", "phone": "13800000000",
        "email": "zhang.wei@example.com", "industry": "industrial", "urgency": "high",
        "source": "expo", "note": "展会扫码", "external_id": "expo-001",
        "created_at": "2026-12-02T02:00:00+00:00",
    }
    assert isinstance(body["id"], int)
    async with api.app[RUNTIME].sessions() as session:
        lead = await session.get(Lead, body["id"])
    assert (lead.origin, lead.phone, lead.industry) == ("api", "13800000000", "industrial")


async def test_a_new_lead_goes_to_an_available_rep(api, chat):
    await chat.add_members(*REPS)
    status, body = await post(api, LEAD)
    assert status == 201
    assert (body["status"], body["assignee"]) == ("assigned", "王芳")
    await chat.settle()
    [card] = await chat.inbox("王芳")
    assert card.card.title == f"新线索 #{body['id']}"
    response = await api.get(f"/api/v1/leads/{body['id']}", headers=AUTH)
    assert response.status == 200
    assert await response.json() == body


async def test_the_next_lead_goes_to_the_next_rep(api, chat):
    await chat.add_members(*REPS)
    assert (await post(api, LEAD))[1]["assignee"] == "王芳"
    assert (await post(api, LEAD | {"company": "广州样例贸易有限公司"}))[1]["assignee"] == "赵强"


async def test_nobody_available_leaves_the_assignee_null(api, chat):
    await chat.add_members({"name": "李经理", "role": "manager"},
                           {"name": "王芳", "role": "rep", "status": "leave"},
                           {"name": "赵强", "role": "rep", "status": "left"})
    status, body = await post(api, LEAD)
    assert status == 201
    assert (body["status"], body["assignee"]) == ("new", None)


@pytest.mark.parametrize("industry, urgency, source, expected", [
    ("工业", "高", "展会", ("industrial", "high", "expo")),
    ("Medical", "MEDIUM", "sem", ("medical", "medium", "sem")),
    ("education", "低", "转介绍", ("education", "low", "referral")),
    (" 医疗 ", "Low", "Referral", ("medical", "low", "referral")),
    ("ＩＮＤＵＳＴＲＩＡＬ", "中", "SEM", ("industrial", "medium", "sem")),
])
async def test_tags_are_accepted_in_chinese_or_english_and_answered_in_english(
    api, industry, urgency, source, expected,
):
    status, body = await post(api, LEAD | {"industry": industry, "urgency": urgency,
                                           "source": source})
    assert status == 201
    assert (body["industry"], body["urgency"], body["source"]) == expected


@pytest.mark.parametrize("phone, stored", [
    ("+86 138-0000-0000", "13800000000"),
    ("8613800000000", "13800000000"),
    ("138 0000 0000", "13800000000"),
    ("0086 13800000000", "13800000000"),
    ("0755-1234 5678 转801", "075512345678-801"),
    ("(0755)12345678", "075512345678"),
])
async def test_phones_are_stored_normalised(api, phone, stored):
    status, body = await post(api, LEAD | {"phone": phone})
    assert status == 201
    assert body["phone"] == stored


# --- bad input --------------------------------------------------------------------------


async def test_an_empty_object_lists_every_required_field(api):
    status, body = await post(api, {})
    assert status == 422
    assert body == {"errors": [
        {"field": name, "message": "必填"}
        for name in ("company", "contact", "phone", "industry", "urgency", "source")
    ]}


async def test_every_invalid_field_is_listed_with_its_reason(api):
    status, body = await post(api, {
        "company": "某" * 201, "contact": 42, "phone": "1380000000",
        "email": "not-an-email", "industry": "金融", "urgency": "urgent",
        "source": "   ", "note": "x" * 2001, "external_id": ["a"],
    })
    assert status == 422
    assert body["errors"] == [
        {"field": "company", "message": "不能超过200个字符"},
        {"field": "contact", "message": "应为字符串"},
        {"field": "source", "message": "必填"},
        {"field": "note", "message": "不能超过2000个字符"},
        {"field": "external_id", "message": "应为字符串"},
        {"field": "phone", "message": "手机号应为11位，这里是10位"},
        {"field": "email", "message": "邮箱格式不正确"},
        {"field": "industry",
         "message": "未知的取值“金融”（可选：工业/industrial、医疗/medical、教育/education）"},
        {"field": "urgency", "message": "未知的取值“urgent”（可选：高/high、中/medium、低/low）"},
    ]
    assert await lead_count(api) == 0


@pytest.mark.parametrize("phone, message", [
    ("1.38E+10", "号码已被Excel科学计数法截断"),
    (13800000000, "应为字符串"),
    ("13800000000转8", "手机号不能带分机号"),
])
async def test_a_bad_phone_is_refused(api, phone, message):
    status, body = await post(api, LEAD | {"phone": phone})
    assert (status, body["errors"]) == (422, [{"field": "phone", "message": message}])


@pytest.mark.parametrize("raw", [b"{not json", b"[1, 2]", b'"text"', b"\xff\xfe\x00", b""])
async def test_a_body_that_is_not_a_json_object_answers_400(api, raw):
    response = await api.post("/api/v1/leads", data=raw,
                              headers=AUTH | {"Content-Type": "application/json"})
    assert response.status == 400
    [error] = (await response.json())["errors"]
    assert error["field"] == "body"


@pytest.mark.parametrize("lead_id", ["999", "abc", "1.5", "-1", "9" * 30, "１"])
async def test_an_unknown_or_malformed_id_answers_404(api, lead_id):
    response = await api.get(f"/api/v1/leads/{lead_id}", headers=AUTH)
    assert response.status == 404
    [error] = (await response.json())["errors"]
    assert error["field"] == "id" and error["message"].startswith("找不到线索")


# --- idempotency --------------------------------------------------------------------------


async def test_a_known_external_id_answers_200_with_the_first_lead(api):
    first_status, first = await post(api, LEAD | {"external_id": "sem-42"})
    again_status, again = await post(api, LEAD | {"external_id": "sem-42",
                                                  "company": "另一家公司"})
    assert (first_status, again_status) == (201, 200)
    assert again == first
    assert again["company"] == "深圳示例科技有限公司"
    assert await lead_count(api) == 1


async def test_a_numeric_external_id_is_the_same_as_its_text(api):
    assert (await post(api, LEAD | {"external_id": 42}))[0] == 201
    status, body = await post(api, LEAD | {"external_id": "42"})
    assert (status, body["external_id"]) == (200, "42")


async def test_concurrent_posts_with_one_external_id_make_one_lead(
    aiohttp_client, both_db_settings,
):
    api = await start(aiohttp_client, both_db_settings)
    bodies = [LEAD | {"external_id": "web-7", "contact": f"联系人{i}"} for i in range(6)]
    answers = await asyncio.gather(*(post(api, body) for body in bodies))
    statuses = sorted(status for status, _ in answers)
    assert statuses == [200, 200, 200, 200, 200, 201]
    assert len({body["id"] for _, body in answers}) == 1
    assert await lead_count(api) == 1


async def test_a_lost_unique_race_answers_200_with_the_winner(api, monkeypatch):
    """The other writer committed between our lookup and our insert."""
    import bot.api

    status, winner = await post(api, LEAD | {"external_id": "race-1"})
    assert status == 201

    async def insert_without_looking(session, rt, batch, now, *, origin):
        for data in batch:
            session.add(Lead(company=data.company, contact=data.contact, phone=data.phone,
                             external_id=data.external_id, status="new", origin=origin,
                             created_at=now, updated_at=now))
        await session.flush()  # raises IntegrityError on the unique external_id
        raise AssertionError("the insert should have failed")

    monkeypatch.setattr(bot.api, "create_leads", insert_without_looking)
    status, body = await post(api, LEAD | {"external_id": "race-1", "company": "后来者"})
    assert (status, body) == (200, winner)
    assert await lead_count(api) == 1


@pytest.mark.parametrize("raw", ['{"company": "\\ud800x"}', "[" * 100_000 + "]" * 100_000])
async def test_broken_text_and_deep_nesting_are_400_not_a_crash(api, raw):
    response = await api.post("/api/v1/leads", data=raw.encode(), headers=AUTH)
    assert response.status == 400
    assert (await response.json())["errors"][0]["field"] == "body"


@pytest.mark.parametrize("company", ["示例\x00科技", "示例\x1b[31m科技", "示例\u202e科技", "a\nb"])
async def test_control_characters_in_a_name_are_refused(api, company):
    status, body = await post(api, LEAD | {"company": company})
    assert status == 422 and body["errors"][0]["field"] == "company"


async def test_a_note_may_have_line_breaks(api):
    status, body = await post(api, LEAD | {"note": "第一行\n第二行"})
    assert status == 201 and body["note"] == "第一行\n第二行"


# --- the duplicate check at the door ---------------------------------------------------


async def test_a_strong_match_answers_200_linked_with_the_existing_lead(api):
    _, first = await post(api, LEAD)
    assert first["similar"] == []
    # the same mobile, company and contact, however written (C14, C15)
    status, again = await post(api, LEAD | {"company": "深圳市示例科技有限责任公司",
                                            "contact": "张伟 先生", "phone": "0086 13800000000"})
    assert (status, again["linked"], again["kind"]) == (200, True, "lead")
    assert again["id"] == first["id"]
    assert again["company"] == "深圳示例科技有限公司"
    assert await lead_count(api) == 1


async def test_a_similar_lead_is_stored_and_lists_what_it_resembles(api):
    _, first = await post(api, LEAD | {"email": "zhang@shili.example"})
    # another contact at the same company and e-mail: two fields agree
    status, body = await post(api, LEAD | {"contact": "李娜", "phone": "13900000000",
                                           "company": "示例科技（深圳）有限公司",
                                           "email": " Zhang@Shili.example"})
    assert status == 201 and body["id"] != first["id"]
    assert body["similar"] == [{"id": first["id"], "kind": "lead", "score": 65,
                                "reason": ["email", "company"]}]
    # the brand in another city, nothing else shared: not similar
    status, other = await post(api, LEAD | {"company": "北京示例科技有限公司",
                                            "phone": "13700000000", "contact": "王五"})
    assert (status, other["similar"]) == (201, [])


async def test_a_strong_match_with_a_customer_answers_with_the_customer(api):
    async with api.app[RUNTIME].sessions() as session, session.begin():
        session.add(Customer(company="深圳示例科技有限公司", contact="张伟",
                             phone="13800000000"))
    status, body = await post(api, LEAD)
    assert (status, body["kind"], body["id"], body["linked"]) == (200, "customer", 1, True)
    assert await lead_count(api) == 0


async def test_the_same_lead_posted_concurrently_is_stored_once(api):
    answers = await asyncio.gather(*(post(api, LEAD) for _ in range(5)))
    assert sorted(status for status, _ in answers) == [200, 200, 200, 200, 201]
    assert len({body["id"] for _, body in answers}) == 1
    assert sum(bool(body.get("linked")) for _, body in answers) == 4
    assert await lead_count(api) == 1


async def test_similar_leads_posted_at_the_same_moment_list_each_other(api):
    bodies = [LEAD | {"company": "南京相似并发有限公司", "phone": "13800004444",
                      "contact": f"联系人{n}"} for n in range(5)]
    answers = await asyncio.gather(*(post(api, body) for body in bodies))
    assert [status for status, _ in answers] == [201] * 5
    by_id = sorted((body["id"], body) for _, body in answers)
    ids = [lead_id for lead_id, _ in by_id]
    for n, (_, body) in enumerate(by_id):
        # Each lists the ones stored before it, whether in its batch or not.
        assert sorted(item["id"] for item in body["similar"]) == ids[:n]
        assert all(item["kind"] == "lead" and set(item["reason"]) == {"phone", "company"}
                   for item in body["similar"])


# --- a customer who comes back ----------------------------------------------------------


async def delivered(chat, name):
    while await chat.rt.outbox.run_once():
        pass
    return await chat.inbox(name)


async def _enquiries(api):
    from storage.models import Enquiry

    async with api.app[RUNTIME].sessions() as session:
        return list((await session.scalars(select(Enquiry).order_by(Enquiry.id))).all())


async def test_a_returning_enquiry_is_kept_and_its_rep_is_told(api, chat):
    await chat.add_members(*REPS)
    await chat.say("王芳", "/上班")
    _, first = await post(api, LEAD)
    assert first["assignee"] == "王芳"
    await delivered(chat, "王芳")

    status, again = await post(api, LEAD | {"note": "客户重新询价，想买100台",
                                            "external_id": "form-77", "source": "SEM"})

    assert (status, again["linked"], again["id"]) == (200, True, first["id"])
    [enquiry] = await _enquiries(api)
    assert (enquiry.kind, enquiry.object_id, enquiry.external_id) == ("lead", first["id"],
                                                                      "form-77")
    assert enquiry.values["note"] == "客户重新询价，想买100台"
    [told] = await delivered(chat, "王芳")
    assert told.text == (f"客户再次来询：深圳示例科技有限公司 · 张伟 · 138****0000（来源：SEM）。"
                         f"已记在线索 #{first['id']} 下，没有新建线索。"
                         "备注：客户重新询价，想买100台。")

    # The form posts the same enquiry again: the first answer, kept and told once.
    status, retry = await post(api, LEAD | {"external_id": "form-77", "phone": "13911112222"})
    assert (status, retry["id"], retry["linked"]) == (200, first["id"], True)
    assert len(await _enquiries(api)) == 1
    assert await delivered(chat, "王芳") == []
    assert await lead_count(api) == 1


async def test_an_enquiry_for_a_lost_lead_goes_to_the_manager_with_reopen(api, chat):
    await chat.add_members(*REPS)
    await chat.say("王芳", "/上班")
    _, first = await post(api, LEAD)
    lead_id = first["id"]
    await chat.say("王芳", f"接受 {lead_id}")
    await chat.say("王芳", f"/流失 {lead_id} 客户不需要了")
    await delivered(chat, "李经理")

    status, again = await post(api, LEAD | {"note": "要再订500件"})

    assert (status, again["status"]) == (200, "lost")
    [told] = await delivered(chat, "李经理")
    assert told.text == (f"已流失的线索 #{lead_id}（深圳示例科技有限公司）有客户再次来询："
                         f"张伟 · 138****0000（来源：展会）。备注：要再订500件。"
                         f"如需重新跟进，发送 /重开 {lead_id}。")


async def test_an_enquiry_for_a_customer_tells_its_owner(api, chat):
    members = await chat.add_members(*REPS)
    async with api.app[RUNTIME].sessions() as session, session.begin():
        session.add(Customer(company="深圳示例科技有限公司", contact="张伟",
                             phone="13800000000", owner_id=members["赵强"].id))
    status, body = await post(api, LEAD)
    assert (status, body["kind"]) == (200, "customer")
    [told] = await delivered(chat, "赵强")
    assert told.text.startswith("客户再次来询：深圳示例科技有限公司 · 张伟 · 138****0000")
    assert "已记在客户 #1 下" in told.text
