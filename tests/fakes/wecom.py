"""A fake WeCom server: the app API, the group robot, and a callback sender.

It behaves like the real one where the bot depends on it: tokens that expire, limits
past which messages are dropped while the answer says success, task ids that must be
unique, response codes that work once. It listens on 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import secrets
import time
from collections import Counter, defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer
from wechatpy.enterprise.crypto import PrpCrypto, WeChatCrypto

# The configuration of the verified vectors in testdata/field-reports.md (C01, C02).
CORP_ID = "ww0123456789abcdef"
AGENT_ID = 1000002
TOKEN = "CrmBotToken2024"
AES_KEY = "hDAEYqL62pBum9BIy2ewA5s02KGvdiP4TLqi58G5tLS"
SECRET = "fake-secret-0123456789"

PER_MINUTE, PER_HOUR = 30, 1000  # what one member may receive from an app (doc 90312)
ROBOT_PER_MINUTE = 20  # what one group robot may send (doc 91770)
RESPONSE_CODE_SECONDS = 72 * 3600
# The documents we could read do not give the number for a spent or expired
# response_code; this one is the fake's own, and the bot treats it as any other failure.
BAD_RESPONSE_CODE = 40099


def ok(**fields: Any) -> web.Response:
    return web.json_response({"errcode": 0, "errmsg": "ok", **fields})


def error(code: int, message: str) -> web.Response:
    return web.json_response({"errcode": code, "errmsg": message})


def cdata(value: object) -> str:
    return "<![CDATA[" + str(value).replace("]]>", "]]]]><![CDATA[>") + "]]>"


def signature(*parts: str) -> str:
    return hashlib.sha1("".join(sorted(parts)).encode("utf-8")).hexdigest()


@dataclass
class Attempt:
    status: int | None  # None when the bot did not answer within the timeout
    body: str = ""


@dataclass
class Sealed:
    """A callback as WeCom posts it: the signed query and the encrypted XML body."""

    params: dict[str, str]
    body: str
    encrypt: str


@dataclass
class _Failure:
    path: str
    errcode: int | None
    status: int | None


@dataclass
class _Code:
    task_id: str
    userid: str
    issued: float
    used: bool = False


@dataclass
class FakeWeCom:
    corp_id: str = CORP_ID
    agent_id: int = AGENT_ID
    secret: str = SECRET
    token: str = TOKEN
    aes_key: str = AES_KEY
    # None: every userid exists. Otherwise only these do; `out_of_range` exist but are
    # outside the app's visible range (answered 0 with invaliduser, like the real API).
    users: set[str] | None = None
    out_of_range: set[str] = field(default_factory=set)
    webhook_keys: set[str] = field(default_factory=lambda: {"team-key"})
    token_ttl: int = 7200
    clock: Callable[[], float] = time.time
    limits: bool = True
    delay: float = 0.0  # seconds every API answer waits (to test the bot's timeouts)

    def __post_init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.gettoken_calls = 0
        self.messages: list[dict[str, Any]] = []  # one per delivered (message, member)
        self.dropped: list[dict[str, Any]] = []  # accepted with errcode 0, never shown
        self.updates: list[dict[str, Any]] = []
        self.group_messages: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self._tokens: dict[str, float] = {}  # token -> expiry on the fake's clock
        self._serial = itertools.count(1)
        self._task_ids: set[str] = set()
        self._codes: dict[str, _Code] = {}
        self._received: dict[str, deque[float]] = defaultdict(deque)
        self._robot_sent: dict[str, deque[float]] = defaultdict(deque)
        self._failures: list[_Failure] = []
        self._server: TestServer | None = None
        self.url = ""
        self.app = web.Application()
        self.app.router.add_get("/cgi-bin/gettoken", self._gettoken)
        self.app.router.add_post("/cgi-bin/message/send", self._send)
        self.app.router.add_post("/cgi-bin/message/update_template_card", self._update)
        self.app.router.add_post("/cgi-bin/webhook/send", self._webhook)

    # ---- running ---------------------------------------------------------------------

    async def start(self) -> str:
        self._server = TestServer(self.app, host="127.0.0.1", port=0)
        await self._server.start_server()
        self.url = str(self._server.make_url("")).rstrip("/")
        return self.url

    async def close(self) -> None:
        if self._server is not None:
            await self._server.close()
            self._server = None

    def settings(self) -> dict[str, Any]:
        """The bot's `wecom` settings block pointing at this fake."""
        return {
            "corp_id": self.corp_id, "agent_id": self.agent_id, "secret": self.secret,
            "token": self.token, "aes_key": self.aes_key, "api_base": self.url,
        }

    def webhook_url(self, key: str = "team-key") -> str:
        return f"{self.url}/cgi-bin/webhook/send?key={key}"

    # ---- controls ------------------------------------------------------------------

    def expire_tokens(self) -> None:
        """Every token issued so far expires now: calls with them answer 42001."""
        for token in self._tokens:
            self._tokens[token] = 0.0

    def revoke_tokens(self) -> None:
        """Forget every token issued so far: calls with them answer 40014."""
        self._tokens.clear()

    def fail_next(
        self, times: int = 1, *, errcode: int | None = None, status: int | None = None,
        path: str = "message/send",
    ) -> None:
        """The next `times` calls to `path` answer `errcode` (or HTTP `status`)."""
        self._failures.extend(_Failure(path, errcode, status) for _ in range(times))

    def expire_response_codes(self) -> None:
        for code in self._codes.values():
            code.issued -= RESPONSE_CODE_SECONDS + 1

    # ---- what the bot sent -----------------------------------------------------------

    def sent_to(self, userid: str, msgtype: str | None = None) -> list[dict[str, Any]]:
        return [m for m in self.messages
                if m["touser"] == userid and (msgtype is None or m["msgtype"] == msgtype)]

    def texts_to(self, userid: str) -> list[str]:
        return [m["text"]["content"] for m in self.sent_to(userid, "text")]

    def cards_to(self, userid: str) -> list[dict[str, Any]]:
        return [m["template_card"] for m in self.sent_to(userid, "template_card")]

    # ---- the API ---------------------------------------------------------------------

    async def _pause(self) -> None:
        if self.delay:
            await asyncio.sleep(self.delay)

    def _injected(self, path: str) -> web.Response | None:
        for number, failure in enumerate(self._failures):
            if failure.path == path:
                del self._failures[number]
                if failure.status is not None:
                    return web.Response(status=failure.status, text="upstream trouble")
                return error(failure.errcode if failure.errcode is not None else -1,
                             "system busy")
        return None

    def _token_error(self, request: web.Request) -> web.Response | None:
        token = request.query.get("access_token", "")
        if token not in self._tokens:
            return error(40014, "invalid access_token")
        if self._tokens[token] <= self.clock():
            return error(42001, "access_token expired")
        return None

    async def _gettoken(self, request: web.Request) -> web.Response:
        self.calls["gettoken"] += 1
        self.gettoken_calls += 1
        await self._pause()
        injected = self._injected("gettoken")
        if injected is not None:
            return injected
        if request.query.get("corpid") != self.corp_id:
            return error(40013, "invalid corpid")
        if request.query.get("corpsecret") != self.secret:
            return error(40001, "invalid credential")
        now = self.clock()
        for token, expires in self._tokens.items():
            if expires > now:  # the same token while it is valid
                return ok(access_token=token, expires_in=int(expires - now))
        token = f"T{next(self._serial)}-{secrets.token_hex(4)}"
        self._tokens[token] = now + self.token_ttl
        return ok(access_token=token, expires_in=self.token_ttl)

    async def _send(self, request: web.Request) -> web.Response:
        self.calls["message/send"] += 1
        await self._pause()
        refused = self._token_error(request) or self._injected("message/send")
        if refused is not None:
            return refused
        body = await request.json()
        if body.get("agentid") != self.agent_id:
            return error(301002, "agentid mismatch")
        msgtype = body.get("msgtype")
        if msgtype not in ("text", "markdown", "template_card"):
            return error(40008, "invalid message type")
        recipients = [u for u in str(body.get("touser", "")).split("|") if u]
        unknown = [u for u in recipients if self.users is not None and u not in self.users]
        hidden = [u for u in recipients if u in self.out_of_range]
        valid = [u for u in recipients if u not in unknown and u not in hidden]
        if not valid and not hidden:
            return error(81013, "user & party & tag all invalid")
        extra: dict[str, Any] = {}
        if msgtype == "template_card":
            task_id = str(body["template_card"].get("task_id") or "")
            if not task_id or task_id in self._task_ids:
                return error(42014, "task_id exist or invalid")
            self._task_ids.add(task_id)
            code = secrets.token_hex(12)
            # Limitation: the fake keeps one response code per card, not one per member.
            self._codes[code] = _Code(task_id, valid[0] if valid else "", self.clock())
            extra["response_code"] = code
        for userid in valid:
            self._receive(userid, {**body, "touser": userid})
        invalid = "|".join(unknown + hidden)
        return ok(invaliduser=invalid, invalidparty="", invalidtag="",
                  msgid=f"msg{next(self._serial)}", **extra)

    def _receive(self, userid: str, message: dict[str, Any]) -> None:
        now = self.clock()
        window = self._received[userid]
        while window and window[0] <= now - 3600:
            window.popleft()
        last_minute = sum(1 for t in window if t > now - 60)
        if self.limits and (last_minute >= PER_MINUTE or len(window) >= PER_HOUR):
            self.dropped.append(message)  # the real API answers success all the same
            return
        window.append(now)
        self.messages.append(message)

    async def _update(self, request: web.Request) -> web.Response:
        self.calls["message/update_template_card"] += 1
        await self._pause()
        refused = self._token_error(request) or self._injected("message/update_template_card")
        if refused is not None:
            return refused
        body = await request.json()
        code = self._codes.get(str(body.get("response_code", "")))
        if code is None or code.used or self.clock() - code.issued > RESPONSE_CODE_SECONDS:
            return error(BAD_RESPONSE_CODE, "invalid response_code")
        if "template_card" not in body and "button" not in body:
            return error(40058, "template_card or button missing")
        code.used = True
        self.updates.append({**body, "task_id": code.task_id})
        return ok(invaliduser="")

    async def _webhook(self, request: web.Request) -> web.Response:
        self.calls["webhook/send"] += 1
        await self._pause()
        key = request.query.get("key", "")
        if key not in self.webhook_keys:
            return error(93000, "invalid webhook url")
        injected = self._injected("webhook/send")
        if injected is not None:
            return injected
        now = self.clock()
        window = self._robot_sent[key]
        while window and window[0] <= now - 60:
            window.popleft()
        if self.limits and len(window) >= ROBOT_PER_MINUTE:
            return error(45009, "api freq out of limit")
        window.append(now)
        self.group_messages[key].append(await request.json())
        return ok()

    # ---- callbacks to the bot --------------------------------------------------------

    def _key(self) -> bytes:
        return WeChatCrypto(self.token, self.aes_key, self.corp_id).key

    def seal(self, plain: str, *, receive_id: str | None = None,
             timestamp: str | None = None) -> Sealed:
        """Encrypt and sign a plaintext callback the way WeCom does (doc 90968)."""
        encrypt = PrpCrypto(self._key()).encrypt(plain, receive_id or self.corp_id).decode()
        timestamp = timestamp or str(int(self.clock()))
        nonce = str(secrets.randbelow(10**9))
        body = (f"<xml><ToUserName>{cdata(self.corp_id)}</ToUserName>"
                f"<Encrypt>{cdata(encrypt)}</Encrypt>"
                f"<AgentID>{cdata(self.agent_id)}</AgentID></xml>")
        params = {"msg_signature": signature(self.token, timestamp, nonce, encrypt),
                  "timestamp": timestamp, "nonce": nonce}
        return Sealed(params, body, encrypt)

    def echo_params(self, echo: str) -> dict[str, str]:
        """The signed query of a URL verification whose echostr decrypts to `echo`."""
        echostr = PrpCrypto(self._key()).encrypt(echo, self.corp_id).decode()
        timestamp, nonce = str(int(self.clock())), str(secrets.randbelow(10**9))
        return {"msg_signature": signature(self.token, timestamp, nonce, echostr),
                "timestamp": timestamp, "nonce": nonce, "echostr": echostr}

    def _xml(self, userid: str, msg_type: str, fields: dict[str, object],
             create_time: int | None = None) -> str:
        parts = [
            f"<ToUserName>{cdata(self.corp_id)}</ToUserName>",
            f"<FromUserName>{cdata(userid)}</FromUserName>",
            f"<CreateTime>{create_time or int(self.clock())}</CreateTime>",
            f"<MsgType>{cdata(msg_type)}</MsgType>",
        ]
        parts += [f"<{name}>{cdata(value)}</{name}>" for name, value in fields.items()]
        parts.append(f"<AgentID>{self.agent_id}</AgentID>")
        return "<xml>" + "".join(parts) + "</xml>"

    def text_xml(self, userid: str, content: str, msg_id: str | None = None,
                 create_time: int | None = None) -> str:
        msg_id = msg_id or str(7380000000000000000 + next(self._serial))
        return self._xml(userid, "text", {"Content": content, "MsgId": msg_id}, create_time)

    def message_xml(self, userid: str, msg_type: str, create_time: int | None = None,
                    **fields: object) -> str:
        fields.setdefault("MsgId", str(7390000000000000000 + next(self._serial)))
        return self._xml(userid, msg_type, dict(fields), create_time)

    def event_xml(self, userid: str, event: str, create_time: int | None = None,
                  **fields: object) -> str:
        return self._xml(userid, "event", {"Event": event, **fields}, create_time)

    def click_xml(self, userid: str, task_id: str, key: str) -> str:
        """A template_card_event for a button click, with a fresh ResponseCode."""
        code = secrets.token_hex(12)
        self._codes[code] = _Code(task_id, userid, self.clock())
        return self.event_xml(userid, "template_card_event", EventKey=key, TaskId=task_id,
                              CardType="button_interaction", ResponseCode=code)

    async def post_callback(
        self, url: str, plain: str | Sealed, *, deliveries: int = 4, timeout: float = 5.0,
    ) -> list[Attempt]:
        """POST a callback as WeCom does: no answer in `timeout` s or no 200 → again.

        WeCom retries three times (doc 90238): up to four deliveries in all.
        """
        sealed = plain if isinstance(plain, Sealed) else self.seal(plain)
        attempts: list[Attempt] = []
        async with aiohttp.ClientSession() as http:
            for _ in range(deliveries):
                try:
                    async with http.post(
                        url, params=sealed.params, data=sealed.body.encode("utf-8"),
                        headers={"Content-Type": "text/xml"},
                        timeout=aiohttp.ClientTimeout(total=timeout),
                    ) as response:
                        attempts.append(Attempt(response.status, await response.text()))
                except TimeoutError:
                    attempts.append(Attempt(None))
                    continue
                if attempts[-1].status == 200:
                    break
        return attempts


# ---- the bot wired to the fake (tests only) ----------------------------------------


async def start_bot(aiohttp_client: Any, db_url: str, fake: FakeWeCom, *,
                    outbox_by_hand: bool = True, **overrides: Any) -> Any:
    """The real app on a test server, its WeCom channel pointed at `fake`.

    The clock is frozen on a working morning and shared with the fake. Unless told
    otherwise, the outbox worker is stopped so that tests run it by hand
    (`rt.outbox.run_once()`) and no pass races another.
    """
    from bot.app import RUNTIME, build_runtime, create_app
    from config.settings import load_settings
    from storage.db import upgrade_async
    from tests.harness import WORKDAY_MORNING, FrozenClock

    await upgrade_async(db_url)
    wecom = fake.settings() | overrides.pop("wecom", {})
    settings = load_settings(database={"url": db_url}, wecom=wecom, **overrides)
    rt = build_runtime(settings)
    rt.clock = FrozenClock(WORKDAY_MORNING)
    fake.clock = lambda: rt.now().timestamp()
    client = await aiohttp_client(create_app(settings, rt))
    if outbox_by_hand:
        await client.app[RUNTIME].outbox.stop()
    return client
