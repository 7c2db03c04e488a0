"""The lead's life on the console channel: offered, accepted, declined, transferred."""

from __future__ import annotations

from sqlalchemy import select

from storage.models import Lead


async def _lead(chat, lead_id):
    async with chat.rt.sessions() as session:
        return await session.get(Lead, lead_id)


async def _post_lead(chat, company="深圳示例科技有限公司"):
    from handlers.intake import LeadInput, create_lead

    async with chat.rt.sessions() as session, session.begin():
        lead, _ = await create_lead(session, chat.rt, LeadInput(
            company=company, contact="张伟", phone="13800001234", industry="industrial",
            urgency="high", source="expo"), chat.rt.now(), origin="api")
    await chat.settle()
    return lead.id


ROSTER = [
    {"name": "李经理", "role": "manager"},
    {"name": "王芳", "role": "rep", "manager": "李经理"},
    {"name": "赵强", "role": "rep", "manager": "李经理"},
]


async def test_rep_accepts_the_card_and_it_shows_who_and_when(chat):
    await chat.add_members(*ROSTER)
    lead_id = await _post_lead(chat)
    lead = await _lead(chat, lead_id)
    assert lead.status == "assigned"
    rep = "王芳" if lead.assignee_id == 2 else "赵强"
    [card] = await chat.inbox(rep)
    assert card.card.title == f"新线索 #{lead_id}"
    replies = await chat.click(rep, card.button("接受"), card.card_id)
    assert "已接受线索" in replies[0].text
    assert (await _lead(chat, lead_id)).status == "accepted"
    updated = await chat.card(card.card_id)
    assert updated.buttons == []
    assert updated.status == f"{rep} 已于 12-02 10:00 接受"


async def test_rep_declines_and_next_rep_gets_the_card(chat):
    await chat.add_members(*ROSTER)
    lead_id = await _post_lead(chat)
    first = "王芳"  # round-robin starts with the lowest id among never-offered reps
    [card] = await chat.inbox(first)
    [ask] = await chat.click(first, card.button("拒绝"), card.card_id)
    assert "请选择原因" in ask.text
    replies = await chat.say(first, "客户在外地")
    assert "原因：客户在外地" in replies[0].text
    [second_card] = await chat.inbox("赵强")
    assert second_card.card.title == f"新线索 #{lead_id}"
    [notice] = await chat.inbox("李经理")
    assert "王芳拒绝了（原因：客户在外地），已转给 赵强" in notice.text
    lead = await _lead(chat, lead_id)
    assert lead.status == "assigned" and lead.reroutes == 1


async def test_record_makes_the_lead_contacted(chat):
    await chat.add_members(*ROSTER)
    lead_id = await _post_lead(chat)
    [card] = await chat.inbox("王芳")
    await chat.click("王芳", card.button("接受"), card.card_id)
    [reply] = await chat.say("王芳", "记录 已电话沟通，下周拜访")
    assert reply.text == f"已记录到线索 #{lead_id}（深圳示例科技有限公司）。"
    assert (await _lead(chat, lead_id)).status == "contacted"


async def test_stranger_is_told_who_can_add_them(chat):
    await chat.add_members({"name": "管理员甲", "role": "admin"})
    await chat.event("路人", kind="text", text="你好")
    async with chat.rt.sessions() as session:
        from storage.models import Outgoing

        row = await session.scalar(select(Outgoing).where(Outgoing.recipient == "stranger:路人"))
    assert "管理员甲" in row.payload["text"]
