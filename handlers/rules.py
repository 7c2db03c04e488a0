"""Assignment rules: the grammar an admin writes, parsed into data and evaluated, purely.

Owns parsing, describing and evaluating a rule; storing rules and the /规则 command are in
handlers.engine_admin, and applying them before the scores in handlers.assignment.

The grammar (spaces optional, full-width symbols accepted):

    规则   = 条件 "→" 要求 [ "否则" 兜底 ]
    条件   = "全部" | 子句 { "且" 子句 }
    子句   = 字段 ("=" | "≠") 值 { "|" 值 }       字段: 紧急程度 行业 来源
    要求   = 要求项 { "且" 要求项 }
    要求项 = 指标 比较 数字 ["%"] | "团队" "=" 名称
             指标: [行业]转化率 未跟进 在线小时     比较: > < >= <= =
    兜底   = "全部" | "团队=" 名称 | "名单=" 姓名 { "、" 姓名 }

e.g. `紧急程度=高 且 行业=工业 → 工业转化率>35% 且 未跟进<5 否则 全部`. The first enabled
rule whose condition matches a lead applies; its requirements pick the reps who may get
it; when none of them is available, the fallback does (a pool with nobody available
widens to everyone).
"""

from __future__ import annotations

import operator
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from handlers.engine import RepRecord, conversion_rate

LEAD_FIELDS = {"紧急程度": "urgency", "紧急": "urgency", "urgency": "urgency",
               "行业": "industry", "industry": "industry", "来源": "source", "source": "source"}
FIELD_NAMES = {"urgency": "紧急程度", "industry": "行业", "source": "来源"}
URGENCY = {"high": "高", "medium": "中", "low": "低"}
COMPARE: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt, "<": operator.lt, ">=": operator.ge, "<=": operator.le, "=": operator.eq,
}
ARROW = re.compile(r"→|->|=>")
AND = re.compile(r"\s*(?:且|并且|\band\b|&)\s*", re.IGNORECASE)
CLAUSE = re.compile(r"^(.+?)\s*(>=|<=|!=|>|<|=)\s*(.+)$")

SEED_RULE = "紧急程度=高 且 行业=工业 → 工业转化率>35% 且 未跟进<5 否则 全部"

T_NO_ARROW = "规则须有「→」：左边是线索的条件，右边是对销售的要求，例如：" + SEED_RULE
T_EMPTY = "「{part}」是空的"
T_NOT_A_CLAUSE = "「{word}」看不懂：应是「字段=值」，例如 行业=工业"
T_UNKNOWN_FIELD = "「{word}」不是线索字段，可用：紧急程度、行业、来源"
T_UNKNOWN_VALUE = "「{word}」不是{field}的选项，可选：{choices}"
T_FIELD_OP = "「{word}」：线索字段只能用 = 或 ≠"
T_NOT_A_REQUIREMENT = "「{word}」看不懂：应是「指标 比较 数字」，例如 未跟进<5"
T_UNKNOWN_METRIC = ("「{word}」不是销售的指标，可用：转化率（或 工业转化率 等）、未跟进、"
                    "在线小时、团队")
T_NOT_A_NUMBER = "「{word}」不是数字"
T_PERCENT = "「{word}」：转化率是 0–100 的百分数"
T_TEAM_OP = "「{word}」：团队只能用 ="
T_UNKNOWN_FALLBACK = "「{word}」不是兜底方式，可用：全部、团队=名称、名单=姓名、姓名"


class RuleError(ValueError):
    """A rule that does not parse; the message names the word that is wrong."""


@dataclass(frozen=True, slots=True)
class Vocabulary:
    """The tag values a rule may name: canonical English → Chinese."""

    industries: dict[str, str]
    sources: dict[str, str]

    def choices(self, field: str) -> dict[str, str]:
        return {"urgency": URGENCY, "industry": self.industries, "source": self.sources}[field]

    def canonical(self, field: str, word: str) -> str | None:
        for key, name in self.choices(field).items():
            if word.lower() in (key.lower(), name.lower()):
                return key
        return None


def _clean(text: str) -> str:
    text = unicodedata.normalize("NFKC", text)
    return text.replace("≠", "!=").replace("≥", ">=").replace("≤", "<=").strip()


def parse_rule(text: str, vocab: Vocabulary) -> dict[str, Any]:
    """The rule as data: {"when": [...], "then": [...], "fallback": {...}}."""
    text = _clean(text)
    parts = ARROW.split(text)
    if len(parts) != 2:
        raise RuleError(T_NO_ARROW)
    when_text, rest = parts[0].strip(), parts[1].strip()
    then_text, _, fallback_text = rest.partition("否则")
    if not when_text:
        raise RuleError(T_EMPTY.format(part="条件"))
    if not then_text.strip():
        raise RuleError(T_EMPTY.format(part="要求"))
    when = [] if when_text in ("全部", "所有", "任意") else [
        parse_condition(c, vocab) for c in _split(when_text)]
    then = [_requirement(c, vocab) for c in _split(then_text)]
    return {"when": when, "then": then, "fallback": _fallback(fallback_text.strip())}


def _split(text: str) -> list[str]:
    return [p for p in (s.strip() for s in AND.split(text)) if p]


def parse_condition(clause: str, vocab: Vocabulary) -> dict[str, Any]:
    """One condition on a lead's tag, `行业=工业`."""
    clause = _clean(clause)
    match = CLAUSE.match(clause)
    if not match:
        raise RuleError(T_NOT_A_CLAUSE.format(word=clause))
    name, op, value = (g.strip() for g in match.groups())
    field = LEAD_FIELDS.get(name.lower())
    if field is None:
        raise RuleError(T_UNKNOWN_FIELD.format(word=name))
    if op not in ("=", "!="):
        raise RuleError(T_FIELD_OP.format(word=clause))
    values = []
    for word in (w.strip() for w in re.split(r"[|/、,]", value)):
        canonical = vocab.canonical(field, word)
        if canonical is None:
            choices = "、".join(vocab.choices(field).values())
            raise RuleError(T_UNKNOWN_VALUE.format(word=word, field=FIELD_NAMES[field],
                                                   choices=choices))
        values.append(canonical)
    return {"field": field, "op": op, "values": values}


def _requirement(clause: str, vocab: Vocabulary) -> dict[str, Any]:
    match = CLAUSE.match(clause)
    if not match:
        raise RuleError(T_NOT_A_REQUIREMENT.format(word=clause))
    name, op, value = (g.strip() for g in match.groups())
    if name == "团队":
        if op != "=":
            raise RuleError(T_TEAM_OP.format(word=clause))
        return {"metric": "team", "op": "=", "value": value}
    if op == "!=":
        raise RuleError(T_NOT_A_REQUIREMENT.format(word=clause))
    if name.endswith("转化率"):
        industry_word = name[: -len("转化率")].strip()
        industry = None
        if industry_word:
            industry = vocab.canonical("industry", industry_word)
            if industry is None:
                choices = "、".join(vocab.industries.values())
                raise RuleError(T_UNKNOWN_VALUE.format(word=industry_word, field="行业",
                                                       choices=choices))
        number = _number(value.rstrip("%").strip(), value)
        if not 0 <= number <= 100:
            raise RuleError(T_PERCENT.format(word=value))
        return {"metric": "conversion", "industry": industry, "op": op,
                "value": number / 100}
    metric = {"未跟进": "open_leads", "未跟进线索": "open_leads",
              "在线": "online_hours", "在线小时": "online_hours"}.get(name)
    if metric is None:
        raise RuleError(T_UNKNOWN_METRIC.format(word=name))
    number = _number(value.removesuffix("小时").removesuffix("条").strip(), value)
    return {"metric": metric, "op": op, "value": number}


def _number(text: str, word: str) -> float:
    try:
        number = float(text)
    except ValueError:
        raise RuleError(T_NOT_A_NUMBER.format(word=word)) from None
    if number != number or number < 0:  # NaN or negative
        raise RuleError(T_NOT_A_NUMBER.format(word=word))
    return number


def _fallback(text: str) -> dict[str, Any]:
    if text in ("", "全部", "所有人", "所有销售", "全部销售"):
        return {"kind": "all"}
    name, sep, value = text.partition("=")
    if sep and name.strip() == "团队" and value.strip():
        return {"kind": "team", "team": value.strip()}
    if sep and name.strip() == "名单" and value.strip():
        names = [n.strip() for n in re.split(r"[、,，\s]+", value) if n.strip()]
        return {"kind": "names", "names": names}
    raise RuleError(T_UNKNOWN_FALLBACK.format(word=text))


# ---- evaluation ------------------------------------------------------------------------


def matches(rule: dict[str, Any], lead: dict[str, str | None]) -> bool:
    """Does the lead (its urgency, industry and source) meet every condition?"""
    for condition in rule["when"]:
        inside = lead.get(condition["field"]) in condition["values"]
        if inside != (condition["op"] == "="):
            return False
    return True


def failed_requirement(rule: dict[str, Any], record: RepRecord, lead_industry: str | None,
                       priors: dict[str, float]) -> dict[str, Any] | None:
    """The first requirement the rep does not meet, or None when the rep qualifies."""
    for need in rule["then"]:
        metric = need["metric"]
        if metric == "team":
            if record.team != need["value"]:
                return need
            continue
        if metric == "conversion":
            value = conversion_rate(record, need["industry"] or lead_industry, priors)
            if value is None:
                return need
        elif metric == "open_leads":
            value = record.open_leads
        else:
            value = record.online_minutes / 60
        if not COMPARE[need["op"]](value, need["value"]):
            return need
    return None


def fallback_pool(rule: dict[str, Any], records: list[RepRecord]) -> set[int] | None:
    """The reps the fallback names (None: everyone)."""
    fallback = rule.get("fallback") or {"kind": "all"}
    if fallback["kind"] == "team":
        return {r.member_id for r in records if r.team == fallback["team"]}
    if fallback["kind"] == "names":
        names = set(fallback["names"])
        return {r.member_id for r in records if r.name in names}
    return None


def describe_requirement(need: dict[str, Any], vocab: Vocabulary) -> str:
    op = need["op"]
    if need["metric"] == "team":
        return f"团队={need['value']}"
    if need["metric"] == "conversion":
        industry = vocab.industries.get(need["industry"], "") if need["industry"] else ""
        return f"{industry}转化率{op}{_trim(need['value'] * 100)}%"
    if need["metric"] == "open_leads":
        return f"未跟进{op}{_trim(need['value'])}"
    return f"在线小时{op}{_trim(need['value'])}"


def describe(rule: dict[str, Any], vocab: Vocabulary) -> str:
    """The rule written back in its canonical form."""
    when = " 且 ".join(
        f"{FIELD_NAMES[c['field']]}{'=' if c['op'] == '=' else '≠'}"
        + "|".join(vocab.choices(c["field"]).get(v, v) for v in c["values"])
        for c in rule["when"]) or "全部"
    then = " 且 ".join(describe_requirement(n, vocab) for n in rule["then"])
    fallback = rule.get("fallback") or {"kind": "all"}
    other = {"all": "全部", "team": f"团队={fallback.get('team')}",
             "names": f"名单={'、'.join(fallback.get('names', []))}"}[fallback["kind"]]
    return f"{when} → {then} 否则 {other}"


def _trim(number: float) -> str:
    return f"{number:g}"
