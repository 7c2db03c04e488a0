"""Loading the team roster from csv or xlsx: every row checked, then all written or none."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from openpyxl import Workbook
from sqlalchemy import func, select

from bot.runtime import Runtime
from handlers.intake import LeadInput, create_lead
from handlers.roster import import_roster, import_roster_rows
from handlers.tabular import TableError
from storage.models import AuditLog, Lead, Member

HEADER = ["name", "role", "wecom_userid", "dingtalk_userid", "mobile", "manager",
          "industries", "team", "status", "max_open_leads", "channel"]
SALESBOT = Path(sys.executable).with_name("salesbot")

# The manager comes after the reps who name him.
TEAM = [
    ["王芳", "rep", "wangfang", "", "138 0000 0001", "李经理", "工业;medical", "华南", "",
     "5", "wecom"],
    ["赵强", "销售", "", "ding-zq", "+86 138-0000-0002", "李经理", "教育", "华南", "leave",
     "", ""],
    ["李经理", "manager", "limanager", "", "13800000003", "", "", "华南", "active", "", ""],
    ["管理员甲", "admin", "", "", "", "", "", "", "", "0", ""],
]


def csv_bytes(rows, header=HEADER, encoding="utf-8") -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue().encode(encoding)


def with_cell(row, column, value):
    changed = list(row)
    changed[HEADER.index(column)] = value
    return changed


@pytest.fixture
async def rt(settings):
    runtime = Runtime(settings)
    yield runtime
    await runtime.close()


async def members(rt) -> dict[str, Member]:
    async with rt.sessions() as session:
        return {m.name: m for m in (await session.scalars(select(Member))).all()}


async def audit_rows(rt, action=None) -> list[AuditLog]:
    async with rt.sessions() as session:
        query = select(AuditLog).order_by(AuditLog.id)
        if action:
            query = query.where(AuditLog.action == action)
        return list((await session.scalars(query)).all())


def refusals(result):
    return [(r.row, r.field, r.reason) for r in result.rejected]


# --- a valid file ---------------------------------------------------------------------


async def test_a_valid_roster_is_written_with_managers_linked_and_audited(rt):
    result = await import_roster(rt, csv_bytes(TEAM), "team.csv")
    assert (result.accepted, result.written, result.rejected) == (4, 4, [])
    assert (result.created, result.updated, result.unchanged) == (4, 0, 0)
    team = await members(rt)
    fang, qiang, boss, admin = team["王芳"], team["赵强"], team["李经理"], team["管理员甲"]
    assert (fang.role, fang.wecom_userid, fang.dingtalk_userid, fang.mobile) == (
        "rep", "wangfang", None, "13800000001")
    assert fang.industries == ["industrial", "medical"]
    assert (fang.max_open_leads, fang.channel, fang.status, fang.team) == (
        5, "wecom", "active", "华南")
    assert (qiang.role, qiang.mobile, qiang.status, qiang.max_open_leads) == (
        "rep", "13800000002", "leave", None)
    assert fang.manager_id == qiang.manager_id == boss.id
    assert boss.manager_id is None and boss.industries == []
    assert admin.max_open_leads == 0 and admin.mobile is None
    created = await audit_rows(rt, "member.create")
    assert [a.after["name"] for a in created] == ["王芳", "赵强", "李经理", "管理员甲"]
    assert created[0].actor == "system" and created[0].actor_id is None
    assert created[0].after["manager"] == "李经理"


async def test_a_gbk_csv_with_chinese_headers_and_values(rt):
    header = ["姓名", "角色", "企业微信账号", "钉钉账号", "手机", "经理", "行业", "团队", "状态"]
    rows = [["刘洋", "销售", "liuyang", "", "13800000011", "", "医疗；工业", "华东", "在职"]]
    result = await import_roster(rt, csv_bytes(rows, header, "gbk"), "团队.csv")
    assert result.rejected == [] and result.written == 1
    member = (await members(rt))["刘洋"]
    assert (member.role, member.status, member.industries) == (
        "rep", "active", ["medical", "industrial"])


async def test_an_xlsx_roster_with_number_cells(rt):
    book = Workbook()
    sheet = book.active
    sheet.append(HEADER)
    sheet.append(["陈静", "rep", "chenjing", None, 13800000021, None, "education", "华北",
                  None, 3, None])
    sheet.append([None] * len(HEADER))
    out = io.BytesIO()
    book.save(out)
    result = await import_roster(rt, out.getvalue(), "team.xlsx")
    assert (result.accepted, result.written, result.rejected) == (1, 1, [])
    member = (await members(rt))["陈静"]
    assert (member.mobile, member.max_open_leads, member.industries) == (
        "13800000021", 3, ["education"])


async def test_error_values_and_uncomputed_formulas_are_refused_by_name(rt):
    book = Workbook()
    sheet = book.active
    sheet.append(HEADER)
    sheet.append(["陈静", "rep", "#N/A", None, "=A2", None, None, None, None, None, None])
    out = io.BytesIO()
    book.save(out)
    result = await import_roster(rt, out.getvalue(), "team.xlsx")
    assert [(r.row, r.field, r.reason) for r in result.rejected] == [
        (2, "wecom_userid", "是 Excel 的错误值“#N/A”（公式出错），请改成实际内容"),
        (2, "mobile", "是没有计算结果的公式，请用 Excel 打开、保存后再导入，或改成实际内容")]
    assert result.written == 0


async def test_rows_can_be_imported_without_a_file(rt):
    result = await import_roster_rows(rt, [
        {"name": "周敏", "role": "marketing", "mobile": "13800000031"},
        {"name": "吴磊", "role": "service", "manager": "周敏", "max_open_leads": "-"},
    ])
    assert refusals(result) == [(3, "max_open_leads", "应为不小于0的整数，不能是占位符“-”")]
    assert await members(rt) == {}


# --- refusals -------------------------------------------------------------------------


def variant(name, column=None, value=None):
    """王芳's row under another name and WeCom id, with one cell changed."""
    row = with_cell(with_cell(TEAM[0], "name", name), "wecom_userid", f"id-{name}")
    return with_cell(row, column, value) if column else row


async def test_every_kind_of_refusal_names_its_row_and_field_and_nothing_is_written(rt):
    rows = [
        TEAM[0],                                                   # row 2
        with_cell(TEAM[2], "max_open_leads", "-"),                 # row 3
        with_cell(TEAM[0], "wecom_userid", "other"),               # row 4: 王芳 again
        variant("孙一", "role", "boss"),                           # row 5
        variant("孙二", "manager", "钱经理"),                      # row 6
        variant("孙三", "industries", "工业;金融"),                # row 7
        variant("孙四", "status", "休息"),                         # row 8
        variant("孙五", "max_open_leads", "-3"),                   # row 9
        variant("孙六", "max_open_leads", "2.5"),                  # row 10
        variant("孙七", "max_open_leads", "abc"),                  # row 11
        variant("孙八", "max_open_leads", "—"),                    # row 12
        variant("孙九", "channel", "email"),                       # row 13
        variant("钱一", "mobile", "1380000000"),                   # row 14
        variant("钱二", "mobile", "0755-12345678"),                # row 15
        variant("钱三", "mobile", "1.38E+10"),                     # row 16
        variant("", "wecom_userid", "nobody"),                     # row 17
        with_cell(TEAM[0], "name", "钱四"),                        # row 18: 王芳's WeCom id
        variant("钱五", "manager", "钱五"),                        # row 19
        ["钱六", "rep", "", "", "", "", "", "", "", "", "dingtalk"],  # row 20
        with_cell(variant("钱七"), "name", "钱 七"),               # row 21
    ]
    result = await import_roster(rt, csv_bytes(rows), "team.csv")
    assert refusals(result) == [
        (3, "max_open_leads", "应为不小于0的整数，不能是占位符“-”"),
        (4, "name", "与第2行重名（同名的两人请写作 张伟 和 张伟2）"),
        (5, "role", "应为 rep、manager、admin、service、marketing 之一"),
        (6, "manager", "找不到经理“钱经理”（应为本文件中的一行或已有成员）"),
        (7, "industries", "未知行业“金融”（可选：工业/industrial、医疗/medical、教育/education）"),
        (8, "status", "应为 active、leave、left 之一"),
        (9, "max_open_leads", "应为不小于0的整数，不能是负数"),
        (10, "max_open_leads", "应为整数，不能是小数"),
        (11, "max_open_leads", "应为不小于0的整数"),
        (12, "max_open_leads", "应为不小于0的整数，不能是占位符“—”"),
        (13, "channel", "应为 wecom 或 dingtalk，或留空"),
        (14, "mobile", "手机号应为11位，这里是10位"),
        (15, "mobile", "应为手机号，这是座机号"),
        (16, "mobile", "号码已被Excel科学计数法截断"),
        (17, "name", "必填"),
        (18, "wecom_userid", "与第2行的 wecom_userid 重复"),
        (19, "manager", "不能是自己的经理"),
        (20, "channel", "选择 dingtalk 渠道需要填写 dingtalk_userid"),
        (21, "name", "姓名不能包含空格（聊天命令以空格分隔，同名请写作 张伟2）"),
    ]
    assert result.written == 0
    assert await members(rt) == {}
    assert await audit_rows(rt) == []


async def test_a_manager_loop_is_refused_on_every_row_in_it(rt):
    rows = [
        ["甲", "manager", "", "", "", "乙", "", "", "", "", ""],
        ["乙", "manager", "", "", "", "甲", "", "", "", "", ""],
        ["丙", "rep", "", "", "", "甲", "", "", "", "", ""],
    ]
    result = await import_roster(rt, csv_bytes(rows), "team.csv")
    assert refusals(result) == [
        (2, "manager", "经理关系形成循环：甲 → 乙 → 甲"),
        (3, "manager", "经理关系形成循环：甲 → 乙 → 甲"),
    ]
    assert result.accepted == 1


async def test_a_platform_id_held_by_a_member_not_in_the_file_is_refused(rt):
    await import_roster(rt, csv_bytes(TEAM), "team.csv")
    newcomer = ["郑新", "rep", "wangfang", "ding-zq", "", "", "", "", "", "", ""]
    result = await import_roster(rt, csv_bytes([newcomer]), "more.csv")
    assert refusals(result) == [
        (2, "wecom_userid", "已被成员“王芳”使用"),
        (2, "dingtalk_userid", "已被成员“赵强”使用"),
    ]
    assert "郑新" not in await members(rt)


async def test_an_unreadable_file_raises_table_error(rt):
    with pytest.raises(TableError, match="缺少必需的列"):
        await import_roster(rt, "name,role\n张三,rep\n".encode(), "team.csv")


# --- re-import -------------------------------------------------------------------------


async def test_reimport_updates_by_name_and_leaves_absent_members_alone(rt):
    await import_roster(rt, csv_bytes(TEAM), "team.csv")
    before = await members(rt)
    changed = [
        with_cell(with_cell(TEAM[0], "max_open_leads", "8"), "team", "华东"),
        TEAM[2],
    ]
    result = await import_roster(rt, csv_bytes(changed), "team.csv")
    assert (result.accepted, result.written) == (2, 2)
    assert (result.created, result.updated, result.unchanged) == (0, 1, 1)
    after = await members(rt)
    assert set(after) == {"王芳", "赵强", "李经理", "管理员甲"}
    assert after["王芳"].id == before["王芳"].id
    assert (after["王芳"].max_open_leads, after["王芳"].team) == (8, "华东")
    assert after["赵强"].status == "leave"  # absent from the file: as it was
    [update] = await audit_rows(rt, "member.update")
    assert update.object_id == str(before["王芳"].id)
    assert update.before == {"team": "华南", "max_open_leads": 5}
    assert update.after == {"team": "华东", "max_open_leads": 8}


async def test_reimport_without_optional_columns_keeps_their_values(rt):
    await import_roster(rt, csv_bytes(TEAM), "team.csv")
    header = HEADER[:8]
    result = await import_roster(rt, csv_bytes([TEAM[0][:8]], header), "team.csv")
    assert result.rejected == [] and result.unchanged == 1
    fang = (await members(rt))["王芳"]
    assert (fang.max_open_leads, fang.channel, fang.status) == (5, "wecom", "active")


async def test_two_members_may_swap_platform_ids_in_one_file(rt):
    await import_roster(rt, csv_bytes(TEAM), "team.csv")
    swapped = [with_cell(TEAM[0], "wecom_userid", "limanager"),
               with_cell(TEAM[2], "wecom_userid", "wangfang")]
    result = await import_roster(rt, csv_bytes(swapped), "team.csv")
    assert result.rejected == [] and result.updated == 2
    team = await members(rt)
    assert (team["王芳"].wecom_userid, team["李经理"].wecom_userid) == ("limanager", "wangfang")


async def test_a_manager_may_be_an_existing_member_not_in_the_file(rt):
    await import_roster(rt, csv_bytes(TEAM), "team.csv")
    newcomer = ["郑新", "rep", "zhengxin", "", "", "李经理", "", "华南", "", "", ""]
    result = await import_roster(rt, csv_bytes([newcomer]), "more.csv")
    assert result.rejected == []
    team = await members(rt)
    assert team["郑新"].manager_id == team["李经理"].id


async def test_a_new_rep_from_the_roster_takes_the_queued_lead(chat):
    rt = chat.rt
    async with rt.sessions() as session, session.begin():
        lead, _ = await create_lead(session, rt, LeadInput(
            company="深圳示例科技有限公司", contact="张伟", phone="13800001234",
            industry="industrial", urgency="high", source="expo"), rt.now(), origin="api")
    assert lead.status == "new" and lead.assignee_id is None
    await import_roster_rows(rt, [{"name": "王芳", "role": "rep"}])
    async with rt.sessions() as session:
        lead = await session.get(Lead, lead.id)
    assert lead.status == "assigned"
    assert lead.assignee_id == (await members(rt))["王芳"].id


# --- the command line ---------------------------------------------------------------


def run_cli(tmp_path, *args):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SALESBOT_")}
    env["SALESBOT_DATABASE__URL"] = f"sqlite+aiosqlite:///{tmp_path}/cli.db"
    return subprocess.run([str(SALESBOT), *args], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=60)


async def cli_members(tmp_path) -> dict[str, Member]:
    from config.settings import load_settings

    runtime = Runtime(load_settings(database={"url": f"sqlite+aiosqlite:///{tmp_path}/cli.db"}))
    try:
        return await members(runtime)
    finally:
        await runtime.close()


async def test_cli_exit_0_and_the_json_summary(tmp_path):
    path = tmp_path / "team.csv"
    path.write_bytes(csv_bytes(TEAM))
    done = run_cli(tmp_path, "team", "import", str(path), "--json")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines[0] == "已导入 4 人：新增 4，更新 0，未变 0。"
    assert json.loads(lines[-1]) == {"accepted": 4, "written": 4, "rejected": [],
                                     "duplicates": [], "warnings": []}
    assert set(await cli_members(tmp_path)) == {"王芳", "赵强", "李经理", "管理员甲"}


@pytest.mark.parametrize("placeholder, reason", [
    ("-", "应为不小于0的整数，不能是占位符“-”"),
    ("-3", "应为不小于0的整数，不能是负数"),
])
async def test_cli_exit_1_for_a_bad_max_open_leads_and_nothing_is_written(
    tmp_path, placeholder, reason,
):
    path = tmp_path / "team.csv"
    path.write_bytes(csv_bytes([TEAM[0], with_cell(TEAM[1], "max_open_leads", placeholder),
                                TEAM[2]]))
    done = run_cli(tmp_path, "team", "import", str(path), "--json")
    assert done.returncode == 1
    assert f"第3行 max_open_leads: {reason}" in done.stderr.splitlines()
    assert "共 1 处错误，未写入任何成员。" in done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary == {"accepted": 2, "written": 0, "duplicates": [], "warnings": [],
                       "rejected": [{"row": 3, "field": "max_open_leads", "reason": reason}]}
    assert await cli_members(tmp_path) == {}


@pytest.mark.parametrize("filename, data, message", [
    ("team.xls", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 504, "不支持旧版 .xls 格式"),
    ("team.csv", "name,role\n张三,rep\n".encode(), "缺少必需的列：企业微信账号"),
    ("team.csv", "名字,号码\n张三,1\n".encode(), "找不到表头行"),
    ("team.json", b"[]", "不支持的文件格式“.json”"),
])
def test_cli_exit_2_when_the_file_cannot_be_read(tmp_path, filename, data, message):
    path = tmp_path / filename
    path.write_bytes(data)
    done = run_cli(tmp_path, "team", "import", str(path), "--json")
    assert done.returncode == 2, done.stderr
    assert message in done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["written"] == 0 and message in summary["error"]


def test_cli_exit_2_for_a_missing_file(tmp_path):
    done = run_cli(tmp_path, "team", "import", str(tmp_path / "nope.csv"))
    assert done.returncode == 2
    assert done.stderr.startswith("salesbot: ") and "找不到文件" in done.stderr


async def test_cli_reimport_counts_updates(tmp_path):
    path = tmp_path / "team.csv"
    path.write_bytes(csv_bytes(TEAM))
    assert run_cli(tmp_path, "team", "import", str(path)).returncode == 0
    path.write_bytes(csv_bytes([with_cell(TEAM[1], "status", "active")]))
    done = run_cli(tmp_path, "team", "import", str(path))
    assert done.returncode == 0
    assert done.stdout.strip() == "已导入 1 人：新增 0，更新 1，未变 0。"
    team = await cli_members(tmp_path)
    assert team["赵强"].status == "active" and len(team) == 4


async def test_unknown_columns_are_warnings_not_refusals(rt):
    header = [*HEADER, "备注"]
    rows = [[*TEAM[3], "新同事"]]
    result = await import_roster(rt, csv_bytes(rows, header), "team.csv")
    assert result.rejected == []
    assert result.as_json()["warnings"] == [
        {"row": 1, "field": "备注", "message": "未知的列，已忽略"}]


async def test_member_count_is_unchanged_by_an_empty_file(rt):
    result = await import_roster(rt, csv_bytes([]), "team.csv")
    assert (result.accepted, result.written, result.rejected) == (0, 0, [])
    async with rt.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(Member)) == 0
