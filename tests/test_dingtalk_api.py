"""The DingTalk OpenAPI client against the fake: the access token, one-to-one batches,
partial refusals, QPS pacing, group limits, interactive cards and their updates."""

from __future__ import annotations

import asyncio
import itertools
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from bot.app import RUNTIME
from bot.channels.base import Parcel
from bot.channels.dingtalk import CREDENTIALS_RETRY, GROUP_BLOCKED, DingTalkChannel
from bot.outbox import Markdown, enqueue_group
from cards.model import Button, CardField, CardModel
from storage.models import AccessToken, Alert, Outgoing
from tests.fakes.dingtalk import TEMPLATE_ID, FakeDingTalk, loopback_only, start_bot  # noqa: F401
from tests.harness import Chat

pytestmark = pytest.mark.usefixtures("loopback_only")

_ids = itertools.count(1)
TEAMS = {"华南": {"dingtalk_open_conversation_id": "cidteam0001=="}}


@pytest.fixture
async def fake():
    fake = FakeDingTalk()
    await fake.start()
    yield fake
    await fake.close()


@pytest.fixture
async def bot(aiohttp_client, sqlite_url, fake):
    return await start_bot(aiohttp_client, sqlite_url, fake, connect=False,
                           dingtalk={"mode": "http", "card_template_id": TEMPLATE_ID},
                           teams=TEAMS)


def channel_of(bot) -> DingTalkChannel:
    return bot.app[RUNTIME].channels["dingtalk"]


def text(address: str = "wangfang", body: str = "你好", **kw) -> Parcel:
    number = next(_ids)
    return Parcel(outbox_id=number, kind="text", address=address, is_group=False,
                  payload={"text": body}, dedupe_key=f"k{number}", **kw)


def lead_card(closed: str | None = None) -> CardModel:
    card = CardModel(
        title="新线索 #12", kind="lead", object_id=12, description="轮流分配：您在岗",
        fields=[CardField("公司", "深圳示例科技有限公司"), CardField("联系人", "张伟")],
        buttons=[Button("接受", "accept:12", "primary"), Button("拒绝", "decline:12", "danger")],
    )
    return card.closed(closed) if closed else card


def card(ref: str, model: CardModel | None = None, kind: str = "card",
         address: str = "wangfang", is_group: bool = False, mentions=(),
         mention_names=None) -> Parcel:
    return Parcel(outbox_id=next(_ids), kind=kind, address=address, is_group=is_group,
                  payload={}, dedupe_key=ref, card=model or lead_card(), card_ref=ref,
                  mentions=list(mentions), mention_names=dict(mention_names or {}))


# ---- the access token --------------------------------------------------------------------


async def test_ten_concurrent_sends_fetch_one_token_kept_in_the_database(bot, fake):
    deliveries = await asyncio.gather(*(channel_of(bot).deliver(text()) for _ in range(10)))
    assert all(d.ok for d in deliveries) and fake.token_calls == 1
    assert len(fake.texts_to("wangfang")) == 10
    async with bot.app[RUNTIME].sessions() as session:
        row = await session.scalar(select(AccessToken))
    assert row.app == "dingtalk:dingfakeclient0001" and row.token.startswith("dt")


async def test_another_process_reuses_the_stored_token(aiohttp_client, db_url, fake):
    bot = await start_bot(aiohttp_client, db_url, fake, connect=False,
                          dingtalk={"mode": "http"})
    assert (await channel_of(bot).deliver(text())).ok
    other = DingTalkChannel(bot.app[RUNTIME])  # a second process: its own memory
    await other.start(None)
    try:
        assert (await other.deliver(text())).ok
    finally:
        await other.stop()
    assert fake.token_calls == 1 and len(fake.texts_to("wangfang")) == 2


async def test_the_token_is_refreshed_before_it_expires(bot, fake):
    rt = bot.app[RUNTIME]
    assert (await channel_of(bot).deliver(text())).ok
    rt.clock.advance(seconds=fake.token_ttl - 299)  # inside the 5-minute margin
    assert (await channel_of(bot).deliver(text())).ok
    assert fake.token_calls == 2 and fake.calls["batchSend"] == 2  # no call was refused


async def test_a_token_refused_with_401_is_renewed_once_and_the_message_sent(bot, fake):
    assert (await channel_of(bot).deliver(text(body="第一条"))).ok
    fake.expire_tokens()
    assert (await channel_of(bot).deliver(text(body="第二条"))).ok
    assert fake.texts_to("wangfang") == ["第一条", "第二条"]
    assert fake.token_calls == 2 and fake.calls["batchSend"] == 3


async def test_refused_credentials_alert_the_admins_once_and_wait(
    aiohttp_client, sqlite_url, fake
):
    bot = await start_bot(aiohttp_client, sqlite_url, fake, connect=False,
                          dingtalk={"mode": "http", "client_secret": "wrong-secret-000"})
    await Chat(bot.app[RUNTIME]).add_members(
        {"name": "管理员", "role": "admin", "dingtalk_userid": "admin01"})
    for _ in range(2):
        delivery = await channel_of(bot).deliver(text())
        assert not delivery.ok and delivery.retry_after == CREDENTIALS_RETRY
    async with bot.app[RUNTIME].sessions() as session:
        assert await session.scalar(select(func.count()).select_from(Alert)) == 1
        row = await session.scalar(select(Outgoing).where(Outgoing.recipient.like("member:%")))
    assert "钉钉应用凭证被拒绝" in row.payload["text"]


# ---- one-to-one -------------------------------------------------------------------------------


async def test_batch_send_takes_at_most_twenty_users_a_call(bot, fake):
    users = [f"rep{n:02d}" for n in range(45)]
    outcome = await channel_of(bot).batch_send(users, "sampleText", {"content": "通知"})
    assert outcome.sent == users and fake.calls["batchSend"] == 3
    assert sorted(m["user"] for m in fake.one_to_one) == users


async def test_an_invalid_user_is_refused_for_good_and_the_rest_are_sent(bot, fake):
    fake.users = {"wangfang"}
    outcome = await channel_of(bot).batch_send(["wangfang", "ghost"], "sampleText",
                                               {"content": "x"})
    assert (outcome.sent, outcome.invalid) == (["wangfang"], ["ghost"])
    delivery = await channel_of(bot).deliver(text("ghost"))
    assert (delivery.ok, delivery.retry_after, delivery.refused) == (False, None, ["ghost"])


async def test_a_flow_controlled_user_is_retried_later_through_the_outbox(bot, fake):
    rt = bot.app[RUNTIME]
    chat = Chat(rt)
    members = await chat.add_members({"name": "王芳", "role": "rep",
                                      "dingtalk_userid": "wangfang"})
    fake.flow_control("wangfang")
    from bot.outbox import enqueue

    async with rt.sessions() as session, session.begin():
        await enqueue(session, rt, await session.get(type(members["王芳"]), members["王芳"].id),
                      "稍后送达")
    await chat.settle()
    async with rt.sessions() as session:
        row = await session.scalar(select(Outgoing))
    assert row.state == "pending" and row.next_at >= rt.now() + timedelta(seconds=60)
    assert "flowControlledStaffIdList" in row.last_error
    rt.clock.advance(seconds=100)
    await chat.settle()
    assert fake.texts_to("wangfang") == ["稍后送达"]


async def test_api_calls_are_paced_under_the_qps_limit(bot, fake):
    deliveries = await asyncio.gather(*(channel_of(bot).deliver(text()) for _ in range(45)))
    assert all(d.ok for d in deliveries), [d.error for d in deliveries if not d.ok]
    assert fake.qps_refused == {} and fake.max_per_second["batchSend"] <= 18


async def test_a_qps_refusal_and_a_5xx_are_retried_soon(bot, fake):
    fake.qps = 0  # every call is over the limit
    delivery = await channel_of(bot).deliver(text())
    assert not delivery.ok and 0 < delivery.retry_after <= 5
    assert "QpsLimit" in delivery.error
    await fake.close()
    delivery = await channel_of(bot).deliver(text())
    assert not delivery.ok and delivery.retry_after is not None


# ---- groups ----------------------------------------------------------------------------------


def group_notice(**kw) -> Parcel:
    return Parcel(outbox_id=1, kind="markdown", address="cidteam0001==", is_group=True,
                  payload={"text": "**合并通知 #3**\n客户 #12 已合并"}, dedupe_key="sbnotice1",
                  mentions=["wangfang", "zhaoqiang"],
                  mention_names={"wangfang": "王芳", "zhaoqiang": "赵强"}, **kw)


async def test_a_group_message_that_mentions_people_is_a_card_delivered_with_at_user_ids(
    bot, fake
):
    # groupMessages/send cannot notify anyone; a card delivered with atUserIds does.
    assert (await channel_of(bot).deliver(group_notice())).ok
    assert (await channel_of(bot).deliver(group_notice())).ok  # a retry: the same card
    assert fake.group_messages["cidteam0001=="] == []
    [shown] = fake.cards.values()
    assert shown.out_track_id == "sbnotice1" and shown.spaces == ["IM_GROUP.cidteam0001=="]
    assert shown.at_users == {"wangfang": "王芳", "zhaoqiang": "赵强"}
    assert shown.data["title"] == "合并通知 #3"
    assert shown.data["content"] == "客户 #12 已合并  \n@王芳 @赵强"
    assert (shown.data["status"], shown.data["closed"], shown.data["buttons"]) == (
        "", "true", "[]")


async def test_without_a_template_the_group_message_names_them_in_its_text(
    aiohttp_client, sqlite_url, fake
):
    bot = await start_bot(aiohttp_client, sqlite_url, fake, connect=False,
                          dingtalk={"mode": "http"}, teams=TEAMS)
    assert (await channel_of(bot).deliver(group_notice())).ok
    [message] = fake.group_messages["cidteam0001=="]
    assert message["msgKey"] == "sampleMarkdown"
    assert message["param"]["text"] == "**合并通知 #3**\n客户 #12 已合并\n\n@王芳 @赵强"
    assert fake.cards == {}


async def test_the_team_group_gets_at_most_its_budget_a_minute_through_the_outbox(bot, fake):
    rt = bot.app[RUNTIME]
    async with rt.sessions() as session, session.begin():
        for number in range(25):
            assert await enqueue_group(session, rt, "华南", Markdown(f"通报 {number}"))
    chat = Chat(rt)
    await chat.settle()
    assert len(fake.group_messages["cidteam0001=="]) <= 18
    for _ in range(3):
        rt.clock.advance(seconds=61)
        await chat.settle()
    shown = "\n".join(m["param"].get("text") or m["param"]["content"]
                      for m in fake.group_messages["cidteam0001=="])  # or in a digest
    assert all(f"通报 {n}" in shown for n in range(25)) and fake.group_refused == 0


async def test_a_blocked_group_robot_waits_ten_minutes(bot, fake):
    channel = channel_of(bot)
    group = [Parcel(outbox_id=n, kind="markdown", address="cidteam0001==", is_group=True,
                    payload={"text": f"第 {n} 条"}, dedupe_key=f"g{n}") for n in range(21)]
    results = [await channel.deliver(p) for p in group]
    assert all(r.ok for r in results[:20])
    assert not results[20].ok and results[20].retry_after == GROUP_BLOCKED
    bot.app[RUNTIME].clock.advance(minutes=5)
    assert (await channel.deliver(group[0])).retry_after == GROUP_BLOCKED


# ---- interactive cards --------------------------------------------------------------------------


async def test_a_card_is_created_from_the_template_under_its_ref_and_delivered(bot, fake):
    assert (await channel_of(bot).deliver(card("sbref001"))).ok
    [sent] = fake.cards_to("wangfang")
    assert (sent.out_track_id, sent.template_id, sent.callback_type) == (
        "sbref001", TEMPLATE_ID, "HTTP")
    assert sent.data["title"] == "新线索 #12" and sent.data["closed"] == "false"
    [call] = fake.card_calls
    assert call["callbackRouteKey"] == "salesbot"
    assert call["imRobotOpenDeliverModel"]["robotCode"] == fake.robot_code


async def test_a_card_sent_again_is_not_created_twice(bot, fake):
    parcel = card("sbref002")
    assert (await channel_of(bot).deliver(parcel)).ok
    assert (await channel_of(bot).deliver(parcel)).ok  # a retry after a lost answer
    assert len(fake.cards) == 1 and fake.cards["sbref002"].spaces == ["IM_ROBOT.wangfang"]
    assert fake.calls["card/deliver"] == 1


async def test_a_card_that_could_not_be_delivered_is_retried_and_delivered_once(bot, fake):
    fake.users = set()
    first = await channel_of(bot).deliver(card("sbref003"))
    assert not first.ok and first.retry_after is not None
    fake.users = None
    assert (await channel_of(bot).deliver(card("sbref003"))).ok
    assert fake.cards["sbref003"].spaces == ["IM_ROBOT.wangfang"]


async def test_a_card_is_updated_in_place_to_show_who_accepted(bot, fake):
    await channel_of(bot).deliver(card("sbref004"))
    closed = card("sbref004", lead_card(closed="王芳 已于 12-02 10:00 接受"), kind="card_update")
    assert (await channel_of(bot).deliver(closed)).ok
    shown = fake.cards["sbref004"]
    assert shown.data["status"] == "王芳 已于 12-02 10:00 接受"
    assert shown.data["closed"] == "true" and shown.data["buttons"] == "[]"
    assert len(fake.cards) == 1


async def test_a_card_to_the_team_group_mentions_its_users(bot, fake):
    parcel = card("sbref005", address="cidteam0001==", is_group=True,
                  mentions=["wangfang", "sunlei"], mention_names={"wangfang": "王芳"})
    assert (await channel_of(bot).deliver(parcel)).ok
    shown = fake.cards["sbref005"]
    assert shown.spaces == ["IM_GROUP.cidteam0001=="]
    assert shown.at_users == {"wangfang": "王芳", "sunlei": "sunlei"}  # no name: the id


async def test_without_a_template_a_card_is_markdown_and_is_not_updated(
    aiohttp_client, sqlite_url, fake
):
    bot = await start_bot(aiohttp_client, sqlite_url, fake, connect=False,
                          dingtalk={"mode": "http"})
    assert (await channel_of(bot).deliver(card("sbref006"))).ok
    [message] = fake.received("wangfang")
    assert message["msgtype"] == "markdown" and "dtmd://dingtalkclient/sendMessage" in (
        message["text"])
    closed = card("sbref006", lead_card(closed="已接受"), kind="card_update")
    assert (await channel_of(bot).deliver(closed)).ok
    assert fake.cards == {} and fake.calls["card/update"] == 0


async def test_a_download_code_becomes_a_download_url(bot, fake):
    assert await channel_of(bot).download_url("DL_EXAMPLE") == f"{fake.url}/_files/DL_EXAMPLE"
