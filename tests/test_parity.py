"""The same lead flow on WeCom and on DingTalk, through each platform's fake: one test,
run once per platform; and a member with both ids reached where the roster says."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest

from bot.app import RUNTIME
from tests.fakes import dingtalk, wecom
from tests.fakes.dingtalk import loopback_only  # noqa: F401
from tests.harness import Chat

pytestmark = pytest.mark.usefixtures("loopback_only")

ROSTER = [
    {"name": "李经理", "role": "manager", "id": "limanager"},
    {"name": "王芳", "role": "rep", "manager": "李经理", "id": "wangfang"},
    {"name": "赵强", "role": "rep", "manager": "李经理", "id": "zhaoqiang"},
    {"name": "孙磊", "role": "rep", "manager": "李经理", "id": "sunlei"},
]
IDS = {row["name"]: row["id"] for row in ROSTER}


@dataclass
class Shown:
    """A card as the member sees it now, whatever the platform."""

    ref: str
    title: str
    keys: list[str]
    status: str | None


class WeCom:
    name = "wecom"

    def __init__(self, ids: dict[str, str] = IDS) -> None:
        self.fake = wecom.FakeWeCom()
        self.ids = ids  # roster name → platform user id

    async def start(self, aiohttp_client: Any, db_url: str) -> Chat:
        await self.fake.start()
        self.bot = await wecom.start_bot(aiohttp_client, db_url, self.fake)
        return Chat(self.bot.app[RUNTIME])

    async def close(self) -> None:
        await self.fake.close()

    async def _post(self, plain: str) -> None:
        url = str(self.bot.make_url("/wecom/callback"))
        [attempt] = await self.fake.post_callback(url, plain)
        assert attempt.status == 200

    async def say(self, name: str, text: str) -> None:
        await self._post(self.fake.text_xml(self.ids[name], text))

    async def click(self, name: str, card: Shown, key: str) -> None:
        await self._post(self.fake.click_xml(self.ids[name], card.ref, key))

    def texts(self, name: str) -> list[str]:
        return self.fake.texts_to(self.ids[name])

    def cards(self, name: str) -> list[Shown]:
        return [self._shown(card) for card in self.fake.cards_to(self.ids[name])]

    def _shown(self, card: dict[str, Any]) -> Shown:
        updates = [u for u in self.fake.updates if u["task_id"] == card["task_id"]]
        now = updates[-1]["template_card"] if updates else card
        # A closed WeCom card shows "✔ <status>" first in its subtitle (cards.wecom).
        first = now.get("sub_title_text", "").split("\n")[0]
        return Shown(card["task_id"], now["main_title"]["title"],
                     [b["key"] for b in now["button_list"] if not b["key"].startswith("closed")],
                     first.removeprefix("✔ ") if first.startswith("✔ ") else None)


class DingTalk:
    name = "dingtalk"

    def __init__(self, ids: dict[str, str] = IDS) -> None:
        self.fake = dingtalk.FakeDingTalk()
        self.ids = ids

    async def start(self, aiohttp_client: Any, db_url: str) -> Chat:
        await self.fake.start()
        self.bot = await dingtalk.start_bot(
            aiohttp_client, db_url, self.fake,
            dingtalk={"card_template_id": dingtalk.TEMPLATE_ID})
        return Chat(self.bot.app[RUNTIME])

    async def close(self) -> None:
        await self.fake.close()

    async def say(self, name: str, text: str) -> None:
        await self.fake.wait_acked(await self.fake.push(self.fake.text(self.ids[name], text)))

    async def click(self, name: str, card: Shown, key: str) -> None:
        await self.fake.wait_acked(await self.fake.click(self.ids[name], card.ref, key))

    def texts(self, name: str) -> list[str]:
        return self.fake.texts_to(self.ids[name])

    def cards(self, name: str) -> list[Shown]:
        return [Shown(card.out_track_id, card.data["title"],
                      [b["action"] for b in json.loads(card.data["buttons"])],
                      card.data["status"] or None)
                for card in self.fake.cards_to(self.ids[name])]


def roster_for(platform: str) -> list[dict[str, Any]]:
    column = f"{platform}_userid"
    return [{k: v for k, v in row.items() if k != "id"} | {column: row["id"]}
            for row in ROSTER]


@pytest.fixture(params=[WeCom, DingTalk], ids=["wecom", "dingtalk"])
async def platform(request):
    platform = request.param()
    yield platform
    await platform.close()


async def post_lead(chat: Chat) -> int:
    from handlers.intake import LeadInput, create_lead

    async with chat.rt.sessions() as session, session.begin():
        lead, _ = await create_lead(session, chat.rt, LeadInput(
            company="深圳示例科技有限公司", contact="张伟", phone="13800001234",
            industry="industrial", urgency="high", source="expo"), chat.rt.now(), origin="api")
    await chat.settle()
    return lead.id


async def test_the_lead_flow_is_the_same_on_every_platform(platform, aiohttp_client, sqlite_url):
    chat = await platform.start(aiohttp_client, sqlite_url)
    await chat.add_members(*roster_for(platform.name))

    async def say(name: str, text: str) -> str:
        await platform.say(name, text)
        await chat.settle()
        return platform.texts(name)[-1]

    async def click(name: str, card: Shown, key: str) -> None:
        await platform.click(name, card, key)
        await chat.settle()

    help_text = await say("王芳", "/帮助")
    assert "/我的线索" in help_text and "/转派" not in help_text

    lead_id = await post_lead(chat)
    [offer] = platform.cards("王芳")
    assert offer.title == f"新线索 #{lead_id}" and offer.status is None
    assert offer.keys == [f"accept:{lead_id}", f"decline:{lead_id}", f"transfer:{lead_id}"]

    await click("王芳", offer, f"decline:{lead_id}")
    reasons = platform.cards("王芳")[-1]
    assert reasons.title == f"拒绝线索 #{lead_id}：请选择原因"
    await click("王芳", reasons, reasons.keys[0])
    [offer] = platform.cards("王芳")[:1]
    assert offer.status == "王芳 已于 12-02 10:00 拒绝（行业不熟悉）" and offer.keys == []

    [second] = platform.cards("赵强")
    await click("赵强", second, f"transfer:{lead_id}")
    assert "转给 姓名" in platform.texts("赵强")[-1]
    assert await say("赵强", "转给 孙磊") == f"线索 #{lead_id} 已转给 孙磊，等待对方接受。"
    [second] = platform.cards("赵强")
    assert second.status == "赵强 已于 12-02 10:00 转给 孙磊"

    [third] = platform.cards("孙磊")
    await click("孙磊", third, f"accept:{lead_id}")
    [third] = platform.cards("孙磊")
    assert third.status == "孙磊 已于 12-02 10:00 接受"
    assert f"已接受线索 #{lead_id}" in platform.texts("孙磊")[-1]

    assert await say("孙磊", "记录 已电话沟通，下周拜访") == (
        f"已记录到线索 #{lead_id}（深圳示例科技有限公司）。")
    mine = await say("孙磊", "/我的线索")
    assert mine.splitlines() == ["您的进行中线索（1 条）：",
                                 f"#{lead_id} 深圳示例科技有限公司 · 张伟 · 跟进中"]
    [notice] = platform.texts("李经理")
    assert "王芳拒绝了（原因：行业不熟悉），已转给 赵强" in notice


# ---- a member with both ids -------------------------------------------------------------


@pytest.fixture
async def both(aiohttp_client, sqlite_url):
    """One bot with WeCom and DingTalk on, each pointed at its fake."""
    wfake, dfake = wecom.FakeWeCom(), dingtalk.FakeDingTalk()
    await wfake.start()
    await dfake.start()
    bot = await wecom.start_bot(aiohttp_client, sqlite_url, wfake,
                                dingtalk=dfake.settings(card_template_id=dingtalk.TEMPLATE_ID))
    rt = bot.app[RUNTIME]
    dfake.clock = lambda: rt.now().timestamp()
    await dfake.wait_connected()
    yield bot, wfake, dfake
    await wfake.close()
    await dfake.close()


@pytest.mark.parametrize("named", ["dingtalk", "wecom"])
async def test_a_member_with_both_ids_is_reached_on_the_channel_the_roster_names(both, named):
    bot, wfake, dfake = both
    chat = Chat(bot.app[RUNTIME])
    await chat.add_members({"name": "王芳", "role": "rep", "wecom_userid": "wangfang",
                            "dingtalk_userid": "wangfang-dt", "channel": named})
    lead_id = await post_lead(chat)
    on_dingtalk = [c.data["title"] for c in dfake.cards_to("wangfang-dt")]
    on_wecom = [c["main_title"]["title"] for c in wfake.cards_to("wangfang")]
    expected = [f"新线索 #{lead_id}"]
    assert (on_dingtalk, on_wecom) == ((expected, []) if named == "dingtalk" else ([], expected))


async def test_an_answer_goes_back_on_the_platform_the_member_wrote_from(both):
    bot, wfake, dfake = both
    chat = Chat(bot.app[RUNTIME])
    await chat.add_members({"name": "王芳", "role": "rep", "wecom_userid": "wangfang",
                            "dingtalk_userid": "wangfang-dt", "channel": "dingtalk"})
    [attempt] = await wfake.post_callback(str(bot.make_url("/wecom/callback")),
                                          wfake.text_xml("wangfang", "/帮助"))
    assert attempt.status == 200
    await chat.settle()
    assert "/我的线索" in wfake.texts_to("wangfang")[0] and dfake.received("wangfang-dt") == []
