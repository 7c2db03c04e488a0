"""The lead's life on DingTalk through the fake, over the Stream: the template card, a
click, the card updated in place; `转给 @同事` in a group; foreign clicks; markdown cards."""

from __future__ import annotations

import json

import pytest

from bot.app import RUNTIME
from storage.models import Lead
from tests.fakes.dingtalk import TEMPLATE_ID, FakeDingTalk, loopback_only, start_bot  # noqa: F401
from tests.harness import Chat

pytestmark = pytest.mark.usefixtures("loopback_only")

GROUP = "cidteam0001=="
ROSTER = [
    {"name": "李经理", "role": "manager", "dingtalk_userid": "limanager"},
    {"name": "王芳", "role": "rep", "manager": "李经理", "dingtalk_userid": "wangfang"},
    {"name": "赵强", "role": "rep", "manager": "李经理", "dingtalk_userid": "zhaoqiang"},
]


@pytest.fixture
async def fake():
    fake = FakeDingTalk()
    await fake.start()
    yield fake
    await fake.close()


async def started(aiohttp_client, db_url, fake, **dingtalk) -> Chat:
    bot = await start_bot(aiohttp_client, db_url, fake,
                          dingtalk={"card_template_id": TEMPLATE_ID} | dingtalk)
    chat = Chat(bot.app[RUNTIME])
    await chat.add_members(*ROSTER)
    return chat


@pytest.fixture
async def chat(aiohttp_client, sqlite_url, fake):
    return await started(aiohttp_client, sqlite_url, fake)


async def post_lead(chat: Chat) -> int:
    from handlers.intake import LeadInput, create_lead

    async with chat.rt.sessions() as session, session.begin():
        lead, _ = await create_lead(session, chat.rt, LeadInput(
            company="深圳示例科技有限公司", contact="张伟", phone="13800001234",
            industry="industrial", urgency="high", source="expo"), chat.rt.now(), origin="api")
    await chat.settle()
    return lead.id


async def lead_of(chat: Chat, lead_id: int) -> Lead:
    async with chat.rt.sessions() as session:
        return await session.get(Lead, lead_id)


async def frame(chat: Chat, fake: FakeDingTalk, frame_id: str) -> None:
    await fake.wait_acked(frame_id)
    await chat.settle()


async def test_the_rep_accepts_the_dingtalk_card_and_it_shows_who_and_when(chat, fake):
    lead_id = await post_lead(chat)
    [card] = fake.cards_to("wangfang")  # round-robin starts with the lowest id
    assert fake.cards_to("zhaoqiang") == []
    assert card.template_id == TEMPLATE_ID and card.callback_type == "STREAM"
    assert card.data["title"] == f"新线索 #{lead_id}"
    assert [b["action"] for b in json.loads(card.data["buttons"])] == [
        f"accept:{lead_id}", f"decline:{lead_id}", f"transfer:{lead_id}"]

    await frame(chat, fake, await fake.click("wangfang", card.out_track_id, f"accept:{lead_id}"))

    assert (await lead_of(chat, lead_id)).status == "accepted"
    assert card.data["status"] == "王芳 已于 12-02 10:00 接受" and card.data["closed"] == "true"
    assert json.loads(card.data["buttons"]) == [] and len(card.updates) == 1
    assert f"已接受线索 #{lead_id}（深圳示例科技有限公司）" in fake.texts_to("wangfang")[0]


async def test_a_click_by_someone_who_may_not_click_changes_nothing(chat, fake):
    lead_id = await post_lead(chat)
    [card] = fake.cards_to("wangfang")
    await frame(chat, fake, await fake.click("zhaoqiang", card.out_track_id, f"accept:{lead_id}"))
    assert fake.texts_to("zhaoqiang") == [f"线索 #{lead_id} 不是分给您的，无法操作。"]
    assert (await lead_of(chat, lead_id)).status == "assigned" and card.updates == []
    await frame(chat, fake, await fake.click("stranger01", card.out_track_id, f"accept:{lead_id}"))
    assert "不在销售团队名单中" in fake.texts_to("stranger01")[0]
    await frame(chat, fake, await fake.click("wangfang", card.out_track_id, None, action_ids=[]))
    assert fake.texts_to("wangfang") == ["暂不支持该类型消息。"]


async def test_a_stale_click_on_an_updated_card_is_answered_politely(chat, fake):
    lead_id = await post_lead(chat)
    [card] = fake.cards_to("wangfang")
    await frame(chat, fake, await fake.click("wangfang", card.out_track_id, f"accept:{lead_id}"))
    await frame(chat, fake, await fake.click("wangfang", card.out_track_id, f"decline:{lead_id}"))
    assert "卡片已经失效" in fake.texts_to("wangfang")[-1]
    assert (await lead_of(chat, lead_id)).status == "accepted"


async def test_transfer_to_an_at_mentioned_colleague_in_the_team_group(chat, fake):
    lead_id = await post_lead(chat)
    [card] = fake.cards_to("wangfang")
    await frame(chat, fake, await fake.click("wangfang", card.out_track_id, f"transfer:{lead_id}"))
    assert "转给 姓名" in fake.texts_to("wangfang")[-1]
    # In the group the colleague's display name (小赵) is not the roster name (赵强):
    # the structured mention carries the id.
    said = fake.text("wangfang", " 转给 @小赵", at=["zhaoqiang"], group=GROUP)
    await frame(chat, fake, await fake.push(said))
    assert fake.texts_to("wangfang")[-1] == f"线索 #{lead_id} 已转给 赵强，等待对方接受。"
    assert card.data["status"] == "王芳 已于 12-02 10:00 转给 赵强"
    [offer] = fake.cards_to("zhaoqiang")
    assert "王芳 转给您" in offer.data["content"]
    await frame(chat, fake, await fake.click("zhaoqiang", offer.out_track_id, f"accept:{lead_id}"))
    lead = await lead_of(chat, lead_id)
    assert lead.status == "accepted" and lead.assignee_id == 3


async def test_c10_a_group_command_with_mention_residue_is_understood(chat, fake):
    lead_id = await post_lead(chat)
    [card] = fake.cards_to("wangfang")
    await frame(chat, fake, await fake.click("wangfang", card.out_track_id, f"accept:{lead_id}"))
    said = fake.text("wangfang", "@李经理 @CRM 助手 /记录 已电话沟通", at=["limanager"],
                     group=GROUP)
    await frame(chat, fake, await fake.push(said))
    assert fake.texts_to("wangfang")[-1] == f"已记录到线索 #{lead_id}（深圳示例科技有限公司）。"
    assert (await lead_of(chat, lead_id)).status == "contacted"
    await frame(chat, fake, await fake.push(fake.text("wangfang", " ", group=GROUP)))
    assert "/我的线索" in fake.texts_to("wangfang")[-1]  # only the @: the help


async def test_without_a_template_cards_are_markdown_whose_actions_are_commands(
    aiohttp_client, sqlite_url, fake
):
    chat = await started(aiohttp_client, sqlite_url, fake, card_template_id=None)
    lead_id = await post_lead(chat)
    [card] = fake.received("wangfang")
    assert card["msgtype"] == "markdown" and card["title"] == f"新线索 #{lead_id}"
    assert f"「接受 (accept:{lead_id})」" in card["text"] and fake.cards == {}
    await frame(chat, fake, await fake.push(fake.text("wangfang", f"接受 (accept:{lead_id})")))
    assert (await lead_of(chat, lead_id)).status == "accepted"
    assert f"已接受线索 #{lead_id}" in fake.texts_to("wangfang")[-1]


async def test_c09_a_voice_note_with_dingtalk_recognition_is_logged_or_obeyed(chat, fake):
    from sqlalchemy import select

    from storage.models import FollowUp, Member

    lead_id = await post_lead(chat)
    [card] = fake.cards_to("wangfang")
    await frame(chat, fake, await fake.click("wangfang", card.out_track_id, f"accept:{lead_id}"))
    seen = len(fake.texts_to("wangfang"))

    spoken = fake.message("wangfang", "audio", content={
        "duration": 3600, "downloadCode": "DL_EXAMPLE", "recognition": "客户想要下周上门演示。"})
    await frame(chat, fake, await fake.push(spoken))
    assert fake.texts_to("wangfang")[seen:] == [
        f"已记录到线索 #{lead_id}（深圳示例科技有限公司）。"]
    async with chat.rt.sessions() as session:
        note = await session.scalar(select(FollowUp).where(FollowUp.lead_id == lead_id))
    assert (note.kind, note.content) == ("voice_asr", "客户想要下周上门演示")
    assert (await lead_of(chat, lead_id)).status == "contacted"

    command = fake.message("wangfang", "audio", content={"downloadCode": "DL_2",
                                                         "recognition": "下班。"})
    await frame(chat, fake, await fake.push(command))
    assert fake.texts_to("wangfang")[seen + 1].startswith("已下班")
    async with chat.rt.sessions() as session:
        assert (await session.scalar(select(Member).where(Member.name == "王芳"))).duty == "off"

    silent = fake.message("wangfang", "audio", content={"downloadCode": "DL_3",
                                                        "recognition": ""})
    await frame(chat, fake, await fake.push(silent))
    assert fake.texts_to("wangfang")[seen + 2:] == [
        "收到语音，但平台没有给出识别文字。语音转写即将上线，请先用文字发送。"]
