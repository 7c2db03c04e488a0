"""The rule grammar: what an admin writes, what it means, and errors that name the word."""

from __future__ import annotations

import pytest

from handlers.engine import RepRecord
from handlers.rules import (
    SEED_RULE,
    RuleError,
    Vocabulary,
    describe,
    failed_requirement,
    fallback_pool,
    matches,
    parse_rule,
)

VOCAB = Vocabulary({"industrial": "工业", "medical": "医疗", "education": "教育"},
                   {"expo": "展会", "sem": "SEM", "referral": "转介绍"})


def test_the_seed_rule_parses_into_conditions_requirements_and_a_fallback():
    rule = parse_rule(SEED_RULE, VOCAB)
    assert rule == {
        "when": [{"field": "urgency", "op": "=", "values": ["high"]},
                 {"field": "industry", "op": "=", "values": ["industrial"]}],
        "then": [{"metric": "conversion", "industry": "industrial", "op": ">", "value": 0.35},
                 {"metric": "open_leads", "op": "<", "value": 5.0}],
        "fallback": {"kind": "all"},
    }
    assert describe(rule, VOCAB) == SEED_RULE


def test_spacing_full_width_symbols_and_english_are_all_accepted():
    compact = parse_rule("紧急程度＝高且行业=industrial→工业转化率≥35%且未跟进＜5", VOCAB)
    assert compact["when"][1]["values"] == ["industrial"]
    assert compact["then"][0]["op"] == ">=" and compact["then"][1]["op"] == "<"
    several = parse_rule("来源=展会|转介绍 且 行业≠教育 -> 在线小时>=2 否则 团队=华南", VOCAB)
    assert several["when"] == [{"field": "source", "op": "=", "values": ["expo", "referral"]},
                               {"field": "industry", "op": "!=", "values": ["education"]}]
    assert several["then"] == [{"metric": "online_hours", "op": ">=", "value": 2.0}]
    assert several["fallback"] == {"kind": "team", "team": "华南"}
    names = parse_rule("全部 → 团队=华北 否则 名单=王芳、赵强", VOCAB)
    assert names["when"] == [] and names["fallback"] == {"kind": "names",
                                                         "names": ["王芳", "赵强"]}


@pytest.mark.parametrize(("text", "word"), [
    ("紧急程度=高 且 行业=工业", "→"),
    ("紧急度=高 → 未跟进<5", "「紧急度」不是线索字段"),
    ("行业=钢铁 → 未跟进<5", "「钢铁」不是行业的选项"),
    ("行业>工业 → 未跟进<5", "「行业>工业」：线索字段只能用 = 或 ≠"),
    ("行业=工业 → 跟进数<5", "「跟进数」不是销售的指标"),
    ("行业=工业 → 未跟进<五", "「五」不是数字"),
    ("行业=工业 → 未跟进<-1", "「-1」不是数字"),
    ("行业=工业 → 工业转化率>135%", "「135%」：转化率是 0–100 的百分数"),
    ("行业=工业 → 钢铁转化率>35%", "「钢铁」不是行业的选项"),
    ("行业=工业 → 未跟进<5 否则 经理", "「经理」不是兜底方式"),
    ("行业=工业 → ", "「要求」是空的"),
    ("高 → 未跟进<5", "「高」看不懂"),
])
def test_a_wrong_rule_is_refused_naming_the_word_that_is_wrong(text, word):
    with pytest.raises(RuleError) as caught:
        parse_rule(text, VOCAB)
    assert word in str(caught.value)


def test_conditions_match_on_the_leads_tags():
    rule = parse_rule("紧急程度=高 且 行业≠教育 → 未跟进<5", VOCAB)
    assert matches(rule, {"urgency": "high", "industry": "medical", "source": "expo"})
    assert not matches(rule, {"urgency": "high", "industry": "education", "source": "expo"})
    assert not matches(rule, {"urgency": "low", "industry": "medical", "source": "expo"})
    assert matches(parse_rule("全部 → 未跟进<5", VOCAB), {"urgency": None})


def test_requirements_pick_the_reps_and_say_which_one_failed():
    rule = parse_rule(SEED_RULE, VOCAB)
    strong = RepRecord(1, "王芳", open_leads=2, history={"industrial": (20, 10)})
    busy = RepRecord(2, "赵强", open_leads=5, history={"industrial": (20, 10)})
    new = RepRecord(3, "孙丽", open_leads=0)
    priors = {"industrial": 0.2}
    # strong: (10 + 1) / 25 = 0.44 > 0.35 and 2 < 5
    assert failed_requirement(rule, strong, "industrial", priors) is None
    assert failed_requirement(rule, busy, "industrial", priors)["metric"] == "open_leads"
    # new: (0 + 1) / 5 = 0.2, not above 0.35
    assert failed_requirement(rule, new, "industrial", priors)["metric"] == "conversion"


def test_the_fallback_names_a_pool_or_everyone():
    team = [RepRecord(1, "王芳", 0, team="华南"), RepRecord(2, "赵强", 0, team="华北")]
    assert fallback_pool(parse_rule("全部 → 未跟进<1 否则 团队=华北", VOCAB), team) == {2}
    assert fallback_pool(parse_rule("全部 → 未跟进<1 否则 名单=王芳", VOCAB), team) == {1}
    assert fallback_pool(parse_rule("全部 → 未跟进<1", VOCAB), team) is None
