"""`make bench`: runs every benchmark and prints its figures against the targets."""

from __future__ import annotations

import asyncio
import json
import sys

from benchmarks import (
    bench_callbacks,
    bench_dedupe,
    bench_dingtalk,
    bench_engine,
    bench_import,
    bench_import_chat,
    bench_intake,
    bench_merge,
    simulate_assignment,
)


def _check(name: str, ok: bool, figure: str) -> bool:
    print(f"  [{'ok' if ok else 'MISSED'}] {name}: {figure}")
    return ok


async def main() -> int:
    results = {}
    print("WeCom callbacks (200 members, open loop 500/s for 10 s, then concurrency 50)…",
          flush=True)
    results["callbacks"] = cb = await bench_callbacks.run()
    print("Intake (2,000 leads, 20 reps on duty, then delivery with the fake's limits)…",
          flush=True)
    results["intake"] = it = await bench_intake.run()
    print("DingTalk Stream (2,000 frames a phase at 500/s; disconnect frame, then a drop)…",
          flush=True)
    results["dingtalk"] = dt = await bench_dingtalk.run()
    print("Engine (10,000 leads vs 200 reps; a 2,000-lead backlog at 09:00)…", flush=True)
    results["engine"] = en = await bench_engine.run()
    print("Lead import (50,000-row xlsx by `salesbot leads import`, WeCom callbacks at "
          f"{bench_import.RATE}/s meanwhile)…", flush=True)
    results["import"] = im = await bench_import.run()
    print("The same import from the chat: the upload page, the card's button, inside the "
          "server…", flush=True)
    results["import_chat"] = ic = await bench_import_chat.run()
    print("Duplicates (100,000 customers in SQLite: the monthly scan, 1,000 checks at the "
          "door)…", flush=True)
    results["dedupe"] = dd = await bench_dedupe.run()
    print("Merge review (100,000 customers: the monthly review with writes meanwhile, 200 "
          "merges and undos)…", flush=True)
    results["merge"] = mr = await bench_merge.run()
    print("Simulation (3 strong and 5 new reps, 4 weeks, fixed seed)…", flush=True)
    simulated = simulate_assignment.simulate()["policies"]
    results["simulation"] = sim = {
        policy: {k: figures[k] for k in ("top3_lead_share", "top3_conversion_share",
                                          "contact_2h_rate", "waited_over_48h")}
        for policy, figures in simulated.items()}
    print(json.dumps(results, ensure_ascii=False, indent=2))
    print("\nTargets:")
    checks = [
        _check("callback ack p99 at 500/s < 100 ms", cb["open_loop"]["p99_ms"] < 100,
               f"p99 {cb['open_loop']['p99_ms']} ms, p50 {cb['open_loop']['p50_ms']} ms, "
               f"{cb['open_loop']['failed']} failed"),
        _check("rate held at concurrency 50", cb["closed_loop"]["completed"] > 0,
               f"{cb['closed_loop']['rate_held']}/s, p99 {cb['closed_loop']['p99_ms']} ms"),
        _check("every recorded callback processed", cb["events_unprocessed"] == 0,
               f"{cb['events_recorded']} events, drained {cb['backlog_drained_after_s']} s "
               "after the load"),
        _check("2,000 leads stored, assigned and in the outbox < 10 s",
               it["post"]["seconds"] < 10 and it["after_post"]["cards_in_outbox"] == 2000
               and it["after_post"]["assigned"] == 2000,
               f"{it['post']['seconds']} s, {it['after_post']}"),
        _check("delivered with none dropped",
               it["fake_wecom"]["dropped"] == 0 and it["after_delivery"]["cards_sent"] == 2000,
               f"{it['after_delivery']['cards_sent']} cards in {it['delivery_seconds']} s, "
               f"{it['fake_wecom']['dropped']} dropped"),
        _check("each rep within budget (≤ 25 a minute)",
               it["fake_wecom"]["max_per_minute"] <= 25,
               f"most in any minute: {it['fake_wecom']['max_per_minute']}"),
    ]
    for name, phase in dt["phases"].items():
        checks.append(_check(
            f"DingTalk {name}: ≥ 300 acks/s, p99 frame-to-ack < 1 s, loop lag p99 < 50 ms",
            phase["acked_per_second"] >= 300 and phase["frame_to_ack_ms"]["p99"] < 1000
            and phase["event_loop_lag_ms"]["p99_ms"] < 50,
            f"{phase['acked_per_second']}/s, p99 {phase['frame_to_ack_ms']['p99']} ms, "
            f"lag p99 {phase['event_loop_lag_ms']['p99_ms']} ms, re-opened in "
            f"{phase['reopened_ms']} ms; {phase['delivered_again']} frames in flight at "
            f"the break acked on the gateway's redelivery, all acked after "
            f"{phase['all_acked_after_s']} s"))
    engine, backlog = en["engine"], en["backlog"]
    checks += [
        _check("engine alone ≥ 5,000 leads/s", engine["leads_per_second"] >= 5000,
               f"{engine['leads_per_second']}/s ({engine['leads']} leads, {engine['reps']} reps)"),
        _check("2,000 queued leads into the outbox < 5 s",
               backlog["drain_seconds"] < 5 and backlog["cards_in_outbox"] == 2000,
               f"{backlog['drain_seconds']} s, {backlog['offered']} offered, "
               f"{backlog['leads_per_rep']} per rep"),
        _check("backlog delivered within the budget (≤ 25 a minute, none dropped)",
               backlog["delivered"] >= 2000 and backlog["busiest_minute_per_rep"] <= 25
               and backlog["dropped_by_fake"] == 0,
               f"{backlog['delivered']} delivered in {backlog['simulated_minutes']} simulated "
               f"minutes, busiest minute {backlog['busiest_minute_per_rep']}"),
    ]
    checks += [
        _check("50,000-row xlsx checked and imported < 60 s",
               im["import_seconds"] < 60 and im["written"] == im["accepted"] > 0,
               f"{im['import_seconds']} s, {im['written']} written, {im['rejected_rows']} "
               f"rejected, {im['duplicates']} duplicates, peak RSS "
               f"{im['import_peak_rss_mb']} MiB"),
        _check("WeCom callbacks during the import p99 < 200 ms", im["callback_p99_ms"] < 200,
               f"p99 {im['callback_p99_ms']} ms, p50 {im['callback_p50_ms']} ms, max "
               f"{im['callback_max_ms']} ms over {im['callbacks_during_import']} callbacks"),
        _check("the same file from the chat: checked and imported < 60 s",
               ic["upload_status"] == 200 and ic["import_seconds"] < 60,
               f"checked in {ic['checked_seconds']} s, imported in {ic['import_seconds']} s, "
               f"server peak RSS {ic['server_peak_rss_mb']} MiB"),
        _check("WeCom callbacks during the chat import p99 < 200 ms",
               ic["callback_p99_ms"] < 200,
               f"p99 {ic['callback_p99_ms']} ms, p50 {ic['callback_p50_ms']} ms, max "
               f"{ic['callback_max_ms']} ms over {ic['callbacks_during_import']} callbacks"),
    ]
    checks += [_check(name, ok, figure) for name, ok, figure in bench_dedupe.checks(dd)]
    checks += [_check(name, ok, figure) for name, ok, figure in bench_merge.checks(mr)]
    print("\nSimulation (top-3 share of leads and of conversions, first contact ≤ 2 h):")
    for policy, figures in sim.items():
        print(f"  {policy}: {figures}")
    print(f"\nserver memory: callbacks {cb['server_rss_mb']} MiB (peak "
          f"{cb['server_peak_rss_mb']}), intake {it['server_rss_mb']} MiB (peak "
          f"{it['server_peak_rss_mb']})")
    return 0 if all(checks) else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
