"""The admins' hold on the engine: /权重, /规则 and /引擎, every change audited.

Owns the commands and the seed rule; the rules' grammar is handlers.rules, their use at
assignment time handlers.choosing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import func, select

from bot.alerts import alert_admins, resolve
from bot.context import Context
from bot.router import Router, is_number
from handlers import engine, rules
from handlers.assignment import available_reps, drain_queue
from handlers.choosing import (
    ENGINE_ERROR_ALERT,
    ENGINE_OFF_ALERT,
    MODE_KEY,
    T_ALERT_ENGINE_OFF,
    WEIGHTS_KEY,
    EngineChoice,
    EngineConfig,
    active_rules,
    engine_config,
    forget_engine_inputs,
    vocabulary,
)
from storage.models import Alert, ConfigValue, Lead, Member, Rule

if TYPE_CHECKING:
    from bot.runtime import Runtime

router = Router("engine")

SEEDED_KEY = "rules.seeded"
SAMPLE = {"company": "示例测试公司", "contact": "测试", "phone": None}

T_WEIGHTS_USAGE = "用法：/权重 负载=30 转化=40 在线=30（不小于 0 的整数，合计 100）"
T_WEIGHTS_NOW = "当前权重：{weights}（{source}）。\n" + T_WEIGHTS_USAGE
T_WEIGHTS_SET = "权重已更新为 {weights}，从下一条线索起生效。"
T_WEIGHTS_BAD = "权重未修改：{error}。\n" + T_WEIGHTS_USAGE
T_SOURCE_DB = "管理员设置"
T_SOURCE_SETTINGS = "默认配置"
T_RULES_USAGE = ("用法：/规则 列表｜/规则 添加 条件 → 要求 [否则 兜底]｜/规则 删除 编号｜"
                 "/规则 启用 编号｜/规则 停用 编号｜"
                 "/规则 测试 编号 [紧急程度=高 行业=工业 来源=展会]\n"
                 "例如：/规则 添加 " + rules.SEED_RULE)
T_RULES_EMPTY = "还没有分配规则。\n" + T_RULES_USAGE
T_RULES_HEAD = "分配规则（按顺序匹配，第一条命中的生效）："
T_RULE_LINE = "#{id} [{state}] {text}"
T_ENABLED, T_DISABLED = "启用", "停用"
T_RULE_ADDED = "已添加规则 #{id}：{text}"
T_RULE_BAD = "规则未添加：{error}"
T_RULE_NONE = "没有编号为 {id} 的规则。发送 /规则 列表 查看。"
T_NO_TEAM = "「{team}」不是销售的团队，现有：{teams}"
T_NOT_A_REP = "「{name}」不是名单里的销售"
T_RULE_DELETED = "已删除规则 #{id}。"
T_RULE_STATE = "规则 #{id} 已{state}。"
T_TEST_HEAD = "规则 #{id} 测试，样例线索：{lead}"
T_TEST_NO_MATCH = "样例线索不满足规则的条件，本规则不会生效。"
T_TEST_QUALIFIED = "符合要求的在岗销售 {n} 人：{names}"
T_TEST_NONE_QUALIFIED = "没有在岗销售符合要求，将按兜底「{fallback}」分配。"
T_TEST_WIDENED = "兜底范围内也没有可接单的销售，改为在全部在岗销售中分配。"
T_TEST_WINNER = "这条线索会分给：{name}。{why}"
T_TEST_NOBODY = "现在没有可接单的销售，线索会进入待分配队列。"
T_TEST_BAD_LEAD = "样例线索写法有误：{error}"
T_ENGINE_USAGE = "用法：/引擎 开｜/引擎 关｜/引擎 状态"
T_ENGINE_ON = "分配引擎已开启：新线索按加权评分分配。待分配队列正在自动分配。"
T_ENGINE_OFF = "分配引擎已关闭：新线索改为在岗销售之间轮流分配。发送 /引擎 开 恢复。"
T_ENGINE_ALREADY = "分配引擎已经是{state}状态。"
T_STATUS = ("分配引擎：{mode}\n权重：{weights}\n启用规则：{rules} 条\n"
            "可接单销售：{reps} 人\n待分配队列：{queue} 条{oldest}\n"
            "待经理指派：{managers} 条\n最近错误：{error}")
T_MODE_ON, T_MODE_OFF = "开启（加权评分）", "关闭（轮流分配）"
T_MODE_FAILING = "故障，暂用轮流分配"
T_OLDEST = "（最早一条 #{id}，{at} 进入）"
T_NO_ERROR = "无"


def format_weights(weights: dict[str, int]) -> str:
    return " ".join(f"{engine.FACTOR_NAMES[f]}={weights[f]}" for f in engine.FACTORS)


async def _forget(rt: Runtime) -> None:
    forget_engine_inputs(rt)


async def _set(ctx: Context, key: str, value: dict) -> dict | None:
    ctx.after_commit(_forget)  # once committed, so no batch reads the old value again
    row = await ctx.session.get(ConfigValue, key)
    before = None if row is None else dict(row.value)
    if row is None:
        ctx.session.add(ConfigValue(key=key, value=value, updated_by_id=ctx.member.id,
                                    updated_at=ctx.now))
    else:
        row.value, row.updated_by_id, row.updated_at = value, ctx.member.id, ctx.now
    ctx.audit("config.set", "config", key, before, value)
    return before


# ---- /权重 ---------------------------------------------------------------------------------


@router.command("权重", roles={"admin"}, usage=T_WEIGHTS_USAGE,
                summary="/权重 负载=30 转化=40 在线=30：分配引擎的权重")
async def weights_command(ctx: Context, args: str) -> None:
    if not args.strip():
        row = await ctx.session.get(ConfigValue, WEIGHTS_KEY)
        current = row.value if row else ctx.settings.leads.weights
        source = T_SOURCE_DB if row else T_SOURCE_SETTINGS
        await ctx.reply(T_WEIGHTS_NOW.format(weights=format_weights(current), source=source))
        return
    try:
        weights = engine.parse_weights(args)
    except engine.WeightsError as exc:
        await ctx.reply(T_WEIGHTS_BAD.format(error=exc))
        return
    await _set(ctx, WEIGHTS_KEY, weights)
    await ctx.reply(T_WEIGHTS_SET.format(weights=format_weights(weights)))


# ---- /规则 ---------------------------------------------------------------------------------


@router.command("规则", roles={"admin"}, usage=T_RULES_USAGE,
                summary="/规则 列表｜添加｜删除｜启用｜停用｜测试：分配规则")
async def rules_command(ctx: Context, args: str) -> None:
    verb, _, rest = args.strip().partition(" ")
    rest = rest.strip()
    ctx.after_commit(_forget)
    if verb in ("", "列表", "list"):
        await _list(ctx)
    elif verb in ("添加", "add"):
        await _add(ctx, rest)
    elif verb in ("删除", "启用", "停用", "测试", "delete", "enable", "disable", "test"):
        number, _, sample = rest.partition(" ")
        if not number:
            await ctx.reply(T_RULES_USAGE)
            return
        rule = await _rule(ctx, number)
        if rule is None:
            return
        if verb in ("删除", "delete"):
            rule.deleted_at = ctx.now
            ctx.audit("rule.delete", "rule", rule.id, {"source": rule.source}, None)
            await ctx.reply(T_RULE_DELETED.format(id=rule.id))
        elif verb in ("测试", "test"):
            await _test(ctx, rule, sample)
        else:
            enabled = verb in ("启用", "enable")
            before = rule.enabled
            rule.enabled = enabled
            ctx.audit("rule.enable" if enabled else "rule.disable", "rule", rule.id,
                      {"enabled": before}, {"enabled": enabled})
            await ctx.reply(T_RULE_STATE.format(id=rule.id,
                                                state=T_ENABLED if enabled else T_DISABLED))
    else:
        await ctx.reply(T_RULES_USAGE)


async def _list(ctx: Context) -> None:
    listed = (await ctx.session.scalars(
        select(Rule).where(Rule.deleted_at.is_(None)).order_by(Rule.position, Rule.id)
    )).all()
    if not listed:
        await ctx.reply(T_RULES_EMPTY)
        return
    vocab = vocabulary(ctx.rt)
    lines = [T_RULES_HEAD] + [
        T_RULE_LINE.format(id=r.id, state=T_ENABLED if r.enabled else T_DISABLED,
                           text=_describe(r, vocab))
        for r in listed
    ]
    await ctx.reply("\n".join(lines))


def _describe(rule: Rule, vocab: rules.Vocabulary) -> str:
    try:
        return rules.describe(rule.parsed, vocab)
    except (KeyError, TypeError):
        return rule.source


async def _add(ctx: Context, text: str) -> None:
    try:
        parsed = rules.parse_rule(text, vocabulary(ctx.rt))
        await _check_names(ctx, parsed)
    except rules.RuleError as exc:
        await ctx.reply(T_RULE_BAD.format(error=exc))
        return
    last = await ctx.session.scalar(select(func.max(Rule.position)))
    rule = Rule(source=text, parsed=parsed, position=(last or 0) + 1,
                created_by_id=ctx.member.id, created_at=ctx.now, updated_at=ctx.now)
    ctx.session.add(rule)
    await ctx.session.flush()
    ctx.audit("rule.add", "rule", rule.id, None, {"source": text, "parsed": parsed})
    await ctx.reply(T_RULE_ADDED.format(id=rule.id, text=rules.describe(parsed,
                                                                      vocabulary(ctx.rt))))


async def _check_names(ctx: Context, parsed: dict) -> None:
    """Teams and names a rule uses must be the roster's reps, or the rule could never act."""
    reps = (await ctx.session.execute(
        select(Member.name, Member.team).where(Member.role == "rep", Member.status != "left")
    )).all()
    names, teams = {n for n, _ in reps}, {t for _, t in reps if t}
    wanted = [n["value"] for n in parsed["then"] if n["metric"] == "team"]
    fallback = parsed["fallback"]
    if fallback["kind"] == "team":
        wanted.append(fallback["team"])
    for team in wanted:
        if team not in teams:
            raise rules.RuleError(T_NO_TEAM.format(team=team, teams="、".join(sorted(teams))
                                                   or "（名单里的销售都没有团队）"))
    for name in fallback.get("names", []):
        if name not in names:
            raise rules.RuleError(T_NOT_A_REP.format(name=name))


async def _rule(ctx: Context, number: str) -> Rule | None:
    number = number.lstrip("#")
    rule = await ctx.session.get(Rule, int(number)) if is_number(number) else None
    if rule is None or rule.deleted_at is not None:
        await ctx.reply(T_RULE_NONE.format(id=number or "?"))
        return None
    return rule


def sample_lead(rule: dict, vocab: rules.Vocabulary, text: str) -> dict[str, str | None]:
    """A lead that meets the rule's conditions, changed by `紧急程度=高 行业=医疗 …`."""
    lead: dict[str, str | None] = {"urgency": "medium", "industry": None, "source": None}
    lead["industry"] = next(iter(vocab.industries), None)
    lead["source"] = next(iter(vocab.sources), None)
    for condition in rule["when"]:
        choices = list(vocab.choices(condition["field"]))
        if condition["op"] == "=":
            lead[condition["field"]] = condition["values"][0]
        else:
            lead[condition["field"]] = next(
                (c for c in choices if c not in condition["values"]), None)
    for item in text.split():
        condition = rules.parse_condition(item, vocab)
        lead[condition["field"]] = condition["values"][0]
    return lead


async def _test(ctx: Context, rule: Rule, sample: str) -> None:
    vocab = vocabulary(ctx.rt)
    try:
        tags = sample_lead(rule.parsed, vocab, sample)
    except rules.RuleError as exc:
        await ctx.reply(T_TEST_BAD_LEAD.format(error=exc))
        return
    shown = " ".join(f"{rules.FIELD_NAMES[f]}={vocab.choices(f).get(v or '', v or '-')}"
                     for f, v in tags.items())
    lines = [T_TEST_HEAD.format(id=rule.id, lead=shown)]
    if not rules.matches(rule.parsed, tags):
        lines.append(T_TEST_NO_MATCH)
        await ctx.reply("\n".join(lines))
        return
    team = await available_reps(ctx.session, ctx.rt, ctx.now)
    if not team.states:
        lines.append(T_TEST_NOBODY)
        await ctx.reply("\n".join(lines))
        return
    config = await engine_config(ctx.session, ctx.rt)
    choice = await EngineChoice.build(ctx.session, ctx.rt, team, config, ctx.now)
    choice.rules = [(rule.id, rule.parsed)]  # this rule alone, enabled or not
    records = choice.chooser.records
    qualified = [m for m, r in records.items()
                 if rules.failed_requirement(rule.parsed, r, tags["industry"],
                                             choice.chooser.priors) is None]
    if qualified:
        names = "、".join(records[m].name for m in qualified[:10])
        more = " 等" if len(qualified) > 10 else ""
        lines.append(T_TEST_QUALIFIED.format(n=len(qualified), names=names + more))
    else:
        fallback = rules.describe(rule.parsed, vocab).rpartition("否则 ")[2]
        lines.append(T_TEST_NONE_QUALIFIED.format(fallback=fallback))
    lead = Lead(id=0, **SAMPLE, urgency=tags["urgency"], industry=tags["industry"],
                source=tags["source"])
    picked = choice.choose(lead, set())
    if picked is None:
        lines.append(T_TEST_NOBODY)
    else:
        if picked.scores.get("rule_outcome") == "widened":
            lines.append(T_TEST_WIDENED)
        lines.append(T_TEST_WINNER.format(name=records[picked.member_id].name, why=picked.why))
    await ctx.reply("\n".join(lines))


# ---- /引擎 ---------------------------------------------------------------------------------


@router.command("引擎", roles={"admin"}, usage=T_ENGINE_USAGE,
                summary="/引擎 开｜关｜状态：分配引擎的开关与状态")
async def engine_command(ctx: Context, args: str) -> None:
    verb = args.strip()
    config = await engine_config(ctx.session, ctx.rt)
    if verb in ("开", "开启", "on"):
        if config.on:
            await ctx.reply(T_ENGINE_ALREADY.format(state="开启"))
            return
        await _set(ctx, MODE_KEY, {"on": True})
        await resolve(ctx.session, ENGINE_OFF_ALERT)
        await ctx.reply(T_ENGINE_ON)
        ctx.after_commit(drain_queue)
    elif verb in ("关", "关闭", "off"):
        if not config.on:
            await ctx.reply(T_ENGINE_ALREADY.format(state="关闭"))
            return
        await _set(ctx, MODE_KEY, {"on": False})
        if not await alert_admins(ctx.session, ctx.rt, ENGINE_OFF_ALERT, T_ALERT_ENGINE_OFF):
            await ctx.reply(T_ENGINE_OFF)
    elif verb in ("状态", "status", ""):
        await ctx.reply(await status_text(ctx, config))
    else:
        await ctx.reply(T_ENGINE_USAGE)


async def status_text(ctx: Context, config: EngineConfig) -> str:
    session = ctx.session
    failing = await session.get(Alert, ENGINE_ERROR_ALERT)
    mode = T_MODE_OFF if not config.on else T_MODE_FAILING if failing else T_MODE_ON
    queued = (Lead.status == "new", Lead.assignee_id.is_(None),
              Lead.reroutes < ctx.settings.leads.max_reroutes)
    queue = await session.scalar(select(func.count()).select_from(Lead).where(*queued))
    with_managers = await session.scalar(select(func.count()).select_from(Lead).where(
        Lead.status == "new", Lead.assignee_id.is_(None),
        Lead.reroutes >= ctx.settings.leads.max_reroutes))
    oldest = await session.scalar(select(Lead).where(*queued).order_by(Lead.id).limit(1))
    zone = ctx.settings.zone
    oldest_text = "" if oldest is None else T_OLDEST.format(
        id=oldest.id, at=oldest.created_at.astimezone(zone).strftime("%m-%d %H:%M"))
    error = config.last_error
    error_text = T_NO_ERROR if not error else f"{error.get('at', '')[:16]} {error.get('error')}"
    team = await available_reps(session, ctx.rt, ctx.now)
    return T_STATUS.format(
        mode=mode, weights=_weights_text(config.weights),
        rules=len(await active_rules(session)), reps=len(team.states), queue=queue,
        oldest=oldest_text, managers=with_managers, error=error_text,
    )


def _weights_text(weights: dict) -> str:
    try:
        return format_weights(weights)
    except (KeyError, TypeError):
        return str(weights)


async def seed_rules(rt: Runtime) -> None:
    """The example rule, added once in the database's life (an admin's deletion stays).

    It is enabled: when no rep qualifies it widens to everyone, so it changes nothing
    until someone's industrial conversion earns it.
    """
    async with rt.sessions() as session, session.begin():
        if await session.get(ConfigValue, SEEDED_KEY) is not None:
            return
        try:
            parsed = rules.parse_rule(rules.SEED_RULE, vocabulary(rt))
        except rules.RuleError:  # the team's industries have no 工业
            parsed = None
        if parsed is not None:
            session.add(Rule(source=rules.SEED_RULE, parsed=parsed, position=1))
        session.add(ConfigValue(key=SEEDED_KEY, value={"at": rt.now().isoformat()}))
