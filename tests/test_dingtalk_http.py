"""HTTP mode: the timestamp + sign check (one-hour window, wrong secret, missing header),
the robot callback and the card callback, replies by session webhook until it expires."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import func, select

from bot.app import RUNTIME
from bot.channels.dingtalk import CallbackError, signature, verify
from storage.models import InboundEvent, Member
from tests.fakes.dingtalk import FakeDingTalk, loopback_only, start_bot  # noqa: F401
from tests.harness import WORKDAY_MORNING, Chat

pytestmark = pytest.mark.usefixtures("loopback_only")

SECRET = "fake-dingtalk-secret-0123456789"
NOW_MS = int(WORKDAY_MORNING.timestamp() * 1000)


def headers(timestamp_ms: int = NOW_MS, secret: str = SECRET) -> dict[str, str]:
    return {"timestamp": str(timestamp_ms), "sign": signature(str(timestamp_ms), secret)}


# ---- the signature ----------------------------------------------------------------------


def test_the_sign_matches_the_check_value_computed_for_the_platform_notes():
    assert signature("1577262236757", "this is secret") == (
        "hmPWwU+7lVdm3ZZz0r9tSfx0L4Q26jWOZr9+Gs6EZQM=")


def test_a_signed_timestamp_inside_the_hour_passes():
    for offset in (0, -3_599_000, 3_599_000):
        verify(headers(NOW_MS + offset), SECRET, WORKDAY_MORNING)


@pytest.mark.parametrize("offset", [-3_600_001, 3_600_001, -86_400_000])
def test_a_timestamp_more_than_an_hour_off_is_refused(offset):
    with pytest.raises(CallbackError, match="more than an hour") as refused:
        verify(headers(NOW_MS + offset), SECRET, WORKDAY_MORNING)
    assert refused.value.status == 403


def test_a_sign_made_with_another_secret_is_refused():
    with pytest.raises(CallbackError, match="sign does not match") as refused:
        verify(headers(secret="someone-elses-secret"), SECRET, WORKDAY_MORNING)
    assert refused.value.status == 403


@pytest.mark.parametrize("missing", ["timestamp", "sign"])
def test_a_missing_header_is_refused(missing):
    sent = headers()
    del sent[missing]
    with pytest.raises(CallbackError, match="header missing") as refused:
        verify(sent, SECRET, WORKDAY_MORNING)
    assert refused.value.status == 400


def test_a_timestamp_that_is_not_a_number_is_refused():
    with pytest.raises(CallbackError, match="not a number"):
        verify({"timestamp": "yesterday", "sign": "x"}, SECRET, WORKDAY_MORNING)


# ---- the callbacks, end to end ------------------------------------------------------------


@pytest.fixture
async def fake():
    fake = FakeDingTalk()
    await fake.start()
    yield fake
    await fake.close()


@pytest.fixture
async def bot(aiohttp_client, sqlite_url, fake):
    return await start_bot(aiohttp_client, sqlite_url, fake, dingtalk={"mode": "http"})


@pytest.fixture
async def chat(bot):
    chat = Chat(bot.app[RUNTIME])
    await chat.add_members({"name": "王芳", "role": "rep", "dingtalk_userid": "wangfang"})
    return chat


async def events(rt) -> int:
    async with rt.sessions() as session:
        return await session.scalar(select(func.count()).select_from(InboundEvent))


async def test_http_mode_records_a_signed_message_and_replies_by_session_webhook(
    bot, chat, fake
):
    url = str(bot.make_url("/dingtalk/callback"))
    message = fake.text("wangfang", "/帮助")
    assert await fake.post(url, message) == (200, {})
    assert await fake.post(url, message) == (200, {})  # delivered twice, processed once
    await chat.settle()
    [reply] = fake.received("wangfang")
    assert reply["via"] == "webhook" and "/我的线索" in reply["text"]
    assert await events(chat.rt) == 1
    assert fake.connections == []  # HTTP mode opens no Stream connection


async def test_refused_callbacks_record_nothing(bot, chat, fake):
    url = str(bot.make_url("/dingtalk/callback"))
    message = fake.text("wangfang", "/帮助")
    two_hours_ago = fake.signed_headers(NOW_MS - 2 * 3600 * 1000)
    wrong = fake.signed_headers(secret="someone-elses-secret")
    status, body = await fake.post(url, message, headers=two_hours_ago)
    assert (status, body) == (403, {"message": "timestamp more than an hour off"})
    assert (await fake.post(url, message, headers=wrong))[0] == 403
    assert (await fake.post(url, message, headers={}))[0] == 400
    assert (await fake.post(url, "not json"))[0] == 400
    no_sender = {k: v for k, v in message.items() if not k.startswith("sender")}
    assert (await fake.post(url, no_sender))[0] == 400
    await chat.settle()
    assert await events(chat.rt) == 0 and fake.received("wangfang") == []


async def test_a_card_click_arrives_signed_at_dingtalk_card(bot, chat, fake):
    url = str(bot.make_url("/dingtalk/card"))
    click = fake.card_click("wangfang", "sbnothing", "accept:404")
    assert (await fake.post(url, click, headers={}))[0] == 400
    assert await fake.post(url, click) == (200, {})
    await chat.settle()
    assert fake.texts_to("wangfang") == ["没有找到线索 #404。"]
    async with chat.rt.sessions() as session:
        row = await session.scalar(select(InboundEvent))
    assert row.kind == "card_action" and row.payload["card_ref"] == "sbnothing"


async def test_replies_go_by_session_webhook_until_it_expires_then_by_the_openapi(
    bot, chat, fake
):
    from bot.outbox import enqueue

    rt = chat.rt
    url = str(bot.make_url("/dingtalk/callback"))
    await fake.post(url, fake.text("wangfang", "/帮助"))
    await chat.settle()

    async def send(text: str) -> None:
        async with rt.sessions() as session, session.begin():
            member = await session.scalar(select(Member).where(Member.name == "王芳"))
            await enqueue(session, rt, member, text)
        await chat.settle()

    rt.clock.advance(minutes=60)
    await send("一小时后")
    rt.clock.advance(minutes=29, seconds=30)  # 89.5 minutes: inside its 1.5 h, not its margin
    await send("将要过期")
    assert [(m["via"], m["text"]) for m in fake.received("wangfang")[1:]] == [
        ("webhook", "一小时后"), ("openapi", "将要过期")]


async def test_a_session_webhook_that_stopped_working_falls_back_to_the_openapi(
    bot, chat, fake
):
    url = str(bot.make_url("/dingtalk/callback"))
    fake.expire_sessions()  # the next message's webhook is still fresh
    await fake.post(url, fake.text("wangfang", "记录"))
    fake.expire_sessions()
    await chat.settle()
    [reply] = fake.received("wangfang")
    assert reply["via"] == "openapi" and reply["text"].startswith("用法：记录")
    assert fake.calls["sendBySession"] == 1


async def test_a_session_webhook_outside_the_configured_oapi_base_is_never_used(
    bot, chat, fake
):
    url = str(bot.make_url("/dingtalk/callback"))
    message = fake.text("wangfang", "/帮助")
    message["sessionWebhook"] = "http://127.0.0.2:9/robot/sendBySession?session=x"
    await fake.post(url, message)
    await chat.settle()
    assert [m["via"] for m in fake.received("wangfang")] == ["openapi"]


async def test_the_callback_answer_does_not_wait_for_the_work(bot, chat, fake):
    rt = chat.rt
    process = rt.dispatcher.process

    async def slow(record_id, event):
        await asyncio.sleep(0.5)
        await process(record_id, event)

    rt.dispatcher.process = slow
    loop = asyncio.get_running_loop()
    started = loop.time()
    status, _ = await fake.post(str(bot.make_url("/dingtalk/callback")),
                                fake.text("wangfang", "/帮助"))
    assert status == 200 and loop.time() - started < 0.4
    await chat.settle()
    [reply] = fake.received("wangfang")
    assert "/我的线索" in reply["text"]
