"""Spreadsheet import from the chat, through each platform's fake: on WeCom by the signed
upload page, on DingTalk by sending the file; the result card, its buttons, progress.

The tests marked `core` drive handlers.lead_import (the import core) and are skipped on a
branch that does not have it yet; the link and card tests need nothing but this module.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest
from openpyxl import load_workbook
from sqlalchemy import func, select

from bot import uploads
from bot.app import RUNTIME
from bot.uploads import BadLink, LinkToken, decode_token, derive_key, encode_token
from handlers import import_chat
from handlers.import_chat import problem_lines, result_card, where_they_went
from storage.models import Lead, LeadImport, Member
from tests import test_parity as parity
from tests.fakes.dingtalk import loopback_only  # noqa: F401
from tests.harness import Chat
from tests.test_parity import Shown

pytestmark = pytest.mark.usefixtures("loopback_only")

HAS_CORE = (Path(__file__).resolve().parent.parent / "handlers" / "lead_import.py").exists()
core = pytest.mark.skipif(not HAS_CORE, reason="the import core (handlers/lead_import.py) "
                          "is on its own branch until the merge")

ROSTER = [
    {"name": "李经理", "role": "manager", "id": "limanager"},
    {"name": "王芳", "role": "rep", "manager": "李经理", "id": "wangfang"},
    {"name": "赵强", "role": "rep", "manager": "李经理", "id": "zhaoqiang"},
    {"name": "钱敏", "role": "marketing", "id": "qianmin"},
    {"name": "周管理", "role": "admin", "id": "zhouadmin"},
]
IDS = {row["name"]: row["id"] for row in ROSTER}
HEADER = "公司名称,联系人,手机号,行业,紧急程度,来源渠道"
# Row 3's phone is not a phone; row 5 repeats row 2's phone.
SMALL_CSV = "\n".join([
    HEADER,
    "示例科技一号,张一,13800000001,工业,高,展会",
    "示例科技二号,张二,12345,工业,高,展会",
    "示例科技三号,张三,13800000002,医疗,中,转介绍",
    "示例科技四号,张四,13800000001,教育,低,SEM",
]).encode("utf-8")


def big_csv(rows: int) -> bytes:
    lines = [HEADER] + [f"示例企业{n:05d},联系人{n:05d},139{n:08d},工业,中,展会"
                        for n in range(rows)]
    return "\n".join(lines).encode("utf-8")


# ---- tokens and the card: pure ------------------------------------------------------------

KEY = derive_key("c2VjcmV0LXJhbmRvbS1oYWxmLW9mLXRoZS1rZXktMDE", "app-secret")


def test_a_token_says_who_may_do_what_until_when():
    token = LinkToken(7, "rejected", 2_000_000_000, object_id=12, channel="wecom")
    assert decode_token(encode_token(token, KEY), KEY, 1_900_000_000, "rejected") == token


@pytest.mark.parametrize("tamper", ["signature", "payload", "key", "purpose", "garbage"])
def test_a_forged_token_is_refused(tamper):
    text = encode_token(LinkToken(7, "upload", 2_000_000_000), KEY)
    payload, signature = text.split(".")
    key, purpose = KEY, "upload"
    if tamper == "signature":
        text = payload + "." + ("A" if signature[0] != "A" else "B") + signature[1:]
    elif tamper == "payload":
        other = encode_token(LinkToken(8, "upload", 2_000_000_000), KEY).split(".")[0]
        text = other + "." + signature
    elif tamper == "key":
        key = derive_key("c2VjcmV0LXJhbmRvbS1oYWxmLW9mLXRoZS1rZXktMDE", "another-secret")
    elif tamper == "purpose":
        purpose = "rejected"
    else:
        text = "template.xlsx"
    with pytest.raises(BadLink) as refused:
        decode_token(text, key, 1_900_000_000, purpose)
    assert not refused.value.expired


def test_an_expired_token_is_refused_as_expired():
    text = encode_token(LinkToken(7, "upload", 1_900_000_000), KEY)
    with pytest.raises(BadLink) as refused:
        decode_token(text, KEY, 1_900_000_000, "upload")
    assert refused.value.expired


def test_the_key_needs_both_the_stored_half_and_the_settings():
    stored = "c2VjcmV0LXJhbmRvbS1oYWxmLW9mLXRoZS1rZXktMDE"
    assert derive_key(stored, "a") != derive_key(stored, "b")
    assert derive_key(stored, "a") != derive_key("b3RoZXItcmFuZG9tLWhhbGY", "a")
    assert derive_key(stored, None, "a") == derive_key(stored, "a", None)


class _Report:
    """An ImportReport as the contract shapes it (the card reads nothing else)."""

    def __init__(self, import_id: int | None, accepted: int, **lists: Any) -> None:
        self.import_id, self.accepted, self.written = import_id, accepted, 0
        self.rejected = lists.get("rejected", [])
        self.duplicates = lists.get("duplicates", [])
        self.warnings = lists.get("warnings", [])


def test_the_card_shows_counts_first_reasons_the_download_and_both_buttons():
    report = _Report(
        9, 20000,
        rejected=[{"row": 5, "field": "phone", "reason": "不是有效的手机号"},
                  {"row": 5, "field": "employees", "reason": "应为不小于0的整数"},
                  {"row": 8, "field": None, "reason": "空行"}],
        duplicates=[{"row": 9, "of": 3, "kind": "in_file"}, {"row": 11, "of": 42, "kind": "lead"}],
        warnings=[{"row": 12, "field": "landline", "message": "区号前的 0 已补上"}])
    card = result_card(report, "展会名单.xlsx", "http://127.0.0.1:1/import/t/rejected.xlsx")
    assert card.title == "导入检查：展会名单.xlsx" and card.kind == "import"
    assert [(f.label, f.value) for f in card.fields] == [
        ("可导入", "20000 行"), ("有问题", "2 行"), ("重复", "2 行"), ("提醒", "1 条"),
        ("问题明细", "下载 xlsx")]
    assert card.fields[-1].url.endswith("/rejected.xlsx")
    assert card.description.splitlines() == [
        "第5行 手机号：不是有效的手机号", "第5行 员工数：应为不小于0的整数", "第8行：空行",
        "第9行 与第3行重复", "……另有 2 条，见问题明细"]
    assert [(b.label, b.key) for b in card.buttons] == [
        ("导入有效的 20000 行", "import:9"), ("取消", "cancel:9")]


def test_the_card_names_each_field_as_the_template_does():
    if not HAS_CORE:
        pytest.skip("the template comes from the import core")
    from handlers.lead_import import HEADERS

    assert import_chat.FIELD_NAMES == HEADERS  # 手机号, not 电话
    report = _Report(4, 1, warnings=[{"row": 9, "field": None,
                                      "message": "从这一行起连续 10,000 行是空行"}])
    assert problem_lines(report) == ["第9行：从这一行起连续 10,000 行是空行（仅提醒）"]


def test_a_file_without_a_valid_row_gets_a_card_without_buttons():
    report = _Report(4, 0, rejected=[{"row": 2, "field": "company", "reason": "必填"}])
    card = result_card(report, "a.csv", None)
    assert card.buttons == [] and card.status == "没有可以导入的行，请修改文件后重新发送"
    assert problem_lines(report) == ["第2行 公司名称：必填"]


def test_the_summary_names_who_got_the_leads():
    assert where_they_went([("王芳", 12), ("赵强", 8)], 3) == (
        "已分配给 王芳 12 条、赵强 8 条，3 条在待分配队列")
    assert where_they_went([], 0) == "暂无人可分配"


# ---- the platforms ----------------------------------------------------------------------


def roster_for(platform: str) -> list[dict[str, Any]]:
    column = f"{platform}_userid"
    return [{k: v for k, v in row.items() if k != "id"} | {column: row["id"]}
            for row in ROSTER]


@dataclass
class ImportCard(Shown):
    body: str = ""  # everything the card says, to look for a reason in
    links: list[str] = field(default_factory=list)


class WeCom(parity.WeCom):
    def __init__(self) -> None:
        super().__init__(IDS)

    async def upload(self, name: str, filename: str, data: bytes) -> tuple[int, str]:
        """/导入, then the file through the link's page, as a phone's browser does."""
        await self.say(name, "/导入")
        await settle(self.bot.app[RUNTIME])
        link = re.search(r"http://\S+", self.texts(name)[-1]).group(0)
        return await post_file(self.bot, link, filename, data)

    def cards(self, name: str) -> list[ImportCard]:
        shown = []
        for card in self.fake.cards_to(self.ids[name]):
            updates = [u for u in self.fake.updates if u["task_id"] == card["task_id"]]
            now = updates[-1]["template_card"] if updates else card
            links = [item["url"] for item in now.get("horizontal_content_list", [])
                     if item.get("type") == 1]
            shown.append(ImportCard(**asdict(self._shown(card)), links=links,
                                    body=json.dumps(now, ensure_ascii=False)))
        return shown


class DingTalk(parity.DingTalk):
    def __init__(self) -> None:
        super().__init__(IDS)

    async def upload(self, name: str, filename: str, data: bytes) -> tuple[int, str]:
        message = self.fake.file(self.ids[name], filename, data)
        await self.fake.wait_acked(await self.fake.push(message))
        return 200, ""

    def cards(self, name: str) -> list[ImportCard]:
        contents = [c.data["content"] for c in self.fake.cards_to(self.ids[name])]
        return [ImportCard(**asdict(card), body=body,
                           links=re.findall(r"\]\((http://[^)]+)\)", body))
                for card, body in zip(super().cards(name), contents, strict=True)]


async def settle(rt: Any) -> None:
    """Events, background work (downloads, checks, writes) and the outbox, until quiet."""
    chat = Chat(rt)
    for _ in range(100):
        await chat.settle()
        busy = [task for task in rt.tasks if not task.done()]
        if not busy:
            await chat.settle()
            return
        await asyncio.gather(*busy, return_exceptions=True)
    raise AssertionError("background work did not settle")


async def post_file(bot: Any, link: str, filename: str, data: bytes) -> tuple[int, str]:
    form = aiohttp.FormData()
    form.add_field("file", data, filename=filename, content_type="application/octet-stream")
    response = await bot.post(urlsplit(link).path, data=form)
    return response.status, await response.text()


async def started(kind: type[WeCom | DingTalk], aiohttp_client: Any, db_url: str, *,
                  public: bool) -> WeCom | DingTalk:
    """The bot on a platform's fake with the roster; with `public`, links point at the
    bot's own test server, on loopback."""
    platform = kind()
    chat = await platform.start(aiohttp_client, db_url)
    await chat.add_members(*roster_for(platform.name))
    platform.rt = chat.rt
    if public:
        chat.rt.settings.http.public_url = str(platform.bot.make_url("")).rstrip("/")
    return platform


@pytest.fixture(params=[WeCom, DingTalk], ids=["wecom", "dingtalk"])
async def platform(request, aiohttp_client, sqlite_url):
    platform = await started(request.param, aiohttp_client, sqlite_url, public=True)
    yield platform
    await platform.close()


async def leads_written(rt: Any) -> int:
    async with rt.sessions() as session:
        return await session.scalar(select(func.count()).select_from(Lead))


async def import_of(rt: Any, import_id: int) -> LeadImport:
    async with rt.sessions() as session:
        return await session.get(LeadImport, import_id)


async def checked_card(platform: WeCom | DingTalk, name: str) -> ImportCard:
    """SMALL_CSV imported by `name` and checked: its result card."""
    await platform.upload(name, "list.csv", SMALL_CSV)
    await settle(platform.rt)
    [card] = platform.cards(name)
    return card


def import_id_of(card: ImportCard) -> int:
    return int(card.keys[0].partition(":")[2])


# ---- the flow on both platforms ------------------------------------------------------------


@core
async def test_a_rep_imports_a_file_and_the_card_follows_it_to_the_end(platform):
    rt = platform.rt
    status, page = await platform.upload("王芳", "展会名单.csv", SMALL_CSV)
    assert status == 200
    if platform.name == "wecom":
        assert "可导入 2 行" in page and "回到聊天" in page
    await settle(rt)
    [card] = platform.cards("王芳")
    import_id = import_id_of(card)
    assert card.title == "导入检查：展会名单.csv" and card.status is None
    assert card.keys == [f"import:{import_id}", f"cancel:{import_id}"]
    assert "第3行 手机号：" in card.body and "第5行 与第2行重复" in card.body
    assert await leads_written(rt) == 0

    # The rejected rows come back as an xlsx, to the importer only.
    [link] = card.links
    response = await platform.bot.get(urlsplit(link).path)
    assert response.status == 200 and (await response.read()).startswith(b"PK")
    assert "attachment" in response.headers["Content-Disposition"]

    await platform.click("王芳", card, f"import:{import_id}")
    await settle(rt)
    [card] = platform.cards("王芳")
    assert card.status == "王芳 已于 12-02 10:00 导入 2 条" and card.keys == []
    assert platform.texts("王芳")[-1].startswith("导入完成：写入 2 条，")
    assert await leads_written(rt) == 2
    assert (await import_of(rt, import_id)).state == "published"


async def until(find: Any, seconds: float = 30.0) -> Any:
    """What `find` returns once it returns something, polled while the loop runs."""
    for _ in range(int(seconds / 0.02)):
        if (found := find()) is not None:
            return found
        await asyncio.sleep(0.02)
    raise AssertionError("it never came")


@core
async def test_a_worker_whose_server_stops_listening_finishes_tells_the_member_and_ends(
    platform,
):
    import multiprocessing

    rt = platform.rt
    card = await checked_card(platform, "王芳")
    import_id = import_id_of(card)
    await platform.click("王芳", card, f"import:{import_id}")
    await Chat(rt).settle()  # the click is handled: the publish starts in a worker
    name = f"import-publish-{import_id}"
    task = await until(lambda: next((t for t in rt.tasks if t.get_name() == name), None))
    worker = await until(lambda: next(iter(multiprocessing.active_children()), None))
    # The server stops listening, as a server killed with kill -9 does: its end of the
    # pipe is closed while the worker is still starting.
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await asyncio.to_thread(worker.join, 120)
    assert (worker.is_alive(), worker.exitcode) == (False, 0)  # it ended by itself
    assert await leads_written(rt) == 2
    await settle(rt)  # the server's outbox delivers what the worker queued
    [card] = platform.cards("王芳")
    assert card.status == "王芳 已于 12-02 10:00 导入 2 条" and card.keys == []
    assert platform.texts("王芳")[-1].startswith("导入完成：写入 2 条，")


@core
async def test_cancel_writes_nothing_and_closes_the_card(platform):
    card = await checked_card(platform, "钱敏")
    import_id = import_id_of(card)
    await platform.click("钱敏", card, f"cancel:{import_id}")
    await settle(platform.rt)
    [card] = platform.cards("钱敏")
    assert card.status == "钱敏 已于 12-02 10:00 取消" and card.keys == []
    assert platform.texts("钱敏")[-1] == "已取消导入「list.csv」，没有写入任何线索。"
    assert await leads_written(platform.rt) == 0
    assert (await import_of(platform.rt, import_id)).state == "cancelled"


@core
async def test_stale_and_foreign_clicks_change_nothing(platform):
    rt = platform.rt
    card = await checked_card(platform, "王芳")
    import_id = import_id_of(card)

    # Another rep cannot act on it (a foreign click, e.g. a forwarded card).
    await platform.click("赵强", card, f"import:{import_id}")
    await settle(rt)
    assert platform.texts("赵强")[-1] == "这次导入是 王芳 发起的，只有本人或管理员可以操作。"
    assert await leads_written(rt) == 0

    await platform.click("王芳", card, f"import:{import_id}")
    await settle(rt)
    assert await leads_written(rt) == 2
    for key in (f"import:{import_id}", f"cancel:{import_id}"):
        await platform.click("王芳", card, key)
        await settle(rt)
        assert platform.texts("王芳")[-1] == "这次导入已经完成，无需再操作。"
    assert await leads_written(rt) == 2
    assert (await import_of(rt, import_id)).state == "published"


@core
async def test_an_admin_may_confirm_someone_elses_import(platform):
    rt = platform.rt
    card = await checked_card(platform, "王芳")
    await platform.click("周管理", card, f"import:{import_id_of(card)}")
    await settle(rt)
    assert platform.texts("周管理")[-1].startswith("导入完成：写入 2 条")
    assert await leads_written(rt) == 2


@core
async def test_an_xls_file_is_refused_with_the_cores_reason(platform):
    status, page = await platform.upload("王芳", "旧名单.xls", b"\xd0\xcf\x11\xe0old")
    await settle(platform.rt)
    said = platform.texts("王芳")[-1]
    assert said.startswith("无法导入「旧名单.xls」：") and ".xls" in said
    assert platform.cards("王芳") == []
    if platform.name == "wecom":
        assert status == 422 and "无法导入" in page and 'type="file"' in page


async def test_a_manager_may_not_import(platform):
    await platform.say("李经理", "/导入")
    await settle(platform.rt)
    assert platform.texts("李经理")[-1] == (
        "「导入」只对销售、管理员、市场开放。发送 /帮助 查看您可用的命令。")


async def test_the_template_link_downloads_the_template(platform):
    if not HAS_CORE:
        pytest.skip("the template comes from the import core")
    await platform.say("钱敏", "/导入模板")
    await settle(platform.rt)
    link = re.search(r"http://\S+", platform.texts("钱敏")[-1]).group(0)
    split = urlsplit(link)
    response = await platform.bot.get(f"{split.path}?{split.query}")
    assert response.status == 200 and (await response.read()).startswith(b"PK")
    forged = await platform.bot.get(f"{split.path}?t=x{split.query[3:]}")
    assert forged.status == 403 and "链接无效" in await forged.text()


@core
async def test_progress_comes_every_few_thousand_rows_then_the_summary(platform, monkeypatch):
    monkeypatch.setattr(import_chat, "PROGRESS_STEP", 1000)
    rt = platform.rt
    await platform.upload("钱敏", "big.csv", big_csv(5000))
    await settle(rt)
    checked = [t for t in platform.texts("钱敏") if t.startswith("已检查")]
    assert checked and all(re.fullmatch(r"已检查 \d+/5000 行", t) for t in checked)
    [card] = platform.cards("钱敏")
    await platform.click("钱敏", card, card.keys[0])
    await settle(rt)
    texts = platform.texts("钱敏")
    written = [t for t in texts if t.startswith("已写入")]
    counts = [int(re.fullmatch(r"已写入 (\d+)/5000 行", t).group(1)) for t in written]
    assert counts and counts == sorted(counts) and counts[-1] < 5000
    assert texts[-1].startswith("导入完成：写入 5000 条")
    assert texts.index(written[-1]) < len(texts) - 1
    assert await leads_written(rt) == 5000


# ---- DingTalk: the file itself -----------------------------------------------------------------


@pytest.fixture
async def ding(aiohttp_client, sqlite_url):
    platform = await started(DingTalk, aiohttp_client, sqlite_url, public=False)
    yield platform
    await platform.close()


async def test_on_dingtalk_import_asks_for_the_file(ding):
    await ding.say("王芳", "/导入")
    await settle(ding.rt)
    assert ding.texts("王芳")[-1].startswith("请直接把 xlsx 或 csv 文件发给我")


async def test_on_dingtalk_a_file_from_a_manager_is_not_downloaded(ding):
    message = ding.fake.file(IDS["李经理"], "list.csv", SMALL_CSV)
    await ding.fake.wait_acked(await ding.fake.push(message))
    await settle(ding.rt)
    assert ding.texts("李经理")[-1] == "导入线索只对销售、管理员、市场开放。"
    assert sum(ding.fake.file_gets.values()) == 0


async def test_on_dingtalk_a_file_over_the_limit_is_refused(ding, monkeypatch):
    monkeypatch.setattr(uploads, "MAX_UPLOAD_BYTES", 100)
    await ding.upload("王芳", "big.csv", big_csv(50))
    await settle(ding.rt)
    assert ding.texts("王芳")[-1].startswith("「big.csv」超过")
    assert ding.cards("王芳") == []


@core
async def test_on_dingtalk_an_xlsx_file_is_read_too(ding):
    from openpyxl import Workbook

    book = Workbook()
    for line in SMALL_CSV.decode().splitlines():
        book.active.append(line.split(","))
    out = io.BytesIO()
    book.save(out)
    await ding.upload("王芳", "名单.xlsx", out.getvalue())
    await settle(ding.rt)
    [card] = ding.cards("王芳")
    assert card.title == "导入检查：名单.xlsx" and len(card.keys) == 2


async def test_on_dingtalk_without_a_public_url_the_card_says_how_to_get_the_download(ding):
    if not HAS_CORE:
        pytest.skip("needs the import core")
    await ding.upload("王芳", "list.csv", SMALL_CSV)
    await settle(ding.rt)
    [card] = ding.cards("王芳")
    assert card.links == [] and "问题明细" not in card.body


# ---- WeCom: the upload page ------------------------------------------------------------------


@pytest.fixture
async def page_bot(aiohttp_client, sqlite_url):
    platform = await started(WeCom, aiohttp_client, sqlite_url, public=False)
    yield platform
    await platform.close()


async def link_for(platform: WeCom, name: str) -> str:
    platform.rt.settings.http.public_url = str(platform.bot.make_url("")).rstrip("/")
    await platform.say(name, "/导入")
    await settle(platform.rt)
    return re.search(r"http://\S+", platform.texts(name)[-1]).group(0)


async def test_without_a_public_url_the_admin_is_told_which_setting(page_bot):
    await page_bot.say("周管理", "/导入")
    await page_bot.say("王芳", "/导入模板")
    await settle(page_bot.rt)
    assert "SALESBOT_HTTP__PUBLIC_URL" in page_bot.texts("周管理")[-1]
    assert "联系管理员（周管理）" in page_bot.texts("王芳")[-1]


async def test_the_upload_page_is_a_plain_chinese_form(page_bot):
    link = await link_for(page_bot, "王芳")
    assert "30 分钟" in page_bot.texts("王芳")[-1]
    response = await page_bot.bot.get(urlsplit(link).path)
    text = await response.text()
    assert response.status == 200 and response.content_type == "text/html"
    assert 'enctype="multipart/form-data"' in text and "王芳" in text and "<script" not in text
    assert "default-src 'none'" in response.headers["Content-Security-Policy"]
    assert "http://" not in text and "https://" not in text  # nothing from elsewhere


async def test_a_forged_or_expired_upload_link_gets_403_in_chinese(page_bot):
    link = await link_for(page_bot, "王芳")
    path = urlsplit(link).path
    forged = path[:-2] + ("AA" if not path.endswith("AA") else "BB")
    for bad in (forged, "/import/not-a-token"):
        response = await page_bot.bot.get(bad)
        assert response.status == 403 and "链接无效" in await response.text()
        status, _ = await post_file(page_bot.bot, bad, "a.csv", SMALL_CSV)
        assert status == 403
    page_bot.rt.clock.advance(minutes=31)
    response = await page_bot.bot.get(path)
    assert response.status == 403 and "链接已过期" in await response.text()
    status, text = await post_file(page_bot.bot, path, "a.csv", SMALL_CSV)
    assert status == 403 and "链接已过期" in text


async def test_a_link_stops_working_when_its_member_may_no_longer_import(page_bot):
    link = await link_for(page_bot, "王芳")
    async with page_bot.rt.sessions() as session, session.begin():
        member = await session.scalar(select(Member).where(Member.name == "王芳"))
        member.role = "manager"
    response = await page_bot.bot.get(urlsplit(link).path)
    assert response.status == 403 and "没有导入线索的权限" in await response.text()


async def test_an_upload_over_the_limit_is_refused_before_it_is_read(page_bot, monkeypatch):
    link = await link_for(page_bot, "王芳")
    monkeypatch.setattr(uploads, "MAX_UPLOAD_BYTES", 1000)
    monkeypatch.setattr(uploads, "MULTIPART_SLACK", 0)
    status, text = await post_file(page_bot.bot, link, "big.csv", big_csv(200))
    assert status == 413 and "文件超过" in text
    assert page_bot.cards("王芳") == []


async def test_an_upload_without_a_file_is_answered_with_the_form_again(page_bot):
    link = await link_for(page_bot, "王芳")
    form = aiohttp.FormData()
    form.add_field("note", "no file here", content_type="text/plain")  # multipart
    response = await page_bot.bot.post(urlsplit(link).path, data=form)
    text = await response.text()
    assert response.status == 400 and "没有收到文件" in text and 'type="file"' in text
    response = await page_bot.bot.post(urlsplit(link).path, data={"note": "urlencoded"})
    assert response.status == 400 and "无法识别" in await response.text()
    response = await page_bot.bot.post(urlsplit(link).path, data=b"",  # no Content-Type
                                       skip_auto_headers=["Content-Type"])
    assert response.status == 400 and "无法识别" in await response.text()


@core
async def test_the_rejected_rows_are_not_given_to_another_member(page_bot):
    link = await link_for(page_bot, "王芳")
    await post_file(page_bot.bot, link, "list.csv", SMALL_CSV)
    await settle(page_bot.rt)
    [card] = page_bot.cards("王芳")
    [download] = card.links
    async with page_bot.rt.sessions() as session, session.begin():
        other = await session.scalar(select(Member).where(Member.name == "赵强"))
        stolen = await uploads.rejected_link(session, page_bot.rt, other.id,
                                             import_id_of(card))
    response = await page_bot.bot.get(urlsplit(stolen).path)
    assert response.status == 403 and "不属于您" in await response.text()
    # The link of the card itself cannot be turned into an upload link either.
    upload_path = urlsplit(download).path.removesuffix("/rejected.xlsx")
    response = await page_bot.bot.get(upload_path)
    assert response.status == 403


async def test_the_key_survives_a_restart(page_bot):
    rt = page_bot.rt
    async with rt.sessions() as session, session.begin():
        first = await uploads.signing_key(session, rt)
    uploads._KEYS.clear()
    async with rt.sessions() as session, session.begin():
        assert await uploads.signing_key(session, rt) == first


@core
async def test_a_file_without_a_valid_row_is_closed_at_once(platform):
    bad = "\n".join([HEADER, "示例科技五号,张五,12345,工业,高,展会"]).encode("utf-8")
    await platform.upload("王芳", "bad.csv", bad)
    await settle(platform.rt)
    [card] = platform.cards("王芳")
    assert card.keys == [] and card.status == "没有可以导入的行，请修改文件后重新发送"
    assert "第2行 手机号：" in card.body
    async with platform.rt.sessions() as session:
        [state] = (await session.scalars(select(LeadImport.state))).all()
    assert state == "cancelled" and await leads_written(platform.rt) == 0
    # The problem rows still come back as a workbook: nothing importable is when they
    # matter most.
    [download] = card.links
    response = await platform.bot.get(urlsplit(download).path)
    assert response.status == 200
    book = load_workbook(io.BytesIO(await response.read()))
    assert [list(r)[:4] for r in book.active.iter_rows(min_row=2, values_only=True)] == \
        [[2, "示例科技五号", "张五", "12345"]]


# ---- imports a crash or a wait left behind (the core, in process) ---------------------------


async def checked_in_chat(chat: Any, name: str, data: bytes = SMALL_CSV,
                          filename: str = "名单.csv") -> tuple[int, int]:
    """`data` checked for `name` as the chat does it: (the import, its card)."""
    from handlers.lead_import import ImportOptions, check_import

    async with chat.rt.sessions() as session:
        member = await session.scalar(select(Member).where(Member.name == name))
    report = await check_import(chat.rt, data, filename, ImportOptions(), actor=member,
                                origin="chat")
    await import_chat.check_done(chat.rt, member.id, report, filename, None)
    await chat.settle()
    [sent] = [m for m in await chat.inbox(name) if m.card is not None]
    return report.import_id, sent.card_id


@core
async def test_a_second_check_of_a_file_already_imported_says_its_rows_were_taken(chat):
    from handlers.lead_import import publish_import

    await chat.add_members({"name": "王芳"})
    first, _ = await checked_in_chat(chat, "王芳")
    second, card_id = await checked_in_chat(chat, "王芳")  # the same file, checked twice
    await publish_import(chat.rt, first, actor=None, skip_invalid=True)
    report = await publish_import(chat.rt, second, actor=None, skip_invalid=True)
    assert report.written == 0
    async with chat.rt.sessions() as session:
        wang = await session.scalar(select(Member).where(Member.name == "王芳"))
    await import_chat.publish_done(chat.rt, second, wang.id, None, report)
    await chat.settle()
    assert [m.text for m in await chat.inbox("王芳")][-1] == (
        "导入完成：没有写入新线索。有效的 2 行在检查之后已有人录入为线索"
        "（比如同一文件的另一次导入），都算作重复。")
    card = await chat.card(card_id)
    assert card.buttons == [] and card.status == "王芳 已于 12-02 10:00 确认导入，均已重复，未写入"


@core
async def test_a_check_nobody_confirms_for_a_day_has_its_card_closed(chat):
    from handlers import lead_import

    await chat.add_members({"name": "王芳"})
    import_id, card_id = await checked_in_chat(chat, "王芳")
    chat.rt.clock.advance(hours=24, minutes=1)
    assert await lead_import.purge_imports(chat.rt) == 1
    assert (await import_of(chat.rt, import_id)).state == "cancelled"
    card = await chat.card(card_id)
    assert card.buttons == [] and card.status == "24 小时内没有确认，已于 12-03 10:01 自动取消"


@core
async def test_a_check_killed_mid_way_is_dropped_with_its_rows_and_the_member_told(
    chat, monkeypatch,
):
    from handlers import lead_import
    from handlers.assignment import IMPORT_LEASE
    from handlers.lead_import import ImportOptions, check_import
    from storage.models import LeadImportRow

    members = await chat.add_members({"name": "王芳"})
    monkeypatch.setattr(lead_import, "CHUNK", 2)

    async def killed(done: int, total: int) -> None:  # kill -9 after the first chunk
        raise SystemExit("killed")

    with pytest.raises(SystemExit):
        await check_import(chat.rt, big_csv(5), "名单.csv", ImportOptions(),
                           actor=members["王芳"], origin="chat", progress=killed)
    [imp] = await all_imports(chat.rt)
    assert imp.state == "checking" and await staged_rows(chat.rt) == 2  # names, phones
    chat.rt.clock.advance(seconds=IMPORT_LEASE.total_seconds() - 60)
    assert await lead_import.purge_imports(chat.rt) == 0  # it may still be at work
    chat.rt.clock.advance(seconds=120)
    assert await lead_import.purge_imports(chat.rt) == 1
    assert (await import_of(chat.rt, imp.id)).state == "failed"
    assert await staged_rows(chat.rt) == 0
    await chat.settle()
    assert [m.text for m in await chat.inbox("王芳")] == [
        "检查「名单.csv」时服务中断了，没有导入任何线索。请重新发送文件。"]
    assert await lead_import.purge_imports(chat.rt) == 0
    async with chat.rt.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(LeadImportRow)) == 0


async def all_imports(rt: Any) -> list[LeadImport]:
    async with rt.sessions() as session:
        return list((await session.scalars(select(LeadImport).order_by(LeadImport.id))).all())


async def staged_rows(rt: Any) -> int:
    from storage.models import LeadImportRow

    async with rt.sessions() as session:
        return await session.scalar(select(func.count()).select_from(LeadImportRow))


@core
async def test_an_import_published_while_the_server_was_down_gets_its_card_closed(chat):
    from handlers.lead_import import publish_import
    from scheduler.sweeps import sweep_once

    await chat.add_members({"name": "王芳"}, {"name": "赵强"})
    import_id, card_id = await checked_in_chat(chat, "王芳")
    # The worker published; its server was killed before it could say so.
    await publish_import(chat.rt, import_id, actor=None, skip_invalid=True)
    await sweep_once(chat.rt)  # so soon, its own server may still be about to say it
    await chat.settle()
    assert (await chat.card(card_id)).buttons != []
    chat.rt.clock.advance(minutes=3)
    await sweep_once(chat.rt)
    await chat.settle()
    card = await chat.card(card_id)
    assert card.buttons == [] and card.status == "王芳 已于 12-02 10:00 导入 2 条"
    texts = [m.text for m in await chat.inbox("王芳") if m.card is None]
    assert texts[-1].startswith("导入完成：写入 2 条，已分配给 ")
    await sweep_once(chat.rt)  # once only
    await chat.settle()
    assert [m for m in await chat.inbox("王芳") if m.card is None] == []


# ---- uploads wait on disk, one at a time -----------------------------------------------------


async def test_an_upload_waits_on_disk_and_a_second_one_waits_for_the_first(
    page_bot, monkeypatch, tmp_path,
):
    monkeypatch.setattr(uploads, "SPOOL_DIR", tmp_path / "spool")
    monkeypatch.setattr(uploads, "PAGE_WAIT_SECONDS", 0.1)
    link = await link_for(page_bot, "王芳")
    release = asyncio.Event()
    seen: list[tuple[Path, bytes]] = []

    async def slow_check(rt, member_id, source, filename, channel):  # noqa: ANN001, ANN202
        seen.append((source, source.read_bytes()))
        await release.wait()
        source.unlink()
        return import_chat.Checked(report=_Report(7, 2))

    monkeypatch.setattr(import_chat, "check_and_report", slow_check)
    # The tester's burst through one link: one is taken, the rest are told to wait.
    answers = await asyncio.gather(*(post_file(page_bot.bot, link, f"{n}.csv", SMALL_CSV)
                                     for n in range(4)))
    assert sorted(status for status, _ in answers) == [200, 429, 429, 429]
    assert all("您上传的上一个文件还在检查" in text for status, text in answers if status == 429)
    [(spooled, data)] = seen
    assert (spooled.parent, data) == (tmp_path / "spool", SMALL_CSV)  # on disk, not in memory
    release.set()
    await settle(page_bot.rt)
    assert list((tmp_path / "spool").iterdir()) == []
    status, page = await post_file(page_bot.bot, link, "again.csv", SMALL_CSV)
    assert status == 200 and "已检查「again.csv」：可导入 2 行" in page  # the next is taken
    release.set()
    await settle(page_bot.rt)


async def test_an_upload_over_the_limit_leaves_nothing_on_disk(page_bot, monkeypatch, tmp_path):
    monkeypatch.setattr(uploads, "SPOOL_DIR", tmp_path / "spool")
    link = await link_for(page_bot, "王芳")
    monkeypatch.setattr(uploads, "MAX_UPLOAD_BYTES", 1000)
    monkeypatch.setattr(uploads, "MULTIPART_SLACK", 10**6)  # past the header: while reading
    status, _ = await post_file(page_bot.bot, link, "big.csv", big_csv(200))
    assert status == 413 and list((tmp_path / "spool").iterdir()) == []
    status, _ = await post_file(page_bot.bot, link, "small.csv", b"")  # and it may try again
    assert status == 400


async def test_the_sweep_clears_uploads_a_crash_left_on_disk(monkeypatch, tmp_path):
    import os
    import time

    monkeypatch.setattr(uploads, "SPOOL_DIR", tmp_path)
    old, fresh = tmp_path / "upload-old.xlsx", tmp_path / "upload-new.csv"
    old.write_bytes(b"PK")
    fresh.write_bytes(b"a,b")
    day_ago = time.time() - uploads.SPOOL_KEEP.total_seconds() - 60
    os.utime(old, (day_ago, day_ago))
    assert await uploads.clean_spool(None) == 1
    assert list(tmp_path.iterdir()) == [fresh]
