"""The WeCom API client against the fake: tokens (C04), sends, cards, errors, group robots."""

from __future__ import annotations

import asyncio
import itertools
import socket
from datetime import timedelta

import aiohttp
import pytest
from sqlalchemy import func, select

from bot.app import RUNTIME, build_runtime
from bot.channels.base import Parcel
from bot.channels.wecom import WeComChannel
from cards.model import Button, CardField, CardModel
from storage.models import AccessToken, Alert, Outgoing
from tests.fakes.wecom import start_bot
from tests.harness import Chat

_ids = itertools.count(1)




def channel_of(bot) -> WeComChannel:
    return bot.app[RUNTIME].channels["wecom"]


def text(address: str = "zhangsan", body: str = "你好") -> Parcel:
    number = next(_ids)
    return Parcel(outbox_id=number, kind="text", address=address, is_group=False,
                  payload={"text": body}, dedupe_key=f"k{number}")


def lead_card() -> CardModel:
    return CardModel(
        title="新线索 #12", kind="lead", object_id=12, description="轮流分配：您在岗",
        fields=[CardField("公司", "深圳示例科技有限公司"), CardField("联系人", "张伟"),
                CardField("电话", "138****1234"), CardField("标签", "工业 / 高 / 展会")],
        buttons=[Button("接受", "accept:12", "primary"), Button("拒绝", "decline:12", "danger"),
                 Button("转给同事", "transfer:12")],
    )


def card(ref: str, model: CardModel | None = None, kind: str = "card",
         response_code: str | None = None) -> Parcel:
    return Parcel(outbox_id=next(_ids), kind=kind, address="zhangsan", is_group=False,
                  payload={}, dedupe_key=ref, card=model or lead_card(), card_ref=ref,
                  response_code=response_code)


# ---- the access token (C04) -----------------------------------------------------------


async def test_c04_ten_concurrent_sends_fetch_one_token(bot, fake):
    deliveries = await asyncio.gather(*(channel_of(bot).deliver(text()) for _ in range(10)))
    assert all(d.ok for d in deliveries)
    assert fake.gettoken_calls == 1
    assert len(fake.sent_to("zhangsan")) == 10


async def test_the_token_is_kept_in_the_database_and_refreshed_early(bot, fake):
    rt = bot.app[RUNTIME]
    assert (await channel_of(bot).deliver(text())).ok
    async with rt.sessions() as session:
        row = await session.scalar(select(AccessToken))
    assert row.app == f"wecom:{fake.corp_id}:{fake.agent_id}"
    assert row.expires_at == rt.now() + timedelta(seconds=7200 - 300)
    rt.clock.advance(seconds=7200 - 299)  # still valid at WeCom, but inside our margin
    assert (await channel_of(bot).deliver(text())).ok
    assert fake.gettoken_calls == 2


@pytest.mark.parametrize("spoil", ["expire_tokens", "revoke_tokens"])
async def test_c04_a_refused_token_is_renewed_once_and_every_send_succeeds(bot, fake, spoil):
    assert (await channel_of(bot).deliver(text())).ok
    getattr(fake, spoil)()  # the next calls answer 42001, or 40014
    deliveries = await asyncio.gather(*(channel_of(bot).deliver(text()) for _ in range(10)))
    assert all(d.ok for d in deliveries)
    assert fake.gettoken_calls == 2
    assert len(fake.sent_to("zhangsan")) == 11


async def test_c04_two_processes_share_one_token(aiohttp_client, db_url, fake):
    bot = await start_bot(aiohttp_client, db_url, fake)
    rt = bot.app[RUNTIME]
    other = build_runtime(rt.settings)
    other.clock = rt.clock
    second = other.channels["wecom"]
    await second.start(None)
    fake.delay = 0.2  # a slow gettoken: the second process finds the refresh under way
    try:
        sends = [(channel_of(bot) if n % 2 else second).deliver(text()) for n in range(10)]
        deliveries = await asyncio.gather(*sends)
        assert all(d.ok for d in deliveries)
        assert fake.gettoken_calls == 1
        fake.expire_tokens()
        sends = [(channel_of(bot) if n % 2 else second).deliver(text()) for n in range(10)]
        assert all(d.ok for d in await asyncio.gather(*sends))
        assert fake.gettoken_calls == 2
    finally:
        await other.close()


@pytest.mark.parametrize("wrong", [{"secret": "not-the-secret"}, {"corp_id": "wwwrongcorp"}])
async def test_c04_wrong_credentials_alert_the_admins_once_and_do_not_loop(
    aiohttp_client, sqlite_url, fake, wrong
):
    bot = await start_bot(aiohttp_client, sqlite_url, fake, wecom=wrong)
    rt = bot.app[RUNTIME]
    await Chat(rt).add_members({"name": "管理员甲", "role": "admin", "wecom_userid": "admin1"})
    for _ in range(2):
        deliveries = await asyncio.gather(*(channel_of(bot).deliver(text()) for _ in range(10)))
        assert all(not d.ok and d.retry_after == 300 for d in deliveries)
    assert fake.gettoken_calls == 1
    async with rt.sessions() as session:
        alerts = (await session.scalars(select(Alert.key))).all()
        told = await session.scalar(select(func.count()).select_from(Outgoing))
    assert alerts == ["wecom_credentials"] and told == 1
    health = await (await bot.get("/healthz")).json()
    assert health["alerts"] == ["wecom_credentials"]


async def test_the_alert_closes_once_the_credentials_work_again(
    aiohttp_client, sqlite_url, fake, monkeypatch
):
    monkeypatch.setattr("bot.channels.wecom.CREDENTIALS_PAUSE", 0.0)
    bot = await start_bot(aiohttp_client, sqlite_url, fake, wecom={"secret": "old-secret"})
    assert (await channel_of(bot).deliver(text())).retry_after == 300
    fake.secret = "old-secret"  # the admin fixed the app's secret on WeCom's side
    assert (await channel_of(bot).deliver(text())).ok
    async with bot.app[RUNTIME].sessions() as session:
        assert await session.scalar(select(func.count()).select_from(Alert)) == 0


async def test_a_refresh_left_half_done_by_a_dead_process_does_not_block(
    bot, fake, monkeypatch
):
    monkeypatch.setattr("bot.channels.wecom.TOKEN_WAIT", 0.2)
    rt = bot.app[RUNTIME]
    async with rt.sessions() as session, session.begin():
        session.add(AccessToken(app=f"wecom:{fake.corp_id}:{fake.agent_id}",
                                token="refreshing:dead", expires_at=rt.now(),
                                refreshed_at=rt.now()))
    assert (await channel_of(bot).deliver(text())).ok
    assert fake.gettoken_calls == 1


async def test_gettoken_busy_is_retried_without_an_alert(bot, fake):
    fake.fail_next(errcode=-1, path="gettoken")
    delivery = await channel_of(bot).deliver(text())
    assert not delivery.ok and delivery.retry_after == 5
    assert (await channel_of(bot).deliver(text())).ok
    async with bot.app[RUNTIME].sessions() as session:
        assert await session.scalar(select(func.count()).select_from(Alert)) == 0


# ---- sending and its errors -----------------------------------------------------------


async def test_text_and_markdown_are_sent_as_such(bot, fake):
    assert (await channel_of(bot).deliver(text(body="已记录"))).ok
    markdown = Parcel(outbox_id=1, kind="markdown", address="zhangsan", is_group=False,
                      payload={"text": "**本周战报**", "mentions": []}, dedupe_key="m1")
    assert (await channel_of(bot).deliver(markdown)).ok
    first, second = fake.sent_to("zhangsan")
    assert (first["msgtype"], first["text"]["content"]) == ("text", "已记录")
    assert (second["msgtype"], second["markdown"]["content"]) == ("markdown", "**本周战报**")
    assert first["agentid"] == fake.agent_id


@pytest.mark.parametrize(("failure", "after"), [
    ({"errcode": -1}, 5), ({"errcode": 45009}, 60), ({"errcode": 45033}, 60),
    ({"status": 500}, 5), ({"status": 503}, 5),
])
async def test_busy_throttled_and_5xx_are_retried(bot, fake, failure, after):
    fake.fail_next(**failure)
    delivery = await channel_of(bot).deliver(text())
    assert not delivery.ok and delivery.retry_after == after
    assert (await channel_of(bot).deliver(text())).ok


async def test_an_unknown_member_fails_for_good(bot, fake):
    fake.users = {"zhangsan"}
    delivery = await channel_of(bot).deliver(text("ghost"))
    assert not delivery.ok and delivery.retry_after is None
    assert delivery.refused == ["ghost"] and "81013" in delivery.error


async def test_a_member_listed_in_invaliduser_fails_although_errcode_is_0(bot, fake):
    fake.out_of_range = {"hidden"}
    delivery = await channel_of(bot).deliver(text("hidden"))
    assert not delivery.ok and delivery.retry_after is None
    assert delivery.refused == ["hidden"]
    assert fake.messages == []


async def test_a_network_error_is_retried(aiohttp_client, sqlite_url, fake):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    bot = await start_bot(aiohttp_client, sqlite_url, fake,
                          wecom={"api_base": f"http://127.0.0.1:{closed}"})
    delivery = await channel_of(bot).deliver(text())
    assert not delivery.ok and delivery.retry_after == 5
    assert "127.0.0.1" not in delivery.error


async def test_a_slow_answer_times_out_and_is_retried(bot, fake, monkeypatch):
    monkeypatch.setattr("bot.channels.wecom.TIMEOUT", aiohttp.ClientTimeout(total=0.2))
    fake.delay = 1.0
    delivery = await channel_of(bot).deliver(text())
    assert not delivery.ok and delivery.retry_after == 5


async def test_the_session_opens_at_start_and_closes_at_stop(bot):
    channel = channel_of(bot)
    assert channel._http is not None and not channel._http.closed
    await channel.stop()
    delivery = await channel.deliver(text())
    assert not delivery.ok and delivery.retry_after is not None
    await channel.start(None)
    assert (await channel.deliver(text())).ok


# ---- cards --------------------------------------------------------------------------


async def test_a_card_goes_as_a_button_interaction_template_card(bot, fake):
    delivery = await channel_of(bot).deliver(card("sbtask1"))
    assert delivery.ok and delivery.response_code
    [sent] = fake.cards_to("zhangsan")
    assert sent["card_type"] == "button_interaction" and sent["task_id"] == "sbtask1"
    assert sent["main_title"]["title"] == "新线索 #12"
    assert sent["sub_title_text"] == "轮流分配：您在岗"
    assert [i["keyname"] for i in sent["horizontal_content_list"]] == ["公司", "联系人", "电话",
                                                                      "标签"]
    assert [(b["text"], b["key"]) for b in sent["button_list"]] == [
        ("接受", "accept:12"), ("拒绝", "decline:12"), ("转给同事", "transfer:12")
    ]


async def test_a_card_sent_twice_is_delivered_once_42014(bot, fake):
    assert (await channel_of(bot).deliver(card("sbtask2"))).ok
    again = await channel_of(bot).deliver(card("sbtask2"))
    assert again.ok and again.response_code is None
    assert len(fake.cards_to("zhangsan")) == 1


def test_a_large_card_is_cut_to_what_wecom_shows():
    from cards.wecom import template_card

    model = CardModel(
        title="一个非常长的标题" * 5, kind="lead", object_id=1,
        fields=[CardField(f"很长的字段名{n}", f"值{n}") for n in range(8)],
        buttons=[Button(f"按钮{n}", f"accept:{n}") for n in range(8)],
    )
    body = template_card(model, "sbtask3")
    assert len(body["main_title"]["title"]) <= 26
    assert len(body["horizontal_content_list"]) == 6
    assert all(len(i["keyname"]) <= 5 for i in body["horizontal_content_list"])
    assert len(body["button_list"]) == 6
    assert "很长的字段名7：值7" in body["sub_title_text"]


async def test_a_card_update_uses_the_response_code_once(bot, fake):
    sent = await channel_of(bot).deliver(card("sbtask4"))
    closed = lead_card().closed("王芳 已于 12-02 10:00 接受")
    update = card("sbtask4", closed, kind="card_update", response_code=sent.response_code)
    assert (await channel_of(bot).deliver(update)).ok
    [done] = fake.updates
    assert done["task_id"] == "sbtask4" and done["userids"] == ["zhangsan"]
    body = done["template_card"]
    assert body["task_id"] == "sbtask4" and body["card_type"] == "button_interaction"
    assert body["replace_text"] == "王芳 已于 12-02 10:00 接受"
    assert body["sub_title_text"].startswith("✔ 王芳 已于 12-02 10:00 接受")
    again = await channel_of(bot).deliver(update)
    assert not again.ok and again.retry_after is None
    assert len(fake.updates) == 1


async def test_a_response_code_older_than_72_hours_no_longer_updates(bot, fake):
    sent = await channel_of(bot).deliver(card("sbtask6"))
    fake.expire_response_codes()
    closed = lead_card().closed("已超时未接受，线索已转出")
    update = card("sbtask6", closed, kind="card_update", response_code=sent.response_code)
    delivery = await channel_of(bot).deliver(update)
    assert not delivery.ok and delivery.retry_after is None
    assert fake.updates == []


async def test_a_card_update_without_a_response_code_is_skipped(bot, fake):
    closed = lead_card().closed("已处理")
    assert (await channel_of(bot).deliver(card("sbtask5", closed, kind="card_update"))).ok
    assert fake.calls["message/update_template_card"] == 0


# ---- group robots ----------------------------------------------------------------------


def group(address: str, body: str = "**新线索** 已分配", mentions=()) -> Parcel:
    return Parcel(outbox_id=next(_ids), kind="markdown", address=address, is_group=True,
                  payload={"text": body, "mentions": list(mentions)}, dedupe_key="g",
                  mentions=list(mentions))


async def test_a_group_message_goes_to_the_robot_with_mentions(bot, fake):
    assert (await channel_of(bot).deliver(group(fake.webhook_url(), mentions=["wangfang"]))).ok
    [message] = fake.group_messages["team-key"]
    assert message["msgtype"] == "markdown"
    assert message["markdown"]["content"] == "**新线索** 已分配\n<@wangfang>"


async def test_the_robot_limit_is_retried_and_a_bad_key_fails(bot, fake):
    channel = channel_of(bot)
    for _ in range(20):
        assert (await channel.deliver(group(fake.webhook_url()))).ok
    over = await channel.deliver(group(fake.webhook_url()))
    assert not over.ok and over.retry_after == 60
    bad = await channel.deliver(group(fake.webhook_url("unknown-key")))
    assert not bad.ok and bad.retry_after is None and "93000" in bad.error
    assert "unknown-key" not in bad.error


async def test_addresses_come_from_the_roster_and_the_team_settings(
    aiohttp_client, sqlite_url, fake
):
    bot = await start_bot(aiohttp_client, sqlite_url, fake,
                          wecom={"group_webhook": "http://127.0.0.1:9/all"},
                          teams={"华南": {"wecom_webhook": "http://127.0.0.1:9/south"}})
    channel = channel_of(bot)
    assert channel.group_address("华南") == "http://127.0.0.1:9/south"
    assert channel.group_address("华北") == "http://127.0.0.1:9/all"
    assert channel.group_address(None) == "http://127.0.0.1:9/all"
    members = await Chat(bot.app[RUNTIME]).add_members(
        {"name": "王芳", "wecom_userid": "wangfang"}, {"name": "赵强"})
    assert channel.address_of(members["王芳"]) == "wangfang"
    assert channel.address_of(members["赵强"]) is None
    assert (channel.budget.per_minute, channel.budget.per_hour) == (25, 900)
    assert (channel.group_budget.per_minute, channel.group_budget.per_hour) == (18, None)


async def test_without_any_webhook_a_team_has_no_wecom_group(bot):
    assert channel_of(bot).group_address("华南") is None


async def test_an_untrusted_ip_keeps_the_message_and_tells_the_admins_once(
    aiohttp_client, sqlite_url, fake
):
    bot = await start_bot(aiohttp_client, sqlite_url, fake)
    rt = bot.app[RUNTIME]
    await Chat(rt).add_members({"name": "管理员甲", "role": "admin", "wecom_userid": "admin1"})
    fake.fail_next(2, errcode=60020)
    for _ in range(2):
        delivery = await channel_of(bot).deliver(text())
        assert not delivery.ok and delivery.retry_after == 300 and "60020" in delivery.error
    async with rt.sessions() as session:
        alerts = (await session.scalars(select(Alert.key))).all()
        told = (await session.scalars(select(Outgoing.payload))).all()
    assert alerts == ["wecom_setup"] and len(told) == 1 and "企业可信IP" in told[0]["text"]
    assert (await channel_of(bot).deliver(text())).ok  # fixed: the next send goes through
    async with rt.sessions() as session:
        assert (await session.scalars(select(Alert.key))).all() == []


async def test_an_unknown_error_code_is_retried_not_dropped(aiohttp_client, sqlite_url, fake):
    bot = await start_bot(aiohttp_client, sqlite_url, fake)
    fake.fail_next(errcode=12345)
    delivery = await channel_of(bot).deliver(text())
    assert not delivery.ok and delivery.retry_after == 30
