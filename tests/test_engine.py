"""The engine's arithmetic, worked out by hand: factors, weights, the choice of a batch."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from handlers.engine import (
    Chooser,
    RepRecord,
    WeightsError,
    combine,
    conversion_rate,
    explain,
    online_minutes,
    parse_weights,
    score,
    team_rates,
)

W = {"load": 30, "conversion": 40, "online": 30}


def rep(member_id, open_leads=0, history=None, minutes=0.0, **kw):
    return RepRecord(member_id=member_id, name=f"销售{member_id}", open_leads=open_leads,
                     history=history or {}, online_minutes=minutes, **kw)


def test_a_score_is_the_weighted_mean_of_the_three_factor_scores():
    # load 1/(1+2/2) = 0.5; conversion (6 + 5*0.2)/(20 + 5) = 0.28 → 0.28/0.5 = 0.56;
    # online 120/240 = 0.5. Score 100 * (30*0.5 + 40*0.56 + 30*0.5) / 100 = 52.4
    record = rep(1, open_leads=2, history={"industrial": (20, 6)}, minutes=120)
    breakdown = score(record, "industrial", W, priors={})
    assert breakdown.values == {"load": 2.0, "conversion": pytest.approx(0.28),
                                "online": 120.0}
    assert breakdown.parts["load"] == pytest.approx(0.5)
    assert breakdown.parts["conversion"] == pytest.approx(0.56)
    assert breakdown.parts["online"] == pytest.approx(0.5)
    assert breakdown.score == pytest.approx(52.4)


def test_a_new_rep_is_scored_at_the_teams_rate_not_zero():
    team = [rep(1, history={"medical": (30, 12)}), rep(2)]
    priors = team_rates(team)
    assert priors == {"medical": pytest.approx(0.4)}
    assert conversion_rate(team[1], "medical", priors) == pytest.approx(0.4)
    # the veteran: (12 + 5*0.4) / (30 + 5) = 0.4
    assert conversion_rate(team[0], "medical", priors) == pytest.approx(0.4)
    # a team with under 10 leads in an industry uses the default prior of 20 %
    assert team_rates([rep(1, history={"education": (3, 3)})]) == {"education": 0.2}


def test_a_factor_that_cannot_be_computed_is_missing_and_its_weight_drops_out():
    record = rep(1, open_leads=0, minutes=0)
    breakdown = score(record, None, W, priors={})  # a lead without an industry
    assert breakdown.values["conversion"] is None and breakdown.parts["conversion"] is None
    # (30*1 + 30*0) / 60 = 50
    assert breakdown.score == pytest.approx(50.0)
    assert combine({"load": None, "conversion": None, "online": None}, W) == 0.0


def test_scores_do_not_depend_on_the_size_of_the_team():
    alone = score(rep(1, open_leads=3, minutes=60), "industrial", W, {"industrial": 0.2})
    crowd = [rep(i, open_leads=i % 7, minutes=i) for i in range(2, 300)]
    chooser = Chooser([rep(1, open_leads=3, minutes=60), *crowd], W)
    chooser.priors = {"industrial": 0.2}
    assert chooser.breakdown(1, "industrial").score == pytest.approx(alone.score)


def test_weights_are_whole_numbers_that_sum_to_100():
    assert parse_weights("负载=20 转化=50 在线=30") == {"load": 20, "conversion": 50,
                                                    "online": 30}
    assert parse_weights("online=0，load=100，conversion=0") == {"load": 100,
                                                             "conversion": 0, "online": 0}
    assert parse_weights("负载 = 30  转化＝４０ 在线 =30") == {
        "load": 30, "conversion": 40, "online": 30}
    for bad, word in [("负载=30 转化=40 在线=31", "101"), ("负载=-10 转化=80 在线=30", "-10"),
                      ("负载=30.5 转化=40 在线=29.5", "30.5"), ("负载=30 转化=70", "在线"),
                      ("负荷=30 转化=40 在线=30", "负荷"), ("负载=- 转化=40 在线=30", "负载=-"),
                      ("负载=1e2 转化=0 在线=0", "1e2"), ("负载=٣٠ 转化=40 在线=30", "٣٠")]:
        with pytest.raises(WeightsError, match=word):
            parse_weights(bad)


def test_online_time_is_the_union_of_duty_and_activity_today():
    day = datetime(2026, 12, 1, 16, 0, tzinfo=UTC)  # midnight in Beijing
    events = [
        ("on", day + timedelta(hours=9)),  # 09:00 上班
        ("active", day + timedelta(hours=9, minutes=30)),  # inside the duty span
        ("off", day + timedelta(hours=11)),  # 11:00 下班: 120 minutes
        ("active", day + timedelta(hours=13)),  # 10 minutes
        ("active", day + timedelta(hours=13, minutes=5)),  # overlaps: 5 more
    ]
    now = day + timedelta(hours=14)
    assert online_minutes(events, day, now) == pytest.approx(135)
    # still on duty: counts up to now
    assert online_minutes([("on", day + timedelta(hours=13))], day, now) == pytest.approx(60)
    # a span that began before midnight counts from midnight
    assert online_minutes([("on", day - timedelta(hours=2))], day, now) == pytest.approx(840)
    assert online_minutes([], day, now) == 0


def test_a_batch_spreads_over_the_team_as_single_arrivals_would():
    reps = [rep(1, open_leads=0), rep(2, open_leads=0), rep(3, open_leads=4)]
    chooser = Chooser(reps, {"load": 100, "conversion": 0, "online": 0})
    picks = []
    for n in range(9):
        best = chooser.choose("industrial")
        picks.append(best.member_id)
        chooser.take(best.member_id, n + 1)
    # equal scores go to whoever was offered longest ago; rep 3 joins once the others
    # hold 4 open leads like it does
    assert picks == [1, 2, 1, 2, 1, 2, 1, 2, 3]
    assert [r.open_leads for r in reps] == [4, 4, 5]


def test_the_chooser_respects_caps_and_exclusions():
    reps = [rep(1, cap=1), rep(2, open_leads=1), rep(3, open_leads=2)]
    chooser = Chooser(reps, {"load": 100, "conversion": 0, "online": 0})
    assert chooser.choose("industrial", exclude={1}).member_id == 2
    assert chooser.choose("industrial").member_id == 1
    chooser.take(1, 1)  # rep 1 is now full
    assert chooser.choose("industrial").member_id == 2
    assert chooser.choose("industrial", among={3}).member_id == 3
    assert chooser.choose("industrial", exclude={2, 3}) is None


def test_strong_conversion_wins_at_equal_load():
    reps = [rep(1, history={"medical": (20, 2)}), rep(2, history={"medical": (20, 12)})]
    chooser = Chooser(reps, W)
    assert chooser.choose("medical").member_id == 2


def test_a_new_reps_card_says_the_rate_is_the_teams():
    breakdown = score(rep(1), "industrial", W, priors={"industrial": 0.3})
    assert explain(breakdown, "工业", None, W) == (
        "推荐理由：未跟进线索 0 条，新人按团队工业转化率 30% 计（综合 54 分）")


def test_the_card_line_names_the_two_heaviest_factors_and_the_rule():
    record = rep(1, open_leads=1, history={"industrial": (20, 8)}, minutes=90)
    breakdown = score(record, "industrial", W, priors={"industrial": 0.4})
    # parts: load 1/(1+1/2) * 30 = 20, conversion 0.4/0.5 = 0.8 * 40 = 32, online
    # 90/240 * 30 = 11.25: 63.25 in all
    line = explain(breakdown, "工业", 3, W)
    assert line == ("推荐理由：近30天工业转化率 40%，未跟进线索 1 条（综合 63 分）；"
                    "符合规则 #3")


def test_a_burst_cannot_pile_up_on_the_rep_who_was_online_longest():
    # A new reviewer's case: at high loads the load score flattens while the online bonus
    # stays, so 王芳 (2 h more online) would win every lead. The gap guard stops that.
    reps = [rep(1, minutes=240), rep(2, minutes=120), rep(3, minutes=0)]
    chooser = Chooser(reps, W)
    for order in range(1, 301):
        chooser.take(chooser.choose("industrial").member_id, order)
    loads = [r.open_leads for r in reps]
    assert sum(loads) == 300 and max(loads) - min(loads) <= 3 + 1
    # rules pick among fewer reps: the same guard holds there
    reps = [rep(1, minutes=240), rep(2)]
    chooser = Chooser(reps, W)
    for order in range(1, 41):
        chooser.take(chooser.choose("industrial", among={1, 2}).member_id, order)
    assert [r.open_leads for r in reps] in ([22, 18], [21, 19])
