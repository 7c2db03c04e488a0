"""A 50,000-row xlsx imported by `salesbot leads import` while WeCom callbacks keep coming.

The workbook is generated here (fixed seed, openpyxl write-only mode): numeric phones,
landlines, tags in Chinese and English, 1 % rejected rows and 1 % duplicates. `salesbot
serve` runs on the same SQLite database with 50 reps on duty (cap 100 open leads each);
callbacks are posted at a steady rate during the whole import and their latency is
measured from each one's scheduled time.
"""

from __future__ import annotations

import asyncio
import json
import random
import resource
import sqlite3
import subprocess
import time
from pathlib import Path

import aiohttp

from benchmarks.bench_callbacks import _post
from benchmarks.common import PYTHON, ROOT, bot_env, percentile, wecom_stack
from tests.fakes.wecom import FakeWeCom

ROWS = 50_000
REPS = 50
CAP = 100
RATE = 40  # callbacks a second during the import
SEED = 20261204
HEADER = ["公司名称", "联系人", "手机", "座机", "邮箱", "行业", "紧急程度", "来源", "备注",
          "员工数", "首次联系", "外部编号"]


def generate(path: Path, rows: int = ROWS, seed: int = SEED) -> None:
    from openpyxl import Workbook

    rng = random.Random(seed)
    book = Workbook(write_only=True)
    sheet = book.create_sheet("线索")
    sheet.append(HEADER)
    phones = rng.sample(range(10**8), rows)
    industries, urgencies, sources = ("工业", "medical", "教育"), ("高", "中", "low"), \
        ("展会", "SEM", "referral")
    for n in range(rows):
        phone = 13800000000 + phones[n] % 10**8
        if n % 100 == 50:
            phone = 13800000000 + phones[n - 1] % 10**8  # a duplicate of the row above
        employees: object = rng.randrange(0, 5000)
        if n % 100 == 70:
            employees = "-"  # refused: the incident's placeholder
        sheet.append([
            f"示例企业{n:05d}有限公司", f"联系人{n % 997}", phone,
            f"0755-{rng.randrange(10**7, 10**8)}" if n % 3 == 0 else None,
            f"lead{n}@example.com" if n % 2 else "-", industries[n % 3], urgencies[n % 3],
            sources[n % 3], "展会扫码" if n % 5 == 0 else None, employees,
            45292 + n % 300, f"BENCH-{n:06d}",
        ])
    book.save(path)


def _callbacks(count: int) -> list[tuple[dict[str, str], bytes]]:
    sealer = FakeWeCom()
    out = []
    for n in range(count):
        plain = sealer.text_xml(f"bench{n % REPS:04d}", ("/帮助", "你好")[n % 2],
                                msg_id=str(7500000000000000000 + n))
        box = sealer.seal(plain)
        out.append((box.params, box.body.encode("utf-8")))
    return out


async def _on_duty(url: str) -> None:
    sealer = FakeWeCom()
    async with aiohttp.ClientSession() as http:
        for n in range(REPS):
            box = sealer.seal(sealer.text_xml(f"bench{n:04d}", "/上班",
                                              msg_id=str(7490000000000000000 + n)))
            await _post(http, url, (box.params, box.body.encode("utf-8")))


async def _traffic(url: str, items, running: asyncio.Event) -> list[float]:
    """Open loop at RATE a second until the import ends; latency from the schedule."""
    latencies: list[float] = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        tasks = []

        async def one(scheduled: float, item) -> None:
            await asyncio.sleep(max(0.0, scheduled - loop.time()))
            status = await _post(http, url, item)
            if status == 200:
                latencies.append(loop.time() - scheduled)

        for index, item in enumerate(items):
            scheduled = t0 + index / RATE
            while loop.time() < scheduled - 0.5:
                if not running.is_set():
                    break
                await asyncio.sleep(0.1)
            if not running.is_set():
                break
            tasks.append(asyncio.create_task(one(scheduled, item)))
        await asyncio.gather(*tasks)
    return latencies


def _counts(db: Path) -> dict[str, int]:
    with sqlite3.connect(db) as conn:
        return dict(conn.execute("SELECT status, count(*) FROM leads GROUP BY status").fetchall())


async def run() -> dict[str, object]:
    roster = [{"name": f"销售{n:03d}", "role": "rep", "wecom_userid": f"bench{n:04d}",
               "team": "华南"} for n in range(REPS)]
    extra = {"SALESBOT_LEADS__MAX_OPEN_LEADS": str(CAP)}
    async with wecom_stack(roster, **extra) as stack:
        url = stack.base + "/wecom/callback"
        book = stack.work / "leads.xlsx"
        started = time.monotonic()
        await asyncio.to_thread(generate, book)
        generated_s = time.monotonic() - started
        await _on_duty(url)
        items = await asyncio.to_thread(_callbacks, RATE * 600)
        env = bot_env(f"sqlite+aiosqlite:///{stack.db}", 0, stack.fake_url, **extra)
        running = asyncio.Event()
        running.set()
        traffic = asyncio.create_task(_traffic(url, items, running))
        await asyncio.sleep(1)
        started = time.monotonic()
        done = await asyncio.to_thread(
            subprocess.run, [PYTHON, "-m", "bot.cli", "leads", "import", str(book),
                             "--skip-invalid", "--json"],
            env=env, cwd=ROOT, capture_output=True, text=True)
        import_s = time.monotonic() - started
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        running.clear()
        latencies = await traffic
        summary = json.loads(done.stdout.strip().splitlines()[-1])
        counts = _counts(stack.db)
    return {
        "rows": ROWS, "generate_seconds": round(generated_s, 1),
        "import_seconds": round(import_s, 1), "exit_code": done.returncode,
        "import_peak_rss_mb": round(peak_mb, 1),
        "accepted": summary["accepted"], "written": summary["written"],
        "rejected_rows": len({r["row"] for r in summary["rejected"]}),
        "duplicates": len(summary["duplicates"]), "leads_by_status": counts,
        **callback_figures(latencies),
    }


def callback_figures(latencies: list[float]) -> dict[str, object]:
    """How the callbacks answered during an import fared, in milliseconds."""
    return {
        "callbacks_during_import": len(latencies), "callback_rate": RATE,
        "callback_p50_ms": round(percentile(latencies, 0.50) * 1000, 1),
        "callback_p99_ms": round(percentile(latencies, 0.99) * 1000, 1),
        "callback_max_ms": round(max(latencies, default=0) * 1000, 1),
    }


if __name__ == "__main__":
    print(json.dumps(asyncio.run(run()), ensure_ascii=False, indent=2))
