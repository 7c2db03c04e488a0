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


async def _declined_by_everyone(chat, reps):
    for rep in reps:
        [card] = await chat.inbox(rep)
        await chat.click(rep, card.button("拒绝"), card.card_id)
        await chat.say(rep, "不熟悉")


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


async def test_transfer_to_a_named_colleague(chat):
    await chat.add_members(*ROSTER)
    lead_id = await _post_lead(chat)
    [card] = await chat.inbox("王芳")
    [ask] = await chat.click("王芳", card.button("转给同事"), card.card_id)
    assert "转给 姓名" in ask.text
    [done] = await chat.say("王芳", "转给 赵强")
    assert done.text == f"线索 #{lead_id} 已转给 赵强，等待对方接受。"
    [colleague_card] = await chat.inbox("赵强")
    assert colleague_card.card.description == "王芳 转给您"
    assert (await chat.card(card.card_id)).status == "王芳 已于 12-02 10:00 转给 赵强"
    await chat.click("赵强", colleague_card.button("接受"), colleague_card.card_id)
    lead = await _lead(chat, lead_id)
    assert lead.status == "accepted" and lead.assignee_id == 3 and lead.reroutes == 0


async def test_transfer_to_unknown_or_manager_is_refused(chat):
    await chat.add_members(*ROSTER)
    await _post_lead(chat)
    [card] = await chat.inbox("王芳")
    await chat.click("王芳", card.button("转给同事"), card.card_id)
    [reply] = await chat.say("王芳", "转给 不存在")
    assert reply.text == "名单里没有「不存在」，请检查姓名。"
    [reply] = await chat.say("王芳", "转给 李经理")
    assert reply.text == "李经理 不是销售，不能接收线索。"


async def test_a_click_by_someone_else_changes_nothing(chat):
    await chat.add_members(*ROSTER)
    lead_id = await _post_lead(chat)
    [card] = await chat.inbox("王芳")
    [reply] = await chat.click("赵强", card.button("接受"), card.card_id)
    assert reply.text == f"线索 #{lead_id} 不是分给您的，无法操作。"
    assert (await _lead(chat, lead_id)).status == "assigned"


async def test_a_stale_click_after_accepting_is_answered_politely(chat):
    await chat.add_members(*ROSTER)
    lead_id = await _post_lead(chat)
    [card] = await chat.inbox("王芳")
    await chat.click("王芳", card.button("接受"), card.card_id)
    [reply] = await chat.click("王芳", card.button("拒绝"), card.card_id)
    assert "卡片已经失效" in reply.text
    assert (await _lead(chat, lead_id)).status == "accepted"


async def test_after_three_reroutes_the_manager_decides(chat):
    await chat.add_members(*ROSTER, {"name": "孙磊", "role": "rep", "manager": "李经理"})
    lead_id = await _post_lead(chat)
    await _declined_by_everyone(chat, ("王芳", "赵强", "孙磊"))
    lead = await _lead(chat, lead_id)
    assert (lead.status, lead.assignee_id, lead.reroutes) == ("new", None, 3)
    messages = await chat.inbox("李经理")
    decide = [m for m in messages if m.card is not None]
    assert decide[0].card.title == f"线索 #{lead_id} 需要您指派"
    [ask] = await chat.click("李经理", decide[0].button("指派"), decide[0].card_id)
    assert "要指派给谁" in ask.text
    [done] = await chat.say("李经理", "赵强")
    assert done.text == f"线索 #{lead_id} 已指派给 赵强。"
    [card] = await chat.inbox("赵强")
    assert card.card.description == "经理 李经理 指派给您"
    assert (await chat.card(decide[0].card_id)).buttons == []


async def test_decline_reason_button_and_declined_rep_is_skipped(chat):
    await chat.add_members(*ROSTER)
    lead_id = await _post_lead(chat)
    [card] = await chat.inbox("王芳")
    [ask] = await chat.click("王芳", card.button("拒绝"), card.card_id)
    await chat.click("王芳", ask.button("手头线索太多"), ask.card_id)
    [card2] = await chat.inbox("赵强")
    await chat.click("赵强", card2.button("拒绝"), card2.card_id)
    await chat.say("赵强", "不熟")
    lead = await _lead(chat, lead_id)
    # Both reps declined: nobody else is left, so the lead waits in the queue.
    assert (lead.status, lead.assignee_id) == ("new", None)
    assert await chat.inbox("王芳") == [] or all(m.card is None for m in await chat.inbox("王芳"))


async def test_offer_not_accepted_in_the_window_goes_to_the_next_rep(chat):
    from scheduler.sweeps import sweep_once

    await chat.add_members(*ROSTER)
    lead_id = await _post_lead(chat)
    [card] = await chat.inbox("王芳")
    chat.rt.clock.advance(minutes=29)
    assert await sweep_once(chat.rt) == (0, 0)
    chat.rt.clock.advance(minutes=2)
    assert await sweep_once(chat.rt) == (1, 0)
    await chat.settle()
    [card2] = await chat.inbox("赵强")
    assert card2.card.title == f"新线索 #{lead_id}"
    assert (await chat.card(card.card_id)).status == "已超时未接受，线索已转出"
    [notice] = await chat.inbox("李经理")
    assert "在 30 个工作分钟内未接受" in notice.text


async def test_nobody_on_duty_queues_the_lead_until_someone_starts(chat):
    await chat.add_members(*ROSTER)
    await chat.say("王芳", "/下班")
    await chat.say("赵强", "下班")
    lead_id = await _post_lead(chat)
    lead = await _lead(chat, lead_id)
    assert (lead.status, lead.assignee_id) == ("new", None)
    started, card = await chat.say("赵强", "／上班")
    assert started.text == "已上班，开始接收线索。"
    assert card.card.title == f"新线索 #{lead_id}"


async def test_my_leads_lists_every_open_lead_with_cards_for_the_first(chat):
    await chat.add_members({"name": "王芳", "role": "rep"})
    ids = [await _post_lead(chat, f"示例公司{n}") for n in range(5)]
    await chat.inbox("王芳")
    replies = await chat.say("王芳", "/我的线索")
    assert replies[0].text.splitlines()[0] == "您的进行中线索（5 条）："
    assert f"#{ids[4]} 示例公司4 · 张伟 · 待接受" in replies[0].text
    assert [r.card.object_id for r in replies[1:]] == ids[:3]


async def test_help_lists_the_commands_of_my_role(chat):
    await chat.add_members({"name": "王芳", "role": "rep"}, {"name": "李经理", "role": "manager"})
    [rep_help] = await chat.say("王芳", "/帮助")
    [boss_help] = await chat.say("李经理", "help")
    assert "/我的线索" in rep_help.text and "/转派" not in rep_help.text
    assert "/转派" in boss_help.text and "/我的线索" not in boss_help.text
    [usage] = await chat.say("李经理", "/转派 abc")
    assert usage.text == "用法：/转派 线索号 姓名，例如：/转派 12 王二"
    [nope] = await chat.say("王芳", "/转派 1 赵强")
    assert nope.text.startswith("「转派」只对经理、管理员开放")


async def test_capacity_is_counted_from_the_leads_and_excess_waits(chat):
    await chat.add_members({"name": "王芳", "role": "rep", "max_open_leads": 1},
                           {"name": "赵强", "role": "rep", "max_open_leads": 2})
    ids = [await _post_lead(chat, f"示例公司{n}") for n in range(4)]
    assignees = [(await _lead(chat, i)).assignee_id for i in ids]
    assert assignees == [1, 2, 2, None]
    # Contact made: the lead no longer counts as open, so the queue moves.
    [card] = await chat.inbox("王芳")
    await chat.click("王芳", card.button("接受"), card.card_id)
    await chat.say("王芳", "记录 已联系")
    from handlers.assignment import drain_queue

    assert await drain_queue(chat.rt) == 1
    assert (await _lead(chat, ids[3])).assignee_id == 1


async def test_a_rep_on_leave_gets_no_lead_until_back(chat):
    await chat.add_members({"name": "王芳", "role": "rep"})
    [reply] = await chat.say("王芳", "/请假 到 2026-12-03")
    assert reply.text == "已登记请假到 2026-12-03，期间不会给您分配新线索。回来后发送 /销假。"
    lead_id = await _post_lead(chat)
    assert (await _lead(chat, lead_id)).assignee_id is None
    back, card = await chat.say("王芳", "/销假")
    assert back.text == "已销假，欢迎回来！" and card.card.object_id == lead_id


async def test_a_members_quick_messages_are_handled_in_order(chat):
    from bot.events import Event

    await chat.add_members(*ROSTER)
    lead_id = await _post_lead(chat)
    [card] = await chat.inbox("王芳")
    async with chat.rt.sessions() as session:
        from storage.models import Card

        ref = (await session.get(Card, card.card_id)).ref
    click = Event(channel="console", kind="card_action", sender="王芳", key="q1",
                  action=f"decline:{lead_id}", card_ref=ref)
    reason = Event(channel="console", kind="text", sender="王芳", key="q2", text="太远了")
    for event in (click, reason):
        await chat.rt.inbox.record(event)
    await chat.settle()
    replies = await chat.inbox("王芳")
    assert replies[-1].text == f"已拒绝线索 #{lead_id}，原因：太远了。线索将转给其他同事。"


async def test_accepting_closes_the_copy_my_leads_sent_too(chat):
    await chat.add_members({"name": "王芳", "role": "rep"})
    await _post_lead(chat)
    [original] = await chat.inbox("王芳")
    [_, copy] = await chat.say("王芳", "/我的线索")
    await chat.click("王芳", copy.button("接受"), copy.card_id)
    assert (await chat.card(original.card_id)).buttons == []
    assert (await chat.card(copy.card_id)).status == "王芳 已于 12-02 10:00 接受"


async def test_an_unsupported_message_is_answered_and_a_platform_event_is_not(chat):
    await chat.add_members({"name": "王芳", "role": "rep"})
    await chat.event("王芳", kind="unsupported")
    assert [m.text for m in await chat.inbox("王芳")] == ["暂不支持该类型消息。"]
    await chat.event("王芳", kind="system")
    assert await chat.inbox("王芳") == []


async def test_record_on_someone_elses_lead_or_an_unknown_number_is_refused(chat):
    await chat.add_members(*ROSTER)
    lead_id = await _post_lead(chat)
    [card] = await chat.inbox("王芳")
    await chat.click("王芳", card.button("接受"), card.card_id)
    [reply] = await chat.say("赵强", f"记录 #{lead_id} 我也打过电话")
    assert reply.text == f"线索 #{lead_id} 不在您或您团队的名下，不能登记跟进。"
    [reply] = await chat.say("王芳", "记录 99999 已联系")
    assert reply.text == "没有找到线索 #99999。"
    [reply] = await chat.say("李经理", f"记录 {lead_id} 经理陪同拜访")
    assert reply.text == f"已记录到线索 #{lead_id}（深圳示例科技有限公司）。"
    assert (await _lead(chat, lead_id)).status == "accepted"  # a manager's note is no contact


async def test_a_reassign_card_is_stale_once_the_lead_is_taken(chat):
    await chat.add_members(*ROSTER, {"name": "孙磊", "role": "rep", "manager": "李经理"})
    lead_id = await _post_lead(chat)
    await _declined_by_everyone(chat, ("王芳", "赵强", "孙磊"))
    decide = [m for m in await chat.inbox("李经理") if m.card is not None][0]
    await chat.say("李经理", f"/转派 {lead_id} 赵强")
    [reply] = await chat.click("李经理", decide.button("指派"), decide.card_id)
    assert "卡片已经失效" in reply.text
    assert (await _lead(chat, lead_id)).assignee_id == 3


async def test_commands_typed_without_a_space_or_with_invisible_marks(chat):
    await chat.add_members({"name": "王芳", "role": "rep"}, {"name": "李经理", "role": "manager"})
    [reply] = await chat.say("王芳", "/请假到2026-12-10")
    assert reply.text.startswith("已登记请假到 2026-12-10")
    [reply] = await chat.say("王芳", "\u200b/销假")
    assert reply.text == "已销假，欢迎回来！"
    [reply] = await chat.say("李经理", "/转派 999 王芳")
    assert reply.text == "没有找到线索 #999。"


async def test_a_decline_reason_that_starts_like_a_command_is_still_the_reason(chat):
    await chat.add_members(*ROSTER)
    lead_id = await _post_lead(chat)
    [card] = await chat.inbox("王芳")
    await chat.click("王芳", card.button("拒绝"), card.card_id)
    [reply, *_] = await chat.say("王芳", "接受不了这么远的客户")
    assert reply.text == f"已拒绝线索 #{lead_id}，原因：接受不了这么远的客户。线索将转给其他同事。"


async def test_the_rep_who_loses_a_lead_to_a_reassignment_is_told(chat):
    await chat.add_members(*ROSTER)
    lead_id = await _post_lead(chat)
    [card] = await chat.inbox("王芳")
    await chat.click("王芳", card.button("接受"), card.card_id)
    await chat.say("李经理", f"/转派 {lead_id} 赵强")
    [told] = await chat.inbox("王芳")
    assert told.text == (f"线索 #{lead_id}（深圳示例科技有限公司）已由 李经理 改派给 赵强，"
                         "您无需再跟进。")


async def test_a_handler_that_breaks_answers_politely_and_keeps_the_event(chat, monkeypatch):
    from sqlalchemy import select as sql_select

    from storage.models import InboundEvent

    await chat.add_members({"name": "王芳", "role": "rep"})

    async def broken(ctx, args):
        raise RuntimeError("boom")

    command = chat.rt.dispatcher.commands["帮助"]
    monkeypatch.setattr(command, "handler", broken)
    [reply] = await chat.say("王芳", "/帮助")
    assert reply.text == "抱歉，处理这条消息时出错了，请稍后再试；错误已记入日志。"
    async with chat.rt.sessions() as session:
        row = await session.scalar(sql_select(InboundEvent))
    assert (row.state, row.outcome, row.payload["text"]) == ("failed", "error", "/帮助")
