"""The WeCom callback URL: verification, every message type, and bad input refused."""

from __future__ import annotations

import asyncio
import hashlib
import logging

import pytest
from aiohttp import web
from sqlalchemy import select

from bot.app import RUNTIME
from bot.channels.wecom import callback_event
from storage.models import InboundEvent, Outgoing
from tests.fakes.wecom import Attempt, FakeWeCom, start_bot
from tests.harness import Chat
from tests.test_wecom_crypto import (
    BOMB,
    C01_BODY,
    C01_NONCE,
    C01_SIGNATURE,
    C01_TIMESTAMP,
    C01_WITHOUT_ENCRYPT,
    C02_QUERY,
    C02_REPLY,
)

PATH = "/wecom/callback"




def url(bot) -> str:
    return str(bot.make_url(PATH))


async def recorded(bot) -> list[InboundEvent]:
    async with bot.app[RUNTIME].sessions() as session:
        return list((await session.scalars(
            select(InboundEvent).where(InboundEvent.channel == "wecom").order_by(InboundEvent.id)
        )).all())


# ---- URL verification ----------------------------------------------------------------


async def test_url_verification_answers_the_bare_plaintext_and_a_plus_survives(bot):
    response = await bot.get(f"{PATH}?{C02_QUERY}")
    assert response.status == 200
    assert await response.read() == C02_REPLY.encode()
    assert response.content_type == "text/plain"


async def test_url_verification_with_a_double_decoded_echostr_is_refused(bot):
    mangled = C02_QUERY.replace("%2B", "+")  # `+` read as a space on a second decoding
    response = await bot.get(f"{PATH}?{mangled}")
    assert response.status == 403


async def test_url_verification_from_the_fake_and_missing_parameters(bot, fake):
    response = await bot.get(PATH, params=fake.echo_params("8823749102394857"))
    assert (response.status, await response.text()) == (200, "8823749102394857")
    response = await bot.get(PATH, params={"echostr": "abc"})
    assert response.status == 400


# ---- the encrypted POST --------------------------------------------------------------


async def test_c01_vector_is_acknowledged_empty_and_recorded(bot):
    response = await bot.post(
        PATH, data=C01_BODY,
        params={"msg_signature": C01_SIGNATURE, "timestamp": C01_TIMESTAMP,
                "nonce": C01_NONCE},
    )
    assert (response.status, await response.read()) == (200, b"")
    [row] = await recorded(bot)
    assert (row.kind, row.sender, row.key) == ("text", "zhangsan", "7380000000000000001")
    assert row.payload["text"] == "新建客户 深圳示例科技有限公司 13800000000"


async def test_c01_wrong_signature_is_refused_and_logged_once_without_payload(bot, caplog):
    caplog.set_level(logging.WARNING, logger="bot.channels.wecom")
    response = await bot.post(
        PATH, data=C01_BODY,
        params={"msg_signature": C01_WITHOUT_ENCRYPT, "timestamp": C01_TIMESTAMP,
                "nonce": C01_NONCE},
    )
    assert response.status == 403
    lines = [r for r in caplog.records if r.name == "bot.channels.wecom"]
    assert len(lines) == 1 and "signature" in lines[0].getMessage()
    assert "uppHlv" not in caplog.text
    assert await recorded(bot) == []


async def test_c01_changed_encrypt_is_refused(bot):
    body = C01_BODY.replace("uppHlv", "uppHlw")
    response = await bot.post(
        PATH, data=body,
        params={"msg_signature": C01_SIGNATURE, "timestamp": C01_TIMESTAMP,
                "nonce": C01_NONCE},
    )
    assert response.status == 403
    assert await recorded(bot) == []


async def test_a_callback_sealed_for_another_corp_is_refused(bot, fake):
    sealed = fake.seal(fake.text_xml("lisi", "hi"), receive_id="wwsomeoneelse0000")
    [attempt] = await fake.post_callback(url(bot), sealed, deliveries=1)
    assert attempt.status == 400
    assert await recorded(bot) == []


async def test_malformed_outer_and_inner_xml_are_refused(bot, fake):
    sealed = fake.seal("<xml><MsgType>text</MsgType>")
    [attempt] = await fake.post_callback(url(bot), sealed, deliveries=1)
    assert attempt.status == 400
    response = await bot.post(PATH, data="<xml><Encrypt>", params=sealed.params)
    assert response.status == 400
    sealed = fake.seal("<xml><ToUserName>x</ToUserName></xml>")  # no MsgType, no sender
    [attempt] = await fake.post_callback(url(bot), sealed, deliveries=1)
    assert attempt.status == 400


async def test_an_xml_bomb_is_refused_outside_and_inside(bot, fake):
    response = await bot.post(PATH, data=BOMB, params=fake.seal("<xml/>").params)
    assert response.status == 400
    inner = BOMB.replace("<xml><Encrypt>&lol3;</Encrypt></xml>",
                         "<xml><FromUserName>a</FromUserName><MsgType>text</MsgType>"
                         "<Content>&lol3;</Content><MsgId>1</MsgId></xml>")
    [attempt] = await fake.post_callback(url(bot), fake.seal(inner), deliveries=1)
    assert attempt.status == 400
    assert await recorded(bot) == []


async def test_a_body_over_the_limit_is_refused_with_413(aiohttp_client, sqlite_url, fake):
    bot = await start_bot(aiohttp_client, sqlite_url, fake, http={"max_body_bytes": 4096})
    sealed = fake.seal(fake.text_xml("lisi", "长" * 3000))
    assert len(sealed.body.encode()) > 4096
    [attempt] = await fake.post_callback(url(bot), sealed, deliveries=1)
    assert attempt.status == 413
    chunked = await bot.post(PATH, params=sealed.params, data=_chunks(sealed.body.encode()))
    assert chunked.status == 413


async def _chunks(data: bytes):
    for start in range(0, len(data), 1000):
        yield data[start:start + 1000]


async def test_a_storage_failure_answers_503_so_wecom_retries(bot, fake, monkeypatch):
    async def broken(event):
        raise OSError("disk full")

    monkeypatch.setattr(bot.app[RUNTIME].inbox, "record", broken)
    attempts = await fake.post_callback(url(bot), fake.text_xml("lisi", "你好"))
    assert [a.status for a in attempts] == [503] * 4
    assert all("Traceback" not in a.body for a in attempts)


async def test_an_old_timestamp_is_not_refused(bot, fake):
    sealed = fake.seal(fake.text_xml("lisi", "去年的消息"), timestamp="1500000000")
    [attempt] = await fake.post_callback(url(bot), sealed, deliveries=1)
    assert attempt == Attempt(200, "")


async def test_a_replayed_callback_is_acknowledged_and_not_processed_again(bot, fake):
    rt = bot.app[RUNTIME]
    await Chat(rt).add_members({"name": "管理员甲", "role": "admin", "wecom_userid": "admin1"})
    sealed = fake.seal(fake.text_xml("admin1", "/帮助", msg_id="900"))
    for _ in range(2):
        assert await fake.post_callback(url(bot), sealed, deliveries=1) == [Attempt(200, "")]
        await rt.inbox.drain()
    await fake.post_callback(url(bot), fake.text_xml("admin1", "/帮助", msg_id="900"))
    await Chat(rt).settle()
    [row] = await recorded(bot)
    assert (row.state, row.key) == ("done", "900")
    assert len(fake.sent_to("admin1")) == 1


async def test_c03_two_events_without_msgid_in_the_same_second_are_both_recorded(bot, fake):
    for external in ("wmEXAMPLEAAAA", "wmEXAMPLEBBBB"):
        plain = fake.event_xml("zhangsan", "change_external_contact", create_time=1717200000,
                               ChangeType="add_external_contact", UserID="zhangsan",
                               ExternalUserID=external)
        assert await fake.post_callback(url(bot), plain) == [Attempt(200, "")]
    rows = await recorded(bot)
    assert len(rows) == 2 and rows[0].key != rows[1].key
    assert all(len(r.key) == 64 for r in rows)


async def test_a_stranger_is_told_who_can_add_them(bot, fake):
    rt = bot.app[RUNTIME]
    await Chat(rt).add_members({"name": "管理员甲", "role": "admin", "wecom_userid": "admin1"})
    await fake.post_callback(url(bot), fake.text_xml("wangwu", "你好"))
    await Chat(rt).settle()
    [text] = fake.texts_to("wangwu")
    assert "管理员甲" in text and "名单" in text


async def test_the_sender_delivers_again_when_the_bot_is_late(aiohttp_client, fake):
    seen: list[str] = []

    async def late_once(request: web.Request) -> web.Response:
        seen.append(request.query["nonce"])
        if len(seen) == 1:
            await asyncio.sleep(0.5)
        return web.Response()

    app = web.Application()
    app.router.add_post(PATH, late_once)
    slow = await aiohttp_client(app)
    attempts = await fake.post_callback(str(slow.make_url(PATH)), fake.text_xml("a", "b"),
                                        timeout=0.2)
    assert [a.status for a in attempts] == [None, 200]
    assert len(set(seen)) == 1  # the same request, delivered again


async def test_the_sender_gives_up_after_four_deliveries(aiohttp_client, fake):
    async def broken_handler(request: web.Request) -> web.Response:
        return web.Response(status=500)

    app = web.Application()
    app.router.add_post(PATH, broken_handler)
    broken = await aiohttp_client(app)
    attempts = await fake.post_callback(str(broken.make_url(PATH)), fake.text_xml("a", "b"))
    assert [a.status for a in attempts] == [500] * 4


async def test_unsupported_and_unknown_events_still_get_200(bot, fake):
    plain = fake.message_xml("lisi", "file", MediaId="m1", Title="a.xlsx")
    assert await fake.post_callback(url(bot), plain) == [Attempt(200, "")]
    [row] = await recorded(bot)
    assert row.kind == "unsupported"


# ---- every message type, parsed --------------------------------------------------------


def test_text_message():
    event = callback_event(FakeWeCom().text_xml("lisi", " 记录 已报价 ", msg_id="11"))
    assert (event.kind, event.text, event.key, event.sender) == (
        "text", " 记录 已报价 ", "11", "lisi"
    )


def test_image_voice_and_video_carry_their_media_id():
    fake = FakeWeCom()
    image = callback_event(fake.message_xml("lisi", "image", MediaId="img1",
                                            PicUrl="http://127.0.0.1/p.jpg"))
    assert (image.kind, image.media_id, image.extra["pic_url"]) == (
        "image", "img1", "http://127.0.0.1/p.jpg"
    )
    voice = callback_event(fake.message_xml("lisi", "voice", MediaId="v1", Format="amr"))
    assert (voice.kind, voice.media_id, voice.media_format) == ("voice", "v1", "amr")
    video = callback_event(fake.message_xml("lisi", "video", MediaId="vid1",
                                            ThumbMediaId="t1"))
    assert (video.kind, video.media_id, video.extra["thumb_media_id"]) == (
        "video", "vid1", "t1"
    )


def test_location_message_is_latitude_x_and_longitude_y():
    event = callback_event(FakeWeCom().message_xml(
        "lisi", "location", Location_X="22.543096", Location_Y="114.057865", Scale="15",
        Label="深圳市福田区",
    ))
    assert event.kind == "location"
    assert (event.location.lat, event.location.lng) == (22.543096, 114.057865)
    assert event.location.label == "深圳市福田区" and event.extra["scale"] == 15.0


def test_bad_coordinates_are_refused():
    from bot.channels.wecom import CallbackError

    with pytest.raises(CallbackError):
        callback_event(FakeWeCom().message_xml("lisi", "location", Location_X="北纬",
                                               Location_Y="1"))


def test_link_message():
    event = callback_event(FakeWeCom().message_xml(
        "lisi", "link", Title="客户官网", Description="简介", Url="https://example.invalid/a",
    ))
    assert (event.kind, event.text, event.link_url) == (
        "link", "客户官网", "https://example.invalid/a"
    )


def test_location_report_event():
    plain = FakeWeCom().event_xml("lisi", "LOCATION", Latitude="23.1", Longitude="113.2",
                                  Precision="30.5")
    event = callback_event(plain)
    assert event.kind == "location_report"
    assert (event.location.lat, event.location.lng, event.location.accuracy) == (
        23.1, 113.2, 30.5
    )
    assert event.key == hashlib.sha256(plain.encode()).hexdigest()


def test_card_click_event():
    fake = FakeWeCom()
    event = callback_event(fake.click_xml("lisi", "sbtask1", "accept:12"))
    assert (event.kind, event.action, event.card_ref) == ("card_action", "accept:12", "sbtask1")
    assert event.response_code


def test_enter_agent_and_anything_else():
    fake = FakeWeCom()
    assert callback_event(fake.event_xml("lisi", "enter_agent", EventKey="")).kind == "enter"
    assert callback_event(fake.event_xml("lisi", "subscribe")).kind == "system"
    assert callback_event(fake.message_xml("lisi", "miniprogram")).kind == "unsupported"


async def test_every_type_goes_through_the_http_callback(bot, fake):
    plains = [
        fake.text_xml("lisi", "你好"),
        fake.message_xml("lisi", "image", MediaId="img1"),
        fake.message_xml("lisi", "voice", MediaId="v1", Format="amr"),
        fake.message_xml("lisi", "video", MediaId="vid1"),
        fake.message_xml("lisi", "location", Location_X="22.5", Location_Y="114.1",
                         Scale="15", Label="深圳"),
        fake.message_xml("lisi", "link", Title="t", Url="https://example.invalid"),
        fake.event_xml("lisi", "LOCATION", Latitude="23.1", Longitude="113.2",
                       Precision="30"),
        fake.click_xml("lisi", "sbtask1", "accept:1"),
        fake.event_xml("lisi", "enter_agent"),
    ]
    for plain in plains:
        assert await fake.post_callback(url(bot), plain) == [Attempt(200, "")]
    kinds = [r.kind for r in await recorded(bot)]
    assert kinds == ["text", "image", "voice", "video", "location", "link",
                     "location_report", "card_action", "enter"]
    await bot.app[RUNTIME].inbox.drain()
    async with bot.app[RUNTIME].sessions() as session:
        states = (await session.scalars(select(InboundEvent.state))).all()
        answers = (await session.scalars(
            select(Outgoing.recipient).where(Outgoing.recipient == "stranger:lisi")
        )).all()
    assert set(states) == {"done"}
    assert answers  # lisi is not on the roster and is told so
