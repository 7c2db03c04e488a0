"""The web simulator's JSON API: a visitor picks a member, chats and taps card buttons."""

from __future__ import annotations

import asyncio
import re

import pytest
from sqlalchemy import func, select

from bot.app import RUNTIME, build_runtime, create_app
from bot.demo import load_demo
from storage.models import InboundEvent
from tests.conftest import make_settings


async def _demo(chat):
    result = await load_demo(chat.rt)
    await chat.settle()
    return result


async def _messages(client, member, after=0, wait=None):
    query = {"member": str(member), "after": str(after)}
    if wait is not None:
        query["wait"] = str(wait)
    response = await client.get("/sim/api/messages", params=query)
    assert response.status == 200
    return await response.json()


async def test_members_lists_the_roster_with_names_and_roles(app_client, chat):
    await _demo(chat)
    response = await app_client.get("/sim/api/members")
    assert response.status == 200
    members = (await response.json())["members"]
    by_name = {m["name"]: m for m in members}
    assert len(members) == 8
    assert by_name["王芳"]["role"] == "rep" and by_name["王芳"]["role_name"] == "销售"
    assert by_name["王芳"]["industries"] == ["工业", "医疗"]
    assert by_name["李明"]["role_name"] == "经理"
    assert all(m["team"] == "华南" for m in members)
    assert "mobile" not in by_name["王芳"]


async def test_rep_sees_the_lead_card_accepts_it_and_the_card_changes(app_client, chat):
    await _demo(chat)
    first = await _messages(app_client, "王芳")
    [offered] = first["messages"]
    card = offered["card"]
    assert offered["kind"] == "card" and card["title"] == "新线索 #1"
    assert [b["label"] for b in card["buttons"]] == ["接受", "拒绝", "转给同事"]
    assert card["state"] == "open" and card["status"] is None

    response = await app_client.post("/sim/api/click", json={
        "member": first["member"]["id"], "key": card["buttons"][0]["key"],
        "card_ref": card["ref"],
    })
    assert response.status == 202
    await chat.settle()

    later = await _messages(app_client, "王芳", after=first["last"])
    kinds = [m["kind"] for m in later["messages"]]
    assert kinds == ["card_update", "text"]
    update, reply = later["messages"]
    assert update["card"]["id"] == card["id"]
    assert update["card"]["buttons"] == []
    assert update["card"]["status"] == "王芳 已于 12-02 10:00 接受"
    assert reply["text"].startswith("已接受线索 #1")

    # Read from the start again, the card shows its current state.
    again = await _messages(app_client, first["member"]["id"])
    assert again["messages"][0]["card"]["status"] == "王芳 已于 12-02 10:00 接受"


async def test_what_the_visitor_says_goes_through_the_inbox(app_client, chat):
    await _demo(chat)
    response = await app_client.post("/sim/api/say", json={"member": "王芳", "text": "/帮助"})
    assert response.status == 202
    key = (await response.json())["key"]
    await chat.settle()
    async with chat.rt.sessions() as session:
        event = await session.scalar(select(InboundEvent).where(InboundEvent.key == key))
    assert event.channel == "console" and event.sender == "王芳" and event.state == "done"
    texts = [m["text"] for m in (await _messages(app_client, "王芳"))["messages"]]
    assert any("您可以这样和我说话" in t for t in texts)


async def test_a_long_poll_answers_as_soon_as_the_reply_is_sent(app_client, chat):
    await _demo(chat)
    start = await _messages(app_client, "赵强")
    poll = asyncio.create_task(_messages(app_client, "赵强", after=start["last"], wait=10))
    await asyncio.sleep(0.2)
    assert not poll.done()
    await app_client.post("/sim/api/say", json={"member": "赵强", "text": "/我的线索"})
    data = await asyncio.wait_for(poll, timeout=5)
    assert data["messages"][0]["text"].startswith("您的进行中线索（1 条）")
    assert data["last"] == data["messages"][-1]["id"]


async def test_a_short_poll_with_nothing_new_answers_at_once(app_client, chat):
    await _demo(chat)
    start = await _messages(app_client, "孙丽")
    assert start["messages"] == [] and start["last"] == 0


async def test_unknown_member_is_404(app_client, chat):
    await _demo(chat)
    for response in (
        await app_client.get("/sim/api/messages", params={"member": "张三"}),
        await app_client.get("/sim/api/messages", params={"member": "999"}),
        await app_client.post("/sim/api/say", json={"member": "张三", "text": "你好"}),
        await app_client.post("/sim/api/click", json={
            "member": 999, "key": "accept:1", "card_ref": "x"}),
    ):
        assert response.status == 404
        body = await response.json()
        assert body["errors"][0]["field"] == "member"
        assert body["errors"][0]["message"] == "名单中没有这位成员。"


async def test_bad_input_is_400_with_a_reason(app_client, chat):
    await _demo(chat)
    bad_json = await app_client.post("/sim/api/say", data=b"{not json",
                                     headers={"Content-Type": "application/json"})
    assert bad_json.status == 400
    assert (await bad_json.json())["errors"][0]["message"] == "请求体不是合法的 JSON 对象。"
    cases = [
        ("/sim/api/say", [1, 2]),
        ("/sim/api/say", {"text": "你好"}),
        ("/sim/api/say", {"member": "王芳", "text": "   "}),
        ("/sim/api/say", {"member": "王芳", "text": "长" * 2001}),
        ("/sim/api/click", {"member": "王芳", "key": "explode:1", "card_ref": "x"}),
        ("/sim/api/click", {"member": "王芳", "key": "accept:", "card_ref": "x"}),
        ("/sim/api/click", {"member": "王芳", "key": "accept:1"}),
    ]
    for path, body in cases:
        response = await app_client.post(path, json=body)
        assert response.status == 400, (path, body)
        assert (await response.json())["errors"][0]["message"]
    for query in ({"member": "王芳", "after": "-1"}, {"member": "王芳", "wait": "abc"},
                  {"member": "王芳", "after": "nan"}, {}):
        response = await app_client.get("/sim/api/messages", params=query)
        assert response.status == 400, query


async def test_a_click_on_an_unknown_or_someone_elses_card_is_refused(app_client, chat):
    await _demo(chat)
    card = (await _messages(app_client, "王芳"))["messages"][0]["card"]
    unknown = await app_client.post("/sim/api/click", json={
        "member": "王芳", "key": "accept:1", "card_ref": "sbnothere"})
    assert unknown.status == 404
    foreign = await app_client.post("/sim/api/click", json={
        "member": "赵强", "key": "accept:1", "card_ref": card["ref"]})
    assert foreign.status == 403
    async with chat.rt.sessions() as session:
        clicks = await session.scalar(select(func.count()).select_from(InboundEvent)
                                      .where(InboundEvent.kind == "card_action"))
    assert clicks == 0


async def test_page_and_its_files_load_nothing_from_elsewhere(app_client):
    page = await app_client.get("/sim")
    assert page.status == 200 and page.content_type == "text/html"
    html = await page.text()
    assert "选择成员" in html
    assert "default-src 'self'" in page.headers["Content-Security-Policy"]
    sources = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert sources == ["/sim/static/sim.css", "/sim/static/sim.js"]
    for path in sources:
        response = await app_client.get(path)
        assert response.status == 200
        assert not re.search(r"https?://|//[a-z0-9.-]+\.[a-z]{2,}/", await response.text())
    assert (await app_client.get("/sim/static/secret.py")).status == 404
    assert (await app_client.get("/sim/static/..%2Fsim.py")).status == 404


@pytest.fixture
def settings_without_sim(sqlite_url):
    return make_settings(sqlite_url, sim={"enabled": False})


async def test_the_simulator_is_absent_when_disabled(aiohttp_client, settings_without_sim):
    settings = settings_without_sim
    client = await aiohttp_client(create_app(settings, build_runtime(settings)))
    assert (await client.get("/sim")).status == 404
    assert (await client.get("/sim/api/members")).status == 404
    assert client.app[RUNTIME] is not None


async def test_a_request_forwarded_by_a_proxy_is_refused(app_client, chat):
    await _demo(chat)
    forwarded = {"X-Forwarded-For": "203.0.113.9", "Host": "crm.example.com"}
    for method, path in (("get", "/sim"), ("get", "/sim/api/members"),
                         ("post", "/sim/api/say")):
        response = await getattr(app_client, method)(path, headers=forwarded,
                                                      json={"member": "王芳", "text": "x"})
        assert response.status == 403, path
    assert (await app_client.get("/sim/api/members")).status == 200


async def test_deeply_nested_json_is_a_400_not_a_crash(app_client, chat):
    await _demo(chat)
    body = "[" * 100_000 + "]" * 100_000
    response = await app_client.post("/sim/api/say", data=body,
                                     headers={"Content-Type": "application/json"})
    assert response.status == 400
