"""/转化: a rep asks, the manager approves or rejects on a card, the customer is made once."""

from __future__ import annotations

from sqlalchemy import select

from storage.models import Approval, AuditLog, Customer, Lead, LeadStatusChange

ROSTER = [
    {"name": "李经理", "role": "manager"},
    {"name": "周经理", "role": "manager"},
    {"name": "管理员甲", "role": "admin"},
    {"name": "王芳", "role": "rep", "manager": "李经理"},
    {"name": "赵强", "role": "rep", "manager": "李经理"},
]


async def _my_lead(chat, rep="王芳", line="深圳示例科技 张伟 13800001234", notes=3):
    """A lead the rep typed in (so it is theirs), with `notes` follow-ups logged."""
    await chat.say(rep, f"新线索 {line} 高 工业 展会")
    async with chat.rt.sessions() as session:
        lead_id = await session.scalar(select(Lead.id).order_by(Lead.id.desc()).limit(1))
    for n in range(notes):
        await chat.say(rep, f"记录 {lead_id} 第{n + 1}次沟通")
    return lead_id


async def _get(chat, model, object_id):
    async with chat.rt.sessions() as session:
        return await session.get(model, object_id)


async def _approval_card(chat, manager="李经理"):
    [card] = [m for m in await chat.inbox(manager) if m.card is not None]
    return card


async def test_conversion_needs_three_follow_ups(chat):
    await chat.add_members(*ROSTER)
    lead_id = await _my_lead(chat, notes=1)
    [reply] = await chat.say("王芳", f"/转化 {lead_id}")
    assert reply.text == (f"线索 #{lead_id} 已跟进 1 次，申请转化至少要 3 次，还差 2 次。"
                          f"发送「记录 {lead_id} 内容」登记跟进。")
    assert await chat.inbox("李经理") == []
    async with chat.rt.sessions() as session:
        assert (await session.scalars(select(Approval))).all() == []


async def test_only_the_owner_may_ask_and_only_with_a_number(chat):
    await chat.add_members(*ROSTER)
    lead_id = await _my_lead(chat)
    [reply] = await chat.say("赵强", f"/转化 {lead_id}")
    assert reply.text == f"线索 #{lead_id} 不在您的名下，只有负责的销售可以申请转化。"
    [reply] = await chat.say("王芳", "/转化 abc")
    assert reply.text == "用法：/转化 线索号，例如：/转化 12"
    [reply] = await chat.say("李经理", f"/转化 {lead_id}")
    assert reply.text.startswith("「转化」只对销售开放")


async def test_the_manager_approves_and_the_lead_becomes_a_customer(chat):
    await chat.add_members(*ROSTER)
    lead_id = await _my_lead(chat)
    [reply] = await chat.say("王芳", f"/转化 {lead_id}")
    assert reply.text == f"已提交线索 #{lead_id}（深圳示例科技）的转化申请，等待 李经理 审批。"
    card = await _approval_card(chat)
    assert card.card.title == f"转化审批：线索 #{lead_id}"
    assert card.card.description == "王芳 申请把这条线索转化为客户。"
    shown = {f.label: f.value for f in card.card.fields}
    assert (shown["公司"], shown["负责销售"], shown["跟进次数"]) == (
        "深圳示例科技", "王芳", "3 次")
    approval_id = card.card.object_id
    assert [b.key for b in card.card.buttons] == [f"approve:{approval_id}",
                                                  f"reject:{approval_id}"]

    [again] = await chat.say("王芳", f"/转化 {lead_id}")
    assert again.text == f"线索 #{lead_id} 已在审批中，请等待 李经理 审批。"

    [done] = await chat.click("李经理", card.button("同意"), card.card_id)
    lead = await _get(chat, Lead, lead_id)
    customer = await _get(chat, Customer, lead.customer_id)
    assert done.text == (f"已同意：线索 #{lead_id} 已转化为客户 #{customer.id}（深圳示例科技），"
                         "已告知 王芳。")
    assert lead.status == "converted"
    assert (customer.company, customer.contact, customer.phone) == (
        "深圳示例科技", "张伟", "13800001234")
    assert (customer.owner_id, customer.lead_id) == (4, lead_id)
    approval = await _get(chat, Approval, approval_id)
    assert (approval.state, approval.decided_by_id) == ("approved", 1)
    updated = await chat.card(card.card_id)
    assert updated.status == f"李经理 已于 12-02 10:00 同意，客户 #{customer.id}"
    assert updated.buttons == []
    [told] = await chat.inbox("王芳")
    assert told.text == (f"您的线索 #{lead_id}（深圳示例科技）已由 李经理 同意转化，"
                         f"客户编号 #{customer.id}。")
    async with chat.rt.sessions() as session:
        history = (await session.scalars(
            select(LeadStatusChange.to_status).where(LeadStatusChange.lead_id == lead_id)
            .order_by(LeadStatusChange.id))).all()
        actions = set((await session.scalars(select(AuditLog.action))).all())
    assert history == ["new", "accepted", "contacted", "converted"]
    assert {"approval.request", "customer.create", "lead.convert", "approval.approve"} <= actions


async def test_another_manager_is_refused_and_a_stale_click_changes_nothing(chat):
    await chat.add_members(*ROSTER)
    lead_id = await _my_lead(chat)
    await chat.say("王芳", f"/转化 {lead_id}")
    card = await _approval_card(chat)
    [nope] = await chat.click("周经理", card.button("同意"), card.card_id)
    assert nope.text == "只有 王芳 的经理或管理员可以审批这条申请，您的点击没有改变任何内容。"
    assert (await _get(chat, Lead, lead_id)).status == "contacted"

    await chat.click("李经理", card.button("同意"), card.card_id)
    [stale] = await chat.click("李经理", card.button("驳回"), card.card_id)
    assert stale.text == "这张卡片已经失效：这条审批已同意。"
    async with chat.rt.sessions() as session:
        assert len((await session.scalars(select(Customer))).all()) == 1


async def test_an_admin_may_approve_too(chat):
    await chat.add_members(*ROSTER)
    lead_id = await _my_lead(chat)
    await chat.say("王芳", f"/转化 {lead_id}")
    card = await _approval_card(chat)
    await chat.click("管理员甲", card.button("同意"), card.card_id)
    lead = await _get(chat, Lead, lead_id)
    assert lead.status == "converted" and lead.customer_id is not None


async def test_reject_asks_why_and_the_rep_is_told(chat):
    await chat.add_members(*ROSTER)
    lead_id = await _my_lead(chat)
    await chat.say("王芳", f"/转化 {lead_id}")
    card = await _approval_card(chat)
    [ask] = await chat.click("李经理", card.button("驳回"), card.card_id)
    assert ask.text == f"请回复驳回线索 #{lead_id} 转化申请的原因，王芳 会收到。"
    [done] = await chat.say("李经理", "客户还没确认预算")
    assert done.text == f"已驳回线索 #{lead_id} 的转化申请，已把原因告知 王芳。"
    closed = await chat.card(card.card_id)
    assert closed.status == "李经理 已于 12-02 10:00 驳回（客户还没确认预算）"
    [told] = await chat.inbox("王芳")
    assert told.text == (f"您的线索 #{lead_id}（深圳示例科技）转化申请被 李经理 驳回，"
                         f"原因：客户还没确认预算。继续跟进后可再次发送 /转化 {lead_id}。")
    assert (await _get(chat, Lead, lead_id)).status == "contacted"
    async with chat.rt.sessions() as session:
        approval = await session.scalar(select(Approval))
        assert (approval.state, approval.reason) == ("rejected", "客户还没确认预算")
        assert (await session.scalars(select(Customer))).all() == []
    # Rejected is not pending: the rep may ask again.
    [reply] = await chat.say("王芳", f"/转化 {lead_id}")
    assert reply.text.startswith(f"已提交线索 #{lead_id}")


async def _customer_meanwhile(chat, **values) -> None:
    """A customer of a colleague stored after the lead was typed in."""
    async with chat.rt.sessions() as session, session.begin():
        session.add(Customer(**({"company": "深圳市示例科技有限公司", "contact": "张伟",
                                 "phone": "13800001234", "owner_id": 5} | values)))


async def test_a_similar_customer_is_shown_and_the_manager_links_to_it(chat):
    await chat.add_members(*ROSTER)
    lead_id = await _my_lead(chat)
    await _customer_meanwhile(chat)
    await chat.say("王芳", f"/转化 {lead_id}")
    card = await _approval_card(chat)
    assert card.card.description.endswith(
        "检测到相似客户：张伟 | 深圳市示例科技有限公司 | 138****1234（客户 #1，负责人 赵强）")
    assert [b.key for b in card.card.buttons] == \
        ["link:1:approval", "create:1:approval", "reject:1"]
    [done] = await chat.click("李经理", card.button("关联"), card.card_id)
    assert done.text == (f"已同意：线索 #{lead_id} 与已有客户 #1（深圳市示例科技有限公司）相同，"
                         "已关联，未重复创建。")
    lead = await _get(chat, Lead, lead_id)
    assert (lead.status, lead.customer_id) == ("converted", 1)
    async with chat.rt.sessions() as session:
        assert len((await session.scalars(select(Customer))).all()) == 1
    [told] = await chat.inbox("王芳")
    assert "关联到已有客户 #1" in told.text


async def test_the_manager_may_create_a_customer_although_one_looked_similar(chat):
    await chat.add_members(*ROSTER)
    lead_id = await _my_lead(chat)
    await _customer_meanwhile(chat)
    await chat.say("王芳", f"/转化 {lead_id}")
    card = await _approval_card(chat)
    [done] = await chat.click("李经理", card.button("仍新建"), card.card_id)
    assert done.text == f"已同意：线索 #{lead_id} 已转化为客户 #2（深圳示例科技），已告知 王芳。"
    assert (await _get(chat, Lead, lead_id)).customer_id == 2


async def test_a_customer_similar_since_the_request_is_shown_before_anything_is_linked(chat):
    await chat.add_members(*ROSTER)
    lead_id = await _my_lead(chat)
    await chat.say("王芳", f"/转化 {lead_id}")
    card = await _approval_card(chat)
    assert [b.key for b in card.card.buttons] == ["approve:1", "reject:1"]
    # only similar (the phone and the company; another contact), stored after the request
    await _customer_meanwhile(chat, contact="刘洋")
    [reply] = await chat.click("李经理", card.button("同意"), card.card_id)
    assert reply.text == ("申请提交后出现了相似客户 #1（深圳市示例科技有限公司），未做任何改动。"
                          "卡片已更新，请选择「关联到客户 #1」或「仍新建客户」。")
    assert (await _get(chat, Lead, lead_id)).status == "contacted"
    shown = await chat.card(card.card_id)
    assert [b.key for b in shown.buttons] == ["link:1:approval", "create:1:approval",
                                              "reject:1"]
    assert shown.description.endswith(
        "检测到相似客户：刘洋 | 深圳市示例科技有限公司 | 138****1234（客户 #1，负责人 赵强）")
    [done] = await chat.click("李经理", "create:1:approval", card.card_id)
    assert done.text == f"已同意：线索 #{lead_id} 已转化为客户 #2（深圳示例科技），已告知 王芳。"


async def test_a_namesake_on_another_phone_is_not_linked(chat):
    await chat.add_members(*ROSTER)
    lead_id = await _my_lead(chat)
    # the same company and contact names, nothing else: one field, not similar (C14)
    await _customer_meanwhile(chat, phone="13900001234")
    await chat.say("王芳", f"/转化 {lead_id}")
    card = await _approval_card(chat)
    assert [b.key for b in card.card.buttons] == ["approve:1", "reject:1"]
    [done] = await chat.click("李经理", card.button("同意"), card.card_id)
    assert done.text == f"已同意：线索 #{lead_id} 已转化为客户 #2（深圳示例科技），已告知 王芳。"


async def test_a_lead_lost_meanwhile_makes_the_approval_void(chat):
    await chat.add_members(*ROSTER)
    lead_id = await _my_lead(chat)
    await chat.say("王芳", f"/转化 {lead_id}")
    card = await _approval_card(chat)
    async with chat.rt.sessions() as session, session.begin():
        (await session.get(Lead, lead_id)).status = "lost"
    [reply] = await chat.click("李经理", card.button("同意"), card.card_id)
    assert reply.text == f"线索 #{lead_id} 已不在 王芳 名下跟进（已流失），这条申请已失效。"
    assert (await chat.card(card.card_id)).status == "线索已变化，申请已失效"
    async with chat.rt.sessions() as session:
        assert (await session.scalar(select(Approval))).state == "withdrawn"
        assert (await session.scalars(select(Customer))).all() == []


async def test_link_goes_to_the_customer_the_card_offered_even_if_another_matches_now(chat):
    await chat.add_members(*ROSTER)
    lead_id = await _my_lead(chat)
    await _customer_meanwhile(chat, contact="李娜")  # phone and company: similar
    await chat.say("王芳", f"/转化 {lead_id}")
    card = await _approval_card(chat)
    assert card.button("关联").endswith(":approval")
    # A better match is stored after the card went out: the click still means #1.
    await _customer_meanwhile(chat, owner_id=4)

    [done] = await chat.click("李经理", card.button("关联"), card.card_id)

    assert "已有客户 #1" in done.text
    assert (await _get(chat, Lead, lead_id)).customer_id == 1


async def test_link_follows_the_offered_customer_into_its_survivor(chat):
    await chat.add_members(*ROSTER)
    lead_id = await _my_lead(chat)
    await _customer_meanwhile(chat)
    await chat.say("王芳", f"/转化 {lead_id}")
    card = await _approval_card(chat)
    async with chat.rt.sessions() as session, session.begin():
        survivor = Customer(company="示例科技（深圳）有限公司", contact="张伟总",
                            phone="13800001234", owner_id=5)
        session.add(survivor)
        await session.flush()
        merged = await session.get(Customer, 1)
        merged.status, merged.merged_into_id = "merged", survivor.id

    [done] = await chat.click("李经理", card.button("关联"), card.card_id)

    assert f"已有客户 #{survivor.id}" in done.text
    assert (await _get(chat, Lead, lead_id)).customer_id == survivor.id
