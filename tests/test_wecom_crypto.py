"""WeCom callback crypto against the verified vectors (field reports C01, C02) and the
worked example of the callback encryption document (doc 90968)."""

from __future__ import annotations

from urllib.parse import unquote, unquote_plus

import pytest
from wechatpy.enterprise.crypto import WeChatCrypto

from bot.channels.wecom import CallbackCrypto, CallbackError, callback_event, parse_xml
from config.settings import SettingsError, load_settings
from tests.fakes.wecom import AES_KEY, CORP_ID, TOKEN, FakeWeCom

# The worked example of doc 90968, as kept in testdata/wecom_crypto.json.
DOC_TOKEN, DOC_AES_KEY = "QDG6eK", "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C"
DOC_CORP_ID = "wx5823bf96d3bd56c7"
DOC_ECHO = {
    "msg_signature": "5c45ff5e21c57e6ad56bac8758b79b1d9ac89fd3",
    "timestamp": "1409659589", "nonce": "263014780",
    "echostr": "P9nAzCzyDtyTWESHep1vC5X9xho/qYX3Zpb4yKa9SKld1DsH3Iyt3tP3zNdt"
               "p+4RPcs8TgAE7OaBO+FZXvnaqQ==",
}
DOC_ECHO_REPLY = "1616140317555161061"
DOC_MESSAGE = {
    "msg_signature": "477715d11cdb4164915debcba66cb864d751f3e6",
    "timestamp": "1409659813", "nonce": "1372623149",
}
DOC_ENCRYPT = (
    "RypEvHKD8QQKFhvQ6QleEB4J58tiPdvo+rtK1I9qca6aM/wvqnLSV5zEPeusUiX5L5X/0lWfrf0QADHHhGd3"
    "QczcdCUpj911L3vg3W/sYYvuJTs3TUUkSUXxaccAS0qhxchrRYt66wiSpGLYL42aM6A8dTT+6k4aSknmPj48"
    "kzJs8qLjvd4Xgpue06DOdnLxAUHzM6+kDZ+HMZfJYuR+LtwGc2hgf5gsijff0ekUNXZiqATP7PF5mZxZ3Izo"
    "un1s4zG4LUMnvw2r+KqCKIw+3IQH03v+BCA9nMELNqbSf6tiWSrXJB3LAVGUcallcrw8V2t9EL4EhzJWrQUa"
    "x5wLVMNS0+rUPA3k22Ncx4XXZS9o0MBH27Bo6BpNelZpS+/uh9KsNlY6bHCmJU9p8g7m3fVKn28H3KDYA5Pl"
    "/T8Z1ptDAVe0lXdQ2YoyyH2uyPIGHBZZIs2pDBS8R07+qN+E7Q=="
)
DOC_BODY = (
    "<xml><ToUserName><![CDATA[wx5823bf96d3bd56c7]]></ToUserName>"
    f"<Encrypt><![CDATA[{DOC_ENCRYPT}]]></Encrypt><AgentID><![CDATA[218]]></AgentID></xml>"
)
DOC_EXPECTED = {
    "ToUserName": "wx5823bf96d3bd56c7", "FromUserName": "mycreate", "CreateTime": "1409659813",
    "MsgType": "text", "Content": "hello", "MsgId": "4561255354251345929", "AgentID": "218",
}

C01_SIGNATURE = "eb780bd23d53e1431341fda17c8b4499c8cc13c9"
C01_WITHOUT_ENCRYPT = "8110b3df5a12749c71a6ca272341f8224e8ce322"
C01_TIMESTAMP, C01_NONCE = "1717200000", "1372623149"
C01_ENCRYPT = (
    "uppHlvULl6tnUAJPefDY2uHaKs8AZkbQLolzrymLq8JzRTMKczIne9luhyRdqQl9fzq+tZhE3QRkQQHUpaq4eMC"
    "fMTux5qZwxdmUbN6R6gxvP08+Vj1qW4S5vFJaRTwH9qHQQrd3/m7mByvbtUGEuWcljjUGUHYMjAG97zPpDLja/j"
    "FswPiVUEkWAoaQ9laqiiw8t/FVwjgv6IeUDB0D3Hn0UweGfpHvJvpf+RuWlaAQGUYHRL+gJbj06pXxpt6PbbAzZ"
    "ti326Rv7+RKV0Gg06r8T5KOoFkX+rD42DrUm7zMDejv4fDC9uaZWc8DjwFH/1RCooYkZQrzRnluyk47uzvzLLuS"
    "TiXLUTvyOdDo4naKXIozFv+ib8X0Xrtwv2mup42pa+1gzT8k3xBFw0vZ4m9x7IUecYgrEHY3DbELp3T4Sb9EIPN"
    "DeRwBKaVbkzlgIi0mbhomf/ecSFE+U3QkZWYRZz3VKI9QUmy1EIrR05p9YVNmJzad2WqfGSx51rfr"
)
C01_BODY = (
    "<xml><ToUserName><![CDATA[ww0123456789abcdef]]></ToUserName>"
    f"<Encrypt><![CDATA[{C01_ENCRYPT}]]></Encrypt>"
    "<AgentID><![CDATA[1000002]]></AgentID></xml>"
)
C02_QUERY = (
    "msg_signature=14f33424419ca846e3613f6869eeb6ef21efb20f&timestamp=1717200100"
    "&nonce=1597212914&echostr=XxfxwmBtnp36Yg%2FfRXYUdbIOv9qj678bCxM69ErqOoxsJOrqQ36G8%2FSrz"
    "ZXscJEpEApyhh9HR4XbjL1Qy5F%2BzQ%3D%3D"
)
C02_REPLY = "5927782489442352469"


def c02_params() -> dict[str, str]:
    return dict(pair.split("=", 1) for pair in C02_QUERY.split("&")) | {
        "echostr": unquote(C02_QUERY.rsplit("echostr=", 1)[1])
    }


@pytest.fixture
def crypto() -> CallbackCrypto:
    return CallbackCrypto(TOKEN, AES_KEY, CORP_ID)


def test_c01_vector_decrypts_to_the_documented_text_message(crypto):
    plain = crypto.decrypt(C01_SIGNATURE, C01_TIMESTAMP, C01_NONCE, C01_ENCRYPT)
    event = callback_event(plain)
    assert (event.kind, event.sender, event.key) == ("text", "zhangsan", "7380000000000000001")
    assert event.text == "新建客户 深圳示例科技有限公司 13800000000"
    assert event.extra["agent_id"] == "1000002"


def test_c01_signature_without_encrypt_is_refused_as_a_signature_error(crypto):
    with pytest.raises(CallbackError) as refused:
        crypto.decrypt(C01_WITHOUT_ENCRYPT, C01_TIMESTAMP, C01_NONCE, C01_ENCRYPT)
    assert refused.value.status == 403
    assert "-40001" in refused.value.reason


def test_c01_one_changed_character_of_encrypt_is_refused(crypto):
    changed = ("A" if C01_ENCRYPT[10] != "A" else "B").join(
        (C01_ENCRYPT[:10], C01_ENCRYPT[11:])
    )
    with pytest.raises(CallbackError) as refused:
        crypto.decrypt(C01_SIGNATURE, C01_TIMESTAMP, C01_NONCE, changed)
    assert refused.value.status == 403


def test_c01_plaintext_for_another_corp_is_refused():
    other = CallbackCrypto(TOKEN, AES_KEY, "wwsomeoneelse0000")
    with pytest.raises(CallbackError) as refused:
        other.decrypt(C01_SIGNATURE, C01_TIMESTAMP, C01_NONCE, C01_ENCRYPT)
    assert refused.value.status == 400
    assert "-40005" in refused.value.reason


def test_c01_a_43_character_key_decodes_to_32_bytes():
    key = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
    assert len(key) == 43
    assert len(WeChatCrypto(TOKEN, key, CORP_ID).key) == 32
    settings = load_settings(wecom={"corp_id": CORP_ID, "agent_id": 1, "secret": "s",
                                    "token": TOKEN, "aes_key": key})
    assert settings.wecom.aes_key == key


@pytest.mark.parametrize("key", [AES_KEY[:42], AES_KEY + "=", AES_KEY[:40] + "!!!"])
def test_a_key_of_another_shape_is_refused_when_the_settings_load(key):
    with pytest.raises(SettingsError, match="EncodingAESKey"):
        load_settings(wecom={"corp_id": CORP_ID, "agent_id": 1, "secret": "s",
                             "token": TOKEN, "aes_key": key})


def test_c02_url_verification_answers_the_plaintext(crypto):
    params = c02_params()
    assert "+" in params["echostr"] and "/" in params["echostr"]
    reply = crypto.echo(params["msg_signature"], params["timestamp"], params["nonce"],
                        params["echostr"])
    assert reply == C02_REPLY


def test_c02_a_double_decoded_echostr_fails(crypto):
    params = c02_params()
    mangled = unquote_plus(params["echostr"])
    assert mangled != params["echostr"]
    with pytest.raises(CallbackError) as refused:
        crypto.echo(params["msg_signature"], params["timestamp"], params["nonce"], mangled)
    assert refused.value.status == 403


def test_documented_example_url_verification_and_message():
    crypto = CallbackCrypto(DOC_TOKEN, DOC_AES_KEY, DOC_CORP_ID)
    assert crypto.echo(DOC_ECHO["msg_signature"], DOC_ECHO["timestamp"], DOC_ECHO["nonce"],
                       DOC_ECHO["echostr"]) == DOC_ECHO_REPLY

    encrypt = parse_xml(DOC_BODY)["Encrypt"]
    assert encrypt == DOC_ENCRYPT
    plain = crypto.decrypt(DOC_MESSAGE["msg_signature"], DOC_MESSAGE["timestamp"],
                           DOC_MESSAGE["nonce"], encrypt)
    assert parse_xml(plain) == DOC_EXPECTED
    event = callback_event(plain)
    assert (event.kind, event.sender, event.text, event.key) == (
        "text", "mycreate", "hello", "4561255354251345929"
    )


def test_the_fake_seals_callbacks_the_bot_can_open(crypto):
    fake = FakeWeCom()
    plain = fake.text_xml("lisi", "你好 + / =", msg_id="42")
    sealed = fake.seal(plain)
    opened = crypto.decrypt(sealed.params["msg_signature"], sealed.params["timestamp"],
                            sealed.params["nonce"], sealed.encrypt)
    assert opened == plain
    echo = fake.echo_params("123456789")
    assert crypto.echo(echo["msg_signature"], echo["timestamp"], echo["nonce"],
                       echo["echostr"]) == "123456789"


BOMB = (
    '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
    '<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">'
    '<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>'
    "<xml><Encrypt>&lol3;</Encrypt></xml>"
)
EXTERNAL = (
    '<?xml version="1.0"?><!DOCTYPE xml [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
    "<xml><Content>&x;</Content></xml>"
)
DTD_ONLY = '<?xml version="1.0"?><!DOCTYPE xml SYSTEM "http://127.0.0.1:9/x.dtd"><xml/>'


@pytest.mark.parametrize("document", [BOMB, EXTERNAL, DTD_ONLY, "<xml><a></xml>", "", "{}"])
def test_hostile_or_broken_xml_is_refused_not_expanded(document):
    with pytest.raises(CallbackError) as refused:
        parse_xml(document)
    assert refused.value.status == 400
