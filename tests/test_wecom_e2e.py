"""The lead's life on WeCom, end to end through the fake: card, click, update; repeated
deliveries (C03 A), a restart between commit and send, and the per-member budget."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import func, select

from bot.app import RUNTIME
from bot.channels.base import Parcel
from bot.outbox import enqueue
from cards.model import Button, CardModel
from storage.models import FollowUp, Lead, Member, Outgoing
from tests.fakes.wecom import PER_MINUTE, Attempt, FakeWeCom, start_bot
from tests.harness import Chat

ROSTER = [
    {"name": "李经理", "role": "manager", "wecom_userid": "limanager"},
    {"name": "王芳", "role": "rep", "manager": "李经理", "wecom_userid": "wangfang"},
    {"name": "赵强", "role": "rep", "manager": "李经理", "wecom_userid": "zhaoqiang"},
]




@pytest.fixture
async def chat(bot):
    chat = Chat(bot.app[RUNTIME])
    await chat.add_members(*ROSTER)
    return chat


def callback_url(bot) -> str:
    return str(bot.make_url("/wecom/callback"))


async def post_lead(chat: Chat) -> int:
    from handlers.intake import LeadInput, create_lead

    async with chat.rt.sessions() as session, session.begin():
        lead, _ = await create_lead(session, chat.rt, LeadInput(
            company="深圳示例科技有限公司", contact="张伟", phone="13800001234",
            industry="industrial", urgency="high", source="expo"), chat.rt.now(), origin="api")
    await chat.settle()
    return lead.id


async def lead_status(chat: Chat, lead_id: int) -> str:
    async with chat.rt.sessions() as session:
        return (await session.get(Lead, lead_id)).status


async def accepted_lead(bot, chat: Chat, fake: FakeWeCom) -> tuple[int, dict]:
    lead_id = await post_lead(chat)
    [card] = fake.cards_to("wangfang")
    click = fake.click_xml("wangfang", card["task_id"], f"accept:{lead_id}")
    assert await fake.post_callback(callback_url(bot), click) == [Attempt(200, "")]
    await chat.settle()
    return lead_id, card


async def test_rep_gets_the_card_on_wecom_accepts_it_and_the_card_shows_who(
    aiohttp_client, db_url, fake
):
    bot = await start_bot(aiohttp_client, db_url, fake)
    chat = Chat(bot.app[RUNTIME])
    await chat.add_members(*ROSTER)
    lead_id = await post_lead(chat)
    assert await lead_status(chat, lead_id) == "assigned"
    [card] = fake.cards_to("wangfang")  # round-robin starts with the lowest id
    assert fake.cards_to("zhaoqiang") == []
    assert card["card_type"] == "button_interaction"
    assert card["main_title"]["title"] == f"新线索 #{lead_id}"
    assert [b["key"] for b in card["button_list"]] == [
        f"accept:{lead_id}", f"decline:{lead_id}", f"transfer:{lead_id}"
    ]

    click = fake.click_xml("wangfang", card["task_id"], f"accept:{lead_id}")
    assert await fake.post_callback(callback_url(bot), click) == [Attempt(200, "")]
    await chat.settle()

    assert await lead_status(chat, lead_id) == "accepted"
    [update] = fake.updates
    assert update["task_id"] == card["task_id"] and update["userids"] == ["wangfang"]
    shown = update["template_card"]
    assert shown["replace_text"] == "王芳 已于 12-02 10:00 接受"
    assert "王芳 已于 12-02 10:00 接受" in shown["sub_title_text"]
    assert any(f"已接受线索 #{lead_id}" in t for t in fake.texts_to("wangfang"))
    assert fake.dropped == []


async def test_a_declined_card_goes_to_the_next_rep_on_wecom(bot, chat, fake):
    lead_id = await post_lead(chat)
    [card] = fake.cards_to("wangfang")
    click = fake.click_xml("wangfang", card["task_id"], f"decline:{lead_id}")
    await fake.post_callback(callback_url(bot), click)
    await chat.settle()
    [lead_card, reasons] = fake.cards_to("wangfang")
    reason_key = reasons["button_list"][0]["key"]
    await fake.post_callback(callback_url(bot),
                             fake.click_xml("wangfang", reasons["task_id"], reason_key))
    await chat.settle()
    [offer] = fake.cards_to("zhaoqiang")
    assert offer["main_title"]["title"] == f"新线索 #{lead_id}"
    assert {u["task_id"] for u in fake.updates} == {card["task_id"], reasons["task_id"]}


async def test_c03_the_same_note_delivered_three_times_is_kept_once(bot, chat, fake):
    lead_id, _ = await accepted_lead(bot, chat, fake)
    rt = bot.app[RUNTIME]
    process = rt.dispatcher.process

    async def slow_process(record_id, event):  # a handler slower than WeCom's 5 s
        await asyncio.sleep(0.6)
        await process(record_id, event)

    rt.dispatcher.process = slow_process
    plain = fake.text_xml("wangfang", "记录 已报价", msg_id="7380000000000000099")
    for _ in range(3):  # t = 0, 5, 10 s in the field; each answered at once
        attempts = await fake.post_callback(callback_url(bot), plain, timeout=0.3)
        assert attempts == [Attempt(200, "")]
    await chat.settle()

    async with rt.sessions() as session:
        notes = await session.scalar(
            select(func.count()).select_from(FollowUp).where(FollowUp.lead_id == lead_id)
        )
    assert notes == 1
    replies = [t for t in fake.texts_to("wangfang") if t.startswith("已记录到线索")]
    assert replies == [f"已记录到线索 #{lead_id}（深圳示例科技有限公司）。"]
    assert await lead_status(chat, lead_id) == "contacted"


async def test_a_message_committed_before_a_crash_is_sent_once_after_restart(
    aiohttp_client, sqlite_url, fake
):
    first = await start_bot(aiohttp_client, sqlite_url, fake)
    rt = first.app[RUNTIME]
    members = await Chat(rt).add_members({"name": "王芳", "wecom_userid": "wangfang"})
    async with rt.sessions() as session, session.begin():
        member = await session.get(Member, members["王芳"].id)
        await enqueue(session, rt, member, "重启前写入的消息")
    await first.close()  # the process dies after the commit, before the outbox ran
    assert fake.messages == []

    second = await start_bot(aiohttp_client, sqlite_url, fake, outbox_by_hand=False)
    for _ in range(100):
        if fake.messages:
            break
        await asyncio.sleep(0.05)
    await second.app[RUNTIME].outbox.run_once()
    assert fake.texts_to("wangfang") == ["重启前写入的消息"]


# ---- the per-member budget ---------------------------------------------------------------


async def queue_texts(rt, member_id: int, texts: list[str]) -> None:
    async with rt.sessions() as session, session.begin():
        member = await session.get(Member, member_id)
        for body in texts:
            await enqueue(session, rt, member, body)


async def run_outbox(rt) -> None:
    while await rt.outbox.run_once():
        pass


def most_in_a_minute(times: list[float]) -> int:
    return max((sum(1 for u in times if t <= u < t + 60) for t in times), default=0)


async def test_the_fake_drops_the_31st_message_in_a_minute_silently(bot, fake):
    channel = bot.app[RUNTIME].channels["wecom"]
    for number in range(PER_MINUTE + 1):
        parcel = Parcel(outbox_id=number, kind="text", address="wangfang", is_group=False,
                        payload={"text": f"消息 {number}"}, dedupe_key=f"d{number}")
        assert (await channel.deliver(parcel)).ok  # success, every time
    assert len(fake.messages) == PER_MINUTE and len(fake.dropped) == 1


async def test_forty_texts_one_after_another_all_arrive(bot, chat, fake):
    rt = bot.app[RUNTIME]
    member_id = (await chat.add_members({"name": "孙丽", "wecom_userid": "sunli"}))["孙丽"].id
    sent_at: list[float] = []
    for number in range(40):
        await queue_texts(rt, member_id, [f"第 {number + 1} 条"])
        before = len(fake.messages)
        await run_outbox(rt)
        sent_at += [rt.now().timestamp()] * (len(fake.messages) - before)
        rt.clock.advance(seconds=1)
    assert len(fake.sent_to("sunli")) == 25  # the rest wait for the minute to pass
    for _ in range(3):
        rt.clock.advance(seconds=61)
        before = len(fake.messages)
        await run_outbox(rt)
        sent_at += [rt.now().timestamp()] * (len(fake.messages) - before)
    shown = "\n".join(fake.texts_to("sunli"))
    assert all(f"第 {n} 条" in shown for n in range(1, 41))
    assert fake.dropped == []
    assert most_in_a_minute(sent_at) <= 25


async def test_a_burst_of_forty_texts_and_cards_loses_nothing(bot, chat, fake):
    rt = bot.app[RUNTIME]
    member_id = (await chat.add_members({"name": "孙丽", "wecom_userid": "sunli"}))["孙丽"].id
    await queue_texts(rt, member_id, [f"提醒 {n}" for n in range(1, 21)])
    await run_outbox(rt)  # 20 sent one by one, under the budget
    async with rt.sessions() as session, session.begin():
        member = await session.get(Member, member_id)
        for number in range(40):
            await enqueue(session, rt, member, f"消息 {number + 1}")
        for number in range(8):
            await enqueue(session, rt, member, CardModel(
                title=f"新线索 #{100 + number}", kind="lead", object_id=100 + number,
                buttons=[Button("接受", f"accept:{100 + number}")]))
    await run_outbox(rt)
    assert len(fake.sent_to("sunli")) <= 25
    for _ in range(5):
        rt.clock.advance(seconds=61)
        await run_outbox(rt)

    assert fake.dropped == []
    texts = "\n".join(fake.texts_to("sunli"))
    assert all(f"消息 {n}" in texts for n in range(1, 41))  # one by one or in the digest
    assert "【消息汇总】" in texts
    assert len(fake.cards_to("sunli")) == 8
    async with rt.sessions() as session:
        waiting = await session.scalar(select(func.count()).select_from(Outgoing).where(
            Outgoing.state.in_(("pending", "sending", "failed"))))
    assert waiting == 0
