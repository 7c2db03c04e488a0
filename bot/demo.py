"""`salesbot demo`: an invented team 华南 and a few leads, so a new user sees the bot work.

Owns the demo data only. The leads go through handlers.intake like any other lead; the
names, companies and phone numbers are made up (phones 138 0000 xxxx).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sqlalchemy import func, select

from bot.router import ROLE_NAMES
from handlers.intake import LeadInput, create_lead
from storage.models import Lead, Member

if TYPE_CHECKING:
    from bot.runtime import Runtime
    from config.settings import Settings

log = logging.getLogger(__name__)

TEAM = "华南"

# name, role, manager, industries, mobile
DEMO_MEMBERS: tuple[tuple[str, str, str | None, tuple[str, ...], str], ...] = (
    ("陈静", "admin", None, (), "13800000001"),
    ("李明", "manager", None, (), "13800000002"),
    ("王芳", "rep", "李明", ("industrial", "medical"), "13800000003"),
    ("赵强", "rep", "李明", ("industrial",), "13800000004"),
    ("刘洋", "rep", "李明", ("education",), "13800000005"),
    ("孙丽", "rep", "李明", ("medical", "education"), "13800000006"),
    ("周敏", "service", None, (), "13800000007"),
    ("吴婷", "marketing", None, (), "13800000008"),
)

DEMO_LEADS = (
    LeadInput(company="深圳示例精密制造有限公司", contact="黄海", phone="13800000101",
              industry="industrial", urgency="high", source="expo",
              note="展会上留的名片，想了解产线改造", external_id="demo-1"),
    LeadInput(company="广州示例康健医疗器械有限公司", contact="林晓", phone="13800000102",
              industry="medical", urgency="medium", source="sem", external_id="demo-2"),
    LeadInput(company="佛山示例教育科技有限公司", contact="郑凯", phone="13800000103",
              industry="education", urgency="low", source="referral",
              note="老客户介绍", external_id="demo-3"),
)

STATUS_NAMES = {"new": "待分配", "assigned": "待接受", "accepted": "已接受"}

T_SKIPPED = "名单中已有 {n} 位成员，未载入演示数据。"
T_LOADED = "已载入演示团队「{team}」：新增 {members} 位成员，{leads} 条演示线索。"
T_ALREADY = "演示团队和演示线索都已存在，没有重复添加。"
T_ROLE_LINE = "  {role}：{names}"
T_LEAD_LINE = "  线索 #{id} {company} → {who}（{status}）"
T_QUEUED = "待分配队列"
T_ON_DUTY = "演示销售已设为「上班」，今天可以立即接收线索。"
T_TRY_CONSOLE = "在终端里试试：salesbot console --as {name}（先发送 /帮助 或 /我的线索）"
T_ANY_NAME = "名单中的姓名"
T_TRY_SIM = "网页模拟器：运行 salesbot serve（或 make run）后打开 {url}"
T_NO_SIM = "网页模拟器未启用：设置 SALESBOT_SIM__ENABLED=true 后可用。"


@dataclass(slots=True)
class DemoResult:
    skipped: bool = False
    roster_size: int = 0
    members: list[Member] = field(default_factory=list)  # created by this run
    leads: list[tuple[Lead, str | None]] = field(default_factory=list)  # created, assignee


async def load_demo(rt: Runtime, *, only_if_empty: bool = False) -> DemoResult:
    """Add the demo members missing from the roster and the demo leads not yet stored."""
    now = rt.now()
    result = DemoResult()
    async with rt.sessions() as session, session.begin():
        result.roster_size = await session.scalar(select(func.count()).select_from(Member)) or 0
        if only_if_empty and result.roster_size:
            result.skipped = True
            return result
        existing = {m.name: m for m in (await session.scalars(select(Member))).all()}
        for name, role, manager, industries, mobile in DEMO_MEMBERS:
            if name in existing:
                continue  # a member of that name stays as it is
            member = Member(
                name=name, role=role, mobile=mobile, industries=list(industries), team=TEAM,
                status="active", manager_id=existing[manager].id if manager else None,
            )
            if role == "rep":
                # As if each had sent /上班: the demo leads are offered at any hour.
                member.duty, member.duty_at = "on", now
            session.add(member)
            await session.flush()
            existing[name] = member
            result.members.append(member)
        for data in DEMO_LEADS:
            lead, created = await create_lead(session, rt, data, now, origin="demo")
            if not created:
                continue
            assignee = await session.get(Member, lead.assignee_id) if lead.assignee_id else None
            result.leads.append((lead, assignee.name if assignee else None))
    log.info("demo loaded: %d members, %d leads", len(result.members), len(result.leads))
    return result


def summary(result: DemoResult, settings: Settings) -> str:
    lines = []
    if result.skipped:
        lines.append(T_SKIPPED.format(n=result.roster_size))
    elif not result.members and not result.leads:
        lines.append(T_ALREADY)
    else:
        lines.append(T_LOADED.format(team=TEAM, members=len(result.members),
                                     leads=len(result.leads)))
        for role, label in ROLE_NAMES.items():
            names = [m.name for m in result.members if m.role == role]
            if names:
                lines.append(T_ROLE_LINE.format(role=label, names="、".join(names)))
        for lead, who in result.leads:
            lines.append(T_LEAD_LINE.format(id=lead.id, company=lead.company,
                                            who=who or T_QUEUED,
                                            status=STATUS_NAMES.get(lead.status, lead.status)))
        if any(m.role == "rep" for m in result.members):
            lines.append(T_ON_DUTY)
    first_rep = next((who for _, who in result.leads if who), None)
    if result.skipped:
        first_rep = T_ANY_NAME
    lines.append(T_TRY_CONSOLE.format(name=first_rep or DEMO_MEMBERS[2][0]))
    if settings.sim_enabled:
        lines.append(T_TRY_SIM.format(url=sim_url(settings)))
    else:
        lines.append(T_NO_SIM)
    return "\n".join(lines)


def sim_url(settings: Settings) -> str:
    if settings.http.public_url:
        return f"{settings.http.public_url}/sim"
    host = settings.http.host
    if ":" in host:  # an IPv6 literal
        host = f"[{host}]"
    return f"http://{host}:{settings.http.port}/sim"


async def load_demo_cli(settings: Settings, *, only_if_empty: bool = False) -> int:
    from bot.app import build_runtime

    rt = build_runtime(settings)
    try:
        result = await load_demo(rt, only_if_empty=only_if_empty)
    finally:
        await rt.close()
    print(summary(result, settings))
    return 0
