"""Shared pieces of the benchmarks: processes on loopback, their memory, percentiles.

Every server a benchmark starts listens on 127.0.0.1 and is stopped when it ends.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
API_TOKEN = "bench-token-0123456789"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def memory_mb(pid: int) -> tuple[float, float]:
    """(current RSS, peak RSS) of a process, in MiB, from /proc."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    to_mb = lambda v: int(v.split()[0]) / 1024  # noqa: E731 - kB → MiB
    return to_mb(fields.get("VmRSS", "0 kB")), to_mb(fields.get("VmHWM", "0 kB"))


@contextmanager
def process(args: list[str], env: dict[str, str], log: Path):
    with log.open("w") as out:
        proc = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
        try:
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()


async def wait_http(url: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            try:
                async with http.get(url) as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
    raise RuntimeError(f"{url} did not come up within {seconds} s")


def bot_env(db_url: str, port: int, fake_url: str, **extra: str) -> dict[str, str]:
    from tests.fakes.wecom import AES_KEY, AGENT_ID, CORP_ID, SECRET, TOKEN

    env = {k: v for k, v in os.environ.items() if not k.startswith("SALESBOT_")}
    env.update({
        "SALESBOT_DATABASE__URL": db_url,
        "SALESBOT_HTTP__PORT": str(port),
        "SALESBOT_API__TOKEN": API_TOKEN,
        "SALESBOT_WECOM__CORP_ID": CORP_ID,
        "SALESBOT_WECOM__AGENT_ID": str(AGENT_ID),
        "SALESBOT_WECOM__SECRET": SECRET,
        "SALESBOT_WECOM__TOKEN": TOKEN,
        "SALESBOT_WECOM__AES_KEY": AES_KEY,
        "SALESBOT_WECOM__API_BASE": fake_url,
        "PYTHONPATH": str(ROOT),
    })
    env.update(extra)
    return env


def write_roster(path: Path, rows: list[dict[str, str]]) -> None:
    columns = ["name", "role", "wecom_userid", "dingtalk_userid", "mobile", "manager",
               "industries", "team"]
    lines = [",".join(columns)]
    for row in rows:
        lines.append(",".join(row.get(c, "") for c in columns))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def import_roster(path: Path, env: dict[str, str]) -> None:
    subprocess.run([PYTHON, "-m", "bot.cli", "team", "import", str(path)], env=env,
                   check=True, cwd=ROOT, capture_output=True)


@dataclass
class Stack:
    """`salesbot serve` on SQLite with its WeCom channel on the fake, both running."""

    work: Path
    db: Path
    base: str
    fake_url: str
    bot: subprocess.Popen[bytes]


@asynccontextmanager
async def wecom_stack(roster_rows: list[dict[str, str]], **extra: str) -> AsyncIterator[Stack]:
    work = Path(tempfile.mkdtemp(prefix="salesbot-bench-"))
    db, url_file, port = work / "bench.db", work / "fake.url", free_port()
    fake_args = [PYTHON, "-m", "benchmarks.fake_wecom_server", str(url_file)]
    with process(fake_args, bot_env("", 0, ""), work / "fake.log"):
        for _ in range(100):
            if url_file.exists() and url_file.read_text():
                break
            await asyncio.sleep(0.1)
        fake_url = url_file.read_text()
        env = bot_env(f"sqlite+aiosqlite:///{db}", port, fake_url, **extra)
        env.setdefault("SALESBOT_HTTP__PUBLIC_URL", f"http://127.0.0.1:{port}")
        roster = work / "roster.csv"
        write_roster(roster, roster_rows)
        await asyncio.to_thread(import_roster, roster, env)
        with process([PYTHON, "-m", "bot.cli", "serve"], env, work / "bot.log") as bot:
            base = f"http://127.0.0.1:{port}"
            await wait_http(base + "/healthz")
            yield Stack(work, db, base, fake_url, bot)


async def fake_stats(stack: Stack) -> dict[str, object]:
    async with aiohttp.ClientSession() as http:
        async with http.get(stack.fake_url + "/_stats") as response:
            return await response.json()


def run_alone(
    run: Callable[[], Awaitable[dict[str, object]]],
    checks: Callable[[dict[str, object]], list[tuple[str, bool, str]]],
) -> int:
    """One benchmark by itself (`python -m benchmarks.bench_…`): its figures, its targets,
    exit 1 when one is missed."""
    figures = asyncio.run(run())
    print(json.dumps(figures, ensure_ascii=False, indent=2))
    print("\nTargets:")
    results = checks(figures)
    for name, ok, figure in results:
        print(f"  [{'ok' if ok else 'FAIL'}] {name}: {figure}")
    return 0 if all(ok for _, ok, _ in results) else 1
