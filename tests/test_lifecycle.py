"""The lead's life after acceptance: the first-contact SLA, the public pool, /流失, /重开.

The deadlines are pure functions, checked to the minute across nights, weekends and the
2026 Spring Festival (off 02-15 to 02-23, make-up working Saturdays 02-14 and 02-28).
"""

from __future__ import annotations

from datetime import UTC

import pytest
from sqlalchemy import select, update

from handlers.lifecycle import hours_text, pool_deadline, sla_deadline, working_day_minutes
from scheduler.sweeps import sweep_once
from storage.models import Assignment, AuditLog, Lead, LeadStatusChange
from tests.conftest import make_settings
from tests.test_calendar import HOURS, ZONE, bj
from tests.test_lead_flow import ROSTER, _declined_by_everyone, _lead, _post_lead

COMPANY = "深圳示例科技有限公司"


@pytest.fixture
def settings(db_url):
    """The sweeps' date queries run on SQLite and on PostgreSQL."""
    return make_settings(db_url)

# ---- the deadlines ---------------------------------------------------------------------


def test_the_sla_inside_one_working_day():
    assert sla_deadline(bj(2026, 12, 2, 10, 0), 2, HOURS, ZONE) == bj(2026, 12, 2, 12, 0)


def test_the_sla_of_a_lead_assigned_late_runs_on_the_next_morning():
    assert sla_deadline(bj(2026, 12, 2, 17, 0), 2, HOURS, ZONE) == bj(2026, 12, 3, 10, 0)
    assert sla_deadline(bj(2026, 12, 2, 22, 0), 2, HOURS, ZONE) == bj(2026, 12, 3, 11, 0)


def test_the_sla_of_a_friday_evening_lead_runs_on_monday():
    assert sla_deadline(bj(2026, 12, 4, 17, 30), 2, HOURS, ZONE) == bj(2026, 12, 7, 10, 30)


def test_the_sla_runs_on_the_make_up_saturday_and_sleeps_through_the_spring_festival():
    assert sla_deadline(bj(2026, 2, 13, 17, 0), 2, HOURS, ZONE) == bj(2026, 2, 14, 10, 0)
    assert sla_deadline(bj(2026, 2, 14, 17, 30), 2, HOURS, ZONE) == bj(2026, 2, 24, 10, 30)
    assert sla_deadline(bj(2026, 2, 14, 17, 0), 1.5, HOURS, ZONE) == bj(2026, 2, 24, 9, 30)


def test_the_pool_period_is_whole_working_days_after_the_last_follow_up():
    assert working_day_minutes(HOURS) == 540
    # Wednesday 15:00 + 7 working days: Thu, Fri, Mon, Tue, Wed, Thu, Fri.
    assert pool_deadline(bj(2026, 12, 2, 15, 0), 7, HOURS, ZONE) == bj(2026, 12, 11, 15, 0)
    # A follow-up logged at night counts from the next morning: seven full days.
    assert pool_deadline(bj(2026, 12, 2, 21, 0), 7, HOURS, ZONE) == bj(2026, 12, 11, 18, 0)
    assert pool_deadline(bj(2026, 12, 4, 15, 0), 2, HOURS, ZONE) == bj(2026, 12, 8, 15, 0)


def test_the_pool_period_counts_both_make_up_saturdays_of_the_spring_festival():
    # Thu 02-12 15:00 + 7: Fri 13, Sat 14, Tue 24, Wed 25, Thu 26, Fri 27, Sat 28.
    assert pool_deadline(bj(2026, 2, 12, 15, 0), 7, HOURS, ZONE) == bj(2026, 2, 28, 15, 0)
    assert pool_deadline(bj(2026, 2, 13, 15, 0), 2, HOURS, ZONE) == bj(2026, 2, 24, 15, 0)


def test_working_hours_are_said_as_people_say_them():
    assert (hours_text(120), hours_text(150), hours_text(119.9)) == ("2", "2.5", "2")


# ---- the SLA in the chat ---------------------------------------------------------------


async def _sweep(chat, at=None, **delta):
    if at is not None:
        chat.rt.clock.now = at.astimezone(UTC)
    chat.rt.clock.advance(**delta)
    await sweep_once(chat.rt)
    await chat.settle()


async def _accepted_by(chat, rep, company=COMPANY):
    lead_id = await _post_lead(chat, company)
    [card] = await chat.inbox(rep)
    await chat.click(rep, card.button("接受"), card.card_id)
    return lead_id


async def _assignment_states(chat, lead_id):
    async with chat.rt.sessions() as session:
        rows = await session.execute(select(Assignment.member_id, Assignment.state)
                                     .where(Assignment.lead_id == lead_id)
                                     .order_by(Assignment.id))
        return [tuple(row) for row in rows.all()]


async def test_no_first_contact_in_two_working_hours_moves_the_lead_and_tells_everyone(chat):
    team = await chat.add_members(*ROSTER, {"name": "孙磊", "role": "rep", "manager": "李经理"})
    lead_id = await _accepted_by(chat, "王芳")  # Wednesday 10:00

    await _sweep(chat, hours=1, minutes=59)
    assert (await _lead(chat, lead_id)).assignee_id == team["王芳"].id
    assert await chat.inbox("李经理") == []

    await _sweep(chat, minutes=1)
    [told] = await chat.inbox("王芳")
    assert told.text == (f"线索 #{lead_id}（{COMPANY}）分配后 2 个工作小时内没有登记首次联系，"
                         "已转给其他同事，您无需再跟进。")
    [offered] = await chat.inbox("赵强")
    assert offered.card.title == f"新线索 #{lead_id}"
    [sla] = await chat.inbox("李经理")
    assert (sla.card.kind, sla.card.title) == ("sla", f"线索 #{lead_id} 超时未联系")
    assert sla.card.description == ("王芳 接手后 2 个工作小时未登记首次联系"
                                    "（时限 2 个工作小时）。已转给 赵强。")
    fields = {f.label: f.value for f in sla.card.fields}
    assert (fields["未联系的销售"], fields["分配时间"], fields["现在负责"]) == (
        "王芳", "12-02 10:00", "赵强")
    assert sla.button("改派") == f"reassign:{lead_id}"
    lead = await _lead(chat, lead_id)
    assert (lead.status, lead.assignee_id, lead.reroutes) == ("assigned", team["赵强"].id, 1)
    assert await _assignment_states(chat, lead_id) == [
        (team["王芳"].id, "sla_missed"), (team["赵强"].id, "offered")]

    # The manager overrides the re-route from the SLA card.
    [ask] = await chat.click("李经理", sla.button("改派"), sla.card_id)
    assert ask.text == f"线索 #{lead_id} 要指派给谁？请回复销售的姓名，例如：王二"
    [done] = await chat.say("李经理", "孙磊")
    assert done.text == f"线索 #{lead_id} 已指派给 孙磊。"
    [card] = await chat.inbox("孙磊")
    assert card.card.description == "经理 李经理 指派给您"
    assert (await chat.card(sla.card_id)).buttons == []
    assert (await chat.card(offered.card_id)).status == "线索已改派，此卡片失效"


async def test_the_rep_who_missed_the_sla_is_skipped_when_the_lead_goes_round_again(chat):
    await chat.add_members(*ROSTER)
    lead_id = await _accepted_by(chat, "王芳")
    await _sweep(chat, hours=2)
    [card] = await chat.inbox("赵强")
    await chat.click("赵强", card.button("拒绝"), card.card_id)
    await chat.say("赵强", "不熟悉")
    lead = await _lead(chat, lead_id)
    assert (lead.status, lead.assignee_id, lead.reroutes) == ("new", None, 2)
    assert [m for m in await chat.inbox("王芳") if m.card is not None] == []


async def test_an_sla_miss_after_two_declines_leaves_the_decision_to_the_manager(chat):
    await chat.add_members(*ROSTER, {"name": "孙磊", "role": "rep", "manager": "李经理"})
    lead_id = await _post_lead(chat)
    await _declined_by_everyone(chat, ("王芳", "赵强"))
    [card] = await chat.inbox("孙磊")
    await chat.click("孙磊", card.button("接受"), card.card_id)
    await chat.inbox("李经理")
    await _sweep(chat, hours=2)
    lead = await _lead(chat, lead_id)
    assert (lead.status, lead.assignee_id, lead.reroutes) == ("new", None, 3)
    [sla] = await chat.inbox("李经理")
    assert sla.card.description.endswith("已改派 3 次，请指派一位销售。")
    assert {f.label: f.value for f in sla.card.fields}["现在负责"] == "待分配"
    [ask] = await chat.click("李经理", sla.button("改派"), sla.card_id)
    assert "要指派给谁" in ask.text
    [done] = await chat.say("李经理", "赵强")
    assert done.text == f"线索 #{lead_id} 已指派给 赵强。"


async def test_a_lead_taken_at_ten_at_night_is_not_bounced_through_the_night(chat):
    team = await chat.add_members(*ROSTER)
    chat.rt.clock.now = bj(2026, 12, 2, 21, 50).astimezone(UTC)
    await chat.say("王芳", "/上班")  # only she is on duty tonight
    chat.rt.clock.advance(minutes=10)
    lead_id = await _accepted_by(chat, "王芳")

    for moment in (bj(2026, 12, 2, 23, 59), bj(2026, 12, 3, 9, 0), bj(2026, 12, 3, 10, 59)):
        await _sweep(chat, at=moment)
        assert (await _lead(chat, lead_id)).assignee_id == team["王芳"].id, moment
    await _sweep(chat, at=bj(2026, 12, 3, 11, 0))
    assert (await _lead(chat, lead_id)).assignee_id == team["赵强"].id
    [sla] = await chat.inbox("李经理")
    assert {f.label: f.value for f in sla.card.fields}["分配时间"] == "12-02 22:00"


async def test_the_sla_runs_on_the_make_up_saturday_before_the_spring_festival(chat):
    team = await chat.add_members(*ROSTER)
    chat.rt.clock.now = bj(2026, 2, 13, 17, 0).astimezone(UTC)
    lead_id = await _accepted_by(chat, "王芳")
    await _sweep(chat, at=bj(2026, 2, 14, 9, 59))
    assert (await _lead(chat, lead_id)).assignee_id == team["王芳"].id
    await _sweep(chat, at=bj(2026, 2, 14, 10, 0))
    assert (await _lead(chat, lead_id)).assignee_id == team["赵强"].id


async def test_a_logged_first_contact_stops_the_sla_clock(chat):
    team = await chat.add_members(*ROSTER)
    lead_id = await _accepted_by(chat, "王芳")
    chat.rt.clock.advance(hours=1)
    await chat.say("王芳", "记录 已电话沟通")
    await _sweep(chat, hours=5)
    lead = await _lead(chat, lead_id)
    assert (lead.status, lead.assignee_id) == ("contacted", team["王芳"].id)


# ---- the public pool -------------------------------------------------------------------


async def test_a_contacted_lead_quiet_for_seven_working_days_goes_back_to_the_pool(chat):
    team = await chat.add_members(*ROSTER, {"name": "钱客服", "role": "service"})
    lead_id = await _accepted_by(chat, "王芳")
    await chat.say("王芳", "记录 已电话沟通，等客户回复")  # Wednesday 12-02 10:00
    # Service attaching a call is no sales follow-up: the pool clock keeps running.
    await _sweep(chat, at=bj(2026, 12, 7, 10, 0))
    [logged] = await chat.say("钱客服", f"记录 {lead_id} 客户来电咨询发票")
    assert logged.text == f"已记录到线索 #{lead_id}（{COMPANY}）。"

    await _sweep(chat, at=bj(2026, 12, 11, 9, 59))
    assert (await _lead(chat, lead_id)).status == "contacted"
    await _sweep(chat, at=bj(2026, 12, 11, 10, 0))

    lead = await _lead(chat, lead_id)
    assert (lead.status, lead.assignee_id, lead.pool_returns, lead.reroutes,
            lead.contacted_at) == ("assigned", team["赵强"].id, 1, 0, None)
    [told] = await chat.inbox("王芳")
    assert told.text == (f"线索 #{lead_id}（{COMPANY}）已 7 个工作日没有跟进，已退回公海重新分配，"
                         "您无需再跟进。")
    [notice] = await chat.inbox("李经理")
    assert notice.text == (f"线索 #{lead_id}（{COMPANY}）在 王芳 名下 7 个工作日没有跟进"
                           "（上次跟进 12-02 10:00），已退回公海，已转给 赵强。")
    [card] = await chat.inbox("赵强")
    assert card.card.title == f"新线索 #{lead_id}"
    async with chat.rt.sessions() as session:
        history = (await session.execute(
            select(LeadStatusChange.from_status, LeadStatusChange.to_status,
                   LeadStatusChange.reason)
            .where(LeadStatusChange.lead_id == lead_id).order_by(LeadStatusChange.id)
        )).all()
    assert tuple(history[-2])[:3] == ("contacted", "new", "7 个工作日未跟进，退回公海")
    assert tuple(history[-1])[:2] == ("new", "assigned")


async def test_a_follow_up_by_the_rep_restarts_the_pool_clock(chat):
    await chat.add_members(*ROSTER)
    lead_id = await _accepted_by(chat, "王芳")
    await chat.say("王芳", "记录 已电话沟通")
    chat.rt.clock.now = bj(2026, 12, 10, 10, 0).astimezone(UTC)
    await chat.say("王芳", f"记录 {lead_id} 客户要报价单")
    await _sweep(chat, at=bj(2026, 12, 11, 10, 0))
    assert (await _lead(chat, lead_id)).status == "contacted"
    await _sweep(chat, at=bj(2026, 12, 21, 9, 59))
    assert (await _lead(chat, lead_id)).status == "contacted"
    await _sweep(chat, at=bj(2026, 12, 21, 10, 0))
    assert (await _lead(chat, lead_id)).pool_returns == 1


async def test_with_nobody_else_on_duty_the_queue_offers_the_pooled_lead_afresh(chat):
    team = await chat.add_members(*ROSTER)
    lead_id = await _accepted_by(chat, "王芳")
    await chat.say("王芳", "记录 已电话沟通")
    chat.rt.clock.now = bj(2026, 12, 11, 9, 30).astimezone(UTC)
    await chat.say("赵强", "/下班")
    await _sweep(chat, at=bj(2026, 12, 11, 10, 0))
    told, card = await chat.inbox("王芳")
    assert told.text == (f"线索 #{lead_id}（{COMPANY}）已 7 个工作日没有跟进，已退回公海，"
                         "等待重新分配。")
    assert card.card.title == f"新线索 #{lead_id}"  # a new offer, to accept again
    lead = await _lead(chat, lead_id)
    assert (lead.status, lead.assignee_id, lead.pool_returns) == (
        "assigned", team["王芳"].id, 1)
    [notice] = await chat.inbox("李经理")
    assert notice.text.endswith("已退回公海，暂无可接单的销售，已进入待分配队列。")


# ---- /流失 and /重开 ---------------------------------------------------------------------


async def test_a_rep_closes_a_lead_as_lost_only_with_a_reason_and_only_their_own(chat):
    await chat.add_members(*ROSTER)
    lead_id = await _accepted_by(chat, "王芳")
    [usage] = await chat.say("王芳", f"/流失 {lead_id}")
    assert usage.text == "用法：/流失 线索号 原因，例如：/流失 12 客户已选用其他供应商"
    [refused] = await chat.say("赵强", f"/流失 {lead_id} 客户不需要")
    assert refused.text == f"线索 #{lead_id} 不在您的名下，不能标记流失。"
    assert (await _lead(chat, lead_id)).status == "accepted"

    [done] = await chat.say("王芳", f"流失 #{lead_id} 客户已选用其他供应商")
    assert done.text == f"已将线索 #{lead_id}（{COMPANY}）标记为流失，原因：客户已选用其他供应商。"
    lead = await _lead(chat, lead_id)
    assert (lead.status, lead.lost_reason) == ("lost", "客户已选用其他供应商")
    async with chat.rt.sessions() as session:
        change = await session.scalar(
            select(LeadStatusChange).where(LeadStatusChange.lead_id == lead_id)
            .order_by(LeadStatusChange.id.desc()).limit(1))
        audited = await session.scalar(select(AuditLog).where(AuditLog.action == "lead.lost"))
    assert (change.from_status, change.to_status, change.reason) == (
        "accepted", "lost", "客户已选用其他供应商")
    assert (audited.actor, audited.after) == (
        "王芳", {"status": "lost", "reason": "客户已选用其他供应商"})

    [again] = await chat.say("王芳", f"/流失 {lead_id} 重复")
    assert again.text == (f"线索 #{lead_id} 已经是流失状态（原因：客户已选用其他供应商）。"
                          f"经理可发送 /重开 {lead_id} 重新打开。")


async def test_a_converted_lead_cannot_be_lost(chat):
    await chat.add_members(*ROSTER)
    lead_id = await _accepted_by(chat, "王芳")
    async with chat.rt.sessions() as session, session.begin():
        await session.execute(update(Lead).where(Lead.id == lead_id).values(status="converted"))
    [reply] = await chat.say("李经理", f"/流失 {lead_id} 不要了")
    assert reply.text == f"线索 #{lead_id} 已转化为客户，不能标记流失。"


async def test_the_manager_closes_an_offered_lead_and_the_card_is_closed(chat):
    await chat.add_members(*ROSTER, {"name": "周经理", "role": "manager"})
    lead_id = await _post_lead(chat)
    [card] = await chat.inbox("王芳")
    [refused] = await chat.say("周经理", f"/流失 {lead_id} 重复线索")
    assert refused.text == f"线索 #{lead_id} 不属于您团队的销售，不能操作。"

    [done] = await chat.say("李经理", f"/流失 {lead_id} 重复线索")
    assert done.text == f"已将线索 #{lead_id}（{COMPANY}）标记为流失，原因：重复线索。"
    closed = await chat.card(card.card_id)
    assert (closed.buttons, closed.status) == ([], "李经理 已于 12-02 10:00 标记流失")
    [told] = await chat.inbox("王芳")
    assert told.text == f"线索 #{lead_id}（{COMPANY}）已由 李经理 标记为流失，原因：重复线索。"
    assert [state for _, state in await _assignment_states(chat, lead_id)] == ["withdrawn"]
    [stale] = await chat.click("王芳", card.button("接受"), card.card_id)
    assert "卡片已经失效" in stale.text


async def test_the_manager_reopens_a_lost_lead_for_its_last_owner(chat):
    team = await chat.add_members(*ROSTER)
    lead_id = await _accepted_by(chat, "王芳")
    await chat.say("王芳", "记录 已电话沟通")
    await chat.say("王芳", f"/流失 {lead_id} 预算取消")
    [nope] = await chat.say("王芳", f"/重开 {lead_id}")
    assert nope.text.startswith("「重开」只对经理、管理员开放")

    chat.rt.clock.advance(days=1)
    [done] = await chat.say("李经理", f"/重开 {lead_id}")
    assert done.text == f"已重开线索 #{lead_id}（{COMPANY}），交还给 王芳。"
    [told] = await chat.inbox("王芳")
    assert told.text == (f"线索 #{lead_id}（{COMPANY}）已由 李经理 重新打开并交还给您，"
                         "请尽快联系客户并「记录」跟进。")
    lead = await _lead(chat, lead_id)
    # it had been contacted: it comes back as contacted, its follow-up still counting
    assert (lead.status, lead.assignee_id, lead.lost_reason) == (
        "contacted", team["王芳"].id, None)
    assert lead.last_activity_at == chat.rt.now()  # the pool timer counts from now

    [again] = await chat.say("李经理", f"/重开 {lead_id}")
    assert again.text == f"线索 #{lead_id} 目前是「跟进中」，只有已流失的线索可以重开。"
    [usage] = await chat.say("李经理", "/重开")
    assert usage.text == "用法：/重开 线索号，例如：/重开 12"


async def test_a_lead_lost_before_anyone_took_it_reopens_into_the_engine(chat):
    await chat.add_members(*ROSTER)
    lead_id = await _post_lead(chat)  # offered to 王芳, never accepted
    await chat.say("李经理", f"/流失 {lead_id} 信息不全")
    [done] = await chat.say("李经理", f"/重开 {lead_id}")
    lead = await _lead(chat, lead_id)
    assert lead.status == "assigned" and lead.lost_reason is None
    assert done.text.startswith(f"线索 #{lead_id} 从没有销售接受过，已重开并重新进入分配：分给 ")


async def test_help_shows_lost_to_reps_and_reopen_to_managers(chat):
    await chat.add_members(*ROSTER)
    [rep_help] = await chat.say("王芳", "/帮助")
    [boss_help] = await chat.say("李经理", "/帮助")
    assert "/流失 线索号 原因" in rep_help.text and "/重开" not in rep_help.text
    assert "/流失 线索号 原因" in boss_help.text and "/重开 线索号" in boss_help.text
