"""The DingTalk (钉钉) channel: Stream mode or the HTTP robot in, the OpenAPI out.

It parses robot messages and card clicks into Events, checks HTTP-mode signatures and
turns Parcels into robot messages and interactive cards; it knows nothing of leads.
Platform facts cite open.dingtalk.com documents and the dingtalk-stream SDK (0.24.3).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import random
import re
import socket
import unicodedata
from collections import OrderedDict, deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import quote_plus, urlsplit

import aiohttp
import websockets
from aiohttp import web
from dingtalk_stream import (
    AckMessage,
    CallbackHandler,
    CallbackMessage,
    ChatbotMessage,
    Credential,
    DingTalkStreamClient,
    EventMessage,
    SystemMessage,
)
from dingtalk_stream.frames import Headers
from dingtalk_stream.version import VERSION_STRING
from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from websockets.version import version as WS_VERSION

from bot.channels.base import Budget, CallbackError, Delivery, Parcel
from bot.events import Event, EventKind, Mention
from cards.dingtalk import card_data, markdown, notice_data, parse_action_text
from storage.models import AccessToken

if TYPE_CHECKING:
    from bot.runtime import Runtime

log = logging.getLogger(__name__)

CALLBACK_PATH = "/dingtalk/callback"
CARD_PATH = "/dingtalk/card"

OPEN_CONNECTION = "/v1.0/gateway/connections/open"
ACCESS_TOKEN = "/v1.0/oauth2/accessToken"
BATCH_SEND = "/v1.0/robot/oToMessages/batchSend"
GROUP_SEND = "/v1.0/robot/groupMessages/send"
CARD_CREATE_AND_DELIVER = "/v1.0/card/instances/createAndDeliver"
CARD_DELIVER = "/v1.0/card/instances/deliver"
CARD_INSTANCES = "/v1.0/card/instances"  # PUT: update in place
FILE_DOWNLOAD = "/v1.0/robot/messageFiles/download"
TOKEN_HEADER = "x-acs-dingtalk-access-token"

BOT_TOPIC = ChatbotMessage.TOPIC  # /v1.0/im/bot/messages/get
CARD_TOPIC = CallbackHandler.TOPIC_CARD_CALLBACK  # /v1.0/card/instances/callback
CARD_ROUTE_KEY = "salesbot"  # HTTP-mode card callbacks: the route key an admin registers

TIMEOUT = aiohttp.ClientTimeout(total=15)
DOWNLOAD_TIMEOUT = aiohttp.ClientTimeout(total=120, sock_read=30)
DOWNLOAD_CHUNK = 64 * 1024
SIGN_WINDOW_MS = 3600 * 1000  # HTTP-mode callbacks more than an hour off are refused
RECORD_SECONDS = 4.0  # a frame not recorded by then goes un-acked and comes again
WEBHOOK_MARGIN = timedelta(seconds=60)  # stop using a session webhook this long before it ends
WEBHOOKS_KEPT = 10_000
TOKEN_MARGIN = 300  # seconds before expireIn that we fetch a new token
CREDENTIALS_RETRY = 300.0
ALERT_KEY = "dingtalk_credentials"

# batchSend takes at most 20 users a call (open.dingtalk.com "chatbots send one-on-one
# chat messages in batches").
MAX_USERS = 20
# OpenAPI calls are limited per app and API to about 20 a second on the standard edition.
API_PER_SECOND = 18
# A group robot may send 20 messages a minute and is blocked for 10 minutes past that.
GROUP_PER_MINUTE = 18
GROUP_BLOCKED = 600.0
FLOW_CONTROL_RETRY = 60.0

# Stream connection: ping and reconnect timings.
PING_SECONDS = 30.0
PING_TIMEOUT = 20.0
RECONNECT_BASE = 0.5
RECONNECT_CAP = 60.0
STABLE_SECONDS = 30.0  # a connection that lived this long resets the backoff
MOVE_JITTER = 0.2  # seconds: spread of reconnects after a `disconnect` frame
DRAIN_SECONDS = 10.0  # the gateway closes a connection 10 s after its `disconnect`
MAX_PENDING_FRAMES = 500

# websockets 15 and later follow HTTP(S)_PROXY by default: nothing may stand between us
# and the gateway named in the settings. Older releases (the SDK accepts 11+) never use
# a proxy and take no `proxy` argument.
WS_OPTIONS: dict[str, Any] = {"proxy": None} if int(WS_VERSION.split(".")[0]) >= 15 else {}

T_CREDENTIALS = (
    "钉钉应用凭证被拒绝（获取 accessToken 返回 {status} {code}），机器人暂时无法通过钉钉发消息。"
    "请检查 SALESBOT_DINGTALK__CLIENT_ID 和 SALESBOT_DINGTALK__CLIENT_SECRET。"
)


class FrameError(Exception):
    """A robot message or card callback that cannot become an Event."""


class NotRecorded(Exception):
    """The inbox did not store the event: leave it un-acknowledged so it comes again."""


class DingTalkUnavailable(Exception):
    """A call that did not complete (network, 5xx, limits): worth trying again later."""

    def __init__(self, reason: str, after: float = 5.0) -> None:
        super().__init__(reason)
        self.reason = reason
        self.after = after


class FileTooLarge(Exception):
    """A received file over the size the caller accepts: not downloaded further."""

    def __init__(self, size: int) -> None:
        super().__init__(f"file of {size} bytes or more")
        self.size = size


class CredentialsRefused(Exception):
    def __init__(self, status: int, code: str) -> None:
        super().__init__(f"accessToken refused: HTTP {status} {code}")
        self.status = status
        self.code = code


# ---- parsing: pure functions -------------------------------------------------------

_SPACES = re.compile(r"\s+")
_LEADING_MENTION = re.compile(r"^@\S+\s+")
_MENTION_NAMES = re.compile(r"@(\S+)")


def _object(value: Any) -> dict[str, Any]:
    """A JSON object that may arrive as an object or as JSON text; {} otherwise."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return {}
    return value if isinstance(value, dict) else {}


def _text(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""


def clean_text(text: str) -> str:
    """Message text without the @-mention residue in front of a command (C10).

    DingTalk drops the robot's own mention from a group message and leaves the space it
    took; other mentions before the command stay as "@name". So: NFKC (＠ → @), and when
    the text starts with mentions, they go: up to the first "/" that follows a space (a
    display name may hold spaces), else one "@word" at a time while text remains after
    it. A message that is only mentions ("@王二", the answer to 转给) is kept as it is.
    """
    text = _SPACES.sub(" ", unicodedata.normalize("NFKC", text)).strip()
    if not text.startswith("@"):
        return text
    slash = text.find(" /")
    if slash > 0:
        return text[slash + 1:].strip()
    while text.startswith("@"):
        match = _LEADING_MENTION.match(text)
        if match is None:
            break
        text = text[match.end():]
    return text


def _mentions(data: Mapping[str, Any], text: str) -> list[Mention]:
    """Colleagues @-mentioned (atUsers with a staffId), the robot itself left out.

    atUsers carry ids only; names are paired from the "@name" words of the text, in
    order, when both lists have the same length.
    """
    robot = _text(data.get("chatbotUserId"))
    people = []
    for user in data.get("atUsers") or []:
        if not isinstance(user, dict):
            continue
        staff_id = _text(user.get("staffId"))
        if staff_id and _text(user.get("dingtalkId")) != robot:
            people.append(staff_id)
    names = _MENTION_NAMES.findall(text)
    if len(names) != len(people):
        names = [None] * len(people)
    return [Mention(platform_id=p, name=n) for p, n in zip(people, names, strict=True)]


def _rich_text(event: Event, content: Mapping[str, Any]) -> None:
    """Text parts joined in order; pictures kept as media (C09)."""
    texts, pictures = [], []
    for part in content.get("richText") or []:
        if not isinstance(part, dict):
            continue
        if _text(part.get("text")):
            texts.append(part["text"].strip())
        code = _text(part.get("downloadCode")) or _text(part.get("pictureDownloadCode"))
        if code and part.get("type", "picture") == "picture":
            pictures.append(code)
    if pictures:
        event.media_id = pictures[0]
        event.extra["pictures"] = pictures
    if texts or not pictures:
        event.kind, event.text = "text", clean_text("\n".join(texts))
    else:
        event.kind = "image"


def message_event(data: Mapping[str, Any], fallback_key: str | None = None) -> Event:
    """A robot message (Stream `/v1.0/im/bot/messages/get` or HTTP callback) as an Event.

    The key is msgId: DingTalk may deliver one message twice (C08), we process it once.
    """
    sender = _text(data.get("senderStaffId")) or _text(data.get("senderId"))
    if not sender:
        raise FrameError("no senderStaffId or senderId")
    key = _text(data.get("msgId")) or (fallback_key or "")
    if not key:
        raise FrameError("no msgId")
    msg_type = _text(data.get("msgtype"))
    created = data.get("createAt")
    event = Event(
        channel="dingtalk", kind="unsupported", sender=sender, key=key[:128],
        conversation=_text(data.get("conversationId")) or None,
        is_group=str(data.get("conversationType") or "1") == "2",
        created_at=created / 1000 if isinstance(created, int | float) else None,
        extra={"msg_type": msg_type},
    )
    if not _text(data.get("senderStaffId")):
        event.extra["outside_org"] = True
    content = _object(data.get("content"))
    if msg_type == "text":
        _fill_text(event, data)
    elif msg_type == "richText":
        _rich_text(event, content)
    elif msg_type == "picture":
        event.kind = "image"
        event.media_id = (_text(content.get("downloadCode"))
                          or _text(content.get("pictureDownloadCode")) or None)
    elif msg_type in ("file", "video"):
        kind: EventKind = "file" if msg_type == "file" else "video"
        event.kind, event.media_id = kind, _text(content.get("downloadCode")) or None
        if _text(content.get("fileName")):
            event.extra["file_name"] = content["fileName"].strip()
    elif msg_type == "audio":
        _fill_audio(event, content)
    return event


def _fill_text(event: Event, data: Mapping[str, Any]) -> None:
    raw = _object(data.get("text")).get("content")
    text = clean_text(raw if isinstance(raw, str) else "")
    key = parse_action_text(text)
    if key is not None:
        # A tapped action of a markdown card (no template configured): the click itself.
        event.kind, event.action = "card_action", key
        return
    event.kind, event.text = "text", text
    event.mentions = _mentions(data, text)


def _fill_audio(event: Event, content: Mapping[str, Any]) -> None:
    """The Python SDK leaves audio untyped; DingTalk's own transcript is `recognition`."""
    event.kind = "voice"
    event.media_id = _text(content.get("downloadCode")) or None
    recognition = _text(content.get("recognition"))
    if recognition:
        event.text = recognition
        event.extra["asr"] = "dingtalk"
    if isinstance(content.get("duration"), int | float):
        event.extra["duration_ms"] = content["duration"]


def card_event(data: Mapping[str, Any], key: str) -> Event:
    """A card click: the button key from cardPrivateData (params.action, else actionIds)."""
    user = _text(data.get("userId"))
    if not user:
        raise FrameError("card callback without userId")
    private = _object(_object(data.get("content")).get("cardPrivateData"))
    action = _text(_object(private.get("params")).get("action"))
    if not action:
        ids = private.get("actionIds")
        if isinstance(ids, list) and ids and isinstance(ids[0], str):
            action = ids[0].strip()
    return Event(
        channel="dingtalk", kind="card_action", sender=user, key=key[:128],
        action=action or None, card_ref=_text(data.get("outTrackId")) or None,
        extra={"space_type": _text(data.get("spaceType"))},
    )


# ---- HTTP-mode signatures --------------------------------------------------------------


def signature(timestamp: str, secret: str) -> str:
    """Base64 of HMAC-SHA256 over "timestamp\\nsecret", keyed with the secret."""
    message = f"{timestamp}\n{secret}".encode()
    return base64.b64encode(hmac.new(secret.encode(), message, hashlib.sha256).digest()).decode()


def verify(headers: Mapping[str, str], secret: str, now: datetime) -> None:
    """Refuse a callback without both headers, off by more than an hour, or mis-signed."""
    timestamp, sign = headers.get("timestamp", "").strip(), headers.get("sign", "").strip()
    if not timestamp or not sign:
        raise CallbackError(400, "timestamp or sign header missing")
    if not timestamp.isdigit():
        raise CallbackError(400, "timestamp is not a number of milliseconds")
    if abs(now.timestamp() * 1000 - int(timestamp)) > SIGN_WINDOW_MS:
        raise CallbackError(403, "timestamp more than an hour off")
    if not hmac.compare_digest(signature(timestamp, secret).encode(), sign.encode()):
        raise CallbackError(403, "sign does not match")


def _at_names(parcel: Parcel) -> str:
    """The "@name" of each person the parcel mentions (the id where no name is known)."""
    return " ".join(f"@{parcel.mention_names.get(user, user)}" for user in parcel.mentions)


def reconnect_delay(attempt: int, base: float = RECONNECT_BASE, cap: float = RECONNECT_CAP,
                    rng: random.Random | None = None) -> float:
    """Exponential backoff with jitter: attempt 1 waits base·[0.5, 1), then doubling."""
    ceiling = min(cap, base * 2 ** max(0, attempt - 1))
    return ceiling * (rng or random).uniform(0.5, 1.0)


# ---- reply addresses, tokens, pacing ----------------------------------------------------


class SessionWebhooks:
    """The reply address DingTalk hands out with each one-to-one message (about 1.5 h).

    Only URLs under the configured oapi_base are kept, so a message cannot make us post
    anywhere else.
    Limitation: kept in this process's memory; another process (or a restart) sends the
    reply through the OpenAPI instead, which works the same for members of the org.
    """

    def __init__(self, allowed_prefix: str) -> None:
        self.allowed_prefix = allowed_prefix.rstrip("/") + "/"
        self._hooks: OrderedDict[str, tuple[str, datetime]] = OrderedDict()

    def remember(self, address: str, data: Mapping[str, Any]) -> None:
        url, expires = _text(data.get("sessionWebhook")), data.get("sessionWebhookExpiredTime")
        if not url.startswith(self.allowed_prefix) or not isinstance(expires, int | float):
            return
        self._hooks[address] = (url, datetime.fromtimestamp(expires / 1000, UTC))
        self._hooks.move_to_end(address)
        while len(self._hooks) > WEBHOOKS_KEPT:
            self._hooks.popitem(last=False)

    def get(self, address: str, now: datetime) -> str | None:
        hook = self._hooks.get(address)
        if hook is None:
            return None
        if hook[1] - WEBHOOK_MARGIN <= now:
            del self._hooks[address]
            return None
        return hook[0]

    def forget(self, address: str) -> None:
        self._hooks.pop(address, None)


class Pacer:
    """At most `per_second` calls in any window a little over a second, callers in turn.

    The window is 1.1 s because the platform counts calls when they arrive: calls that
    leave a second apart may arrive closer together.
    """

    WINDOW = 1.1

    def __init__(self, per_second: int) -> None:
        self.per_second = per_second
        self._calls: deque[float] = deque()
        self._lock = asyncio.Lock()

    async def wait(self) -> None:
        loop = asyncio.get_running_loop()
        async with self._lock:
            while True:
                now = loop.time()
                while self._calls and now - self._calls[0] >= self.WINDOW:
                    self._calls.popleft()
                if len(self._calls) < self.per_second:
                    self._calls.append(now)
                    return
                await asyncio.sleep(self.WINDOW - (now - self._calls[0]) + 0.001)


class AccessTokens:
    """The app's access token, kept in the access_tokens table for every process.

    Inside its lifetime DingTalk answers a new request with the same token (open.dingtalk
    .com "obtain the access token of an internal app"), so processes that refresh at once
    do not spoil each other's token and need no lease; a lock keeps one refresh per process.
    """

    def __init__(self, rt: Runtime, app: str, fetch: Any) -> None:
        self.rt = rt
        self.app = app
        self._fetch = fetch
        self._lock = asyncio.Lock()
        self._token: str | None = None
        self._expires_at: datetime | None = None

    async def get(self) -> str:
        if self._fresh():
            return self._token or ""
        async with self._lock:
            if self._fresh():
                return self._token or ""
            async with self.rt.sessions() as session:
                row = await session.scalar(
                    select(AccessToken).where(AccessToken.app == self.app))
            if row is not None and row.token and row.expires_at > self.rt.now():
                self._token, self._expires_at = row.token, row.expires_at
                return row.token
            return await self._refresh()

    async def renew(self, stale: str) -> str:
        """A new token after the OpenAPI answered 401 to `stale`."""
        async with self._lock:
            if self._fresh() and self._token != stale:
                return self._token or ""
            return await self._refresh()

    def _fresh(self) -> bool:
        return bool(self._token) and self._expires_at is not None and (
            self._expires_at > self.rt.now())

    async def _refresh(self) -> str:
        token, expires_in = await self._fetch()
        now = self.rt.now()
        expires_at = now + timedelta(seconds=max(expires_in - TOKEN_MARGIN, expires_in / 2))
        dialect = sqlite if self.rt.is_sqlite else postgresql
        async with self.rt.sessions() as session, session.begin():
            statement = dialect.insert(AccessToken).values(
                app=self.app, token=token, expires_at=expires_at, refreshed_at=now)
            await session.execute(statement.on_conflict_do_update(
                index_elements=["app"],
                set_={"token": token, "expires_at": expires_at, "refreshed_at": now}))
        self._token, self._expires_at = token, expires_at
        log.info("dingtalk access token refreshed for %s", self.app)
        return token


@dataclass(slots=True)
class BatchOutcome:
    """What batchSend did for each user: it answers 200 even when some were refused."""

    sent: list[str] = field(default_factory=list)
    invalid: list[str] = field(default_factory=list)
    flow_controlled: list[str] = field(default_factory=list)
    failed: dict[str, Delivery] = field(default_factory=dict)


def _code(answer: Mapping[str, Any]) -> str:
    return str(answer.get("code") or "")


def _ids(value: Any) -> list[str]:
    return [str(v) for v in value if v] if isinstance(value, list) else []


def _throttled(status: int, answer: Mapping[str, Any]) -> bool:
    code = _code(answer).lower()
    return status == 429 or (status == 403 and ("limit" in code or "throttl" in code))


def _failure(status: int, answer: Mapping[str, Any], throttled_after: float = 2.0) -> Delivery:
    message = f"HTTP {status} {_code(answer)}: {str(answer.get('message', ''))[:120]}"
    if _throttled(status, answer):
        return Delivery.retry(message, after=throttled_after)
    if status >= 500 or status == 401:
        return Delivery.retry(message)
    return Delivery.failed(message)


# ---- the Stream client ---------------------------------------------------------------


class _Frames(CallbackHandler):
    """One topic's frames: acked only once the event is recorded (C08)."""

    def __init__(self, channel: DingTalkChannel, topic: str) -> None:
        super().__init__()
        self.logger = log
        self.channel = channel
        self.topic = topic

    async def process(self, message: CallbackMessage) -> tuple[int, Any]:
        return await self.channel.take_frame(self.topic, message)

    async def raw_process(self, callback_message: CallbackMessage) -> AckMessage | None:
        try:
            return await super().raw_process(callback_message)
        except NotRecorded:
            return None  # no ack: the gateway delivers the frame again


class StreamClient(DingTalkStreamClient):
    """The SDK's Stream client with our own transport loop.

    The SDK (0.24.3) opens the connection and fetches tokens with blocking `requests`
    calls, finds the host's address by connecting a socket towards 8.8.8.8, acks on
    whichever socket is current and reconnects after a fixed 10 s. Here the gateway is
    asked with aiohttp at the endpoint from our settings, the address comes from the
    route towards that endpoint, each frame is acked on the socket it came on, and
    reconnects back off with jitter. Frames are parsed and acked by the SDK's own frame
    and handler classes.
    """

    def __init__(self, channel: DingTalkChannel, client_id: str, client_secret: str) -> None:
        super().__init__(Credential(client_id, client_secret), logger=log)
        self.channel = channel
        self.OPEN_CONNECTION_API = channel.api_base + OPEN_CONNECTION
        self.register_callback_handler(BOT_TOPIC, _Frames(channel, BOT_TOPIC))
        self.register_callback_handler(CARD_TOPIC, _Frames(channel, CARD_TOPIC))
        self.backoff_base = RECONNECT_BASE
        self.backoff_cap = RECONNECT_CAP
        self.drain_seconds = DRAIN_SECONDS
        self.connections = 0
        self._local_ip: str | None = None
        self._slots = asyncio.Semaphore(MAX_PENDING_FRAMES)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._sockets: set[Any] = set()

    # The SDK's blocking entry points: never used here.

    def start_forever(self) -> None:
        raise RuntimeError("use StreamClient.run() inside the running loop")

    def open_connection(self) -> None:
        raise RuntimeError("blocking open_connection is replaced by _open()")

    def get_access_token(self) -> None:
        raise RuntimeError("tokens come from DingTalkChannel.tokens")

    def get_host_ip(self) -> str:
        return self._local_ip or ""

    async def start(self) -> None:
        await self.run()

    # The transport loop.

    async def run(self) -> None:
        """Keep one connection open: after a drop back off with jitter; after a
        `disconnect` frame open the next connection at once and drain the old one."""
        self.pre_start()
        loop = asyncio.get_running_loop()
        failures = 0
        while True:
            try:
                socket_ = await self._open()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                delay = reconnect_delay(failures, self.backoff_base, self.backoff_cap)
                log.warning("dingtalk stream: cannot connect (%s); again in %.1f s",
                            _reason(exc), delay)
                await asyncio.sleep(delay)
                continue
            self.connections += 1
            opened = loop.time()
            moved = await self._serve(socket_)
            if moved:
                failures = 0
                await asyncio.sleep(random.uniform(0, MOVE_JITTER))
                continue
            if loop.time() - opened >= STABLE_SECONDS:
                failures = 0
            failures += 1
            delay = reconnect_delay(failures, self.backoff_base, self.backoff_cap)
            log.warning("dingtalk stream: connection lost; reconnecting in %.1f s", delay)
            await asyncio.sleep(delay)

    async def close(self) -> None:
        for socket_ in list(self._sockets):
            await socket_.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _open(self) -> Any:
        if self._local_ip is None:
            self._local_ip = await self._route_address()
        body = {
            "clientId": self.credential.client_id,
            "clientSecret": self.credential.client_secret,
            "subscriptions": [{"type": "CALLBACK", "topic": topic}
                              for topic in self.callback_handler_map],
            "ua": f"salesbot dingtalk-stream/{VERSION_STRING}",
            "localIp": self._local_ip,
        }
        status, answer = await self.channel.request("POST", self.OPEN_CONNECTION_API, json=body)
        endpoint, ticket = _text(answer.get("endpoint")), _text(answer.get("ticket"))
        if status != 200 or not endpoint or not ticket:
            raise DingTalkUnavailable(f"connections/open answered HTTP {status} {_code(answer)}")
        return await websockets.connect(
            f"{endpoint}?ticket={quote_plus(ticket)}", open_timeout=10,
            ping_interval=PING_SECONDS, ping_timeout=PING_TIMEOUT, max_size=4 * 1024 * 1024,
            **WS_OPTIONS,
        )

    async def _route_address(self) -> str:
        """Our address on the route towards the gateway: a UDP connect sends no packet."""
        parts = urlsplit(self.OPEN_CONNECTION_API)
        host = parts.hostname or "127.0.0.1"
        port = parts.port or (443 if parts.scheme == "https" else 80)

        def probe() -> str:
            family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0]
            with socket.socket(family, socket.SOCK_DGRAM) as udp:
                udp.connect(address)
                return str(udp.getsockname()[0])

        try:
            return await asyncio.to_thread(probe)
        except OSError:
            return ""

    async def _serve(self, socket_: Any) -> bool:
        """Read one connection; True when the gateway asked us to move (`disconnect`)."""
        self._sockets.add(socket_)
        moved = asyncio.Event()
        reader = asyncio.create_task(self._read(socket_, moved), name="dingtalk-stream-read")
        self._track(reader)
        waiter = asyncio.create_task(moved.wait())
        try:
            await asyncio.wait({reader, waiter}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
        if moved.is_set():
            self._track(asyncio.create_task(self._drain(socket_, reader)))
            return True
        self._sockets.discard(socket_)
        if not reader.cancelled() and reader.exception() is not None:
            log.error("dingtalk stream: reading failed", exc_info=reader.exception())
        return False

    async def _drain(self, socket_: Any, reader: asyncio.Task[None]) -> None:
        """Frames already on the old connection are acked there until it closes."""
        try:
            await asyncio.wait_for(asyncio.shield(reader), self.drain_seconds)
        except TimeoutError:
            pass
        finally:
            await socket_.close()
            reader.cancel()
            self._sockets.discard(socket_)

    async def _read(self, socket_: Any, moved: asyncio.Event) -> None:
        try:
            async for raw in socket_:
                await self._slots.acquire()
                task = asyncio.create_task(self._route(socket_, raw, moved))
                task.add_done_callback(lambda _: self._slots.release())
                self._track(task)
        except websockets.ConnectionClosed:
            pass

    def _track(self, task: asyncio.Task[Any]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _route(self, socket_: Any, raw: str | bytes, moved: asyncio.Event) -> None:
        ack: AckMessage | None
        try:
            frame = json.loads(raw)
            kind = frame.get("type")
            if kind == SystemMessage.TYPE:
                system = SystemMessage.from_dict(frame)
                ack = await self.system_handler.raw_process(system)
                if system.headers.topic == SystemMessage.TOPIC_DISCONNECT:
                    log.info("dingtalk stream: the gateway asked us to reconnect")
                    moved.set()
            elif kind == CallbackMessage.TYPE:
                message = CallbackMessage.from_dict(frame)
                handler = self.callback_handler_map.get(message.headers.topic)
                ack = (await handler.raw_process(message) if handler is not None
                       else _ack(message.headers.message_id, AckMessage.STATUS_NOT_IMPLEMENT))
            elif kind == EventMessage.TYPE:
                ack = await self.event_handler.raw_process(EventMessage.from_dict(frame))
            else:
                ack = None
        except (ValueError, TypeError, AttributeError, KeyError) as exc:
            # Never the payload: the frame's id and what was wrong with it.
            frame_id = _frame_id(raw)
            log.warning("dingtalk stream: malformed frame %s (%s)", frame_id, type(exc).__name__)
            ack = _ack(frame_id, AckMessage.STATUS_BAD_REQUEST)
        if ack is None:
            return
        try:
            await socket_.send(json.dumps(ack.to_dict()))
        except websockets.ConnectionClosed:
            log.info("dingtalk stream: ack lost with its connection; the frame will come again")


def _ack(message_id: str | None, code: int) -> AckMessage:
    ack = AckMessage()
    ack.code = code
    ack.headers.message_id = message_id
    ack.headers.content_type = Headers.CONTENT_TYPE_APPLICATION_JSON
    return ack


def _frame_id(raw: str | bytes) -> str | None:
    try:
        headers = json.loads(raw).get("headers") or {}
        return str(headers.get("messageId")) if headers.get("messageId") else None
    except (ValueError, AttributeError):
        return None


def _reason(exc: BaseException) -> str:
    return exc.reason if isinstance(exc, DingTalkUnavailable) else type(exc).__name__


# ---- the channel ------------------------------------------------------------------


class DingTalkChannel:
    """Robot one-to-one chats and team groups; interactive cards from the template."""

    name = "dingtalk"
    # One-to-one: DingTalk names no per-member number; flow-controlled users are listed
    # in the answer and retried. This budget keeps a burst to one member readable.
    budget = Budget(per_minute=20, per_hour=600)
    group_budget = Budget(per_minute=GROUP_PER_MINUTE, per_hour=None)

    def __init__(self, rt: Runtime) -> None:
        settings = rt.settings.dingtalk
        if not (settings.client_id and settings.client_secret and settings.robot_code):
            raise ValueError("the DingTalk channel needs client_id, client_secret, robot_code")
        self.rt = rt
        self.client_id = settings.client_id
        self._secret = settings.client_secret
        self.robot_code = settings.robot_code
        self.mode = settings.mode
        self.template_id = settings.card_template_id or None
        self.api_base = settings.api_base.rstrip("/")
        self.webhooks = SessionWebhooks(settings.oapi_base)
        self.tokens = AccessTokens(rt, f"dingtalk:{self.client_id}", self._fetch_token)
        self.stream = StreamClient(self, settings.client_id, settings.client_secret)
        self._pacers: dict[str, Pacer] = {}
        self._http: aiohttp.ClientSession | None = None
        self._stream_task: asyncio.Task[None] | None = None

    # -- the Channel protocol --

    def address_of(self, member: Any) -> str | None:
        return getattr(member, "dingtalk_userid", None) or None

    def group_address(self, team: str | None) -> str | None:
        own = self.rt.settings.teams.get(team) if team else None
        if own is None:
            return None
        return own.dingtalk_open_conversation_id or None

    def add_routes(self, app: web.Application) -> None:
        if self.mode == "http":
            app.router.add_post(CALLBACK_PATH, self.receive)
            app.router.add_post(CARD_PATH, self.receive_card)

    async def start(self, app: web.Application | None) -> None:
        if self._http is None:
            self._http = aiohttp.ClientSession(timeout=TIMEOUT)
        if self.mode == "stream" and self._stream_task is None:
            self._stream_task = asyncio.create_task(self.stream.run(), name="dingtalk-stream")

    async def stop(self) -> None:
        if self._stream_task is not None:
            self._stream_task.cancel()
            await asyncio.gather(self._stream_task, return_exceptions=True)
            self._stream_task = None
        await self.stream.close()
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def deliver(self, parcel: Parcel) -> Delivery:
        try:
            if parcel.kind == "card_update":
                return await self._update_card(parcel)
            if parcel.kind == "card" and self.template_id and parcel.card and parcel.card_ref:
                return await self._send_card(parcel)
            if parcel.is_group and parcel.mentions and self.template_id:
                return await self._send_notice(parcel)
            message = self._message(parcel)
            if message is None:
                return Delivery.failed(f"cannot send a {parcel.kind} parcel on DingTalk")
            if parcel.is_group:
                return await self._to_group(parcel, *message)
            return await self._to_user(parcel.address, *message)
        except CredentialsRefused as exc:
            return await self._credentials_refused(exc)
        except DingTalkUnavailable as exc:
            return Delivery.retry(exc.reason, exc.after)

    # -- inbound --

    async def take_frame(self, topic: str, message: CallbackMessage) -> tuple[int, Any]:
        """A Stream frame: (ack code, ack response); raises NotRecorded to leave it un-acked.

        A card callback's response could change the card at once; it stays empty, the
        card is changed by the outbox like any other update.
        """
        data = message.data if isinstance(message.data, dict) else {}
        frame_id = message.headers.message_id or hashlib.sha256(
            json.dumps(data, sort_keys=True).encode()).hexdigest()
        try:
            if topic == CARD_TOPIC:
                event = card_event(data, key=f"card:{frame_id}")
            else:
                event = message_event(data, fallback_key=frame_id)
        except FrameError as exc:
            log.warning("dingtalk frame %s refused: %s", frame_id, exc)
            self.rt.metrics.callbacks.labels("dingtalk", "refused").inc()
            return AckMessage.STATUS_BAD_REQUEST, str(exc)
        if topic == BOT_TOPIC and not event.is_group:
            self.webhooks.remember(event.sender, data)
        await self._record(event)
        return AckMessage.STATUS_OK, {} if topic == CARD_TOPIC else "OK"

    async def receive(self, request: web.Request) -> web.Response:
        """HTTP mode: a signed robot message; recorded, answered at once, worked later."""
        try:
            verify(request.headers, self._secret, self.rt.now())
            data = await self._body(request)
            event = message_event(data)
        except CallbackError as exc:
            return self._refuse("callback", exc)
        except FrameError as exc:
            return self._refuse("callback", CallbackError(400, str(exc)))
        if not event.is_group:
            self.webhooks.remember(event.sender, data)
        return await self._answer(event)

    async def receive_card(self, request: web.Request) -> web.Response:
        """HTTP mode: a signed card click."""
        try:
            verify(request.headers, self._secret, self.rt.now())
            raw = await request.read()
            event = card_event(_object(raw.decode("utf-8", "replace")),
                               key="card:" + hashlib.sha256(raw).hexdigest())
        except CallbackError as exc:
            return self._refuse("card callback", exc)
        except FrameError as exc:
            return self._refuse("card callback", CallbackError(400, str(exc)))
        return await self._answer(event)

    async def _answer(self, event: Event) -> web.Response:
        try:
            await self._record(event)
        except NotRecorded:
            return web.json_response({"message": "try again later"}, status=503)
        return web.json_response({})

    async def _record(self, event: Event) -> bool:
        try:
            fresh = await asyncio.wait_for(self.rt.inbox.record(event), RECORD_SECONDS)
        except Exception as exc:
            log.error("dingtalk %s not recorded (%s); it will be delivered again",
                      event.kind, type(exc).__name__)
            self.rt.metrics.callbacks.labels("dingtalk", "not_recorded").inc()
            raise NotRecorded from exc
        self.rt.metrics.callbacks.labels("dingtalk", "new" if fresh else "repeat").inc()
        if not fresh:
            log.info("dingtalk %s delivered again: already recorded", event.kind)
        return fresh

    async def _body(self, request: web.Request) -> dict[str, Any]:
        try:
            data = await request.json()
        except ValueError:
            raise CallbackError(400, "the body is not JSON") from None
        if not isinstance(data, dict):
            raise CallbackError(400, "the body is not a JSON object")
        return data

    @staticmethod
    def _refuse(what: str, exc: CallbackError) -> web.Response:
        log.warning("dingtalk %s refused with %s: %s", what, exc.status, exc.reason)
        return web.json_response({"message": exc.reason}, status=exc.status)

    # -- outbound --

    def _message(self, parcel: Parcel) -> tuple[str, dict[str, str]] | None:
        """(msgKey, msgParam) of a text, markdown or card-as-markdown parcel."""
        text = str(parcel.payload.get("text", ""))
        if parcel.kind == "text" and not parcel.mentions:
            return "sampleText", {"content": text}
        if parcel.kind == "card" and parcel.card is not None:
            title, text = markdown(parcel.card)
        elif parcel.kind in ("text", "markdown"):
            title = text.strip().splitlines()[0][:20] if text.strip() else "消息"
        else:
            return None
        if parcel.mentions:
            # Limitation: groupMessages/send takes no list of people to notify, so without
            # a card template the "@name" here is text: nobody gets DingTalk's @ alert.
            text += "\n\n" + _at_names(parcel)
        return "sampleMarkdown", {"title": title, "text": text}

    async def _to_user(self, address: str, msg_key: str, param: dict[str, str]) -> Delivery:
        hook = self.webhooks.get(address, self.rt.now())
        if hook is not None:
            if await self._via_webhook(hook, msg_key, param):
                return Delivery.sent()
            self.webhooks.forget(address)
        outcome = await self.batch_send([address], msg_key, param)
        if address in outcome.failed:
            return outcome.failed[address]
        if address in outcome.invalid:
            return Delivery(ok=False, error="DingTalk refused the recipient (invalidStaffIdList)",
                            refused=[address])
        if address in outcome.flow_controlled:
            return Delivery.retry("flow controlled (flowControlledStaffIdList)",
                                  after=FLOW_CONTROL_RETRY)
        return Delivery.sent()

    async def _via_webhook(self, url: str, msg_key: str, param: dict[str, str]) -> bool:
        """A reply through the message's session webhook; False sends it the other way."""
        if msg_key == "sampleText":
            body: dict[str, Any] = {"msgtype": "text", "text": {"content": param["content"]}}
        else:
            body = {"msgtype": "markdown", "markdown": param}
        try:
            status, answer = await self.request("POST", url, json=body)
        except DingTalkUnavailable as exc:
            log.info("dingtalk session webhook failed (%s); using the OpenAPI", exc.reason)
            return False
        errcode = answer.get("errcode", 0)
        if status == 200 and errcode == 0:
            return True
        log.info("dingtalk session webhook answered HTTP %s errcode %s; using the OpenAPI",
                 status, errcode)
        return False

    async def batch_send(self, users: list[str], msg_key: str,
                         param: dict[str, str]) -> BatchOutcome:
        """One-to-one robot messages, at most 20 users a call; reads the partial refusals."""
        outcome = BatchOutcome()
        for start in range(0, len(users), MAX_USERS):
            chunk = users[start:start + MAX_USERS]
            status, answer = await self._api("POST", BATCH_SEND, {
                "robotCode": self.robot_code, "userIds": chunk, "msgKey": msg_key,
                "msgParam": json.dumps(param, ensure_ascii=False),
            })
            if status != 200:
                failure = _failure(status, answer)
                outcome.failed.update({user: failure for user in chunk})
                continue
            invalid = set(_ids(answer.get("invalidStaffIdList")))
            limited = set(_ids(answer.get("flowControlledStaffIdList")))
            for user in chunk:
                if user in invalid:
                    outcome.invalid.append(user)
                elif user in limited:
                    outcome.flow_controlled.append(user)
                else:
                    outcome.sent.append(user)
        return outcome

    async def _to_group(self, parcel: Parcel, msg_key: str, param: dict[str, str]) -> Delivery:
        status, answer = await self._api("POST", GROUP_SEND, {
            "robotCode": self.robot_code, "openConversationId": parcel.address,
            "msgKey": msg_key, "msgParam": json.dumps(param, ensure_ascii=False),
        })
        if status == 200:
            return Delivery.sent()
        # Past its limit the robot is blocked for ten minutes: waiting less only fails again.
        return _failure(status, answer, throttled_after=GROUP_BLOCKED)

    def _space(self, parcel: Parcel) -> dict[str, Any]:
        """Where a card goes: the member's robot chat or the team's group (openSpaceId)."""
        if parcel.is_group:
            deliver: dict[str, Any] = {"robotCode": self.robot_code}
            if parcel.mentions:
                # {userId: the name shown after the @} (card platform: deliver cards).
                deliver["atUserIds"] = {user: parcel.mention_names.get(user, user)
                                        for user in parcel.mentions}
            return {
                "openSpaceId": f"dtv1.card//IM_GROUP.{parcel.address}",
                "imGroupOpenSpaceModel": {"supportForward": False},
                "imGroupOpenDeliverModel": deliver,
            }
        return {
            "openSpaceId": f"dtv1.card//IM_ROBOT.{parcel.address}",
            "imRobotOpenSpaceModel": {"supportForward": False},
            "imRobotOpenDeliverModel": {"spaceType": "IM_ROBOT", "robotCode": self.robot_code},
        }

    async def _send_card(self, parcel: Parcel) -> Delivery:
        """Create the card instance under outTrackId = the card's ref and deliver it.

        The ref is our idempotency key: when an earlier try created the instance, the
        repeat is refused and the existing instance is delivered instead.
        """
        assert parcel.card is not None and parcel.card_ref is not None
        return await self._create_and_deliver(parcel.card_ref, card_data(parcel.card),
                                              self._space(parcel))

    async def _send_notice(self, parcel: Parcel) -> Delivery:
        """A team message that @-mentions people, as a card without buttons.

        groupMessages/send has no way to notify people; a card delivered to the group
        with atUserIds does, and its text names each of them "@name". The outbox row's
        key is the card's outTrackId, so a retry delivers the same card.
        """
        text = str(parcel.payload.get("text", "")).strip()
        first, _, rest = text.partition("\n")
        title = first.strip("#* ") or "消息"
        body = rest.strip() or title
        body = "  \n".join(body.splitlines()) + "  \n" + _at_names(parcel)
        return await self._create_and_deliver(parcel.dedupe_key, notice_data(title, body),
                                              self._space(parcel))

    async def _create_and_deliver(
        self, track: str, data: dict[str, str], space: dict[str, Any]
    ) -> Delivery:
        body: dict[str, Any] = {
            "cardTemplateId": self.template_id, "outTrackId": track,
            "cardData": {"cardParamMap": data},
            "callbackType": "STREAM" if self.mode == "stream" else "HTTP",
            "userIdType": 1, **space,
        }
        if self.mode == "http":
            body["callbackRouteKey"] = CARD_ROUTE_KEY
        status, answer = await self._api("POST", CARD_CREATE_AND_DELIVER, body)
        if status != 200 and "outtrackid" in _code(answer).lower():
            deliver = {"outTrackId": track, "userIdType": 1,
                       **{k: v for k, v in space.items() if not k.endswith("SpaceModel")}}
            status, answer = await self._api("POST", CARD_DELIVER, deliver)
            return self._judge_card(status, answer, answer.get("result"))
        result = answer.get("result") if isinstance(answer.get("result"), dict) else {}
        return self._judge_card(status, answer, result.get("deliverResults"))

    @staticmethod
    def _judge_card(status: int, answer: Mapping[str, Any], results: Any) -> Delivery:
        if status != 200:
            return _failure(status, answer)
        for result in results if isinstance(results, list) else []:
            if isinstance(result, dict) and result.get("success") is False:
                return Delivery.retry(f"card not delivered: {str(result.get('errorMsg'))[:120]}",
                                      after=30)
        return Delivery.sent()

    async def _update_card(self, parcel: Parcel) -> Delivery:
        if not self.template_id or parcel.card is None or not parcel.card_ref:
            # Limitation: a markdown card (no template configured) cannot change; the
            # clicker's own reply says what happened and a later tap on an old action
            # is answered as stale by the handler.
            return Delivery.sent()
        status, answer = await self._api("PUT", CARD_INSTANCES, {
            "outTrackId": parcel.card_ref,
            "cardData": {"cardParamMap": card_data(parcel.card)},
            "cardUpdateOptions": {"updateCardDataByKey": True},
            "userIdType": 1,
        })
        return Delivery.sent() if status == 200 else _failure(status, answer)

    async def download_url(self, download_code: str) -> str:
        """A short-lived URL for a received file, picture or audio (by its downloadCode)."""
        status, answer = await self._api("POST", FILE_DOWNLOAD, {
            "robotCode": self.robot_code, "downloadCode": download_code,
        })
        url = _text(answer.get("downloadUrl"))
        if status != 200 or not url:
            raise DingTalkUnavailable(f"messageFiles/download answered HTTP {status}")
        return url

    async def download_file(self, download_code: str, limit: int) -> bytes:
        """A received file's bytes: the download URL for its code, then the file itself,
        read in chunks and refused (FileTooLarge) past `limit` bytes.

        The URL is DingTalk's own storage and is fetched without our access token.
        """
        url = await self.download_url(download_code)
        if self._http is None:
            raise DingTalkUnavailable("the DingTalk channel is not started")
        data = bytearray()
        try:
            async with self._http.get(url, timeout=DOWNLOAD_TIMEOUT) as response:
                if response.status != 200:
                    raise DingTalkUnavailable(f"file download answered HTTP {response.status}")
                if response.content_length is not None and response.content_length > limit:
                    raise FileTooLarge(response.content_length)
                async for chunk in response.content.iter_chunked(DOWNLOAD_CHUNK):
                    data += chunk
                    if len(data) > limit:
                        raise FileTooLarge(len(data))
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise DingTalkUnavailable(f"{type(exc).__name__} downloading a file") from None
        return bytes(data)

    async def _credentials_refused(self, exc: CredentialsRefused) -> Delivery:
        log.error("dingtalk refused the app credentials: HTTP %s %s", exc.status, exc.code)
        try:
            from bot.alerts import alert_admins

            async with self.rt.sessions() as session, session.begin():
                await alert_admins(session, self.rt, ALERT_KEY,
                                   T_CREDENTIALS.format(status=exc.status, code=exc.code))
        except Exception:
            log.exception("could not raise the dingtalk credentials alert")
        return Delivery.retry(str(exc), after=CREDENTIALS_RETRY)

    # -- the API client --

    async def _fetch_token(self) -> tuple[str, int]:
        status, answer = await self.request("POST", self.api_base + ACCESS_TOKEN, json={
            "appKey": self.client_id, "appSecret": self._secret,
        })
        token = _text(answer.get("accessToken"))
        if status == 200 and token:
            try:
                expires_in = int(answer.get("expireIn") or 7200)
            except (TypeError, ValueError):
                expires_in = 7200
            return token, max(expires_in, 60)
        if status >= 500 or _throttled(status, answer):
            raise DingTalkUnavailable(f"accessToken answered HTTP {status}")
        raise CredentialsRefused(status, _code(answer))

    async def _api(
        self, method: str, path: str, body: dict[str, Any]
    ) -> tuple[int, dict[str, Any]]:
        """An OpenAPI call, paced per API, with the token renewed once on 401."""
        pacer = self._pacers.setdefault(path, Pacer(API_PER_SECOND))
        token = await self.tokens.get()
        await pacer.wait()
        status, answer = await self.request(method, self.api_base + path, json=body,
                                            headers={TOKEN_HEADER: token})
        if status == 401:
            log.info("dingtalk refused the access token (%s); renewing it", _code(answer))
            token = await self.tokens.renew(token)
            await pacer.wait()
            status, answer = await self.request(method, self.api_base + path, json=body,
                                                headers={TOKEN_HEADER: token})
        return status, answer

    async def request(
        self, method: str, url: str, *, json: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, Any]]:
        """(HTTP status, JSON object) of one call; network trouble and 5xx raise."""
        # Logs and errors name the status at most: a webhook URL holds its session.
        if self._http is None:
            raise DingTalkUnavailable("the DingTalk channel is not started")
        try:
            async with self._http.request(method, url, json=json, headers=headers,
                                          timeout=TIMEOUT) as response:
                if response.status >= 500:
                    raise DingTalkUnavailable(f"HTTP {response.status}")
                try:
                    answer = await response.json(content_type=None)
                except ValueError:
                    answer = {}
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise DingTalkUnavailable(f"{type(exc).__name__} calling DingTalk") from None
        return response.status, answer if isinstance(answer, dict) else {}
