"""Stream mode against the fake gateway with the real dingtalk-stream client: acks only
after recording, our own msgId dedupe (C08), reconnects, bad frames, loopback only."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import random

import pytest
from sqlalchemy import func, select

from bot.app import RUNTIME
from bot.channels.dingtalk import CARD_TOPIC, reconnect_delay
from storage.models import FollowUp, InboundEvent, Lead
from tests.fakes.dingtalk import FakeDingTalk, loopback_only, start_bot  # noqa: F401
from tests.harness import Chat

pytestmark = pytest.mark.usefixtures("loopback_only")

ROSTER = [
    {"name": "李经理", "role": "manager", "dingtalk_userid": "limanager"},
    {"name": "王芳", "role": "rep", "manager": "李经理", "dingtalk_userid": "manager1234"},
]


@pytest.fixture
async def fake():
    fake = FakeDingTalk(redeliver_after=0.4, disconnect_grace=0.5)
    await fake.start()
    yield fake
    await fake.close()


@pytest.fixture
async def bot(aiohttp_client, sqlite_url, fake):
    return await start_bot(aiohttp_client, sqlite_url, fake)


@pytest.fixture
async def chat(bot):
    chat = Chat(bot.app[RUNTIME])
    await chat.add_members(*ROSTER)
    return chat


async def recorded(rt) -> int:
    async with rt.sessions() as session:
        return await session.scalar(select(func.count()).select_from(InboundEvent))


async def accepted_lead(chat: Chat, fake: FakeDingTalk) -> int:
    from handlers.intake import LeadInput, create_lead

    async with chat.rt.sessions() as session, session.begin():
        lead, _ = await create_lead(session, chat.rt, LeadInput(
            company="深圳示例科技有限公司", contact="张伟", phone="13800001234",
            industry="industrial", urgency="high", source="expo"), chat.rt.now(), origin="api")
    await chat.settle()
    frame = await fake.push(fake.text("manager1234", f"接受 (accept:{lead.id})"))
    await fake.wait_acked(frame)
    await chat.settle()
    async with chat.rt.sessions() as session:
        assert (await session.get(Lead, lead.id)).status == "accepted"
    return lead.id


# ---- acks ------------------------------------------------------------------------------


async def test_a_frame_is_acked_only_once_its_event_is_recorded(bot, chat, fake):
    rt = bot.app[RUNTIME]
    gate = asyncio.Event()
    record = rt.inbox.record

    async def held_record(event):
        await gate.wait()
        return await record(event)

    rt.inbox.record = held_record
    frame_id = await fake.push(fake.text("manager1234", "/帮助"))
    await asyncio.sleep(0.25)
    assert fake.frames[frame_id].acked_at is None and await recorded(rt) == 0
    gate.set()
    frame = await fake.wait_acked(frame_id)
    assert frame.ack["code"] == 200 and await recorded(rt) == 1
    await chat.settle()
    assert "/我的线索" in fake.texts_to("manager1234")[0]


async def test_c08_slow_work_does_not_delay_the_ack_and_a_repeated_msgid_counts_once(
    bot, chat, fake
):
    lead_id = await accepted_lead(chat, fake)
    rt = bot.app[RUNTIME]
    process = rt.dispatcher.process

    async def slow_process(record_id, event):  # a handler that needs far longer than the ack
        await asyncio.sleep(1.0)
        await process(record_id, event)

    rt.dispatcher.process = slow_process
    data = fake.text("manager1234", "记录 深圳示例科技 已报价5万", msg_id="msgEXAMPLE0001")
    loop = asyncio.get_running_loop()
    first = await fake.push(data)
    frame = await fake.wait_acked(first, timeout=1.0)
    assert frame.acked_at - frame.sent_at[0] < 0.5 and frame.deliveries == 1
    again = await fake.push(data)  # DingTalk delivers the same message once more
    assert (await fake.wait_acked(again, timeout=1.0)).ack["code"] == 200
    started = loop.time()
    await chat.settle()
    assert loop.time() - started >= 0.5  # the work went on after both acks

    async with rt.sessions() as session:
        notes = (await session.scalars(
            select(FollowUp.content).where(FollowUp.lead_id == lead_id))).all()
    assert notes == ["已报价5万"]
    replies = [t for t in fake.texts_to("manager1234") if t.startswith("已记录到线索")]
    assert replies == [f"已记录到线索 #{lead_id}（深圳示例科技有限公司）。"]


async def test_c08_when_the_inbox_cannot_record_there_is_no_ack_and_it_comes_again(
    bot, chat, fake
):
    rt = bot.app[RUNTIME]
    record = rt.inbox.record
    failures = [RuntimeError("database is locked")]

    async def flaky_record(event):
        if failures:
            raise failures.pop()
        return await record(event)

    rt.inbox.record = flaky_record
    frame_id = await fake.push(fake.text("manager1234", "/帮助"))
    frame = await fake.wait_acked(frame_id, timeout=3.0)
    assert frame.deliveries == 2 and frame.ack["code"] == 200
    await chat.settle()
    assert len(fake.texts_to("manager1234")) == 1 and await recorded(rt) == 1


async def test_a_card_click_frame_is_acked_with_an_empty_response(bot, chat, fake):
    frame_id = await fake.click("manager1234", "sbunknown", "accept:999")
    frame = await fake.wait_acked(frame_id)
    assert frame.ack["code"] == 200 and json.loads(frame.ack["data"]) == {"response": {}}
    await chat.settle()
    assert fake.texts_to("manager1234") == ["没有找到线索 #999。"]


async def test_a_ping_is_answered_with_its_own_data(bot, fake):
    frame_id = await fake.system("ping", {"opaque": "abc-123"})
    frame = await fake.wait_acked(frame_id)
    assert frame.ack["code"] == 200 and json.loads(frame.ack["data"]) == {"opaque": "abc-123"}


# ---- bad frames ----------------------------------------------------------------------


async def test_bad_frames_are_refused_clearly_and_the_next_frame_still_works(bot, chat, fake):
    rt = bot.app[RUNTIME]
    await fake.push_raw("this is not json")
    no_sender = await fake.push({"msgId": "m-bad", "msgtype": "text",
                                 "text": {"content": "你好"}})
    assert (await fake.wait_acked(no_sender)).ack["code"] == 400
    other_topic = await fake.push({"x": 1}, topic="/v1.0/unknown/topic")
    assert (await fake.wait_acked(other_topic)).ack["code"] == 404
    no_user = await fake.push({"outTrackId": "x"}, topic=CARD_TOPIC)
    assert (await fake.wait_acked(no_user)).ack["code"] == 400
    good = await fake.push(fake.text("manager1234", "/帮助"))
    assert (await fake.wait_acked(good)).ack["code"] == 200
    await chat.settle()
    assert await recorded(rt) == 1 and len(fake.connections) == 1
    assert fake.frames[no_sender].deliveries == 1  # refused frames are not delivered again


async def test_an_unknown_message_type_is_answered_not_dropped(bot, chat, fake):
    frame_id = await fake.push(fake.message("manager1234", "chatRecord", content={}))
    await fake.wait_acked(frame_id)
    await chat.settle()
    assert fake.texts_to("manager1234") == ["暂不支持该类型消息。"]


# ---- reconnects --------------------------------------------------------------------------


def test_the_reconnect_delay_doubles_up_to_the_cap_with_jitter():
    rng = random.Random(7)
    for attempt, ceiling in [(1, 1.0), (2, 2.0), (3, 4.0), (7, 60.0), (12, 60.0)]:
        delays = [reconnect_delay(attempt, 1.0, 60.0, rng) for _ in range(50)]
        assert all(ceiling * 0.5 <= d < ceiling for d in delays)
        assert len(set(delays)) == 50  # jittered: never the same wait twice


async def test_a_disconnect_frame_moves_to_a_new_connection_and_loses_nothing(bot, chat, fake):
    rt = bot.app[RUNTIME]
    before = [await fake.push(fake.text("manager1234", f"记录 前 {n}")) for n in range(5)]
    old = await fake.disconnect()
    new = await fake.wait_connected(count=2, timeout=2.0)
    assert new.number == 2 and old.leaving
    after = [await fake.push(fake.text("manager1234", f"记录 后 {n}")) for n in range(5)]
    for frame_id in before + after:
        await fake.wait_acked(frame_id, timeout=3.0)
    assert all(fake.frames[f].connections == [1] for f in before)
    assert all(fake.frames[f].connections == [2] for f in after)
    assert fake.foreign_acks == 0
    await chat.settle()
    assert await recorded(rt) == 10
    await asyncio.sleep(0.7)  # the gateway closes the old connection after its grace
    assert old.closed_at is not None and fake.live is new


async def test_a_dropped_connection_is_reopened_after_growing_jittered_waits(bot, chat, fake):
    rt = bot.app[RUNTIME]
    rt.channels["dingtalk"].stream.backoff_base = 0.1
    fake.fail_open(3)
    await fake.drop()
    await fake.wait_connected(count=2, timeout=5.0)
    attempts = fake.open_attempts[1:]  # the first opened the connection that dropped
    assert len(attempts) == 4
    waits = [b - a for a, b in zip(attempts, attempts[1:], strict=False)]
    for wait, ceiling in zip(waits, (0.2, 0.4, 0.8), strict=True):
        assert ceiling * 0.5 - 0.02 <= wait <= ceiling + 0.1, waits
    frame_id = await fake.push(fake.text("manager1234", "/帮助"))
    assert (await fake.wait_acked(frame_id)).ack["code"] == 200


async def test_frames_sent_while_no_connection_is_open_arrive_after_the_reconnect(
    bot, chat, fake
):
    rt = bot.app[RUNTIME]
    rt.channels["dingtalk"].stream.backoff_base = 0.2
    await fake.drop()
    frame_id = await fake.push(fake.text("manager1234", "/帮助"))
    frame = await fake.wait_acked(frame_id, timeout=3.0)
    assert frame.connections[-1] == 2
    await chat.settle()
    assert await recorded(rt) == 1


# ---- nothing leaves loopback; nothing blocks the loop ------------------------------------


async def test_the_sdk_client_stays_on_loopback_and_never_blocks(
    loopback_only, aiohttp_client, sqlite_url, fake  # noqa: F811 - the fixture
):
    bot = await start_bot(aiohttp_client, sqlite_url, fake)
    chat = Chat(bot.app[RUNTIME])
    await chat.add_members(*ROSTER)
    assert fake.connections[0].local_ip == "127.0.0.1"
    assert {s["topic"] for s in fake.connections[0].subscriptions} == {
        "/v1.0/im/bot/messages/get", CARD_TOPIC}
    frame_id = await fake.push(fake.text("manager1234", "/帮助"))
    await fake.wait_acked(frame_id)
    await fake.disconnect()
    await fake.wait_connected(count=2)
    fake.expire_tokens()
    bot.app[RUNTIME].channels["dingtalk"].webhooks.forget("manager1234")
    await chat.settle()
    assert len(fake.texts_to("manager1234")) == 1
    assert loopback_only and all(ipaddress.ip_address(t).is_loopback for t in loopback_only)


async def test_proxy_settings_in_the_environment_are_not_followed(
    monkeypatch, aiohttp_client, sqlite_url, fake
):
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    bot = await start_bot(aiohttp_client, sqlite_url, fake)
    chat = Chat(bot.app[RUNTIME])
    await chat.add_members(*ROSTER)
    frame_id = await fake.push(fake.text("manager1234", "/帮助"))
    assert (await fake.wait_acked(frame_id)).ack["code"] == 200
