"""The weekly assignment analysis: the figures by hand, /分配分析, the Monday review alert."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from bot.app import build_runtime
from config.settings import LeadSettings, SettingsError, load_settings
from handlers.analysis import (
    AcceptedOffer,
    analyse_week,
    judged_weeks,
    review_assignments,
)
from storage.models import Alert, Assignment, Lead, LeadStatusChange, Member, Outgoing, Rule
from tests.conftest import make_settings
from tests.harness import FrozenClock

SHANGHAI = ZoneInfo("Asia/Shanghai")
HOURS = LeadSettings().hours  # 09:00-18:00
RULE_TEXT = "紧急程度=高 且 行业=工业 → 工业转化率>35% 且 未跟进<5"
_companies = itertools.count(1)


def bj(month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    """A moment in 2026, Beijing time (late November and December have no holidays)."""
    return datetime(2026, month, day, hour, minute, tzinfo=SHANGHAI)


def offer(member_id, rule_id, offered, contacted=None, converted=None) -> AcceptedOffer:
    return AcceptedOffer(member_id, rule_id, offered, contacted, converted)


# 王芳 (1) and 赵强 (2); rule 7 and no rule. The week of Monday 23 November 2026.
WEEK_OF_NOV_23 = [
    # on time (90 working minutes); converted after 4 days
    offer(1, 7, bj(11, 23, 10), bj(11, 23, 11, 30), bj(11, 27, 15)),
    # Friday 17:30, contacted Monday 09:30: 30 + 30 working minutes, on time
    offer(1, 7, bj(11, 27, 17, 30), bj(11, 30, 9, 30)),
    # Tuesday 16:30, contacted Wednesday 09:45: 90 + 45 = 135 minutes, late;
    # converted on 2 December 10:00, 7 days and 17.5 hours after the offer: too late
    offer(1, None, bj(11, 24, 16, 30), bj(11, 25, 9, 45), bj(12, 2, 10)),
    # never contacted
    offer(1, 7, bj(11, 25, 10)),
    # Sunday 22:00, contacted Monday 10:59 (the window is Monday 09:00-11:00);
    # converted one minute before its 7 days end
    offer(2, 7, bj(11, 29, 22), bj(11, 30, 10, 59), bj(12, 6, 21, 59)),
    # Thursday 09:00, contacted 11:00: exactly 2 working hours counts as on time
    offer(2, None, bj(11, 26, 9), bj(11, 26, 11)),
    # outside the week on either side: never counted
    offer(2, None, bj(11, 22, 23, 59), bj(11, 23, 9, 1)),
    offer(2, None, bj(11, 30, 0), bj(11, 30, 9, 1)),
]


def test_the_weeks_figures_per_rep_and_per_rule_worked_out_by_hand():
    week = analyse_week(WEEK_OF_NOV_23, bj(11, 23), bj(12, 14, 10), HOURS, SHANGHAI)

    wang, zhao = week.by_rep[1], week.by_rep[2]
    assert (wang.leads, wang.contacted, wang.contact_due) == (4, 2, 4)
    assert (wang.converted, wang.conversion_due) == (1, 4)
    assert (wang.percent("contact"), wang.percent("conversion")) == (50, 25)
    assert (zhao.leads, zhao.contacted, zhao.converted) == (2, 2, 1)
    assert (zhao.percent("contact"), zhao.percent("conversion")) == (100, 50)

    # Rule 7 holds three of 王芳's leads and 赵强's Sunday one.
    rule, no_rule = week.by_rule[7], week.by_rule[None]
    assert (rule.leads, rule.percent("contact"), rule.percent("conversion")) == (4, 75, 50)
    assert (no_rule.leads, no_rule.percent("contact"), no_rule.percent("conversion")) == (
        2, 50, 0)
    assert set(week.by_rep) == {1, 2} and set(week.by_rule) == {7, None}


def test_the_friday_evening_lead_contacted_monday_morning_is_on_time():
    friday = [offer(1, None, bj(11, 27, 17, 30), bj(11, 30, 9, 30))]
    # Its 2 working hours end on Monday at 10:30; from then on it is counted.
    before = analyse_week(friday, bj(11, 23), bj(11, 30, 10, 29), HOURS, SHANGHAI)
    after = analyse_week(friday, bj(11, 23), bj(11, 30, 10, 30), HOURS, SHANGHAI)
    assert before.by_rep[1].percent("contact") is None
    assert (after.by_rep[1].contacted, after.by_rep[1].contact_due) == (1, 1)


def test_leads_whose_seven_days_are_not_over_are_left_out_of_the_conversion_share():
    # On Wednesday 2 December 10:00 only the offers up to 25 November 10:00 are 7 days old.
    week = analyse_week(WEEK_OF_NOV_23, bj(11, 23), bj(12, 2, 10), HOURS, SHANGHAI)
    wang, zhao = week.by_rep[1], week.by_rep[2]
    assert (wang.leads, wang.conversion_due, wang.converted) == (4, 3, 1)
    assert wang.percent("conversion") == 33
    # 赵强's Sunday lead has converted already, but its window is still open.
    assert (zhao.conversion_due, zhao.percent("conversion")) == (0, None)
    assert zhao.percent("contact") == 100


def test_a_contact_from_before_the_offer_is_not_this_offers_first_contact():
    back_from_pool = [offer(1, None, bj(11, 24, 10), bj(11, 20, 10))]
    week = analyse_week(back_from_pool, bj(11, 23), bj(12, 14), HOURS, SHANGHAI)
    assert (week.by_rep[1].contacted, week.by_rep[1].contact_due) == (0, 1)


def test_contact_is_judged_on_last_week_once_mondays_window_is_over():
    monday_noon = judged_weeks(bj(12, 7, 12), HOURS, SHANGHAI)
    assert monday_noon["contact"] == (bj(11, 23), bj(11, 30))
    # A week's 7-day conversion is final only a week after the week ends.
    assert monday_noon["conversion"] == (bj(11, 16), bj(11, 23))
    # At 09:00 the weekend's leads still have their 2 working hours.
    assert judged_weeks(bj(12, 7, 9), HOURS, SHANGHAI)["contact"] == (bj(11, 16), bj(11, 23))


def test_the_thresholds_are_settings_from_0_to_100():
    leads = load_settings().leads
    assert (leads.analysis_contact_percent, leads.analysis_conversion_percent) == (85, 22)
    assert load_settings(leads={"analysis_contact_percent": 90}).leads.analysis_contact_percent \
        == 90
    with pytest.raises(SettingsError, match="SALESBOT_LEADS__ANALYSIS_CONVERSION_PERCENT"):
        load_settings(leads={"analysis_conversion_percent": 101})


# ---- the data, inserted as the engine and the lead flow leave it --------------------------


async def accepted_lead(session, rep_id, offered, *, contacted=None, converted=None,
                        rule_id=None) -> None:
    status = "converted" if converted else "contacted" if contacted else "accepted"
    lead = Lead(company=f"示例科技{next(_companies)}号有限公司", contact="张伟",
                phone="13800001234", status=status, assignee_id=rep_id, assigned_at=offered,
                accepted_at=offered, contacted_at=contacted, created_at=offered)
    session.add(lead)
    await session.flush()
    session.add(Assignment(lead_id=lead.id, member_id=rep_id, state="accepted",
                           method="engine", rule_id=rule_id, offered_at=offered,
                           decided_at=offered))
    if converted:
        session.add(LeadStatusChange(lead_id=lead.id, from_status="contacted",
                                     to_status="converted", at=converted))


ROSTER = [
    {"name": "管理员", "role": "admin"},
    {"name": "李经理", "role": "manager"},
    {"name": "王芳", "role": "rep", "manager": "李经理"},
    {"name": "赵强", "role": "rep", "manager": "李经理"},
    {"name": "陈经理", "role": "manager"},
    {"name": "孙丽", "role": "rep", "manager": "陈经理"},
]


async def _two_teams_two_weeks(chat) -> None:
    """On Wednesday 2 December 10:00 (the chat's clock): last week and this week so far."""
    people = await chat.add_members(*ROSTER)
    wang, zhao, sun = (people[n].id for n in ("王芳", "赵强", "孙丽"))
    async with chat.rt.sessions() as session, session.begin():
        rule = await session.get(Rule, 1)  # the example rule every database starts with
        assert rule.source.startswith(RULE_TEXT)
        # last week
        await accepted_lead(session, wang, bj(11, 23, 10), contacted=bj(11, 23, 10, 30),
                            converted=bj(11, 25, 16), rule_id=rule.id)
        await accepted_lead(session, wang, bj(11, 24, 10), contacted=bj(11, 24, 11),
                            rule_id=rule.id)
        await accepted_lead(session, wang, bj(11, 25, 14), rule_id=rule.id)
        await accepted_lead(session, zhao, bj(11, 26, 9), contacted=bj(11, 26, 9, 30))
        await accepted_lead(session, sun, bj(11, 23, 11), rule_id=rule.id)
        # this week
        await accepted_lead(session, wang, bj(11, 30, 9, 10), contacted=bj(11, 30, 9, 20),
                            rule_id=rule.id)
        await accepted_lead(session, zhao, bj(12, 2, 9))  # its 2 hours end at 11:00
        await accepted_lead(session, sun, bj(12, 1, 15), contacted=bj(12, 2, 9, 40),
                            rule_id=rule.id)


async def test_a_manager_sees_this_week_and_last_week_for_their_own_reps(chat):
    await _two_teams_two_weeks(chat)
    [reply] = await chat.say("李经理", "/分配分析")
    assert reply.text.split("\n") == [
        "分配分析（李经理 的团队）",
        "【本周 11-30–12-06，截至 12-02 10:00】",
        "销售｜条数｜2小时联系｜7天转化",
        "王芳｜1｜100%｜—",
        "赵强｜1｜—｜—",
        "规则｜条数｜2小时联系｜7天转化",
        "#1 紧急程度=高 且 行业=工业…｜1｜100%｜—",
        "无规则｜1｜—｜—",
        "【上周 11-23–11-29】",
        "销售｜条数｜2小时联系｜7天转化",
        "王芳｜3｜67%⚠｜50%",
        "赵强｜1｜100%｜—",
        "规则｜条数｜2小时联系｜7天转化",
        "#1 紧急程度=高 且 行业=工业…｜3｜67%⚠｜50%",
        "无规则｜1｜100%｜—",
        "⚠ 低于阈值（2小时首次联系 85%，7天转化 22%）。"
        "分配后满2个工作小时、满7天才计入对应比例，未满的显示为「—」。",
    ]


async def test_an_admin_sees_every_team_and_the_rules_over_all_of_them(chat):
    await _two_teams_two_weeks(chat)
    [reply] = await chat.say("管理员", "分配分析")
    lines = reply.text.split("\n")
    assert lines[0] == "分配分析（全部销售）"
    this_week, last_week = lines.index("【本周 11-30–12-06，截至 12-02 10:00】"), lines.index(
        "【上周 11-23–11-29】")
    assert lines[this_week + 1:last_week] == [
        "销售｜条数｜2小时联系｜7天转化",
        "孙丽｜1｜0%⚠｜—",  # contacted the next morning: late
        "王芳｜1｜100%｜—",
        "赵强｜1｜—｜—",
        "规则｜条数｜2小时联系｜7天转化",
        "#1 紧急程度=高 且 行业=工业…｜2｜50%⚠｜—",
        "无规则｜1｜—｜—",
    ]
    assert lines[last_week + 1:last_week + 8] == [
        "销售｜条数｜2小时联系｜7天转化",
        "孙丽｜1｜0%⚠｜0%⚠",
        "王芳｜3｜67%⚠｜50%",
        "赵强｜1｜100%｜—",
        "规则｜条数｜2小时联系｜7天转化",
        "#1 紧急程度=高 且 行业=工业…｜4｜50%⚠｜33%",
        "无规则｜1｜100%｜—",
    ]


async def test_a_rep_is_refused_the_analysis(chat):
    await _two_teams_two_weeks(chat)
    [reply] = await chat.say("王芳", "/分配分析")
    assert reply.text == "「分配分析」只对经理、管理员开放。发送 /帮助 查看您可用的命令。"


async def test_a_manager_without_reps_sees_empty_weeks(chat):
    await chat.add_members({"name": "周经理", "role": "manager"})
    [reply] = await chat.say("周经理", "/分配分析")
    assert reply.text.split("\n")[1:5] == [
        "【本周 11-30–12-06，截至 12-02 10:00】", "暂无已接受的线索。",
        "【上周 11-23–11-29】", "暂无已接受的线索。",
    ]


# ---- the Monday job -----------------------------------------------------------------------


@pytest.fixture
def shared_settings(db_url):
    """The job's story runs on SQLite and on PostgreSQL."""
    return make_settings(db_url)


async def _job_runtime(settings, at: datetime):
    rt = build_runtime(settings)
    rt.clock = FrozenClock(at.astimezone(UTC))
    async with rt.sessions() as session, session.begin():
        for name, role in (("管理员", "admin"), ("王芳", "rep"), ("赵强", "rep")):
            session.add(Member(name=name, role=role, status="active", industries=[]))
        rule = Rule(source=RULE_TEXT, parsed={})
        session.add(rule)
    return rt


async def _ids(rt) -> dict[str, int]:
    async with rt.sessions() as session:
        return dict((await session.execute(select(Member.name, Member.id))).all())


async def _alerts_sent(rt) -> list[str]:
    async with rt.sessions() as session:
        admin = await session.scalar(select(Member.id).where(Member.name == "管理员"))
        return list((await session.scalars(
            select(Outgoing.payload).where(Outgoing.recipient == f"member:{admin}")
        )).all())


async def _weeks_of_wang(rt, *, late_on: list[datetime], on_time_on: list[datetime]) -> None:
    """王芳's leads (no rule) contacted the next day or within the hour; 赵强's (rule #1)
    always within the hour. Every lead converts three days later."""
    ids = await _ids(rt)
    async with rt.sessions() as session, session.begin():
        for day in late_on + on_time_on:
            contacted = day + timedelta(days=1) if day in late_on else day + timedelta(
                minutes=30)
            await accepted_lead(session, ids["王芳"], day, contacted=contacted,
                                converted=day + timedelta(days=3))
            await accepted_lead(session, ids["赵强"], day, contacted=day + timedelta(minutes=20),
                                converted=day + timedelta(days=3), rule_id=1)


async def test_two_bad_weeks_in_a_row_raise_one_rule_review_alert_until_a_good_week(
    shared_settings,
):
    rt = await _job_runtime(shared_settings, bj(12, 7, 12))
    try:
        # 王芳 contacted her leads of 24 November and 1 December a day late.
        await _weeks_of_wang(rt, late_on=[bj(11, 24, 10), bj(12, 1, 10)], on_time_on=[])
        found = await review_assignments(rt)
        assert [(f.kind, f.subject, f.measure) for f in found] == [
            ("rep", (await _ids(rt))["王芳"], "contact"), ("rule", None, "contact")]
        await review_assignments(rt)  # a second run that week tells nobody again

        [alert] = await _alerts_sent(rt)
        assert alert["text"].split("\n") == [
            "分配规则复核：以下销售或规则连续两个完整周低于阈值"
            "（2小时首次联系 85%，7天转化 22%），请复核分配规则和权重。",
            "· 销售 王芳：2小时首次联系 11-23起一周 0%（1 条）、11-30起一周 0%（1 条）",
            "· 规则 无规则：2小时首次联系 11-23起一周 0%（1 条）、11-30起一周 0%（1 条）",
        ]
        async with rt.sessions() as session:
            assert await session.get(Alert, "assignment_review:2026-12-07") is not None

        # The next week she is on time again: the episode closes, nobody is told.
        await _weeks_of_wang(rt, late_on=[], on_time_on=[bj(12, 8, 10)])
        rt.clock = FrozenClock(bj(12, 14, 12).astimezone(UTC))
        assert await review_assignments(rt) == []
        assert len(await _alerts_sent(rt)) == 1
        async with rt.sessions() as session:
            assert (await session.scalars(select(Alert.key))).all() == []
    finally:
        await rt.close()


async def test_one_bad_week_raises_no_alert(settings):
    rt = await _job_runtime(settings, bj(12, 7, 12))
    try:
        await _weeks_of_wang(rt, late_on=[bj(12, 1, 10)], on_time_on=[bj(11, 24, 10)])
        assert await review_assignments(rt) == []
        assert await _alerts_sent(rt) == []
    finally:
        await rt.close()


async def test_the_conversion_is_judged_on_the_two_weeks_whose_seven_days_are_over(settings):
    rt = await _job_runtime(settings, bj(12, 7, 12))
    try:
        ids = await _ids(rt)
        async with rt.sessions() as session, session.begin():
            # Contacted on time, never converted, in the weeks of 16 and 23 November.
            for day in (bj(11, 17, 10), bj(11, 24, 10)):
                await accepted_lead(session, ids["赵强"], day,
                                    contacted=day + timedelta(minutes=15), rule_id=1)
        found = await review_assignments(rt)
        assert [(f.kind, f.measure) for f in found] == [("rep", "conversion"),
                                                        ("rule", "conversion")]
        [alert] = await _alerts_sent(rt)
        assert "· 规则 #1 紧急程度=高 且 行业=工业…：7天转化 11-16起一周 0%（1 条）、" \
            "11-23起一周 0%（1 条）" in alert["text"]
    finally:
        await rt.close()

