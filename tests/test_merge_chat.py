"""The merge review in chat, end to end on the fake WeCom and the fake DingTalk: the scan's
card and its comparison page, an admin's tap, the history moved, the team notices and
their mentions, the undo, "not a duplicate" remembered, refused and stale clicks, and
/重复率; then, on the console, the card cap, progress and usage answers."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import pytest
from sqlalchemy import func, select

from bot.app import RUNTIME
from handlers import merge_chat
from storage.models import (
    AuditLog,
    Customer,
    FollowUp,
    Lead,
    Member,
    Merge,
    MergeProposal,
    NotDuplicate,
)
from tests.fakes import dingtalk, wecom
from tests.fakes.dingtalk import loopback_only  # noqa: F401
from tests.harness import Chat
from tests.test_parity import DingTalk, Shown, WeCom

pytestmark = pytest.mark.usefixtures("loopback_only")

PUBLIC = "http://127.0.0.1:8080"  # only parsed: the tests open the pages on the test server
ROSTER = [
    {"name": "管理员甲", "role": "admin", "id": "admin1"},
    {"name": "管理员乙", "role": "admin", "id": "admin2"},
    {"name": "王芳", "role": "rep", "team": "华南", "id": "wangfang"},
    {"name": "孙磊", "role": "rep", "team": "华南", "id": "sunlei"},
    {"name": "赵强", "role": "rep", "team": "华东", "id": "zhaoqiang"},
]
IDS = {row["name"]: row["id"] for row in ROSTER}
SHOWN_PHONE = "138****1234"


async def with_teams(platform: Any, fakes: Any, aiohttp_client: Any, db_url: str,
                     teams: Callable[[], dict[str, dict[str, str]]], **settings: Any) -> Chat:
    """The bot on the platform's fake, with a channel per team (known once the fake has
    its address) and a public URL."""
    await platform.fake.start()
    platform.bot = await fakes.start_bot(aiohttp_client, db_url, platform.fake,
                                         teams=teams(), http={"public_url": PUBLIC},
                                         **settings)
    return Chat(platform.bot.app[RUNTIME])


class WeComTeams(WeCom):
    """The WeCom fake with a group robot per team; the comparison links parsed from cards."""

    hooks = {"华南": "south-key", "华东": "east-key"}

    def __init__(self) -> None:
        super().__init__(IDS)
        self.fake.webhook_keys = set(self.hooks.values())

    async def start(self, aiohttp_client: Any, db_url: str) -> Chat:
        return await with_teams(self, wecom, aiohttp_client, db_url, lambda: {
            team: {"wecom_webhook": self.fake.webhook_url(key)}
            for team, key in self.hooks.items()})

    def notices(self, team: str) -> list[tuple[str, list[str]]]:
        """(text, the user ids it @-mentions) of each message in the team's group."""
        shown = []
        for message in self.fake.group_messages[self.hooks[team]]:
            assert message["msgtype"] == "markdown"
            content = message["markdown"]["content"]
            shown.append((content, re.findall(r"<@([^>]+)>", content)))
        return shown

    def link(self, name: str, card: Shown) -> str:
        [sent] = [c for c in self.fake.cards_to(IDS[name]) if c["task_id"] == card.ref]
        [url] = [i["url"] for i in sent["horizontal_content_list"] if i.get("url")]
        return url


class DingTalkTeams(DingTalk):
    """The DingTalk fake with a group per team; notices arrive as group cards."""

    groups = {"华南": "cidsouth==", "华东": "cideast=="}

    def __init__(self) -> None:
        super().__init__(IDS)
        self.fake.groups = set(self.groups.values())

    async def start(self, aiohttp_client: Any, db_url: str) -> Chat:
        return await with_teams(self, dingtalk, aiohttp_client, db_url, lambda: {
            team: {"dingtalk_open_conversation_id": group}
            for team, group in self.groups.items()},
            dingtalk={"card_template_id": dingtalk.TEMPLATE_ID})

    def notices(self, team: str) -> list[tuple[str, list[str]]]:
        space = f"IM_GROUP.{self.groups[team]}"
        shown = []
        for card in self.fake.cards.values():
            if space in card.spaces:
                assert json.loads(card.data["buttons"]) == [] and card.data["status"] == ""
                for name in card.at_users.values():
                    assert f"@{name}" in card.data["content"]  # the text names them too
                shown.append((card.data["title"] + "\n" + card.data["content"],
                              list(card.at_users)))
        return shown

    def link(self, name: str, card: Shown) -> str:
        content = self.fake.cards[card.ref].data["content"]
        [url] = re.findall(r"\]\((http[^)]+)\)", content)
        return url


@pytest.fixture(params=[WeComTeams, DingTalkTeams], ids=["wecom", "dingtalk"])
async def platform(request):
    platform = request.param()
    yield platform
    await platform.close()


def roster_for(platform: Any) -> list[dict[str, Any]]:
    column = f"{platform.name}_userid"
    return [{k: v for k, v in row.items() if k != "id"} | {column: row["id"]}
            for row in ROSTER]


async def settle(chat: Chat) -> None:
    """Until the bot is idle: events handled, background scans over, outbox empty."""
    await chat.settle()
    while chat.rt.tasks:
        await asyncio.gather(*list(chat.rt.tasks), return_exceptions=True)
        await chat.settle()


def at(day: int) -> datetime:
    return datetime(2026, day, 1, 2, 0, tzinfo=UTC)


async def seed(chat: Chat) -> dict[str, int]:
    """Three records of one customer (#1-#3: one phone, the company written three ways),
    one that shares only the phone (#4, a switchboard) and one of its own (#5)."""
    async with chat.rt.sessions() as session, session.begin():
        ids = {m.name: m.id for m in (await session.scalars(select(Member))).all()}
        customers = [
            Customer(company="深圳示例科技有限公司", contact="张伟", phone="13800001234",
                     owner_id=ids["王芳"], created_at=at(3)),
            Customer(company="示例科技（深圳）有限公司", contact="张伟", phone="13800001234",
                     email="zhangwei@example.com", owner_id=ids["赵强"], created_at=at(5)),
            Customer(company="深圳示例科技有限责任公司", contact="张伟", phone="13800001234",
                     industry="industrial", owner_id=ids["孙磊"], created_at=at(6)),
            Customer(company="深圳远航物流有限公司", contact="陈静", phone="13800001234",
                     owner_id=ids["王芳"], created_at=at(7)),
            Customer(company="广州另一家贸易有限公司", contact="李娜", phone="13800005678",
                     owner_id=ids["赵强"], created_at=at(8)),
        ]
        session.add_all(customers)
        await session.flush()
        first, second = customers[0], customers[1]
        leads = [Lead(company=c.company, contact=c.contact, phone=c.phone, status="converted",
                      customer_id=c.id, assignee_id=c.owner_id, created_at=at(2))
                 for c in (first, second)]
        session.add_all(leads)
        await session.flush()
        notes = [FollowUp(lead_id=leads[0].id, member_id=ids["王芳"], content=f"沟通{n}",
                          at=at(9)) for n in range(3)]
        notes.append(FollowUp(lead_id=leads[1].id, member_id=ids["赵强"], content="报价",
                              at=at(10)))
        notes.append(FollowUp(customer_id=second.id, member_id=ids["赵强"], kind="interaction",
                              content="客服回访", at=at(11)))
        session.add_all(notes)
    return ids


async def started(platform: Any, aiohttp_client: Any, db_url: str) -> Chat:
    chat = await platform.start(aiohttp_client, db_url)
    await chat.add_members(*roster_for(platform))
    await seed(chat)
    return chat


async def say(platform: Any, chat: Chat, name: str, text: str) -> str:
    await platform.say(name, text)
    await settle(chat)
    return platform.texts(name)[-1]


async def click(platform: Any, chat: Chat, name: str, card: Shown, key: str) -> str:
    await platform.click(name, card, key)
    await settle(chat)
    return platform.texts(name)[-1]


async def scanned(platform: Any, chat: Chat) -> Shown:
    """管理员甲 scans; both admins get the one proposal's card; returns 甲's."""
    started_text = await say(platform, chat, "管理员甲", "/合并扫描")
    assert started_text.startswith("【合并扫描】由 管理员甲 发起。扫描完成")
    assert "开始合并扫描：共 5 位活跃客户" in platform.texts("管理员甲")[-2]
    [card] = platform.cards("管理员甲")
    [other] = platform.cards("管理员乙")
    assert other.title == card.title and other.keys == card.keys
    return card


async def rows(chat: Chat) -> dict[str, Any]:
    """Everything a merge touches, as plain values."""
    async with chat.rt.sessions() as session:
        customers = (await session.scalars(select(Customer).order_by(Customer.id))).all()
        leads = (await session.execute(select(Lead.id, Lead.customer_id).order_by(Lead.id))).all()
        notes = (await session.execute(select(FollowUp.id, FollowUp.lead_id, FollowUp.customer_id)
                                       .order_by(FollowUp.id))).all()
    return {
        "customers": [(c.id, c.company, c.contact, c.phone, c.email, c.industry, c.owner_id,
                       c.status, c.merged_into_id) for c in customers],
        "leads": [tuple(r) for r in leads], "follow_ups": [tuple(r) for r in notes],
    }


async def open_page(platform: Any, url: str) -> tuple[int, str]:
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}" == PUBLIC
    response = await platform.bot.get(parts.path)
    return response.status, await response.text()


# ---- on both platforms ----------------------------------------------------------------------


async def test_the_scan_sends_each_admin_the_proposal_with_a_signed_comparison(
    platform, aiohttp_client, sqlite_url
):
    chat = await started(platform, aiohttp_client, sqlite_url)
    card = await scanned(platform, chat)
    assert card.title == "合并建议 #1：3 条记录" and card.status is None
    assert card.keys == ["merge:1", "notdup:1"]
    summary = platform.texts("管理员甲")[-1]
    assert "5 位活跃客户中有 3 位疑似重复，共 1 组，重复率 60.0%" in summary
    assert "上面是 1 张合并建议卡片" in summary
    assert platform.cards("王芳") == []

    url = platform.link("管理员甲", card)
    status, page = await open_page(platform, url)
    assert status == 200 and "合并对比：建议 #1" in page
    assert "建议保留 #1（历史记录最多）" in page
    differing = set(re.findall(r'<tr class="diff" data-field="(\w+)">', page))
    assert differing == {"company", "email", "industry", "owner_id"}
    email_row = re.search(r'data-field="email">(.*?)</tr>', page).group(1)
    assert email_row.count("zhangwei@example.com") == 2  # #2's own, and the surviving one
    assert re.search(r'<td class="after">zhangwei@example.com</td>', email_row)
    assert SHOWN_PHONE in page and "13800001234" not in page
    assert "#4" not in page and "深圳远航物流" not in page  # the switchboard look-alike

    forged = url[:-3] + ("AAA" if not url.endswith("AAA") else "BBB")
    status, page = await open_page(platform, forged)
    assert status == 403 and "链接无效" in page
    chat.rt.clock.advance(hours=73)
    status, page = await open_page(platform, url)
    assert status == 403 and "链接已过期" in page


async def test_the_monthly_review_cards_every_admin_on_its_day(
    platform, aiohttp_client, sqlite_url
):
    chat = await started(platform, aiohttp_client, sqlite_url)
    chat.rt.clock.now = datetime(2026, 12, 7, 2, 0, tzinfo=UTC)  # Monday 10:00, the 5th a Sat
    assert await merge_chat.monthly_review(chat.rt) is not None
    await settle(chat)
    for admin in ("管理员甲", "管理员乙"):
        [card] = platform.cards(admin)
        assert card.title == "合并建议 #1：3 条记录" and card.keys == ["merge:1", "notdup:1"]
        assert platform.texts(admin)[-1].startswith(
            "【每月合并复核】扫描完成（12-07 10:00）：5 位活跃客户中有 3 位疑似重复")
    assert await merge_chat.monthly_review(chat.rt) is None  # once a month


async def test_an_admin_merges_the_history_moves_and_each_team_is_told(
    platform, aiohttp_client, sqlite_url
):
    chat = await started(platform, aiohttp_client, sqlite_url)
    card = await scanned(platform, chat)

    refused = await click(platform, chat, "王芳", card, "merge:1")
    assert refused == "只有管理员可以确认合并，您的点击没有改变任何内容。"
    assert (await rows(chat))["customers"][1][7] == "active"

    done = await click(platform, chat, "管理员甲", card, "merge:1")
    assert done == ("已合并（合并 #1）：3 条记录合并为客户 #1（深圳示例科技有限公司），"
                    "移入线索 1 条、跟进 1 条，已通知相关销售。如有误，发送 /撤销合并 1 恢复。")
    after = await rows(chat)
    assert after["customers"][:3] == [
        (1, "深圳示例科技有限公司", "张伟", "13800001234", "zhangwei@example.com",
         "industrial", 3, "active", None),
        (2, "示例科技（深圳）有限公司", "张伟", "13800001234", "zhangwei@example.com",
         None, 5, "merged", 1),
        (3, "深圳示例科技有限责任公司", "张伟", "13800001234", None, "industrial", 4,
         "merged", 1),
    ]
    assert [c[7] for c in after["customers"][3:]] == ["active", "active"]
    assert after["leads"] == [(1, 1), (2, 1)]
    assert after["follow_ups"][-1] == (5, None, 1)  # the interaction on #2 moved to #1

    async with chat.rt.sessions() as session:
        [logged] = (await session.scalars(
            select(AuditLog).where(AuditLog.action == "customer.merge"))).all()
    assert (logged.actor, logged.object_id) == ("管理员甲", "1")
    assert logged.before["customers"]["2"]["company"] == "示例科技（深圳）有限公司"
    assert logged.before["customers"]["3"]["owner_id"] == 4
    assert logged.before["survivor"] == {"email": None, "industry": None}
    assert logged.after["moved"] == {"leads": [[2, 2]], "follow_ups": [[5, 2]]}

    status = "管理员甲 已于 12-02 10:00 合并（合并 #1）"
    assert [c.status for c in platform.cards("管理员甲")] == [status]
    assert [(c.status, c.keys) for c in platform.cards("管理员乙")] == [(status, [])]

    [(south, south_at)] = platform.notices("华南")
    [(east, east_at)] = platform.notices("华东")
    assert sorted(south_at) == ["sunlei", "wangfang"] and east_at == ["zhaoqiang"]
    for text in (south, east):
        assert "客户合并通知（合并 #1）" in text
        assert f"#2 示例科技（深圳）有限公司 · 张伟 · {SHOWN_PHONE}（赵强）" in text
        assert f"#1 深圳示例科技有限公司 · 张伟 · {SHOWN_PHONE}（王芳）← 保留" in text
        assert "/撤销合并 1" in text and "13800001234" not in text

    stale = await click(platform, chat, "管理员乙", platform.cards("管理员乙")[0], "merge:1")
    assert stale == ("这张卡片已经失效：这组客户已由 管理员甲 于 12-02 10:00 合并（合并 #1）。"
                     "您的点击没有改变任何内容。")
    async with chat.rt.sessions() as session:
        assert len((await session.scalars(select(Merge))).all()) == 1


async def test_the_undo_restores_every_record_and_row_exactly(
    platform, aiohttp_client, sqlite_url
):
    chat = await started(platform, aiohttp_client, sqlite_url)
    before = await rows(chat)
    card = await scanned(platform, chat)
    await click(platform, chat, "管理员甲", card, "merge:1")
    assert await rows(chat) != before

    undone = await say(platform, chat, "管理员乙", "/撤销合并 1")
    assert undone == ("已撤销合并 #1：客户 #2、#3 已恢复，移回线索 1 条、跟进 1 条，"
                      "已通知相关销售。")
    assert await rows(chat) == before
    async with chat.rt.sessions() as session:
        proposal = await session.get(MergeProposal, 1)
        logged = (await session.scalars(
            select(AuditLog.action).where(AuditLog.action.like("customer.%"))
            .order_by(AuditLog.id))).all()
    assert proposal.state == "undone" and logged == ["customer.merge", "customer.unmerge"]
    south = platform.notices("华南")
    assert len(south) == 2 and "客户合并已撤销（合并 #1）" in south[-1][0]
    assert sorted(south[-1][1]) == ["sunlei", "wangfang"]

    again = await say(platform, chat, "管理员甲", "/撤销合并 1")
    assert again == "合并 #1 已于 12-02 10:00 由 管理员乙 撤销，无需再次撤销。"
    assert await say(platform, chat, "管理员甲", "/撤销合并 7") == (
        "没有找到合并 #7。编号见合并通知，或合并后给您的回复。")
    assert await say(platform, chat, "管理员甲", "/撤销合并") == (
        "用法：/撤销合并 编号，例如：/撤销合并 3（编号见合并通知）")
    assert await say(platform, chat, "王芳", "/撤销合并 1") == (
        "「撤销合并」只对管理员开放。发送 /帮助 查看您可用的命令。")
    stale = await click(platform, chat, "管理员甲", card, "merge:1")
    assert stale.startswith("这张卡片已经失效：这组客户的合并 #1 已撤销")


async def test_not_a_duplicate_is_remembered_on_the_next_scan(
    platform, aiohttp_client, sqlite_url
):
    chat = await started(platform, aiohttp_client, sqlite_url)
    card = await scanned(platform, chat)
    done = await click(platform, chat, "管理员乙", platform.cards("管理员乙")[0], "notdup:1")
    assert done == ("已记下：合并建议 #1 的 3 条记录不是同一客户，以后的扫描不再提出这一组记录。\n"
                    "如其中几条确是同一客户，发送 /拆分 1 客户号 拆出不相干的记录，"
                    "仍然相符的会重新提出。")
    assert platform.cards("管理员甲")[0].status == "管理员乙 已于 12-02 10:00 标记为不是重复"
    stale = await click(platform, chat, "管理员甲", card, "merge:1")
    assert stale.startswith("这张卡片已经失效：管理员乙 已于 12-02 10:00 标记这组客户不是重复")

    again = await say(platform, chat, "管理员甲", "/合并扫描")
    assert again == ("【合并扫描】由 管理员甲 发起。扫描完成（12-02 10:00）：5 位活跃客户中"
                     "没有发现疑似重复。\n另有 1 组已标记为不是重复，本次没有再提出。")
    assert len(platform.cards("管理员甲")) == 1
    async with chat.rt.sessions() as session:
        [remembered] = (await session.scalars(select(NotDuplicate))).all()
        assert remembered.member_ids == [1, 2, 3]
        assert len((await session.scalars(select(Merge))).all()) == 0


async def test_the_duplicate_rate_before_and_after_the_review(
    platform, aiohttp_client, sqlite_url
):
    chat = await started(platform, aiohttp_client, sqlite_url)
    assert (await say(platform, chat, "管理员甲", "/重复率")).startswith(
        "还没有做过合并扫描，暂无重复率。发送 /合并扫描 立即扫描")
    card = await scanned(platform, chat)
    assert await say(platform, chat, "管理员甲", "/重复率") == (
        "重复率（疑似重复客户占活跃客户的比例）：\n"
        "上次扫描（12-02 10:00）：60.0%（3/5）→ 现在 60.0%（3/5）")
    await click(platform, chat, "管理员甲", card, "merge:1")
    assert await say(platform, chat, "管理员甲", "/重复率") == (
        "重复率（疑似重复客户占活跃客户的比例）：\n"
        "上次扫描（12-02 10:00）：60.0%（3/5）→ 合并后 0.0%（0/3）\n该次扫描的建议已合并 1 组。")


async def test_a_split_closes_each_admins_card_and_cards_the_records_still_alike(
    platform, aiohttp_client, sqlite_url
):
    chat = await started(platform, aiohttp_client, sqlite_url)
    await scanned(platform, chat)  # #1, #2, #3 (and not #4, the switchboard look-alike)
    answer = await say(platform, chat, "管理员甲", "/拆分 1 3")
    assert answer.splitlines() == [
        "已拆分合并建议 #1：#3 与 #1、#2 不是同一客户，以后的扫描不会再把它们归为一组。",
        "新的合并建议 #2：#1、#2，卡片已发给管理员。"]
    status = "管理员甲 已于 12-02 10:00 拆分（拆出 #3）"
    for admin in ("管理员甲", "管理员乙"):
        old, new = platform.cards(admin)
        assert (old.title, old.status, old.keys) == ("合并建议 #1：3 条记录", status, [])
        assert (new.title, new.status, new.keys) == ("合并建议 #2：2 条记录", None,
                                                     ["merge:2", "notdup:2"])
    status_code, page = await open_page(platform, platform.link("管理员乙", new))
    assert status_code == 200 and "合并对比：建议 #2" in page and "#3" not in page
    stale = await click(platform, chat, "管理员乙", platform.cards("管理员乙")[0], "notdup:1")
    assert stale == ("这张卡片已经失效：管理员甲 已于 12-02 10:00 拆分了这组客户。"
                     "您的点击没有改变任何内容。")
    assert platform.cards("王芳") == []


# ---- on the console -------------------------------------------------------------------------


async def scan_on_console(chat: Chat) -> list[Any]:
    await chat.event("管理员甲", kind="text", text="/合并扫描")
    await settle(chat)
    return await chat.inbox("管理员甲")


async def _many_groups(chat: Chat, groups: int) -> None:
    people = await chat.add_members({"name": "管理员甲", "role": "admin"},
                                    {"name": "王芳", "role": "rep"})
    async with chat.rt.sessions() as session, session.begin():
        for n in range(groups):
            for company in (f"深圳示例{n:02d}科技有限公司", f"示例{n:02d}科技（深圳）有限公司"):
                session.add(Customer(company=company, contact="张伟",
                                     phone=f"1380000{n:04d}", owner_id=people["王芳"].id))


async def test_a_big_scan_cards_fifteen_proposals_and_the_next_scan_the_rest(chat):
    await _many_groups(chat, 20)
    sent = await scan_on_console(chat)
    cards = [m for m in sent if m.card is not None]
    assert len(cards) == merge_chat.CARDS_PER_SCAN == 15
    summary = sent[-1].text
    assert "40 位活跃客户中有 40 位疑似重复，共 20 组，重复率 100.0%" in summary
    assert "另有 5 组还没有发卡片（每次最多 15 张）" in summary
    assert summary.count("· 建议 #") == 5

    sent = await scan_on_console(chat)
    assert len([m for m in sent if m.card is not None]) == 5
    assert "其中 15 组之前已发过卡片，请在原来的卡片上处理。" in sent[-1].text
    async with chat.rt.sessions() as session:
        assert len((await session.scalars(select(MergeProposal))).all()) == 20


async def test_a_long_scan_tells_the_admin_how_far_it_is_and_a_second_one_waits(
    chat, monkeypatch
):
    await _many_groups(chat, 1)
    release = asyncio.Event()
    real = merge_chat.scan_groups

    async def slow(session, *, progress=None):
        await progress(1, 2)
        await release.wait()
        return await real(session, progress=progress)

    monkeypatch.setattr(merge_chat, "scan_groups", slow)
    monkeypatch.setattr(merge_chat, "PROGRESS_FIRST_SECONDS", 0.05)
    first, *texts = [m.text for m in await chat.say("管理员甲", "/合并扫描")]
    assert first == "开始合并扫描：共 2 位活跃客户。扫描完成后把合并建议发给管理员。"
    # The scan reads a snapshot: the bot goes on writing meanwhile, the progress line too.
    for _ in range(100):
        if texts:
            break
        await asyncio.sleep(0.05)
        await chat.settle()
        texts += [m.text for m in await chat.inbox("管理员甲")]
    assert texts == ["合并扫描进行中：已比对 1/2 位客户，完成后发送合并建议。"]
    [busy] = await chat.say("管理员甲", "/合并扫描")
    assert busy.text == "合并扫描已在进行中（12-02 10:00 开始），完成后结果会发给管理员，请稍候。"

    release.set()
    await settle(chat)
    sent = await chat.inbox("管理员甲")
    assert [m.kind for m in sent] == ["card", "text"]
    assert sent[-1].text.startswith("【合并扫描】由 管理员甲 发起。扫描完成")


async def test_a_scan_that_fails_says_so_and_the_next_one_may_start(chat, monkeypatch):
    await _many_groups(chat, 1)

    async def broken(session, *, progress=None):
        raise RuntimeError("matcher down")

    monkeypatch.setattr(merge_chat, "scan_groups", broken)
    [started_text, failed] = await scan_on_console(chat)
    assert started_text.text.startswith("开始合并扫描")
    assert failed.text == "合并扫描出错，没有完成；错误已记入日志，请稍后再发送 /合并扫描。"
    monkeypatch.undo()
    again = await scan_on_console(chat)
    assert [m.kind for m in again] == ["text", "card", "text"]
    assert again[0].text.startswith("开始合并扫描")


async def _rate(chat: Chat) -> str:
    [reply] = await chat.say("管理员甲", "/重复率")
    return reply.text


async def _merge_each(chat: Chat, sent: list[Any]) -> None:
    for card in [m for m in sent if m.card is not None]:
        [done] = await chat.click("管理员甲", card.button("合并"), card.card_id)
        assert done.text.startswith("已合并")


async def test_undone_merges_count_again_in_the_rate_after_a_later_scan(chat):
    await _many_groups(chat, 2)  # #1/#2 and #3/#4
    await _merge_each(chat, await scan_on_console(chat))
    rescan = await scan_on_console(chat)
    assert "2 位活跃客户中没有发现疑似重复" in rescan[-1].text

    [first] = await chat.say("管理员甲", "/撤销合并 1")
    assert first.text.startswith("已撤销合并 #1：客户 #2 已恢复")
    assert await _rate(chat) == (
        "重复率（疑似重复客户占活跃客户的比例）：\n"
        "上次扫描（12-02 10:00）：100.0%（4/4）→ 合并后 66.7%（2/3）\n该次扫描的建议已合并 1 组。")
    [second] = await chat.say("管理员甲", "/撤销合并 2")
    assert second.text.startswith("已撤销合并 #2：客户 #4 已恢复")
    # Every record is back and still the other's duplicate: all four are in a group again.
    assert await _rate(chat) == (
        "重复率（疑似重复客户占活跃客户的比例）：\n"
        "上次扫描（12-02 10:00）：0.0%（0/2）→ 现在 100.0%（4/4）")


async def test_the_rate_counts_each_restored_customer_once_and_only_active_ones(chat):
    await _many_groups(chat, 1)  # #1 and #2
    await _merge_each(chat, await scan_on_console(chat))  # merge #1: #2 into #1
    async with chat.rt.sessions() as session, session.begin():
        owner = (await session.get(Customer, 1)).owner_id
        session.add(Customer(company="深圳示例00科技有限公司", contact="张伟",
                             phone="13800000000", owner_id=owner))
    await _merge_each(chat, await scan_on_console(chat))  # merge #2: #3 into #1
    assert (await _rate(chat)).endswith("→ 合并后 0.0%（0/1）\n该次扫描的建议已合并 1 组。")

    await chat.say("管理员甲", "/撤销合并 2")
    assert (await _rate(chat)).endswith("→ 合并后 100.0%（2/2）\n该次扫描的建议已合并 1 组。")
    await chat.say("管理员甲", "/撤销合并 1")
    # #1 is in both undone groups ({1, 2} and {1, 3}): counted once, 3 of the 3 active.
    assert (await _rate(chat)).endswith("→ 现在 100.0%（3/3）")
    async with chat.rt.sessions() as session:
        statuses = (await session.scalars(select(Customer.status))).all()
    assert statuses == ["active"] * 3


# ---- who hears of a merge, and where ----------------------------------------------------------


async def test_teams_sharing_one_robot_get_one_notice_and_each_platform_its_own_ids(
    aiohttp_client, sqlite_url
):
    from bot.outbox import enqueue_teams

    wfake, dfake = wecom.FakeWeCom(), dingtalk.FakeDingTalk(groups={"cidsouth=="})
    await wfake.start()
    await dfake.start()
    try:
        bot = await wecom.start_bot(
            aiohttp_client, sqlite_url, wfake,
            wecom=wfake.settings() | {"group_webhook": wfake.webhook_url()},
            dingtalk=dfake.settings(card_template_id=dingtalk.TEMPLATE_ID),
            teams={"华南": {"dingtalk_open_conversation_id": "cidsouth=="}})
        chat = Chat(bot.app[RUNTIME])
        dfake.clock = lambda: chat.rt.now().timestamp()
        await dfake.wait_connected()
        people = await chat.add_members(
            {"name": "王芳", "team": "华南", "wecom_userid": "wangfang",
             "dingtalk_userid": "wangfang-dt"},
            {"name": "赵强", "team": "华东", "wecom_userid": "zhaoqiang",
             "dingtalk_userid": "zhaoqiang-dt"})
        async with chat.rt.sessions() as session, session.begin():
            queued = await enqueue_teams(session, chat.rt, {
                "华南": [people["王芳"]], "华东": [people["赵强"]]}, "**客户合并通知**\n详情")
        await chat.settle()
        # WeCom: both teams fall back to the one default robot, told once about both.
        [told] = wfake.group_messages["team-key"]
        assert told["markdown"]["content"] == (
            "**客户合并通知**\n详情\n<@wangfang> <@zhaoqiang>")
        # DingTalk: only 华南 has a group; its card @-mentions 王芳 by her DingTalk id.
        [card] = dfake.cards.values()
        assert card.spaces == ["IM_GROUP.cidsouth=="]
        assert card.at_users == {"wangfang-dt": "王芳"}
        assert queued == 4  # WeCom once, DingTalk once, the console once per team
    finally:
        await wfake.close()
        await dfake.close()


async def test_an_owner_whose_team_has_no_channel_hears_of_it_one_to_one(
    aiohttp_client, sqlite_url, fake
):
    bot = await wecom.start_bot(aiohttp_client, sqlite_url, fake,
                                teams={"华南": {"wecom_webhook": fake.webhook_url()}})
    chat = Chat(bot.app[RUNTIME])
    people = await chat.add_members(
        {"name": "王芳", "team": "华南", "wecom_userid": "wangfang"},
        {"name": "赵强", "team": "华东", "wecom_userid": "zhaoqiang"})
    async with chat.rt.sessions() as session, session.begin():
        await merge_chat.tell_owners(session, chat.rt, [people["王芳"].id, people["赵强"].id,
                                                        None], "**客户合并通知**")
    await chat.settle()
    [told] = fake.group_messages["team-key"]
    assert told["markdown"]["content"] == "**客户合并通知**\n<@wangfang>"
    [direct] = fake.sent_to("zhaoqiang", "markdown")
    assert direct["markdown"]["content"] == "**客户合并通知**"
    assert fake.sent_to("wangfang") == []


async def test_a_card_whose_link_expired_is_sent_again_by_the_next_scan(chat):
    await _many_groups(chat, 1)
    [old] = [m for m in await scan_on_console(chat) if m.card is not None]
    chat.rt.clock.advance(hours=73)  # the comparison link has expired
    sent = await scan_on_console(chat)
    [new] = [m for m in sent if m.card is not None]
    assert new.card_id != old.card_id and new.card.object_id == old.card.object_id
    assert (await chat.card(old.card_id)).status == "已重新发送，请在新卡片上处理"
    [stale] = await chat.click("管理员甲", old.button("合并"), old.card_id)
    assert stale.text == ("这张卡片已经失效：这条建议已重新发送，请在最新的卡片上处理。"
                          "您的点击没有改变任何内容。")
    [done] = await chat.click("管理员甲", new.button("合并"), new.card_id)
    assert done.text.startswith("已合并（合并 #1）")


# ---- records that changed in between ---------------------------------------------------------


async def test_a_tap_after_a_record_was_merged_elsewhere_voids_the_proposal(chat):
    await _many_groups(chat, 1)
    [card] = [m for m in await scan_on_console(chat) if m.card is not None]
    async with chat.rt.sessions() as session, session.begin():
        (await session.get(Customer, 2)).status = "merged"
    [reply] = await chat.click("管理员甲", card.button("合并"), card.card_id)
    assert reply.text == ("合并建议 #1 里的记录已有变化（有记录已被合并），这条建议已失效，"
                          "下次扫描会重新比对。")
    assert (await chat.card(card.card_id)).status == "记录已变化，这条建议已失效"
    async with chat.rt.sessions() as session:
        assert (await session.get(MergeProposal, 1)).state == "superseded"
        assert (await session.scalars(select(Merge))).all() == []


async def test_an_undo_waits_for_a_later_merge_and_keeps_a_field_changed_since(chat):
    await _many_groups(chat, 1)  # #1 and #2; #2 is the newer record of 王芳's
    [card] = [m for m in await scan_on_console(chat) if m.card is not None]
    async with chat.rt.sessions() as session, session.begin():
        (await session.get(Customer, 2)).email = "zhangwei@example.com"
    await chat.click("管理员甲", card.button("合并"), card.card_id)
    async with chat.rt.sessions() as session, session.begin():
        survivor = await session.get(Customer, 1)
        assert survivor.email == "zhangwei@example.com"  # filled from #2
        survivor.email = "zhang.wei@example.com"  # and corrected by hand since
        session.add(Customer(company="深圳示例00科技有限公司", contact="张伟",
                             phone="13800000000", owner_id=survivor.owner_id))
    [later] = [m for m in await scan_on_console(chat) if m.card is not None]
    await chat.click("管理员甲", later.button("合并"), later.card_id)  # merge #2: #3 into #1

    [refused] = await chat.say("管理员甲", "/撤销合并 1")
    assert refused.text == "合并 #1 之后，其中的客户又参与了合并 #2，请先撤销合并 #2。"
    [first] = await chat.say("管理员甲", "/撤销合并 2")
    assert first.text.startswith("已撤销合并 #2：客户 #3 已恢复")
    [second] = await chat.say("管理员甲", "/撤销合并 1")
    assert second.text == ("已撤销合并 #1：客户 #2 已恢复，移回线索 0 条、跟进 0 条，"
                           "已通知相关销售。\n客户 #1 的邮箱在合并后又被修改过，保留了现在的值。")
    async with chat.rt.sessions() as session:
        customers = (await session.scalars(select(Customer).order_by(Customer.id))).all()
    assert [(c.id, c.status, c.merged_into_id, c.email) for c in customers] == [
        (1, "active", None, "zhang.wei@example.com"),
        (2, "active", None, "zhangwei@example.com"),
        (3, "active", None, None),
    ]


async def test_an_interaction_written_to_a_merged_away_number_goes_back_with_the_undo(chat):
    await _many_groups(chat, 2)
    await chat.add_members({"name": "周敏", "role": "service"})
    cards = [m for m in await scan_on_console(chat) if m.card is not None]
    for card in cards:  # #2 into #1, then #4 into #3
        await chat.click("管理员甲", card.button("合并"), card.card_id)
    async with chat.rt.sessions() as session, session.begin():  # and #3 by hand into #1
        third = await session.get(Customer, 3)
        third.status, third.merged_into_id = "merged", 1
        session.add(Merge(survivor_id=1, merged_ids=[3], merged_before={
            "3": {"status": "active", "merged_into_id": None}}, moved={}))
    [reply] = await chat.say("周敏", "记录 客户#4 客户来电咨询售后")
    assert reply.text.startswith("客户 #4 已合并到客户 #1，已把这次互动记录到客户 #1")
    [reply] = await chat.say("周敏", "记录 客户#2 寄出样品")
    assert reply.text.startswith("客户 #2 已合并到客户 #1")

    async def where() -> dict[str, int]:
        async with chat.rt.sessions() as session:
            return dict((await session.execute(
                select(FollowUp.content, FollowUp.customer_id))).all())

    assert await where() == {"客户来电咨询售后": 1, "寄出样品": 1}
    await chat.say("管理员甲", "/撤销合并 3")  # #3 apart again, with what was meant for #4
    assert await where() == {"客户来电咨询售后": 3, "寄出样品": 1}
    await chat.say("管理员甲", "/撤销合并 2")
    await chat.say("管理员甲", "/撤销合并 1")
    assert await where() == {"客户来电咨询售后": 4, "寄出样品": 2}


async def test_a_big_groups_notice_names_ten_records_and_counts_the_rest(chat):
    from storage.models import Outgoing

    people = await chat.add_members({"name": "管理员甲", "role": "admin"},
                                    {"name": "王芳", "role": "rep", "team": "华南"})
    async with chat.rt.sessions() as session, session.begin():
        names = ("深圳示例科技有限公司", "示例科技（深圳）有限公司")
        for n in range(12):
            session.add(Customer(company=names[n % 2], contact="张伟", phone="13800001234",
                                 owner_id=people["王芳"].id))
    [card] = [m for m in await scan_on_console(chat) if m.card is not None]
    assert card.card.title == "合并建议 #1：12 条记录"
    await chat.click("管理员甲", card.button("合并"), card.card_id)
    async with chat.rt.sessions() as session:
        [notice] = (await session.scalars(
            select(Outgoing).where(Outgoing.recipient == "group:华南"))).all()
    text = notice.payload["text"]
    assert text.count("\n> #") == 10 and "> ……另有 2 条记录" in text
    assert notice.payload["mentions"] == ["王芳"]  # the console names people by name


# ---- a chained group split ------------------------------------------------------------------


async def _chain(chat: Chat) -> dict[str, Member]:
    """#1/#2 one company (the phone and the name), #3/#4 another (the name and the e-mail);
    #2 and #3 share the front desk's number and e-mail, which chains the four together."""
    people = await chat.add_members({"name": "管理员甲", "role": "admin"},
                                    {"name": "管理员乙", "role": "admin"},
                                    {"name": "王芳", "role": "rep"})
    owner = people["王芳"].id
    desk = "front@hub.example"
    async with chat.rt.sessions() as session, session.begin():
        session.add_all([
            Customer(company="深圳星河示例电子有限公司", contact="陈明", phone="13800000801",
                     owner_id=owner),
            Customer(company="星河示例电子（深圳）有限公司", contact="林静",
                     phone="13800000801", email=desk, owner_id=owner),
            Customer(company="广州远帆示例物流有限公司", contact="刘洋", phone="13800000801",
                     email=desk, owner_id=owner),
            Customer(company="远帆示例物流（广州）有限公司", contact="刘洋",
                     phone="13800000902", email=desk, owner_id=owner),
        ])
    return people


def _cards(sent: list[Any]) -> list[Any]:
    return [m for m in sent if m.card is not None]


async def test_a_chained_group_is_split_and_both_parts_are_proposed_at_once(chat):
    await _chain(chat)
    [card] = _cards(await scan_on_console(chat))
    assert card.card.title == "合并建议 #1：4 条记录"
    assert card.card.description == ("两两之间手机号、公司名、邮箱相同（不一定每两条都相同），"
                                     "疑似同一客户：#1、#2、#3、#4。\n"
                                     "如有几条不是同一客户：/拆分 1 客户号")
    await chat.inbox("管理员乙")

    [reply, *cards] = await chat.say("管理员甲", "/拆分 1 3 4")
    assert reply.text == (
        "已拆分合并建议 #1：#3、#4 与 #1、#2 不是同一客户，以后的扫描不会再把它们归为一组。\n"
        "新的合并建议 #2：#1、#2，卡片已发给管理员。\n"
        "新的合并建议 #3：#3、#4，卡片已发给管理员。")
    for sent in (cards, await chat.inbox("管理员乙")):
        assert [(c.card.title, [b.key for b in c.card.buttons], c.card.description)
                for c in _cards(sent)] == [
            ("合并建议 #2：2 条记录", ["merge:2", "notdup:2"],
             "手机号、公司名相同，疑似同一客户：#1、#2。"),
            ("合并建议 #3：2 条记录", ["merge:3", "notdup:3"],
             "公司名、邮箱相同，疑似同一客户：#3、#4。"),
        ]
    closed = await chat.card(card.card_id)
    assert closed.status == "管理员甲 已于 12-02 10:00 拆分（拆出 #3、#4）"
    assert closed.buttons == []
    [stale] = await chat.click("管理员甲", card.button("合并"), card.card_id)
    assert stale.text == ("这张卡片已经失效：管理员甲 已于 12-02 10:00 拆分了这组客户。"
                          "您的点击没有改变任何内容。")

    async with chat.rt.sessions() as session:
        proposals = (await session.execute(
            select(MergeProposal.id, MergeProposal.member_ids, MergeProposal.state)
            .order_by(MergeProposal.id))).all()
        [logged] = (await session.scalars(
            select(AuditLog).where(AuditLog.action == "customer.split"))).all()
    assert [tuple(p) for p in proposals] == [
        (1, [1, 2, 3, 4], "split"), (2, [1, 2], "proposed"), (3, [3, 4], "proposed")]
    assert (logged.actor, logged.object_type, logged.object_id) == ("管理员甲", "proposal", "1")
    assert logged.before == {"state": "proposed", "customers": [1, 2, 3, 4]}
    assert logged.after == {"state": "split", "parts": [[1, 2], [3, 4]],
                            "proposals": [2, 3], "open": []}

    # The next scan keeps the parts apart: the two open proposals, no new card.
    sent = await scan_on_console(chat)
    assert _cards(sent) == []
    assert "4 位活跃客户中有 4 位疑似重复，共 2 组" in sent[-1].text
    assert "其中 2 组之前已发过卡片，请在原来的卡片上处理。" in sent[-1].text
    async with chat.rt.sessions() as session:
        assert (await session.scalar(select(func.count()).select_from(MergeProposal))) == 3
    [merged] = await chat.click("管理员甲", cards[0].button("合并"), cards[0].card_id)
    assert merged.text.startswith("已合并（合并 #1）：2 条记录合并为客户 #1")


async def test_a_chain_turned_down_can_still_be_split_and_its_true_pair_proposed(chat):
    await _chain(chat)
    [card] = _cards(await scan_on_console(chat))
    [turned_down] = await chat.click("管理员甲", card.button("不是重复"), card.card_id)
    assert turned_down.text.endswith(
        "如其中几条确是同一客户，发送 /拆分 1 客户号 拆出不相干的记录，仍然相符的会重新提出。")
    again = await scan_on_console(chat)
    assert _cards(again) == [] and "另有 1 组已标记为不是重复" in again[-1].text

    # #4 is a company of its own after all; #1, #2 and #3 are alike only through #2.
    [reply, *cards] = await chat.say("管理员甲", "/拆分 1 #3、#4")
    assert reply.text.splitlines()[1:] == ["新的合并建议 #2：#1、#2，卡片已发给管理员。",
                                           "新的合并建议 #3：#3、#4，卡片已发给管理员。"]
    assert [c.card.object_id for c in _cards(cards)] == [2, 3]
    [turned_down] = await chat.click("管理员甲", cards[1].button("不是重复"), cards[1].card_id)
    sent = await scan_on_console(chat)
    assert _cards(sent) == []
    assert "其中 1 组之前已发过卡片" in sent[-1].text
    assert "另有 1 组已标记为不是重复" in sent[-1].text  # #3/#4; the chain is no more


async def test_a_split_is_for_admins_with_a_proposal_and_some_of_its_records(chat):
    await _chain(chat)
    [card] = _cards(await scan_on_console(chat))
    usage = ("用法：/拆分 建议号 客户号 [客户号…]，例如：/拆分 3 14 15"
             "（客户 #14、#15 与合并建议 #3 里其余的记录不是同一客户）")
    for text in ("/拆分", "/拆分 1", "/拆分 一 3", "/拆分 1 三号"):
        [reply] = await chat.say("管理员甲", text)
        assert reply.text == usage, text
    [reply] = await chat.say("王芳", "/拆分 1 3 4")
    assert reply.text == "「拆分」只对管理员开放。发送 /帮助 查看您可用的命令。"
    [reply] = await chat.say("管理员甲", "/拆分 99 3")
    assert reply.text == "没有找到合并建议 #99。建议号见合并建议卡片的标题。"
    [reply] = await chat.say("管理员甲", "/拆分 1 4 7")
    assert reply.text == "客户 #7 不在合并建议 #1 里（它的记录：#1、#2、#3、#4），没有拆分。"
    [reply] = await chat.say("管理员甲", "/拆分 1 1 2 3 4")
    assert reply.text.startswith("请只写要拆出的客户号：合并建议 #1 的其余记录至少要留一条")
    async with chat.rt.sessions() as session:
        assert (await session.get(MergeProposal, 1)).state == "proposed"

    [merged] = await chat.click("管理员甲", card.button("合并"), card.card_id)
    assert merged.text.startswith("已合并（合并 #1）")
    await chat.inbox("管理员乙")  # the scan's card and summary
    [reply] = await chat.say("管理员乙", "/拆分 1 3 4")
    assert reply.text == ("合并建议 #1 已不能拆分：这组客户已由 管理员甲 于 12-02 10:00 合并"
                          "（合并 #1）。没有改变任何内容。")
    [help_text] = await chat.say("管理员甲", "/帮助")
    assert "· /拆分 建议号 客户号…：把不是同一客户的记录从合并建议里拆出" in help_text.text
    [help_text] = await chat.say("王芳", "/帮助")
    assert "拆分" not in help_text.text
