"""A fake DingTalk: the Stream gateway and the OpenAPI the bot calls, on 127.0.0.1 only.

The gateway answers connections/open with a websocket endpoint and a one-use ticket,
pushes frames, checks each acknowledgement and delivers again what was not acked in
time; it can send `disconnect` or drop a connection. The OpenAPI has tokens that expire,
a per-API QPS limit, the group robot's 20 a minute and 10-minute block, flow-controlled
users, interactive cards with unique outTrackIds, and session webhooks that expire.
Where the documents we could read name no error code, the fake uses one of its own
(marked below) and the bot treats it like any other answer of that kind.
"""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import json
import secrets
import socket
import time
from collections import Counter, defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestServer

from bot.channels.dingtalk import BOT_TOPIC, CARD_TOPIC, signature

CLIENT_ID = "dingfakeclient0001"
CLIENT_SECRET = "fake-dingtalk-secret-0123456789"
ROBOT_CODE = "dingfakeclient0001"
TEMPLATE_ID = "tpl-salesbot.schema"
CHATBOT_USER_ID = "$:LWCP_v1:$fakebot0001"
CORP_ID = "dingcorpfake0001"

TICKET_SECONDS = 90  # a connection ticket is valid for 90 s and works once
WEBHOOK_SECONDS = 90 * 60  # sessionWebhookExpiredTime: about 1.5 h after the message
GROUP_PER_MINUTE = 20
GROUP_BLOCK_SECONDS = 600
MAX_USERS = 20
QPS_CODE = "Forbidden.AccessDenied.QpsLimitForAppkeyAndApi"
# The fake's own codes (no document we could read names them):
GROUP_LIMIT_CODE = "Forbidden.AccessDenied.RobotGroupSendLimit"
DUPLICATE_TRACK_CODE = "invalidParameter.outTrackId.duplicated"
WEBHOOK_EXPIRED = 310000


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"code": code, "message": message,
                              "requestid": secrets.token_hex(8)}, status=status)


@dataclass
class Frame:
    message_id: str
    topic: str
    data: dict[str, Any]
    kind: str = "CALLBACK"
    sent_at: list[float] = field(default_factory=list)  # loop time of each delivery
    connections: list[int] = field(default_factory=list)
    acked_at: float | None = None
    ack: dict[str, Any] | None = None

    @property
    def deliveries(self) -> int:
        return len(self.sent_at)


@dataclass
class Connection:
    number: int
    socket: web.WebSocketResponse
    opened_at: float
    local_ip: str
    subscriptions: list[dict[str, Any]]
    transport: Any = None
    leaving: bool = False  # told to disconnect: gets no new frames
    closed_at: float | None = None


@dataclass
class Card:
    out_track_id: str
    template_id: str
    data: dict[str, str]
    callback_type: str
    spaces: list[str] = field(default_factory=list)
    updates: list[dict[str, str]] = field(default_factory=list)
    at_users: dict[str, str] = field(default_factory=dict)


@dataclass
class FakeDingTalk:
    client_id: str = CLIENT_ID
    client_secret: str = CLIENT_SECRET
    robot_code: str = ROBOT_CODE
    templates: set[str] = field(default_factory=lambda: {TEMPLATE_ID})
    # None: every user id exists. Otherwise only these do (others: invalidStaffIdList).
    users: set[str] | None = None
    groups: set[str] = field(default_factory=lambda: {"cidteam0001=="})
    token_ttl: int = 7200
    clock: Callable[[], float] = time.time  # the business clock (tokens, webhooks, limits)
    qps: int = 20
    limits: bool = True
    redeliver_after: float = 3.0  # real seconds without an ack before a frame comes again
    disconnect_grace: float = 10.0  # real seconds the gateway keeps a connection it left

    def __post_init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.token_calls = 0
        self.open_attempts: list[float] = []
        self.connections: list[Connection] = []
        self.frames: dict[str, Frame] = {}
        self.foreign_acks = 0  # acks for frames the connection did not carry
        self.one_to_one: list[dict[str, Any]] = []  # {"user", "msgKey", "param"}
        self.webhook_messages: list[dict[str, Any]] = []  # {"user", "body"}
        self.group_messages: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.cards: dict[str, Card] = {}
        self.card_calls: list[dict[str, Any]] = []
        self.files: dict[str, bytes] = {}  # downloadCode -> the file's bytes
        self.file_gets: Counter[str] = Counter()
        self.qps_refused: Counter[str] = Counter()
        self.group_refused = 0
        self.max_per_second: Counter[str] = Counter()
        self._tokens: dict[str, float] = {}
        self._tickets: dict[str, tuple[float, dict[str, Any]]] = {}
        self._log: list[dict[str, Any]] = []  # every message a user got, in order
        self._closers: set[asyncio.Task[None]] = set()
        self._serial = itertools.count(1)
        self._open_failures = 0
        self._flow_controlled: Counter[str] = Counter()
        self._api_calls: dict[str, deque[float]] = defaultdict(deque)
        self._group_sent: dict[str, deque[float]] = defaultdict(deque)
        self._group_blocked: dict[str, float] = {}
        self._sessions: dict[str, tuple[str, float]] = {}  # session -> (user, expiry)
        self._queue: deque[str] = deque()  # frames waiting for a connection
        self._acked = asyncio.Event()
        self._connected = asyncio.Event()
        self._server: TestServer | None = None
        self._redeliverer: asyncio.Task[None] | None = None
        self.url = ""
        self.app = web.Application()
        routes = [
            ("POST", "/v1.0/gateway/connections/open", self._open),
            ("GET", "/gateway", self._gateway),
            ("POST", "/v1.0/oauth2/accessToken", self._access_token),
            ("POST", "/v1.0/robot/oToMessages/batchSend", self._batch_send),
            ("POST", "/v1.0/robot/groupMessages/send", self._group_send),
            ("POST", "/v1.0/card/instances/createAndDeliver", self._create_and_deliver),
            ("POST", "/v1.0/card/instances/deliver", self._deliver),
            ("PUT", "/v1.0/card/instances", self._update_card),
            ("POST", "/v1.0/robot/messageFiles/download", self._download),
            ("GET", "/_files/{code}", self._file),
            ("POST", "/robot/sendBySession", self._session_webhook),
            ("GET", "/_stats", self._stats),
        ]
        for method, path, handler in routes:
            self.app.router.add_route(method, path, handler)

    # ---- running ---------------------------------------------------------------------

    async def start(self, port: int = 0) -> str:
        self._server = TestServer(self.app, host="127.0.0.1", port=port)
        await self._server.start_server()
        self.url = str(self._server.make_url("")).rstrip("/")
        self._redeliverer = asyncio.create_task(self._redeliver())
        return self.url

    async def close(self) -> None:
        if self._redeliverer is not None:
            self._redeliverer.cancel()
            await asyncio.gather(self._redeliverer, return_exceptions=True)
        for closer in list(self._closers):
            closer.cancel()
        for connection in self.connections:
            if not connection.socket.closed:
                await connection.socket.close()
        if self._server is not None:
            await self._server.close()
            self._server = None

    def settings(self, **extra: Any) -> dict[str, Any]:
        """The bot's `dingtalk` settings block pointing at this fake."""
        return {
            "client_id": self.client_id, "client_secret": self.client_secret,
            "robot_code": self.robot_code, "api_base": self.url, "oapi_base": self.url,
            **extra,
        }

    # ---- the gateway -------------------------------------------------------------------

    def fail_open(self, times: int) -> None:
        """The next `times` connections/open calls answer 503."""
        self._open_failures += times

    @property
    def live(self) -> Connection | None:
        """The connection new frames go to: the newest open one not told to leave."""
        for connection in reversed(self.connections):
            if connection.closed_at is None and not connection.leaving:
                return connection
        return None

    async def wait_connected(self, count: int = 1, timeout: float = 10.0) -> Connection:
        """Until `count` connections have been opened in all and one is live."""
        deadline = asyncio.get_running_loop().time() + timeout
        while len(self.connections) < count or self.live is None:
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"no live connection number {count} in {timeout} s")
            self._connected.clear()
            try:
                await asyncio.wait_for(self._connected.wait(), 0.05)
            except TimeoutError:
                pass
        live = self.live
        assert live is not None
        return live

    async def _open(self, request: web.Request) -> web.Response:
        self.calls["connections/open"] += 1
        self.open_attempts.append(asyncio.get_running_loop().time())
        if self._open_failures:
            self._open_failures -= 1
            return web.json_response({"code": "ServiceUnavailable"}, status=503)
        body = await request.json()
        if body.get("clientId") != self.client_id or body.get("clientSecret") != (
                self.client_secret):
            return _error(401, "InvalidAuthentication", "clientId or clientSecret is wrong")
        ticket = secrets.token_urlsafe(16)
        self._tickets[ticket] = (asyncio.get_running_loop().time(), body)
        ws_url = self.url.replace("http://", "ws://") + "/gateway"
        return web.json_response({"endpoint": ws_url, "ticket": ticket})

    async def _gateway(self, request: web.Request) -> web.StreamResponse:
        loop = asyncio.get_running_loop()
        ticket = self._tickets.pop(request.query.get("ticket", ""), None)
        if ticket is None or loop.time() - ticket[0] > TICKET_SECONDS:
            return web.Response(status=401, text="ticket unknown, used or expired")
        socket = web.WebSocketResponse(autoping=True)
        await socket.prepare(request)
        opened = ticket[1]
        connection = Connection(
            number=len(self.connections) + 1, socket=socket, opened_at=loop.time(),
            local_ip=str(opened.get("localIp", "")),
            subscriptions=list(opened.get("subscriptions") or []),
            transport=request.transport,
        )
        self.connections.append(connection)
        self._connected.set()
        await self._flush()
        try:
            async for message in socket:
                if message.type == WSMsgType.TEXT:
                    self._take_ack(connection, message.data)
        finally:
            connection.closed_at = loop.time()
        return socket

    def _take_ack(self, connection: Connection, raw: str) -> None:
        try:
            ack = json.loads(raw)
            message_id = str(ack["headers"]["messageId"])
        except (ValueError, KeyError, TypeError):
            return
        frame = self.frames.get(message_id)
        if frame is None or connection.number not in frame.connections:
            self.foreign_acks += 1
            return
        if frame.acked_at is None:
            frame.acked_at = asyncio.get_running_loop().time()
            frame.ack = ack
            self._acked.set()

    async def push(self, data: dict[str, Any], topic: str = BOT_TOPIC,
                   message_id: str | None = None, kind: str = "CALLBACK") -> str:
        """Send a frame now (or as soon as a connection is live); returns its messageId."""
        message_id = message_id or f"frame-{next(self._serial)}-{secrets.token_hex(4)}"
        self.frames[message_id] = Frame(message_id, topic, data, kind)
        await self._send(message_id)
        return message_id

    async def push_raw(self, text: str) -> None:
        """Put any text on the live connection (malformed frames)."""
        live = self.live
        assert live is not None, "no live connection"
        await live.socket.send_str(text)

    async def _send(self, message_id: str) -> None:
        frame = self.frames[message_id]
        live = self.live
        if live is None:
            if message_id not in self._queue:
                self._queue.append(message_id)
            return
        headers = {
            "appId": self.client_id, "connectionId": f"conn{live.number}",
            "contentType": "application/json", "messageId": message_id,
            "time": str(int(time.time() * 1000)), "topic": frame.topic,
        }
        body = {"specVersion": "1.0", "type": frame.kind, "headers": headers,
                "data": json.dumps(frame.data, ensure_ascii=False)}
        frame.sent_at.append(asyncio.get_running_loop().time())
        frame.connections.append(live.number)
        try:
            await live.socket.send_str(json.dumps(body, ensure_ascii=False))
        except (ConnectionError, RuntimeError):
            self._queue.append(message_id)

    async def _flush(self) -> None:
        while self._queue and self.live is not None:
            await self._send(self._queue.popleft())

    async def _redeliver(self) -> None:
        """Frames not acked within `redeliver_after` s are delivered again."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(0.05)
            now = loop.time()
            for frame in list(self.frames.values()):
                if frame.acked_at is None and frame.kind != "SYSTEM" and frame.sent_at and (
                        now - frame.sent_at[-1] >= self.redeliver_after):
                    await self._send(frame.message_id)
            await self._flush()

    async def wait_acked(self, message_id: str, timeout: float = 5.0) -> Frame:
        frame = self.frames[message_id]
        deadline = asyncio.get_running_loop().time() + timeout
        while frame.acked_at is None:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                raise AssertionError(f"frame {message_id} not acked within {timeout} s")
            self._acked.clear()
            try:
                await asyncio.wait_for(self._acked.wait(), min(remaining, 0.05))
            except TimeoutError:
                pass
        return frame

    async def system(self, topic: str, data: dict[str, Any] | None = None) -> str:
        """A SYSTEM frame (ping, disconnect) on the live connection."""
        return await self.push(data or {}, topic=topic, kind="SYSTEM")

    async def disconnect(self) -> Connection:
        """Ask the live connection to leave: no new frames on it; closed after the grace."""
        live = self.live
        assert live is not None, "no live connection"
        await self.system("disconnect", {"reason": "gateway maintenance"})
        live.leaving = True

        async def close_later() -> None:
            await asyncio.sleep(self.disconnect_grace)
            await live.socket.close()

        closer = asyncio.create_task(close_later())
        self._closers.add(closer)
        closer.add_done_callback(self._closers.discard)
        return live

    async def drop(self) -> None:
        """The live connection breaks without a closing handshake."""
        live = self.live
        assert live is not None, "no live connection"
        live.leaving = True
        if live.transport is not None:
            live.transport.abort()

    # ---- robot messages to the bot -----------------------------------------------------

    def message(self, sender: str, msgtype: str, *, msg_id: str | None = None,
                group: str | None = None, nick: str = "", **fields: Any) -> dict[str, Any]:
        """A robot message as DingTalk sends it (Stream data or HTTP callback body)."""
        session = secrets.token_hex(8)
        now_ms = int(self.clock() * 1000)
        self._sessions[session] = (group or sender, self.clock() + WEBHOOK_SECONDS)
        data: dict[str, Any] = {
            "msgId": msg_id or f"msg{next(self._serial):08d}{secrets.token_hex(3)}",
            "msgtype": msgtype, "createAt": now_ms,
            "conversationType": "2" if group else "1",
            "conversationId": group or f"cidsingle{sender}",
            "senderId": f"$:LWCP_v1:${sender}", "senderStaffId": sender,
            "senderNick": nick or sender, "senderCorpId": CORP_ID, "isAdmin": False,
            "chatbotUserId": CHATBOT_USER_ID, "chatbotCorpId": CORP_ID,
            "robotCode": self.robot_code,
            "sessionWebhook": f"{self.url}/robot/sendBySession?session={session}",
            "sessionWebhookExpiredTime": now_ms + WEBHOOK_SECONDS * 1000,
        }
        if group:
            data["conversationTitle"] = "销售群"
            data["isInAtList"] = True
        data.update(fields)
        return data

    def text(self, sender: str, content: str, *, at: list[str] = (), **kw: Any) -> dict[str, Any]:
        """A text message; `at` are staff ids @-mentioned (the robot is always in atUsers
        of a group message, which is how it gets one)."""
        at_users = [{"dingtalkId": f"$:LWCP_v1:${user}", "staffId": user} for user in at]
        if kw.get("group"):
            at_users.append({"dingtalkId": CHATBOT_USER_ID})
        return self.message(sender, "text", text={"content": content}, atUsers=at_users, **kw)

    def file(self, sender: str, file_name: str, data: bytes, **kw: Any) -> dict[str, Any]:
        """A file message; its bytes are served at the download URL of its downloadCode."""
        code = f"DL{next(self._serial):06d}{secrets.token_hex(4)}"
        self.files[code] = data
        return self.message(sender, "file", content={
            "downloadCode": code, "fileName": file_name, "spaceId": "1", "fileId": code,
        }, **kw)

    def card_click(self, user: str, out_track_id: str, action: str | None = None, *,
                   action_ids: list[str] | None = None) -> dict[str, Any]:
        """The card callback a click sends (content and extension are JSON text)."""
        private: dict[str, Any] = {"actionIds": action_ids or ["button"]}
        if action is not None:
            private["params"] = {"action": action}
        return {
            "extension": json.dumps({}), "corpId": CORP_ID, "userId": user,
            "outTrackId": out_track_id, "type": "actionCallback", "spaceType": "im",
            "content": json.dumps({"cardPrivateData": private}),
        }

    async def click(self, user: str, out_track_id: str, action: str | None = None,
                    **kw: Any) -> str:
        """Push a card click on the card-callback topic; returns the frame's messageId."""
        return await self.push(self.card_click(user, out_track_id, action, **kw),
                               topic=CARD_TOPIC)

    def signed_headers(self, timestamp_ms: int | None = None,
                       secret: str | None = None) -> dict[str, str]:
        timestamp = str(timestamp_ms if timestamp_ms is not None else int(self.clock() * 1000))
        return {"timestamp": timestamp,
                "sign": signature(timestamp, secret or self.client_secret)}

    async def post(self, url: str, data: dict[str, Any] | str,
                   headers: dict[str, str] | None = None) -> tuple[int, Any]:
        """POST an HTTP-mode callback to the bot, signed unless headers are given."""
        body = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
        sent = self.signed_headers() if headers is None else headers
        async with aiohttp.ClientSession() as http:
            async with http.post(url, data=body.encode("utf-8"), headers={
                    **sent, "Content-Type": "application/json"}) as response:
                return response.status, await response.json(content_type=None)

    # ---- the OpenAPI -------------------------------------------------------------------

    def expire_tokens(self) -> None:
        for token in self._tokens:
            self._tokens[token] = 0.0

    def expire_sessions(self) -> None:
        """Every session webhook handed out so far stops working now (earlier than said)."""
        for session, (owner, _) in self._sessions.items():
            self._sessions[session] = (owner, 0.0)

    def flow_control(self, user: str, times: int = 1) -> None:
        """The next `times` batchSends to `user` list it as flow-controlled."""
        self._flow_controlled[user] += times

    def _limited(self, path: str) -> web.Response | None:
        """The per-app, per-API QPS limit, on real time (the business clock may stand still)."""
        now = time.monotonic()
        window = self._api_calls[path]
        while window and now - window[0] >= 1.0:
            window.popleft()
        if self.limits and len(window) >= self.qps:
            self.qps_refused[path] += 1
            return _error(403, QPS_CODE, "qps limit for appkey and api")
        window.append(now)
        self.max_per_second[path] = max(self.max_per_second[path], len(window))
        return None

    def _authorised(self, request: web.Request, path: str) -> web.Response | None:
        self.calls[path] += 1
        token = request.headers.get("x-acs-dingtalk-access-token", "")
        if token not in self._tokens or self._tokens[token] <= self.clock():
            return _error(401, "InvalidAuthentication", "不合法的access_token")
        return self._limited(path)

    async def _access_token(self, request: web.Request) -> web.Response:
        self.calls["oauth2/accessToken"] += 1
        self.token_calls += 1
        body = await request.json()
        if body.get("appKey") != self.client_id or body.get("appSecret") != self.client_secret:
            # The fake's own code.
            return _error(400, "invalidClientIdOrSecret", "appKey or appSecret is wrong")
        now = self.clock()
        for token, expires in self._tokens.items():
            if expires > now:  # the same token while it is valid, its lifetime renewed
                self._tokens[token] = now + self.token_ttl
                return web.json_response({"accessToken": token, "expireIn": self.token_ttl})
        token = f"dt{next(self._serial)}{secrets.token_hex(6)}"
        self._tokens[token] = now + self.token_ttl
        return web.json_response({"accessToken": token, "expireIn": self.token_ttl})

    async def _batch_send(self, request: web.Request) -> web.Response:
        refused = self._authorised(request, "batchSend")
        if refused is not None:
            return refused
        body = await request.json()
        users = body.get("userIds")
        if body.get("robotCode") != self.robot_code:
            return _error(400, "invalidParameter.robotCode", "robotCode is wrong")
        if not isinstance(users, list) or not 1 <= len(users) <= MAX_USERS:
            return _error(400, "invalidParameter.userIds", "1 to 20 userIds")
        try:
            param = json.loads(body.get("msgParam") or "")
        except ValueError:
            return _error(400, "invalidParameter.msgParam", "msgParam is not JSON text")
        invalid, limited = [], []
        for user in users:
            if self.users is not None and user not in self.users:
                invalid.append(user)
            elif self._flow_controlled[user] > 0:
                self._flow_controlled[user] -= 1
                limited.append(user)
            else:
                self.one_to_one.append({"user": user, "msgKey": body.get("msgKey"),
                                        "param": param})
                kind = "text" if body.get("msgKey") == "sampleText" else "markdown"
                self._log.append({"user": user, "via": "openapi", "msgtype": kind,
                                  "title": param.get("title"),
                                  "text": param.get("content") or param.get("text") or ""})
        return web.json_response({"processQueryKey": secrets.token_hex(8),
                                  "invalidStaffIdList": invalid,
                                  "flowControlledStaffIdList": limited})

    async def _group_send(self, request: web.Request) -> web.Response:
        refused = self._authorised(request, "groupMessages/send")
        if refused is not None:
            return refused
        body = await request.json()
        group = str(body.get("openConversationId") or "")
        if group not in self.groups:
            return _error(400, "invalidParameter.openConversationId", "no such group")
        now = self.clock()
        if self.limits and self._group_blocked.get(group, 0) > now:
            self.group_refused += 1
            return _error(403, GROUP_LIMIT_CODE, "robot blocked in this group")
        window = self._group_sent[group]
        while window and now - window[0] >= 60:
            window.popleft()
        if self.limits and len(window) >= GROUP_PER_MINUTE:
            self._group_blocked[group] = now + GROUP_BLOCK_SECONDS
            self.group_refused += 1
            return _error(403, GROUP_LIMIT_CODE, "more than 20 a minute: blocked 10 minutes")
        window.append(now)
        self.group_messages[group].append({"msgKey": body.get("msgKey"),
                                           "param": json.loads(body.get("msgParam") or "{}")})
        return web.json_response({"processQueryKey": secrets.token_hex(8)})

    @staticmethod
    def _space(body: dict[str, Any]) -> tuple[str, str] | None:
        space = str(body.get("openSpaceId") or "")
        for kind in ("IM_ROBOT", "IM_GROUP"):
            prefix = f"dtv1.card//{kind}."
            if space.startswith(prefix) and len(space) > len(prefix):
                return kind, space[len(prefix):]
        return None

    def _deliver_to(self, card: Card, body: dict[str, Any]) -> list[dict[str, Any]]:
        kind, target = self._space(body) or ("", "")
        ok = kind == "IM_ROBOT" and (self.users is None or target in self.users) or (
            kind == "IM_GROUP" and target in self.groups)
        space = f"{kind}.{target}"
        if ok and space not in card.spaces:  # delivered once per space (the fake's own rule)
            card.spaces.append(space)
            model = body.get("imGroupOpenDeliverModel") or {}
            card.at_users.update(model.get("atUserIds") or {})
        return [{"spaceType": kind, "spaceId": target, "success": ok,
                 "errorMsg": "" if ok else "space not found"}]

    async def _create_and_deliver(self, request: web.Request) -> web.Response:
        refused = self._authorised(request, "card/createAndDeliver")
        if refused is not None:
            return refused
        body = await request.json()
        self.card_calls.append(body)
        track = str(body.get("outTrackId") or "")
        if not track:
            return _error(400, "invalidParameter.outTrackId", "outTrackId missing")
        if track in self.cards:
            return _error(400, DUPLICATE_TRACK_CODE, "outTrackId already used")
        if body.get("cardTemplateId") not in self.templates:
            return _error(400, "invalidParameter.cardTemplateId", "no such template")
        data = (body.get("cardData") or {}).get("cardParamMap")
        if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
            return _error(400, "invalidParameter.cardParamMap", "values must be strings")
        if self._space(body) is None:
            return _error(400, "invalidParameter.openSpaceId", "bad openSpaceId")
        card = Card(track, body["cardTemplateId"], dict(data), str(body.get("callbackType")))
        self.cards[track] = card
        results = self._deliver_to(card, body)
        return web.json_response({"success": True, "result": {
            "outTrackId": track, "deliverResults": results}})

    async def _deliver(self, request: web.Request) -> web.Response:
        refused = self._authorised(request, "card/deliver")
        if refused is not None:
            return refused
        body = await request.json()
        card = self.cards.get(str(body.get("outTrackId") or ""))
        if card is None:
            return _error(404, "resource.notFound.outTrackId", "no such card")
        return web.json_response({"success": True, "result": self._deliver_to(card, body)})

    async def _update_card(self, request: web.Request) -> web.Response:
        refused = self._authorised(request, "card/update")
        if refused is not None:
            return refused
        body = await request.json()
        card = self.cards.get(str(body.get("outTrackId") or ""))
        if card is None:
            return _error(404, "resource.notFound.outTrackId", "no such card")
        data = (body.get("cardData") or {}).get("cardParamMap") or {}
        if not all(isinstance(v, str) for v in data.values()):
            return _error(400, "invalidParameter.cardParamMap", "values must be strings")
        by_key = (body.get("cardUpdateOptions") or {}).get("updateCardDataByKey")
        card.data = {**card.data, **data} if by_key else dict(data)
        card.updates.append(dict(data))
        return web.json_response({"success": True, "result": True})

    async def _download(self, request: web.Request) -> web.Response:
        refused = self._authorised(request, "messageFiles/download")
        if refused is not None:
            return refused
        body = await request.json()
        code = str(body.get("downloadCode") or "")
        if body.get("robotCode") != self.robot_code or not code:
            return _error(400, "invalidParameter", "robotCode and downloadCode")
        return web.json_response({"downloadUrl": f"{self.url}/_files/{code}"})

    async def _file(self, request: web.Request) -> web.StreamResponse:
        """The download URL's target: the bytes of a file a member sent (the real one is
        DingTalk's storage; this one is the fake's own loopback address)."""
        code = request.match_info["code"]
        self.file_gets[code] += 1
        if code not in self.files:
            return web.Response(status=404, text="no such file")
        return web.Response(body=self.files[code], content_type="application/octet-stream")

    async def _session_webhook(self, request: web.Request) -> web.Response:
        self.calls["sendBySession"] += 1
        session = self._sessions.get(request.query.get("session", ""))
        if session is None or session[1] <= self.clock():
            return web.json_response({"errcode": WEBHOOK_EXPIRED,
                                      "errmsg": "session webhook expired"})  # the fake's own
        body = await request.json()
        self.webhook_messages.append({"user": session[0], "body": body})
        kind = body.get("msgtype")
        part = body.get(kind) or {}
        self._log.append({"user": session[0], "via": "webhook", "msgtype": kind,
                          "title": part.get("title"),
                          "text": part.get("content") or part.get("text") or ""})
        return web.json_response({"errcode": 0, "errmsg": "ok"})

    async def _stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.stats())

    def stats(self) -> dict[str, Any]:
        acked = [f for f in self.frames.values() if f.acked_at is not None and f.kind != "SYSTEM"]
        return {
            "frames": sum(1 for f in self.frames.values() if f.kind != "SYSTEM"),
            "acked": len(acked),
            "redelivered": sum(1 for f in acked if f.deliveries > 1),
            "connections": len(self.connections),
            "one_to_one": len(self.one_to_one), "webhook": len(self.webhook_messages),
            "cards": sum(len(c.spaces) for c in self.cards.values()),
            "card_updates": sum(len(c.updates) for c in self.cards.values()),
            "qps_refused": dict(self.qps_refused), "group_refused": self.group_refused,
            "max_per_second": dict(self.max_per_second), "token_calls": self.token_calls,
        }

    # ---- what the bot sent -----------------------------------------------------------

    def received(self, user: str) -> list[dict[str, Any]]:
        """Every message `user` got, in order: {"via", "msgtype", "title", "text"}."""
        return [entry for entry in self._log if entry["user"] == user]

    def texts_to(self, user: str) -> list[str]:
        return [m["text"] for m in self.received(user)]

    def cards_to(self, user: str) -> list[Card]:
        return [c for c in self.cards.values() if f"IM_ROBOT.{user}" in c.spaces]


# ---- the bot wired to the fake (tests only) ----------------------------------------


@pytest.fixture
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every socket connect is recorded, and one to a non-loopback address fails the
    test; the SDK's blocking `requests` calls fail outright. Test modules import it and
    use it for every test (`pytestmark`)."""
    import requests

    targets: list[str] = []
    connect = socket.socket.connect

    def guarded(self: socket.socket, address: Any) -> None:
        if self.family in (socket.AF_INET, socket.AF_INET6):
            host = str(address[0])
            targets.append(host)
            assert ipaddress.ip_address(host).is_loopback, f"a connection to {host}"
        connect(self, address)

    def no_requests(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a blocking requests call (the SDK's own HTTP client)")

    monkeypatch.setattr(socket.socket, "connect", guarded)
    monkeypatch.setattr(requests.Session, "request", no_requests)
    return targets


async def start_bot(aiohttp_client: Any, db_url: str, fake: FakeDingTalk, *,
                    outbox_by_hand: bool = True, connect: bool = True,
                    **overrides: Any) -> Any:
    """The real app on a test server, its DingTalk channel pointed at `fake`.

    The clock is frozen on a working morning and shared with the fake. Unless told
    otherwise the outbox worker is stopped (tests run `rt.outbox.run_once()`), and in
    Stream mode the call returns once the bot's Stream client has connected.
    """
    from bot.app import RUNTIME, build_runtime, create_app
    from config.settings import load_settings
    from storage.db import upgrade_async
    from tests.harness import WORKDAY_MORNING, FrozenClock

    await upgrade_async(db_url)
    dingtalk = fake.settings() | overrides.pop("dingtalk", {})
    settings = load_settings(database={"url": db_url}, dingtalk=dingtalk, **overrides)
    rt = build_runtime(settings)
    rt.clock = FrozenClock(WORKDAY_MORNING)
    fake.clock = lambda: rt.now().timestamp()
    client = await aiohttp_client(create_app(settings, rt))
    if outbox_by_hand:
        await client.app[RUNTIME].outbox.stop()
    if connect and settings.dingtalk.mode == "stream":
        await fake.wait_connected()
    return client
