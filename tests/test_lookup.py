"""/查客户: leads and customers found by phone, e-mail, company or contact, phones masked."""

from __future__ import annotations

from storage.models import Customer

ROSTER = [
    {"name": "李经理", "role": "manager"},
    {"name": "王芳", "role": "rep", "manager": "李经理"},
    {"name": "孙丽", "role": "service"},
]


async def _customers(chat) -> None:
    async with chat.rt.sessions() as session, session.begin():
        session.add_all([
            Customer(company="深圳示例科技有限公司", contact="张伟", phone="13800001234",
                     email="zhang@shili.example", owner_id=2),
            Customer(company="广州样本贸易有限公司", contact="李娜", phone="13900005678",
                     owner_id=2, status="merged"),
        ])


async def test_a_customer_and_a_lead_are_found_by_any_key_with_masked_phones(chat):
    await chat.add_members(*ROSTER)
    await _customers(chat)
    await chat.say("王芳", "新线索 示例科技发展 陈明 13700009999 高 工业 展会")
    expected_customer = "客户 #1 深圳示例科技有限公司 · 张伟 · 138****1234（负责人 王芳）"
    for keyword in ("+86 138-0000-1234", "ZHANG@shili.example", "张伟先生"):
        [reply] = await chat.say("孙丽", f"/查客户 {keyword}")
        assert reply.text.splitlines()[1:] == [expected_customer], keyword
    [reply] = await chat.say("孙丽", "/查客户 示例科技")
    assert reply.text.splitlines() == [
        "找到 2 条与「示例科技」相符的记录：", expected_customer,
        "线索 #1 示例科技发展 · 陈明 · 137****9999（已接受，王芳）"]
    assert "13800001234" not in reply.text


async def test_a_merged_away_customer_and_nothing_at_all_are_not_found(chat):
    await chat.add_members(*ROSTER)
    await _customers(chat)
    [reply] = await chat.say("王芳", "/查客户 13900005678")
    assert reply.text == "没有找到与「13900005678」相符的线索或客户。"
    [reply] = await chat.say("王芳", "/查客户")
    assert reply.text.startswith("用法：/查客户 关键词")


async def test_service_may_look_but_not_create(chat):
    await chat.add_members(*ROSTER)
    [refused] = await chat.say("孙丽", "新线索 杭州示例集团 李娜 13900001234 高 工业 展会")
    assert refused.text.startswith("「新线索」只对")
    [none] = await chat.say("孙丽", "/查客户 杭州示例集团")
    assert none.text.startswith("没有找到")


async def test_service_attaches_an_interaction_to_the_customer_it_found(chat):
    from sqlalchemy import select

    from storage.models import FollowUp

    await chat.add_members(*ROSTER)
    await _customers(chat)
    [reply] = await chat.say("孙丽", "记录 示例科技（深圳） 客户来电咨询保修")
    assert reply.text == "已把这次互动记录到客户 #1（深圳示例科技有限公司）。"
    [reply] = await chat.say("孙丽", "记录 客户#1 回访满意")
    assert reply.text == "已把这次互动记录到客户 #1（深圳示例科技有限公司）。"
    async with chat.rt.sessions() as session:
        rows = (await session.execute(select(FollowUp.customer_id, FollowUp.lead_id,
                                             FollowUp.kind, FollowUp.content))).all()
    assert rows == [(1, None, "interaction", "客户来电咨询保修"),
                    (1, None, "interaction", "回访满意")]
    # a merged-away customer takes none
    [reply] = await chat.say("孙丽", "记录 客户#2 来电")
    assert not reply.text.startswith("已把这次互动")
