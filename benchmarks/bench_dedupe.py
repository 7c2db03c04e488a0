"""Duplicate detection on 100,000 customers stored in SQLite (benchmarks.gen_customers).

1. Load: bulk INSERTs, then handlers.matching.index_rows for the keys and grams.
2. The monthly scan: handlers.matching.scan_groups over every customer; its decided pairs
   against the ground truth give the precision and recall of the "similar" decision
   (targets ≥ 0.98 and ≥ 0.95), its time the target < 60 s.
3. At the door: find_similar for 1,000 new entries (half re-entries of stored companies),
   each in its own session as an event has; target p99 < 20 ms.
Peak memory (RSS) of this process is reported.
"""

from __future__ import annotations

import os
import resource
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from benchmarks.common import memory_mb, percentile, run_alone
from benchmarks.gen_customers import generate, probes

CUSTOMERS = 100_000
PROBES = 1000
CHUNK = 10_000

TARGETS = {"precision": 0.98, "recall": 0.95, "door_p99_ms": 20.0, "scan_seconds": 60.0}


async def _load(rt, data) -> list[int]:  # noqa: ANN001 - Runtime, Dataset
    from handlers.matching import index_rows
    from storage.models import Customer

    now = datetime.now(UTC)
    ids = list(range(1, len(data.records) + 1))
    for start in range(0, len(ids), CHUNK):
        rows = [{"id": ids[start + n], "company": r.company, "contact": r.contact,
                 "phone": r.phone, "email": r.email, "status": "active", "created_at": now,
                 "updated_at": now}
                for n, r in enumerate(data.records[start:start + CHUNK])]
        async with rt.sessions() as session, session.begin():
            await session.execute(Customer.__table__.insert(), rows)
            await index_rows(session, "customer", ids[start:start + CHUNK])
    return ids


def _quality(predicted: set[tuple[int, int]], truth: set[tuple[int, int]]) -> dict[str, float]:
    hits = len(predicted & truth)
    return {"pairs_predicted": len(predicted), "pairs_true": len(truth), "pairs_right": hits,
            "precision": round(hits / len(predicted), 4) if predicted else 0.0,
            "recall": round(hits / len(truth), 4) if truth else 0.0}


async def run(total: int = CUSTOMERS, probe_count: int = PROBES) -> dict[str, object]:
    from config.settings import load_settings
    from handlers.customers import check_door
    from handlers.matching import find_similar, keys_for, scan_groups
    from storage.db import upgrade_async

    work = Path(tempfile.mkdtemp(prefix="salesbot-bench-dedupe-"))
    url = f"sqlite+aiosqlite:///{work}/dedupe.db"
    await upgrade_async(url)
    from bot.runtime import Runtime

    rt = Runtime(load_settings(database={"url": url}))
    try:
        started = time.monotonic()
        data = generate(total)
        generate_s = time.monotonic() - started

        started = time.monotonic()
        ids = await _load(rt, data)
        load_s = time.monotonic() - started

        rss_before, _ = memory_mb(os.getpid())
        started = time.monotonic()
        async with rt.sessions() as session:
            groups = await scan_groups(session)
        scan_s = time.monotonic() - started
        rss_after, _ = memory_mb(os.getpid())

        truth = data.true_pairs(ids)
        decided = {(a, b) for group in groups for a, b, _, _ in group.pairs}
        grouped = set()
        for group in groups:
            members = group.customer_ids
            grouped.update((a, b) for i, a in enumerate(members) for b in members[i + 1:])
        entity_of = {stored: r.entity for stored, r in zip(ids, data.records, strict=True)}

        latencies, found_known, known = [], 0, 0
        for probe in probes(data, probe_count):
            async with rt.sessions() as session:
                t0 = time.perf_counter()
                found = await find_similar(session, keys_for(probe.company, probe.contact,
                                                             probe.phone, probe.email))
                latencies.append(time.perf_counter() - t0)
            if probe.role == "duplicate":
                known += 1
                found_known += any(s.kind == "customer" and entity_of.get(s.id) == probe.entity
                                   for s in found)
        # What the entry points run (handlers.customers.check_door: the API, the chat
        # entry, the conversion card), one probe a session as an event has.
        door_latencies, door_found = [], 0
        for probe in probes(data, probe_count):
            async with rt.sessions() as session:
                t0 = time.perf_counter()
                [check] = await check_door(session, [keys_for(
                    probe.company, probe.contact, probe.phone, probe.email)])
                door_latencies.append(time.perf_counter() - t0)
            if probe.role == "duplicate":
                door_found += any(m.kind == "customer" and entity_of.get(m.id) == probe.entity
                                  for m in check.matches)
        _, peak_mb = memory_mb(os.getpid())
    finally:
        await rt.engine.dispose()
    sizes: dict[int, int] = {}
    for group in groups:
        sizes[len(group.customer_ids)] = sizes.get(len(group.customer_ids), 0) + 1
    return {
        "customers": total, "generate_seconds": round(generate_s, 1),
        "load_and_index_seconds": round(load_s, 1),
        "scan_seconds": round(scan_s, 1), "groups": len(groups),
        "group_sizes": dict(sorted(sizes.items())),
        "similar_decision": _quality(decided, truth),
        "groups_as_pairs": _quality(grouped, truth),
        "door_probes": len(latencies),
        "door_p50_ms": round(percentile(latencies, 0.50) * 1000, 2),
        "door_p99_ms": round(percentile(latencies, 0.99) * 1000, 2),
        "door_max_ms": round(max(latencies, default=0) * 1000, 2),
        "door_reentries_found": f"{found_known}/{known}",
        "check_door_p50_ms": round(percentile(door_latencies, 0.50) * 1000, 2),
        "check_door_p99_ms": round(percentile(door_latencies, 0.99) * 1000, 2),
        "check_door_reentries_found": f"{door_found}/{known}",
        "scan_rss_growth_mb": round(rss_after - rss_before, 1),
        "peak_rss_mb": round(max(peak_mb, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                                 / 1024), 1),
    }


def checks(figures: dict[str, object]) -> list[tuple[str, bool, str]]:
    """(target, met, figure) for each target, as benchmarks.run prints them."""
    decision = figures["similar_decision"]
    assert isinstance(decision, dict)
    return [
        (f"similar decision precision ≥ {TARGETS['precision']}",
         decision["precision"] >= TARGETS["precision"],
         f"{decision['precision']} ({decision['pairs_right']} of "
         f"{decision['pairs_predicted']} pairs)"),
        (f"similar decision recall ≥ {TARGETS['recall']}",
         decision["recall"] >= TARGETS["recall"],
         f"{decision['recall']} ({decision['pairs_right']} of {decision['pairs_true']} pairs)"),
        ("find_similar p99 with 100,000 stored < 20 ms",
         float(figures["door_p99_ms"]) < TARGETS["door_p99_ms"],  # type: ignore[arg-type]
         f"p99 {figures['door_p99_ms']} ms, p50 {figures['door_p50_ms']} ms, "
         f"re-entries found {figures['door_reentries_found']}"),
        ("check_door (the entry points' check) p99 with 100,000 stored < 20 ms",
         float(figures["check_door_p99_ms"]) < TARGETS["door_p99_ms"],  # type: ignore[arg-type]
         f"p99 {figures['check_door_p99_ms']} ms, p50 {figures['check_door_p50_ms']} ms, "
         f"re-entries found {figures['check_door_reentries_found']}"),
        ("scan_groups of 100,000 < 60 s",
         float(figures["scan_seconds"]) < TARGETS["scan_seconds"],  # type: ignore[arg-type]
         f"{figures['scan_seconds']} s, {figures['groups']} groups, peak RSS "
         f"{figures['peak_rss_mb']} MiB"),
    ]


if __name__ == "__main__":
    sys.exit(run_alone(run, checks))
