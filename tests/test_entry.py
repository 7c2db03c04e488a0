"""新线索 from the phone: the parser on its own, then the rep's and the marketing user's
story through the chat, with the tags card that waits for the missing tags."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from handlers.entry import EntryError, parse_entry
from handlers.intake import URGENCIES
from storage.models import Customer, Enquiry, Lead, LeadStatusChange

CHOICES = {
    "urgency": URGENCIES,
    "industry": {"industrial": "工业", "medical": "医疗", "education": "教育"},
    "source": {"expo": "展会", "sem": "SEM", "referral": "转介绍"},
}


# ---- the parser -----------------------------------------------------------------------


@pytest.mark.parametrize("text", [
    "深圳示例科技 张伟 13800001234",
    "张伟 13800001234 深圳示例科技",
    "13800001234 深圳示例科技 张伟",
    "张伟，深圳示例科技，138 0000 1234",
    "深圳示例科技 张伟 +86 138-0000-1234",
])
def test_company_contact_and_phone_in_any_order(text):
    entry = parse_entry(text, CHOICES)
    assert (entry.company, entry.contact, entry.phone) == ("深圳示例科技", "张伟", "13800001234")
    assert entry.tags == {}


def test_without_a_mark_the_longer_word_is_the_company():
    entry = parse_entry("李娜 示例商贸行 13800001234", CHOICES)
    assert (entry.company, entry.contact) == ("示例商贸行", "李娜")


def test_tags_typed_in_chinese_or_english_are_taken():
    entry = parse_entry("深圳示例科技 张伟 13800001234 高 Medical expo", CHOICES)
    assert entry.tags == {"urgency": "high", "industry": "medical", "source": "expo"}
    assert parse_entry("深圳示例科技 张伟 13800001234 SEM", CHOICES).tags == {"source": "sem"}


def test_a_landline_with_its_extension_is_a_phone():
    entry = parse_entry("杭州示例集团 王芳 0571-88001234 转 801", CHOICES)
    assert entry.phone == "057188001234-801"


@pytest.mark.parametrize(("text", "start"), [
    ("深圳示例科技 张伟 1380000123", "电话「1380000123」有误：手机号应为11位，这里是10位。"),
    ("深圳示例科技 张伟", "没有找到电话号码。用法：新线索 公司 联系人 电话"),
    ("深圳示例科技 13800001234", "需要公司、联系人和电话三项。"),
    ("张伟 李娜 13800001234", "分不清哪个是公司、哪个是联系人"),
    ("深圳示例科技 广州示例科技 13800001234", "分不清哪个是公司、哪个是联系人"),
    ("深圳 示例科技 张伟 13800001234", "分不清哪个是公司、哪个是联系人"),
    ("深圳示例科技 张伟 13800001234 13900001234", "写了不止一个电话号码"),
])
def test_what_cannot_be_read_says_why(text, start):
    with pytest.raises(EntryError) as error:
        parse_entry(text, CHOICES)
    assert str(error.value).startswith(start)


def test_an_unclear_line_is_answered_with_the_usage():
    with pytest.raises(EntryError) as error:
        parse_entry("张伟 李娜 13800001234", CHOICES)
    assert "用法：新线索 公司 联系人 电话，例如：新线索 深圳示例科技 张伟 13800001234" in str(
        error.value)


# ---- the chat -------------------------------------------------------------------------

ROSTER = [
    {"name": "李经理", "role": "manager"},
    {"name": "王芳", "role": "rep", "manager": "李经理"},
    {"name": "赵强", "role": "rep", "manager": "李经理"},
    {"name": "陈静", "role": "marketing"},
]


async def _lead(chat, lead_id):
    async with chat.rt.sessions() as session:
        return await session.get(Lead, lead_id)


async def _history(chat, lead_id):
    async with chat.rt.sessions() as session:
        rows = await session.scalars(select(LeadStatusChange.to_status)
                                     .where(LeadStatusChange.lead_id == lead_id)
                                     .order_by(LeadStatusChange.id))
        return list(rows.all())


async def test_a_rep_types_a_full_lead_and_keeps_it(chat):
    await chat.add_members(*ROSTER)
    [reply] = await chat.say("王芳", "新线索 深圳示例科技 张伟 13800001234 高 工业 展会")
    lead = (await _leads(chat))[0]
    assert reply.text == (f"线索 #{lead.id}（深圳示例科技）已录入，归您跟进。"
                          "联系客户后发送「记录 内容」登记跟进。")
    assert (lead.status, lead.assignee_id, lead.origin) == ("accepted", 2, "chat")
    assert (lead.urgency, lead.industry, lead.source) == ("high", "industrial", "expo")
    assert await chat.inbox("赵强") == []


async def _leads(chat):
    async with chat.rt.sessions() as session:
        return list((await session.scalars(select(Lead).order_by(Lead.id))).all())


async def test_missing_tags_are_asked_one_card_step_at_a_time(chat):
    await chat.add_members(*ROSTER)
    [ask] = await chat.say("王芳", "/新线索 张伟 深圳示例科技 13800001234 展会")
    [lead] = await _leads(chat)
    assert (lead.status, lead.assignee_id) == ("draft", None)
    assert ask.card.title == f"补全线索 #{lead.id} 的标签"
    assert ask.card.description == "请选择紧急程度（还差 2 项）。点选按钮，或直接回复。"
    assert [b.key for b in ask.card.buttons] == [
        f"tags:{lead.id}:urgency=high", f"tags:{lead.id}:urgency=medium",
        f"tags:{lead.id}:urgency=low"]

    assert await chat.click("王芳", ask.button("中"), ask.card_id) == []
    step = await chat.card(ask.card_id)  # the same card, updated in place
    assert step.description == "请选择行业（还差 1 项）。点选按钮，或直接回复。"
    assert [b.label for b in step.buttons] == ["工业", "医疗", "教育"]
    assert (await _lead(chat, lead.id)).status == "draft"

    [done] = await chat.click("王芳", step.buttons[1].key, ask.card_id)
    assert done.text.startswith(f"线索 #{lead.id}（深圳示例科技）已录入，归您跟进。")
    final = await chat.card(ask.card_id)
    assert (final.status, final.buttons) == ("已补全：中 / 医疗 / 展会", [])
    lead = await _lead(chat, lead.id)
    assert (lead.status, lead.assignee_id) == ("accepted", 2)
    assert (lead.urgency, lead.industry, lead.source) == ("medium", "medical", "expo")
    assert await _history(chat, lead.id) == ["draft", "accepted"]


async def test_a_tag_may_be_typed_instead_of_clicked(chat):
    await chat.add_members(*ROSTER)
    await chat.say("王芳", "新线索 深圳示例科技 张伟 13800001234 工业 转介绍")
    [wrong] = await chat.say("王芳", "很急")
    assert wrong.text == "没有「很急」这个紧急程度。请点选卡片上的按钮，或回复：高、中、低"
    [done] = await chat.say("王芳", "High")
    assert "已录入，归您跟进" in done.text
    [lead] = await _leads(chat)
    assert (lead.status, lead.urgency) == ("accepted", "high")


async def test_a_marketing_lead_goes_through_the_engine_once_complete(chat):
    await chat.add_members(*ROSTER)
    [ask] = await chat.say("陈静", "新线索 深圳示例科技 张伟 13800001234 高 工业")
    [lead] = await _leads(chat)
    assert await chat.inbox("王芳") == [] and await chat.inbox("赵强") == []
    [done] = await chat.click("陈静", ask.button("SEM"), ask.card_id)
    assert done.text == f"线索 #{lead.id}（深圳示例科技）已录入，已分给 王芳。"
    [offer] = await chat.inbox("王芳")
    assert offer.card.title == f"新线索 #{lead.id}"
    lead = await _lead(chat, lead.id)
    assert (lead.status, lead.assignee_id, lead.created_by_id) == ("assigned", 2, 4)
    assert await _history(chat, lead.id) == ["draft", "assigned"]


async def test_a_complete_marketing_lead_waits_in_the_queue_when_nobody_is_on_duty(chat):
    await chat.add_members(*ROSTER)
    await chat.say("王芳", "/下班")
    await chat.say("赵强", "/下班")
    [reply] = await chat.say("陈静", "新线索 深圳示例科技 张伟 13800001234 低 教育 sem")
    assert reply.text == "线索 #1（深圳示例科技）已录入，暂无可接单的销售，已进入待分配队列。"
    lead = await _lead(chat, 1)
    assert (lead.status, lead.assignee_id, lead.source) == ("new", None, "sem")


async def test_a_draft_is_not_listed_queued_or_served_by_the_api(chat):
    from handlers.assignment import drain_queue

    await chat.add_members(*ROSTER)
    await chat.say("陈静", "新线索 深圳示例科技 张伟 13800001234")
    await chat.say("王芳", "新线索 广州示例科技 李娜 13900001234")
    assert await drain_queue(chat.rt) == 0
    [mine] = await chat.say("王芳", "/我的线索")
    assert mine.text == "您目前没有进行中的线索。"
    assert [lead.status for lead in await _leads(chat)] == ["draft", "draft"]


TOKEN = "test-token-0123456789abcdef"


@pytest.fixture
def api_settings(sqlite_url):
    from tests.conftest import make_settings

    return make_settings(sqlite_url, api={"token": TOKEN})  # migrates: outside the loop


async def test_the_api_answers_404_for_a_draft(aiohttp_client, api_settings):
    from bot.app import RUNTIME, build_runtime, create_app
    from tests.harness import Chat

    client = await aiohttp_client(create_app(api_settings, build_runtime(api_settings)))
    chat = Chat(client.app[RUNTIME])
    await chat.add_members(*ROSTER)
    await chat.say("陈静", "新线索 深圳示例科技 张伟 13800001234")
    [lead] = await _leads(chat)
    answer = await client.get(f"/api/v1/leads/{lead.id}",
                              headers={"Authorization": f"Bearer {TOKEN}"})
    assert answer.status == 404


async def test_a_bad_phone_or_an_unclear_line_gets_the_reason(chat):
    await chat.add_members(*ROSTER)
    [reply] = await chat.say("王芳", "新线索 深圳示例科技 张伟 1380000123")
    assert reply.text == "电话「1380000123」有误：手机号应为11位，这里是10位。"
    [reply] = await chat.say("王芳", "新线索")
    assert reply.text.startswith("用法：新线索 公司 联系人 电话")
    [reply] = await chat.say("王芳", "新线索 张伟 李娜 13800001234")
    assert reply.text.startswith("分不清哪个是公司、哪个是联系人")
    assert await _leads(chat) == []


async def test_a_similar_lead_gets_the_card_and_link_stores_nothing_new(chat):
    await chat.add_members(*ROSTER)
    await chat.say("王芳", "新线索 深圳示例科技 张伟 13800001234 高 工业 展会")
    # the same phone and the same company, written another way: similar (C14, C15)
    [card] = await chat.say("赵强", "新线索 示例科技（深圳）有限公司 张总 +86 138-0000-1234")
    assert card.card.title == "检测到相似客户"
    assert card.card.description == "检测到相似客户：张伟 | 深圳示例科技 | 138****1234"
    assert {f.label: f.value for f in card.card.fields} == {
        "已有记录": "线索 #1", "负责人": "王芳", "相同之处": "电话、公司名称",
        "您录入的": "示例科技(深圳)有限公司 · 张总 · 138****1234"}
    assert [b.key for b in card.card.buttons] == ["link:2", "create:2"]
    [reply] = await chat.click("赵强", card.button("关联"), card.card_id)
    assert reply.text == ("已关联到线索 #1（深圳示例科技 · 张伟 · 138****1234，负责人 王芳），"
                          "没有新建线索。")
    assert [lead.id for lead in await _leads(chat)] == [1]
    # the owner hears that the customer came back, and the enquiry is kept on lead #1
    assert (await chat.inbox("王芳"))[-1].text == (
        "客户再次来询：示例科技(深圳)有限公司 · 张总 · 138****1234（来源：-）。"
        "已记在线索 #1 下，没有新建线索。")
    async with chat.rt.sessions() as session:
        [enquiry] = (await session.scalars(select(Enquiry))).all()
    assert (enquiry.kind, enquiry.object_id, enquiry.origin) == ("lead", 1, "chat")
    [again] = await chat.click("赵强", card.button("仍然"), card.card_id)
    assert again.text == "没有找到线索 #2。"  # the draft is gone: the click changes nothing
    assert [lead.id for lead in await _leads(chat)] == [1]


async def test_linking_to_my_own_lead_keeps_the_enquiry_without_telling_me_twice(chat):
    await chat.add_members(*ROSTER)
    await chat.say("王芳", "新线索 深圳示例科技 张伟 13800001234 高 工业 展会")
    [card] = await chat.say("王芳", "新线索 示例科技（深圳）有限公司 张总 +86 138-0000-1234")
    [reply] = await chat.click("王芳", card.button("关联"), card.card_id)
    assert reply.text.startswith("已关联到线索 #1")
    assert not [m for m in await chat.inbox("王芳") if "客户再次来询" in (m.text or "")]
    async with chat.rt.sessions() as session:
        assert len((await session.scalars(select(Enquiry))).all()) == 1


async def test_create_anyway_goes_on_as_a_new_lead(chat):
    await chat.add_members(*ROSTER)
    async with chat.rt.sessions() as session, session.begin():
        session.add(Customer(company="杭州示例集团有限公司", contact="李娜",
                             phone="13900001234", owner_id=2))
    [card] = await chat.say("陈静", "新线索 杭州示例集团 李娜 13900001234 高 工业")
    assert card.card.description == "检测到相似客户：李娜 | 杭州示例集团有限公司 | 139****1234"
    assert {f.label: f.value for f in card.card.fields}["相同之处"] == "手机、公司、联系人都相同"
    [ask] = await chat.click("陈静", card.button("仍然"), card.card_id)
    assert ask.card.title == "补全线索 #1 的标签"  # the one tag still missing
    [late] = await chat.click("陈静", card.button("关联"), card.card_id)  # a second tap
    assert late.text == "这张卡片已经处理过了（线索 #1），这次点击没有改变任何内容。"
    await chat.click("陈静", ask.button("展会"), ask.card_id)
    [lead] = await _leads(chat)
    # marketing's lead goes through the engine
    assert (lead.company, lead.status, lead.source) == ("杭州示例集团", "assigned", "expo")


async def test_the_same_number_at_another_company_is_not_similar(chat):
    await chat.add_members(*ROSTER)
    await chat.say("王芳", "新线索 深圳示例科技 张伟 13800001234 高 工业 展会")
    # one agreeing field (the phone: a shared switchboard, a contact who moved): new lead
    [reply] = await chat.say("赵强", "新线索 广州样本电子厂 张伟 138 0000 1234 高 工业 展会")
    assert reply.text.startswith("线索 #2（广州样本电子厂）已录入")
    assert len(await _leads(chat)) == 2


async def test_my_own_draft_typed_again_is_asked_again(chat):
    await chat.add_members(*ROSTER)
    await chat.say("王芳", "新线索 深圳示例科技 张伟 13800001234")
    [again] = await chat.say("王芳", "新线索 深圳示例科技 张伟 13800001234")
    assert again.card.title == "补全线索 #1 的标签"
    assert len(await _leads(chat)) == 1


async def test_a_draft_typed_again_while_similar_is_checked_again_and_keeps_its_tags(chat):
    await chat.add_members(*ROSTER)
    await chat.say("王芳", "新线索 深圳示例科技 张伟 13800001234 高 工业 展会")
    [first] = await chat.say("赵强", "新线索 示例科技（深圳）有限公司 张总 13800001234 高")
    assert first.card.title == "检测到相似客户"
    # typed again with the other tags: the same question, never a lead past the door
    [second] = await chat.say("赵强", "新线索 示例科技（深圳）有限公司 张总 13800001234 工业 展会")
    assert second.card.title == "检测到相似客户"
    assert (await chat.card(first.card_id)).status == "已重新录入，以新的一条为准"
    draft = await _lead(chat, 2)
    assert (draft.status, draft.urgency, draft.industry, draft.source) == (
        "draft", "high", "industrial", "expo")
    [reply] = await chat.click("赵强", second.button("仍然"), second.card_id)
    assert reply.text.startswith("线索 #2（示例科技(深圳)有限公司）已录入")
    assert [lead.status for lead in await _leads(chat)] == ["accepted", "accepted"]


async def test_a_corrected_draft_that_no_longer_resembles_goes_on(chat):
    await chat.add_members(*ROSTER)
    await chat.say("王芳", "新线索 深圳示例科技 张伟 13800001234 高 工业 展会")
    [card] = await chat.say("赵强", "新线索 深圳示例科技 张伟 13800001234")
    assert card.card.title == "检测到相似客户"
    # the rep had the wrong company: the corrected draft no longer resembles lead #1
    [ask] = await chat.say("赵强", "新线索 广州样本电子厂 张伟 13800001234")
    assert ask.card.title == "补全线索 #2 的标签"
    assert (await chat.card(card.card_id)).status == "已重新录入，以新的一条为准"
    draft = await _lead(chat, 2)
    assert (draft.company, draft.status) == ("广州样本电子厂", "draft")
    assert len(await _leads(chat)) == 2


async def test_someone_elses_or_a_stale_tags_click_changes_nothing(chat):
    await chat.add_members(*ROSTER)
    [ask] = await chat.say("王芳", "新线索 深圳示例科技 张伟 13800001234 工业 展会")
    [reply] = await chat.click("赵强", ask.button("高"), ask.card_id)
    assert reply.text == "线索 #1 不是您录入的，不能补全它的标签。"
    assert (await _lead(chat, 1)).urgency is None
    await chat.click("王芳", ask.button("高"), ask.card_id)
    [reply] = await chat.click("王芳", ask.button("低"), ask.card_id)
    assert reply.text == "这张卡片已经失效：线索 #1 的标签已经补全。"
    assert (await _lead(chat, 1)).urgency == "high"


async def test_help_shows_lead_entry_to_reps_and_marketing_only(chat):
    await chat.add_members(*ROSTER)
    [rep_help] = await chat.say("王芳", "/帮助")
    [boss_help] = await chat.say("李经理", "/帮助")
    assert "新线索 公司 联系人 电话" in rep_help.text
    assert "新线索" not in boss_help.text
    [nope] = await chat.say("李经理", "新线索 深圳示例科技 张伟 13800001234")
    assert nope.text.startswith("「新线索」只对销售、市场开放")


def test_a_tags_button_survives_dingtalks_markdown_fallback():
    from cards.dingtalk import action_text, parse_action_text

    # Without a card template, DingTalk cards are markdown whose actions are typed back.
    key = "tags:12:source=sem"
    assert parse_action_text(action_text("SEM", key)) == key
    assert parse_action_text("高 (tags:12:urgency=high=x)") is None


async def test_a_match_with_a_merged_away_customer_points_at_its_survivor(chat):
    await chat.add_members(*ROSTER)
    async with chat.rt.sessions() as session, session.begin():
        survivor = Customer(company="深圳示例科技有限公司", contact="张伟", phone="13800001234",
                            owner_id=2)
        session.add(survivor)
        await session.flush()
        session.add(Customer(company="深圳示例科技有限公司", contact="张伟", phone="13900005678",
                             owner_id=3, status="merged", merged_into_id=survivor.id))
    # the merged-away record's number: the survivor is who it is now
    [card] = await chat.say("王芳", "新线索 示例科技 王五 13900005678 高 工业 展会")
    assert {f.label: f.value for f in card.card.fields}["已有记录"] == "客户 #1"
    assert card.card.description == "检测到相似客户：张伟 | 深圳示例科技有限公司 | 138****1234"
