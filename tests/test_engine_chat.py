"""The engine in the chat: who gets the card and why, the admins' commands, three answers
to three situations (a rule nobody meets, nobody available, the engine off or failing)."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select

from handlers.intake import LeadInput, create_lead
from storage.models import Alert, Assignment, AuditLog, ConfigValue, Lead, Member, Outgoing

ROSTER = [
    {"name": "管理员甲", "role": "admin"},
    {"name": "管理员乙", "role": "admin"},
    {"name": "李经理", "role": "manager"},
    {"name": "王芳", "role": "rep", "manager": "李经理", "team": "华南"},
    {"name": "赵强", "role": "rep", "manager": "李经理", "team": "华北"},
]


async def post(chat, industry="medical", urgency="medium", n=1):
    ids = []
    async with chat.rt.sessions() as session, session.begin():
        for i in range(n):
            lead, _ = await create_lead(session, chat.rt, LeadInput(
                company=f"广州示例{industry}{i}有限公司", contact="陈静",
                phone=f"1380000{i:04d}", industry=industry,
                urgency=urgency, source="expo"), chat.rt.now(), origin="api")
            ids.append(lead.id)
    await chat.settle()
    return ids


async def give_history(chat, name, industry, accepted, converted):
    """Leads the rep accepted three weeks ago, `converted` of them converted."""
    async with chat.rt.sessions() as session, session.begin():
        member = await session.scalar(select(Member).where(Member.name == name))
        when = chat.rt.now() - timedelta(days=20)  # old enough for its outcome to count
        for n in range(accepted):
            lead = Lead(company=f"历史客户{name}{n}", contact="周明", industry=industry,
                        status="converted" if n < converted else "contacted",
                        assignee_id=member.id, contacted_at=when, urgency="low",
                        source="expo")
            session.add(lead)
            await session.flush()
            session.add(Assignment(lead_id=lead.id, member_id=member.id, state="accepted",
                                   method="engine", offered_at=when, decided_at=when))


async def assignment_of(chat, lead_id):
    async with chat.rt.sessions() as session:
        return await session.scalar(
            select(Assignment).where(Assignment.lead_id == lead_id)
            .order_by(Assignment.id.desc()).limit(1))


async def alerts_to(chat, name):
    return [m.text for m in await chat.inbox(name)]


async def test_the_rep_with_the_better_record_gets_the_card_and_it_says_why(chat):
    await chat.add_members(*ROSTER)
    await give_history(chat, "赵强", "medical", accepted=20, converted=10)
    await give_history(chat, "王芳", "medical", accepted=20, converted=1)
    await chat.say("王芳", "/上班")
    await chat.say("赵强", "/上班")
    # both have 20 contacted leads, none open; 赵强 converts better in 医疗
    [lead_id] = await post(chat, "medical")
    [card] = await chat.inbox("赵强")
    assert card.card.title == f"新线索 #{lead_id}"
    # team prior 11/40 = 0.275; (10 + 5*0.275) / 25 = 0.455 → 46 %, scored 0.91; no open
    # lead scores 1; on duty since just now: 0 minutes online. (30 + 40*0.91) / 100 = 66.4
    assert card.card.description == "推荐理由：近30天医疗转化率 46%，未跟进线索 0 条（综合 66 分）"
    assignment = await assignment_of(chat, lead_id)
    assert assignment.method == "engine"
    assert assignment.scores["weights"] == {"load": 30, "conversion": 40, "online": 30}
    assert assignment.scores["values"]["conversion"] == 0.455
    assert assignment.scores["parts"] == {"load": 1.0, "conversion": 0.91, "online": 0.0}
    assert assignment.scores["candidates"] == 2


async def test_an_admin_changes_the_weights_and_the_next_lead_follows_them(chat):
    await chat.add_members(*ROSTER)
    [reply] = await chat.say("管理员甲", "/权重 负载=30 转化=40 在线=31")
    assert reply.text.startswith("权重未修改：三项权重之和须为 100，现在是 101")
    [reply] = await chat.say("管理员甲", "/权重 负载=-5 转化=75 在线=30")
    assert "「负载=-5」的权重须是 0 到 100 的整数" in reply.text
    [reply] = await chat.say("王芳", "/权重 负载=100 转化=0 在线=0")
    assert "只对管理员开放" in reply.text
    [reply] = await chat.say("管理员甲", "/权重 负载=100 转化=0 在线=0")
    assert reply.text == "权重已更新为 负载=100 转化=0 在线=0，从下一条线索起生效。"
    async with chat.rt.sessions() as session:
        row = await session.get(ConfigValue, "engine.weights")
        audit = await session.scalar(select(AuditLog).where(AuditLog.action == "config.set"))
    assert row.value == {"load": 100, "conversion": 0, "online": 0}
    assert (audit.actor, audit.after) == ("管理员甲", row.value)
    [lead_id] = await post(chat)
    assert (await assignment_of(chat, lead_id)).scores["weights"]["load"] == 100
    [reply] = await chat.say("管理员乙", "/权重")
    assert reply.text.startswith("当前权重：负载=100 转化=0 在线=0（管理员设置）")


async def test_rules_are_listed_added_tested_disabled_and_deleted(chat):
    await chat.add_members(*ROSTER)
    [reply] = await chat.say("管理员甲", "/规则 列表")
    assert reply.text.splitlines()[1] == (
        "#1 [启用] 紧急程度=高 且 行业=工业 → 工业转化率>35% 且 未跟进<5 否则 全部")
    [reply] = await chat.say("管理员甲", "/规则 添加 行业=医疗 → 团队=华北 否则 名单=王芳")
    assert reply.text == "已添加规则 #2：行业=医疗 → 团队=华北 否则 名单=王芳"
    [reply] = await chat.say("管理员甲", "/规则 添加 行业=医学 → 团队=华北")
    assert reply.text.startswith("规则未添加：「医学」不是行业的选项，可选：工业、医疗、教育")
    [reply] = await chat.say("管理员甲", "/规则 测试 2")
    lines = reply.text.splitlines()
    assert lines[0] == "规则 #2 测试，样例线索：紧急程度=中 行业=医疗 来源=展会"
    assert lines[1] == "符合要求的在岗销售 1 人：赵强"
    assert lines[2].startswith("这条线索会分给：赵强。推荐理由：")
    assert lines[2].endswith("；符合规则 #2")
    [reply] = await chat.say("管理员甲", "/规则 测试 1 行业=教育")
    assert reply.text.splitlines()[1] == "样例线索不满足规则的条件，本规则不会生效。"
    [reply] = await chat.say("管理员甲", "/规则 测试 1")
    assert reply.text.splitlines()[1] == "没有在岗销售符合要求，将按兜底「全部」分配。"
    [reply] = await chat.say("管理员甲", "/规则 停用 1")
    assert reply.text == "规则 #1 已停用。"
    [reply] = await chat.say("管理员甲", "/规则 删除 2")
    assert reply.text == "已删除规则 #2。"
    [reply] = await chat.say("管理员甲", "/规则 列表")
    assert reply.text.splitlines()[1:] == [
        "#1 [停用] 紧急程度=高 且 行业=工业 → 工业转化率>35% 且 未跟进<5 否则 全部"]
    [reply] = await chat.say("管理员甲", "/规则 启用 9")
    assert reply.text == "没有编号为 9 的规则。发送 /规则 列表 查看。"
    async with chat.rt.sessions() as session:
        actions = (await session.scalars(
            select(AuditLog.action).where(AuditLog.object_type == "rule").order_by(AuditLog.id)
        )).all()
    assert actions == ["rule.add", "rule.disable", "rule.delete"]
    [reply] = await chat.say("管理员甲", "/规则 添加 行业=教育 → 在线小时>1 否则 名单=李经理")
    assert reply.text == "规则未添加：「李经理」不是名单里的销售"
    [reply] = await chat.say("管理员甲", "/规则 添加 行业=教育 → 团队=华东")
    assert reply.text == "规则未添加：「华东」不是销售的团队，现有：华北、华南"
    [reply] = await chat.say("管理员甲", "/规则 删除")
    assert reply.text.startswith("用法：/规则 列表")


async def test_a_matching_rule_picks_the_reps_and_a_rule_nobody_meets_falls_back_quietly(chat):
    await chat.add_members(*ROSTER)
    await chat.say("管理员甲", "/规则 添加 行业=医疗 → 团队=华北 否则 全部")
    [medical] = await post(chat, "medical")
    assignment = await assignment_of(chat, medical)
    assert (await chat.inbox("赵强"))[0].card.description.endswith("；符合规则 #2")
    assert assignment.rule_id == 2 and assignment.scores["rule_outcome"] == "qualified"
    await chat.say("赵强", "/下班")  # the only 华北 rep leaves: nobody meets the rule
    [second] = await post(chat, "medical")
    assignment = await assignment_of(chat, second)
    assert assignment.member_id == 4  # 王芳, by the fallback
    assert assignment.scores["rule_outcome"] == "fallback"
    assert "符合规则" not in (await chat.inbox("王芳"))[0].card.description
    assert await alerts_to(chat, "管理员甲") == []  # silently


async def test_engine_off_means_round_robin_and_one_alert_then_back_on(chat):
    await chat.add_members(*ROSTER)
    [reply] = await chat.say("管理员甲", "/引擎 关")
    assert await chat.inbox("管理员甲") == [] and reply.text.startswith("分配引擎已关闭")
    assert [m.text for m in await chat.inbox("管理员乙")] == [reply.text]
    ids = []
    for _ in range(4):
        ids += await post(chat)
        chat.rt.clock.advance(minutes=1)
    methods = [(await assignment_of(chat, i)).method for i in ids]
    owners = [(await assignment_of(chat, i)).member_id for i in ids]
    assert methods == ["round_robin"] * 4 and owners == [4, 5, 4, 5]
    [status] = await chat.say("管理员乙", "/引擎 状态")
    assert status.text.splitlines()[0] == "分配引擎：关闭（轮流分配）"
    [reply] = await chat.say("管理员甲", "/引擎 关")
    assert reply.text == "分配引擎已经是关闭状态。"
    [reply] = await chat.say("管理员甲", "/引擎 开")
    assert reply.text.startswith("分配引擎已开启")
    [lead_id] = await post(chat)
    assert (await assignment_of(chat, lead_id)).method == "engine"
    async with chat.rt.sessions() as session:
        assert await session.get(Alert, "engine_off") is None


async def test_scoring_that_fails_falls_back_to_round_robin_with_one_alert(chat):
    await chat.add_members(*ROSTER)
    async with chat.rt.sessions() as session, session.begin():
        # a hand-edited database: weights that do not add up
        session.add(ConfigValue(key="engine.weights",
                                value={"load": 90, "conversion": 40, "online": 30}))
    ids = await post(chat, n=3)
    ids += await post(chat, n=2)
    assert {(await assignment_of(chat, i)).method for i in ids} == {"round_robin"}
    for admin in ("管理员甲", "管理员乙"):
        [alert] = await chat.inbox(admin)
        assert alert.text.startswith("分配引擎出错（WeightsError: weights must sum to 100")
    [status] = await chat.say("管理员甲", "/引擎 状态")
    assert status.text.splitlines()[0] == "分配引擎：故障，暂用轮流分配"
    assert "WeightsError" in status.text.splitlines()[-1]
    await chat.say("管理员甲", "/权重 负载=30 转化=40 在线=30")
    [lead_id] = await post(chat)
    assert (await assignment_of(chat, lead_id)).method == "engine"
    async with chat.rt.sessions() as session:
        assert await session.get(Alert, "engine_error") is None


async def test_nobody_available_queues_with_one_alert_and_drains_when_a_rep_is_back(chat):
    await chat.add_members(*ROSTER)
    await chat.say("王芳", "/下班")
    await chat.say("赵强", "/请假 到 2026-12-09")
    ids = await post(chat, n=3)
    ids += await post(chat, n=2)
    async with chat.rt.sessions() as session:
        statuses = (await session.scalars(
            select(Lead.status).where(Lead.id.in_(ids)))).all()
    assert statuses == ["new"] * 5
    [alert] = await chat.inbox("管理员甲")
    assert alert.text.startswith("暂无可接单的销售")
    [status] = await chat.say("管理员甲", "/引擎 状态")
    assert "待分配队列：5 条（最早一条 #1" in status.text
    assert "可接单销售：0 人" in status.text
    await chat.say("赵强", "/销假")
    async with chat.rt.sessions() as session:
        owners = (await session.scalars(
            select(Lead.assignee_id).where(Lead.id.in_(ids)))).all()
        assert await session.get(Alert, "queue") is None
        cards = await session.scalar(
            select(func.count()).select_from(Outgoing)
            .where(Outgoing.recipient == "member:5", Outgoing.kind == "card"))
    assert owners == [5] * 5 and cards == 5


async def test_leads_too_young_to_have_converted_do_not_mark_a_rep_down(chat):
    from handlers.assignment import rep_states
    from handlers.choosing import rep_records

    await chat.add_members(*ROSTER)
    await give_history(chat, "王芳", "medical", accepted=10, converted=4)  # 20 days old
    async with chat.rt.sessions() as session, session.begin():
        when = chat.rt.now() - timedelta(days=3)
        for n, status in enumerate(["contacted"] * 6 + ["lost", "converted"]):
            lead = Lead(company=f"新近客户{n}", contact="周明", industry="medical",
                        status=status, assignee_id=4, urgency="low", source="expo")
            session.add(lead)
            await session.flush()
            session.add(Assignment(lead_id=lead.id, member_id=4, state="accepted",
                                   offered_at=when, decided_at=when))
    async with chat.rt.sessions() as session:
        team = await rep_states(session, chat.rt)
        records = {r.name: r for r in await rep_records(session, chat.rt, team,
                                                        chat.rt.now())}
    # the six young leads still in progress wait; the lost and the converted one count
    assert records["王芳"].history == {"medical": (12, 5)}
    assert records["赵强"].history == {}
