"""What a new user did to break the bot, each kept as a test: numbers too big for any
record, leave and duty crossed, numbers written oddly."""

from __future__ import annotations

import pytest

from bot.router import is_number

ROSTER = [
    {"name": "管理员甲", "role": "admin"},
    {"name": "李经理", "role": "manager"},
    {"name": "王芳", "role": "rep", "manager": "李经理"},
]
HUGE = "99999999999999999999999999"


def test_a_record_number_is_at_most_nine_digits_half_or_full_width():
    assert is_number("12") and is_number("１２") and is_number("999999999")
    assert not is_number("1234567890") and not is_number(HUGE)
    assert not is_number("٣٠") and not is_number("") and not is_number("-1")


@pytest.mark.parametrize(("who", "command"), [
    ("管理员甲", f"/规则 测试 {HUGE}"), ("管理员甲", f"/规则 删除 {HUGE}"),
    ("李经理", f"/转派 {HUGE} 王芳"), ("李经理", f"/重开 {HUGE}"),
    ("李经理", f"/流失 {HUGE} 无效线索"), ("王芳", f"接受 {HUGE}"),
    ("王芳", f"/转化 {HUGE}"), ("王芳", f"记录 {HUGE} 今天电话沟通"),
    ("王芳", "/请假 到 9999-12-31"),
])
async def test_numbers_too_big_for_any_record_get_an_answer_not_an_error(chat, who, command):
    await chat.add_members(*ROSTER)
    [reply] = await chat.say(who, command)
    assert "出错" not in reply.text and reply.text


async def test_on_leave_a_rep_cannot_just_say_on_duty(chat):
    await chat.add_members(*ROSTER)
    await chat.say("王芳", "/请假 到 2026-12-05")
    [reply] = await chat.say("王芳", "/上班")
    assert reply.text == ("您正在休假（到 2026-12-05），休假期间不分配线索。"
                          "要提前回来请发送 /销假。")
    [reply] = await chat.say("王芳", "/请假 到 2028-01-01")
    assert reply.text == "请假结束日期最多到一年以后（2027-12-03）。"


async def test_my_leads_stays_one_short_message_however_many_leads(chat):
    from handlers.intake import LeadInput, create_leads

    await chat.add_members(*ROSTER)
    async with chat.rt.sessions() as session, session.begin():
        await create_leads(session, chat.rt, [
            LeadInput(company=f"深圳示例科技{n:03d}有限公司", contact="张伟",
                      phone=f"1380000{n:04d}", industry="industrial", urgency="low",
                      source="expo") for n in range(60)], chat.rt.now(), origin="api")
    await chat.settle()
    await chat.inbox("王芳")
    [listing, *cards] = await chat.say("王芳", "/我的线索")
    assert listing.text.startswith("您的进行中线索（60 条）：")
    assert len(listing.text.encode()) < 2048
    assert listing.text.splitlines()[-2].startswith("……还有 35 条未列出")


async def test_a_bare_lead_number_is_not_a_follow_up(chat):
    await chat.add_members(*ROSTER)
    [reply] = await chat.say("王芳", "记录 4")
    assert reply.text.startswith("用法：记录 [公司或线索号] 跟进内容")
