"""`salesbot console` and `salesbot demo` as a user runs them: real processes, stdin piped."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bot.console import button_number
from bot.demo import load_demo

SALESBOT = Path(sys.executable).with_name("salesbot")


@pytest.fixture
def run(tmp_path):
    """Runs `salesbot …` on a fresh SQLite file in tmp_path; returns the finished process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SALESBOT_")}
    env["SALESBOT_DATABASE__URL"] = f"sqlite+aiosqlite:///{tmp_path}/salesbot.db"
    env["PYTHONIOENCODING"] = "utf-8"
    assert SALESBOT.exists(), f"{SALESBOT} is missing: install the project into the venv"

    def run(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(SALESBOT), *args], input=stdin, capture_output=True, text=True,
            encoding="utf-8", env=env, cwd=tmp_path, timeout=120,
        )

    return run


def test_rep_asks_for_help_lists_leads_and_accepts_by_number(run):
    assert run("demo").returncode == 0
    done = run("console", "--as", "王芳", stdin="/帮助\n/我的线索\n1\n")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "王芳，您好！您可以这样和我说话" in out
    assert "/我的线索：我的进行中线索" in out
    assert "#1 深圳示例精密制造有限公司 · 黄海 · 待接受" in out
    assert "【新线索 #1】" in out and "[1] 接受" in out and "[2] 拒绝" in out
    assert "已接受线索 #1（深圳示例精密制造有限公司）" in out
    # The offer card changes in place, and the terminal says so.
    assert "（卡片已更新）" in out and "✔ 王芳 已于" in out
    assert out.index("/帮助") < out.index("您可以这样和我说话") < out.index("已接受线索 #1")


def test_the_card_waiting_for_the_rep_is_shown_when_the_console_starts(run):
    run("demo")
    out = run("console", "--as", "赵强", stdin="").stdout
    assert "【新线索 #2】" in out and "广州示例康健医疗器械有限公司" in out
    assert "[3] 转给同事" in out


def test_a_decline_reason_is_chosen_by_number_on_the_newest_card(run):
    run("demo")
    out = run("console", "--as", "刘洋", stdin="2\n3\n").stdout
    assert "【拒绝线索 #3：请选择原因】" in out
    assert "已拒绝线索 #3，原因：手头线索太多。" in out


def test_a_number_out_of_range_or_on_a_closed_card_is_answered_locally(run):
    run("demo")
    out = run("console", "--as", "王芳", stdin="7\n1\n1\n").stdout
    assert "最近的卡片没有按钮 [7]，请输入 1 到 3 之间的数字。" in out
    assert "已接受线索 #1" in out
    assert "最近的卡片已经没有可点的按钮了。" in out


def test_a_number_without_any_card_is_an_ordinary_message(run):
    run("demo")
    out = run("console", "--as", "陈静", stdin="5\n").stdout
    assert "没看懂「5」" in out


def test_unknown_name_is_one_chinese_line_and_exit_1(run):
    run("demo")
    done = run("console", "--as", "张三", stdin="/帮助\n")
    assert done.returncode == 1
    lines = [line for line in done.stderr.splitlines() if "张三" in line]
    assert lines == ["salesbot: 名单中没有「张三」。可用的名字有：陈静、李明、王芳、赵强、刘洋、"
                     "孙丽、周敏、吴婷。"]
    assert done.stdout == ""


def test_console_on_an_empty_roster_says_how_to_fill_it(run):
    done = run("console", "--as", "王芳")
    assert done.returncode == 1
    assert "名单是空的，请先运行 salesbot demo" in done.stderr


def test_demo_prints_who_to_try_and_twice_adds_nobody_twice(run):
    first = run("demo")
    assert first.returncode == 0
    assert "已载入演示团队「华南」：新增 8 位成员，3 条演示线索。" in first.stdout
    assert "salesbot console --as 王芳" in first.stdout
    assert "http://127.0.0.1:8080/sim" in first.stdout
    again = run("demo")
    assert again.returncode == 0 and "没有重复添加" in again.stdout
    skipped = run("demo", "--if-empty")
    assert skipped.returncode == 0 and "名单中已有 8 位成员，未载入演示数据。" in skipped.stdout


async def test_demo_team_has_every_role_and_offers_its_leads(chat):
    result = await load_demo(chat.rt)
    roles = sorted(m.role for m in result.members)
    assert roles == ["admin", "manager", "marketing", "rep", "rep", "rep", "rep", "service"]
    reps = [m for m in result.members if m.role == "rep"]
    manager = next(m for m in result.members if m.role == "manager")
    assert all(r.manager_id == manager.id and r.industries for r in reps)
    assert all(m.mobile.startswith("13800000") for m in result.members)
    assert [(lead.status, who) for lead, who in result.leads] == [
        ("assigned", "王芳"), ("assigned", "赵强"), ("assigned", "刘洋")]
    assert (await load_demo(chat.rt, only_if_empty=True)).skipped


def test_button_numbers_are_digits_alone():
    assert button_number("1") == 1
    assert button_number(" ２ ") == 2
    assert button_number("1 号") is None
    assert button_number("13800000000") is None
    assert button_number("记录 1") is None
