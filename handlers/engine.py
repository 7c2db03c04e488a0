"""The weighted assignment engine: factors, scores and the choice, as pure functions.

Owns how a rep is scored for a lead and which rep a batch of leads goes to; it reads no
database and no clock (handlers.assignment gathers the data and writes the offers).

The factors, each turned into a 0–1 score on a fixed scale so that a rep's score does not
move when colleagues join or leave (a team of 3 and a team of 300 score alike):
- load: open leads (assigned or accepted, not yet contacted); 1 / (1 + open / 2), so no
  open lead scores 1 and two score 0.5 (tuned with benchmarks/simulate_assignment.py).
- conversion: converted ÷ accepted among the rep's leads of the lead's industry accepted
  in the last 30 days whose outcome is known (converted, lost, or MATURE_DAYS old), shrunk
  towards the team's rate by PRIOR_WEIGHT imaginary leads, so a new rep starts at the
  team's rate instead of zero; scored rate / 0.5 (capped at 1). Missing when the lead has
  no industry.
- online: minutes online today (online_minutes), scored minutes / 240 (capped at 1).
The score is 100 × Σ weight × factor score ÷ Σ weight over the factors present. The best
score wins among the reps within MAX_LEAD_GAP open leads of the least loaded one.
"""

from __future__ import annotations

import heapq
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

FACTORS = ("load", "conversion", "online")
DEFAULT_WEIGHTS = {"load": 30, "conversion": 40, "online": 30}
FACTOR_NAMES = {"load": "负载", "conversion": "转化", "online": "在线"}

LOAD_HALF = 2  # open leads at which the load score is one half
CONVERSION_FULL = 0.5  # a conversion rate that scores full marks
ONLINE_FULL_MINUTES = 240
PRIOR_WEIGHT = 5  # imaginary leads at the team's rate added to every rep's record
PRIOR_DEFAULT = 0.2  # the team's rate when the team itself has under PRIOR_MIN_LEADS
PRIOR_MIN_LEADS = 10
MATURE_DAYS = 14  # a lead counts in the conversion rate once this old, or decided
ACTIVITY_MINUTES = 10  # a message counts as this many minutes online
# No rep is chosen while holding more than this many open leads over the least-loaded
# candidate: however the weights are set, a burst cannot pile up on one rep.
MAX_LEAD_GAP = 3


class WeightsError(ValueError):
    """Weights that cannot be used; the message is the answer to the admin."""


@dataclass(slots=True)
class RepRecord:
    """What the engine knows of one available rep for one batch."""

    member_id: int
    name: str
    open_leads: int
    cap: int | None = None
    # industry → (accepted, converted) over the last 30 days
    history: dict[str, tuple[int, int]] = field(default_factory=dict)
    online_minutes: float = 0.0
    team: str | None = None
    last_offered: int | None = None  # the rep's latest offer; a later offer is higher


@dataclass(slots=True, frozen=True)
class Breakdown:
    """One rep's score for one lead, factor by factor."""

    member_id: int
    score: float
    values: dict[str, float | None]  # the raw factor (open leads, rate, minutes)
    parts: dict[str, float | None]  # the 0–1 factor scores; None when missing
    history: int = 0  # the rep's own leads behind the conversion rate (0: the team's rate)

    def as_json(self) -> dict[str, object]:
        return {"member_id": self.member_id, "score": round(self.score, 2),
                "history": self.history,
                "values": {k: _round(v) for k, v in self.values.items()},
                "parts": {k: _round(v) for k, v in self.parts.items()}}


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def parse_weights(text: str) -> dict[str, int]:
    """`负载=30 转化=40 在线=30` (any order, English names too) → validated weights."""
    by_name = {**{v: k for k, v in FACTOR_NAMES.items()}, **{k: k for k in FACTORS},
               "conv": "conversion"}
    weights: dict[str, int] = {}
    text = unicodedata.normalize("NFKC", text).replace("，", " ").replace(",", " ")
    text = re.sub(r"\s*=\s*", "=", text)
    for item in text.split():
        name, sep, value = item.partition("=")
        factor = by_name.get(name.strip().lower())
        if not sep or factor is None:
            raise WeightsError(f"「{item}」不是「因子=数字」，因子是 负载、转化、在线"
                               "（load、conversion、online）")
        if not re.fullmatch(r"[0-9]{1,3}", value):
            raise WeightsError(f"「{item}」的权重须是 0 到 100 的整数")
        if factor in weights:
            raise WeightsError(f"「{FACTOR_NAMES[factor]}」写了两次")
        weights[factor] = int(value)
    missing = [FACTOR_NAMES[f] for f in FACTORS if f not in weights]
    if missing:
        raise WeightsError(f"缺少 {'、'.join(missing)} 的权重")
    total = sum(weights.values())
    if total != 100:
        raise WeightsError(f"三项权重之和须为 100，现在是 {total}")
    return weights


def check_weights(weights: dict[str, int]) -> dict[str, int]:
    if set(weights) != set(FACTORS) or any(
            not isinstance(v, int) or isinstance(v, bool) or v < 0 for v in weights.values()):
        raise WeightsError(f"weights must be whole numbers >= 0 for {FACTORS}: {weights}")
    if sum(weights.values()) != 100:
        raise WeightsError(f"weights must sum to 100: {weights}")
    return weights


def team_rates(records: Iterable[RepRecord]) -> dict[str, float]:
    """The team's 30-day conversion rate per industry: the prior for every rep."""
    totals: dict[str, list[int]] = {}
    for record in records:
        for industry, (accepted, converted) in record.history.items():
            total = totals.setdefault(industry, [0, 0])
            total[0] += accepted
            total[1] += converted
    return {industry: converted / accepted if accepted >= PRIOR_MIN_LEADS else PRIOR_DEFAULT
            for industry, (accepted, converted) in totals.items()}


def conversion_rate(record: RepRecord, industry: str | None,
                    priors: dict[str, float]) -> float | None:
    """The rep's 30-day conversion in this industry, shrunk towards the team's rate."""
    if not industry:
        return None
    accepted, converted = record.history.get(industry, (0, 0))
    prior = priors.get(industry, PRIOR_DEFAULT)
    return (converted + PRIOR_WEIGHT * prior) / (accepted + PRIOR_WEIGHT)


def load_part(open_leads: int) -> float:
    return 1.0 / (1.0 + max(open_leads, 0) / LOAD_HALF)


def conversion_part(rate: float | None) -> float | None:
    return None if rate is None else min(max(rate, 0.0) / CONVERSION_FULL, 1.0)


def online_part(minutes: float) -> float:
    return min(max(minutes, 0.0) / ONLINE_FULL_MINUTES, 1.0)


def combine(parts: dict[str, float | None], weights: dict[str, int]) -> float:
    """100 × the weighted mean of the factor scores present (missing ones drop out)."""
    present = [(weights[f], p) for f, p in parts.items() if p is not None and weights[f] > 0]
    total = sum(w for w, _ in present)
    if total == 0:
        return 0.0
    return 100.0 * sum(w * p for w, p in present) / total


def score_value(record: RepRecord, industry: str | None, weights: dict[str, int],
                priors: dict[str, float]) -> float:
    """score(...).score alone, without the breakdown: the heap's key, computed often."""
    rate = conversion_rate(record, industry, priors)
    return combine({"load": load_part(record.open_leads), "conversion": conversion_part(rate),
                    "online": online_part(record.online_minutes)}, weights)


def score(record: RepRecord, industry: str | None, weights: dict[str, int],
          priors: dict[str, float]) -> Breakdown:
    rate = conversion_rate(record, industry, priors)
    values: dict[str, float | None] = {
        "load": float(record.open_leads), "conversion": rate,
        "online": float(record.online_minutes),
    }
    parts = {"load": load_part(record.open_leads), "conversion": conversion_part(rate),
             "online": online_part(record.online_minutes)}
    history = record.history.get(industry, (0, 0))[0] if industry else 0
    return Breakdown(record.member_id, combine(parts, weights), values, parts, history)


def online_minutes(events: list[tuple[str, datetime]], day_start: datetime,
                   now: datetime) -> float:
    """Minutes online between day_start and now, from presence events in time order.

    Online is the union of the stretches after /上班 ("on") until /下班 ("off") or now,
    and ACTIVITY_MINUTES after each message ("active"), within today so far.
    """
    spans: list[tuple[datetime, datetime]] = []
    on_since: datetime | None = None
    for kind, at in sorted(events, key=lambda e: e[1]):
        if kind == "on":
            on_since = at if on_since is None else on_since
        elif kind == "off":
            if on_since is not None:
                spans.append((on_since, at))
            on_since = None
        elif kind == "active":
            spans.append((at, at + timedelta(minutes=ACTIVITY_MINUTES)))
    if on_since is not None:
        spans.append((on_since, now))
    total = 0.0
    reach = day_start
    for start, end in sorted((max(s, day_start), min(e, now)) for s, e in spans):
        start = max(start, reach)
        if end > start:
            total += (end - start).total_seconds()
            reach = end
    return total / 60.0


class Chooser:
    """Chooses reps for a batch of leads, one after the other, as if they came one by one.

    Each choice counts against the rep (one more open lead, offered just now), so a batch
    spreads like single arrivals would. Ties go to the rep offered longest ago. Kept in a
    lazy heap per industry, so a choice costs a logarithm of the team, not a scan of it.
    """

    def __init__(self, records: list[RepRecord], weights: dict[str, int]) -> None:
        self.weights = check_weights(dict(weights))
        self.records = {r.member_id: r for r in records}
        self.priors = team_rates(records)
        self._version = dict.fromkeys(self.records, 0)
        self._heaps: dict[str | None, list[tuple[float, tuple[int, int], int, int]]] = {}
        # how many open reps hold each number of open leads: the floor is the least
        self._loads = Counter(r.open_leads for r in records if self._open(r.member_id))

    def breakdown(self, member_id: int, industry: str | None) -> Breakdown:
        return score(self.records[member_id], industry, self.weights, self.priors)

    def _key(self, member_id: int, industry: str | None) -> tuple[float, tuple[int, int],
                                                                   int, int]:
        record = self.records[member_id]
        offered = record.last_offered
        order = (0, 0) if offered is None else (1, offered)
        return (-score_value(record, industry, self.weights, self.priors), order, member_id,
                self._version[member_id])

    def _heap(self, industry: str | None) -> list[tuple[float, tuple[int, int], int, int]]:
        heap = self._heaps.get(industry)
        if heap is None:
            heap = [self._key(m, industry) for m in self.records if self._open(m)]
            heapq.heapify(heap)
            self._heaps[industry] = heap
        return heap

    def _open(self, member_id: int) -> bool:
        record = self.records[member_id]
        return record.cap is None or record.open_leads < record.cap

    def ranked(self, industry: str | None, among: Iterable[int] | None = None,
               exclude: set[int] | frozenset[int] = frozenset()) -> list[Breakdown]:
        """Every eligible rep's breakdown, best first (for explanations and rule tests)."""
        ids = self.records if among is None else [m for m in among if m in self.records]
        found = [self._key(m, industry) for m in ids if m not in exclude and self._open(m)]
        return [self.breakdown(key[2], industry) for key in sorted(found)]

    def choose(self, industry: str | None, among: set[int] | None = None,
               exclude: set[int] | frozenset[int] = frozenset()) -> Breakdown | None:
        """The best rep for a lead of this industry among `among` (None: everyone),
        skipping reps more than MAX_LEAD_GAP open leads above the least loaded."""
        if among is not None:
            keys = sorted(self._key(m, industry) for m in among if m in self.records
                          and m not in exclude and self._open(m))
            if not keys:
                return None
            floor = min(self.records[key[2]].open_leads for key in keys)
            chosen = next(key[2] for key in keys
                          if self.records[key[2]].open_leads <= floor + MAX_LEAD_GAP)
            return self.breakdown(chosen, industry)
        ceiling = min(self._loads, default=0) + MAX_LEAD_GAP
        heap = self._heap(industry)
        skipped, held = [], []
        chosen = None
        while heap:
            key = heap[0]
            member_id, version = key[2], key[3]
            if version != self._version[member_id] or not self._open(member_id):
                heapq.heappop(heap)
                continue
            if member_id in exclude:
                skipped.append(heapq.heappop(heap))
                continue
            if self.records[member_id].open_leads > ceiling:
                held.append(heapq.heappop(heap))
                continue
            chosen = member_id
            break
        if chosen is None and held:
            chosen = held[0][2]  # the least loaded are all excluded: the best of the rest
        for key in skipped + held:
            heapq.heappush(heap, key)
        return None if chosen is None else self.breakdown(chosen, industry)

    def take(self, member_id: int, order: int) -> None:
        """The rep got a lead, offered after every earlier one (`order`): one more open."""
        record = self.records[member_id]
        self._loads[record.open_leads] -= 1
        if not self._loads[record.open_leads]:
            del self._loads[record.open_leads]
        record.open_leads += 1
        record.last_offered = order
        self._version[member_id] += 1
        if self._open(member_id):
            self._loads[record.open_leads] += 1
        if self._open(member_id):
            for industry, heap in self._heaps.items():
                heapq.heappush(heap, self._key(member_id, industry))


def explain(breakdown: Breakdown, industry_name: str | None, rule_id: int | None,
            weights: dict[str, int]) -> str:
    """One line a rep understands: the two factors that weighed most, and the rule."""
    phrases = []
    contributions = sorted(
        ((weights[f] * p, f) for f, p in breakdown.parts.items() if p is not None),
        reverse=True)
    for _, factor in contributions[:2]:
        value = breakdown.values[factor]
        if factor == "load":
            phrases.append(f"未跟进线索 {int(value or 0)} 条")
        elif factor == "conversion" and not breakdown.history:
            rate = round((value or 0) * 100)
            phrases.append(f"新人按团队{industry_name or ''}转化率 {rate}% 计")
        elif factor == "conversion":
            phrases.append(f"近30天{industry_name or ''}转化率 {round((value or 0) * 100)}%")
        else:
            phrases.append(f"今日在线 {(value or 0) / 60:.1f} 小时")
    line = f"推荐理由：{'，'.join(phrases)}（综合 {round(breakdown.score)} 分）"
    if rule_id is not None:
        line += f"；符合规则 #{rule_id}"
    return line
