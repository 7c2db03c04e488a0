"""The assignment simulation on a short horizon: its figures are well formed and honest."""

from __future__ import annotations

import json

import pytest

from benchmarks import simulate_assignment as sim

SEED, DAYS, WARMUP = 11, 3, 2


@pytest.fixture(scope="module")
def world() -> sim.World:
    return sim.build_world(SEED, days=DAYS, warmup_days=WARMUP)


@pytest.fixture(scope="module")
def runs(world: sim.World) -> dict[str, sim.RunState]:
    return {policy: sim.run(world, policy) for policy in sim.POLICIES}


def test_every_lead_is_assigned_once_and_contacted_in_the_end(world, runs):
    arrived = sorted(a.lead_id for day in world.arrivals for a in day)
    assert arrived
    for state in runs.values():
        assert sorted(lead.arrival.lead_id for lead in state.leads) == arrived
        assert all(lead.contacted_w is not None for lead in state.leads)
        assert all(lead.contacted_w > lead.assigned_w for lead in state.leads)
        assert not any(state.queues)


def test_shares_are_between_0_and_1_and_add_up(world, runs):
    for state in runs.values():
        figures = sim.summarise(world, state)
        per_rep = figures["per_rep"]
        assert sum(r["leads"] for r in per_rep.values()) == figures["leads"] > 0
        assert sum(r["conversions"] for r in per_rep.values()) == figures["conversions"]
        top = sum(r["leads"] for r in per_rep.values() if r["strong"])
        assert figures["top3_lead_share"] == pytest.approx(top / figures["leads"], abs=1e-4)
        for key in ("top3_lead_share", "top3_conversion_share", "contact_2h_rate",
                    "waited_over_48h", "conversion_rate", "offered_while_offline"):
            assert 0 <= figures[key] <= 1, key
        assert figures["never_contacted"] == 0


def test_nobody_on_leave_gets_a_lead(world, runs):
    for state in runs.values():
        for lead in state.leads:
            assert world.presence[lead.arrival.day][lead.rep] is not None


def test_round_robin_spreads_evenly_over_reps_who_were_always_available(world, runs):
    figures = sim.summarise(world, runs["round_robin"])
    always = [r["leads"] for r in figures["per_rep"].values() if r["days_available"] == DAYS]
    assert len(always) >= 2
    assert max(always) - min(always) <= 1


def test_the_engine_applies_the_seed_rule_to_urgent_industrial_leads(world, runs):
    urgent = sum(lead.arrival.measured and lead.arrival.urgency == "high"
                 and lead.arrival.industry == "industrial" for lead in runs["engine"].leads)
    outcomes = runs["engine"].rule_outcomes
    assert sum(outcomes.values()) == sim.summarise(world, runs["engine"])["leads"]
    assert outcomes.get("no_rule_matched", 0) + urgent == sum(outcomes.values())


def test_the_same_seed_gives_the_same_figures_and_another_seed_others():
    first = sim.simulate(SEED, days=DAYS, warmup_days=WARMUP)
    assert sim.simulate(SEED, days=DAYS, warmup_days=WARMUP) == first
    assert sim.simulate(SEED + 1, days=DAYS, warmup_days=WARMUP) != first


def test_the_command_prints_a_table_and_ends_with_one_json_line(capsys):
    assert sim.main(["--seed", str(SEED), "--days", "2", "--json"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert "top-3 share of leads" in "\n".join(lines)
    result = json.loads(lines[-1])
    assert result["seed"] == SEED and set(result["policies"]) == set(sim.POLICIES)
