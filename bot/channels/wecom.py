"""The WeCom (企业微信) channel: the encrypted callback in, the app and group-robot APIs out.

It verifies, decrypts and parses callbacks into Events and turns Parcels into API calls;
it knows nothing of leads. Platform facts cite developer.work.weixin.qq.com documents.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from xml.etree.ElementTree import ParseError

import aiohttp
from aiohttp import web
from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring
from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite
from wechatpy.enterprise.crypto import WeChatCrypto
from wechatpy.enterprise.exceptions import InvalidCorpIdException
from wechatpy.exceptions import InvalidSignatureException

from bot.alerts import alert_admins, resolve
from bot.channels.base import Budget, CallbackError, Delivery, Parcel
from bot.events import Event, Location
from cards.wecom import template_card, updated_template_card
from storage.models import AccessToken

if TYPE_CHECKING:
    from bot.runtime import Runtime

log = logging.getLogger(__name__)

CALLBACK_PATH = "/wecom/callback"
GETTOKEN = "/cgi-bin/gettoken"
SEND = "/cgi-bin/message/send"
UPDATE_CARD = "/cgi-bin/message/update_template_card"

TIMEOUT = aiohttp.ClientTimeout(total=15)
# WeCom drops a callback connection after 5 s and delivers again (doc 90238).
RECORD_SECONDS = 4.0
TOKEN_MARGIN = 300  # seconds before expires_in that we fetch a new token
TOKEN_LEASE = timedelta(seconds=30)  # a refresh another process started and never finished
TOKEN_WAIT = 5.0  # seconds to wait for another process's refresh before doing it ourselves
LEASE_PREFIX = "refreshing:"
CREDENTIALS_RETRY = 300.0
CREDENTIALS_PAUSE = 60.0  # seconds without a new gettoken after the credentials were refused
ALERT_KEY = "wecom_credentials"

# Error codes (doc 90313).
BUSY = frozenset({-1})
TOKEN_REFUSED = frozenset({40014, 42001})
THROTTLED = frozenset({45009, 45033})
TASK_EXISTS = 42014
# The app's setup, fixed by an admin: 60020 the calling IP is not a trusted IP
# (企业可信IP), 48002 the API is not allowed, 60011 no privilege, 301002 agentid.
SETUP = frozenset({60020, 48002, 60011, 301002, 40056})
SETUP_ALERT_KEY = "wecom_setup"
# A message that can never be delivered as it is.
UNDELIVERABLE = frozenset({81013, 93000, 40008, 44004, 45002, 40003, 40031})
ALL_INVALID = 81013
BAD_WEBHOOK = 93000

T_SETUP = (
    "企业微信拒绝了机器人的发送请求（错误码 {code}），消息暂存待发。"
    "常见原因是未把服务器出口 IP 加入应用的「企业可信IP」，或应用未开通相应权限。"
    "修正后消息会自动补发。"
)
T_CREDENTIALS = (
    "企业微信应用凭证被拒绝（gettoken 返回错误码 {code}），机器人暂时无法通过企业微信发消息。"
    "请检查 SALESBOT_WECOM__CORP_ID、SALESBOT_WECOM__SECRET 及应用的可信 IP 设置。"
)


class WeComUnavailable(Exception):
    """A call that did not complete (network, 5xx, busy): worth trying again later."""

    def __init__(self, reason: str, after: float = 5.0) -> None:
        super().__init__(reason)
        self.reason = reason
        self.after = after


class CredentialsRefused(Exception):
    """gettoken refused the corp id or secret: retrying soon will not help."""

    def __init__(self, code: int) -> None:
        super().__init__(f"gettoken errcode {code}")
        self.code = code


# ---- parsing: pure functions -------------------------------------------------------


def parse_xml(data: bytes | str) -> dict[str, str]:
    """The child elements of a WeCom XML document as a flat dict of texts.

    defusedxml refuses a DTD, entity declarations and external references outright,
    so an XML bomb is rejected before anything is expanded.
    """
    try:
        root = fromstring(data, forbid_dtd=True)
    except (DefusedXmlException, ParseError, ValueError) as exc:
        raise CallbackError(400, f"malformed XML ({type(exc).__name__})") from None
    return {child.tag: child.text or "" for child in root}


def _float(fields: Mapping[str, str], name: str) -> float:
    try:
        return float(fields[name])
    except (KeyError, ValueError):
        raise CallbackError(400, f"{name} is missing or not a number") from None


def _optional_float(fields: Mapping[str, str], name: str) -> float | None:
    return _float(fields, name) if fields.get(name, "").strip() else None


def callback_event(plain: str) -> Event:
    """The decrypted callback XML as one Event (message types: doc 90239, events: 90240).

    The key is MsgId for messages; events carry none, and two of them can share sender
    and second, so their key is a hash of the whole decrypted XML.
    """
    fields = parse_xml(plain)
    msg_type = fields.get("MsgType", "").strip()
    sender = fields.get("FromUserName", "").strip()
    if not msg_type or not sender:
        raise CallbackError(400, "MsgType or FromUserName missing")
    msg_id = fields.get("MsgId", "").strip()
    key = msg_id if msg_type != "event" and msg_id else (
        hashlib.sha256(plain.encode("utf-8")).hexdigest()
    )
    created = fields.get("CreateTime", "").strip()
    event = Event(
        channel="wecom", kind="unsupported", sender=sender, key=key,
        created_at=float(created) if created.isdigit() else None,
        extra={"msg_type": msg_type, "agent_id": fields.get("AgentID", "").strip()},
    )
    if msg_type == "event":
        _fill_event(event, fields)
    else:
        _fill_message(event, msg_type, fields)
    return event


def _fill_message(event: Event, msg_type: str, fields: Mapping[str, str]) -> None:
    if msg_type == "text":
        event.kind, event.text = "text", fields.get("Content", "")
    elif msg_type in ("image", "voice", "video"):
        event.kind, event.media_id = msg_type, fields.get("MediaId") or None
        if msg_type == "voice":
            event.media_format = fields.get("Format") or None
        for name, extra in (("PicUrl", "pic_url"), ("ThumbMediaId", "thumb_media_id")):
            if fields.get(name):
                event.extra[extra] = fields[name]
    elif msg_type == "location":
        event.kind = "location"
        event.location = Location(
            lat=_float(fields, "Location_X"), lng=_float(fields, "Location_Y"),
            label=fields.get("Label") or None,
        )
        scale = _optional_float(fields, "Scale")
        if scale is not None:
            event.extra["scale"] = scale
    elif msg_type == "link":
        event.kind, event.text = "link", fields.get("Title", "")
        event.link_url = fields.get("Url") or None
        if fields.get("Description"):
            event.extra["description"] = fields["Description"]


def _fill_event(event: Event, fields: Mapping[str, str]) -> None:
    name = fields.get("Event", "").strip()
    event.extra["event"] = name
    if name.lower() == "location":
        event.kind = "location_report"
        event.location = Location(
            lat=_float(fields, "Latitude"), lng=_float(fields, "Longitude"),
            accuracy=_optional_float(fields, "Precision"),
        )
    elif name == "template_card_event":
        event.kind = "card_action"
        event.action = fields.get("EventKey", "").strip() or None
        event.card_ref = fields.get("TaskId", "").strip() or None
        event.response_code = fields.get("ResponseCode", "").strip() or None
    elif name == "enter_agent":
        event.kind = "enter"
    else:
        # A platform event nobody sent us on purpose (contact changes, menus, …): kept
        # in the inbox, answered with nothing.
        event.kind = "system"


# ---- callback crypto -----------------------------------------------------------------


class CallbackCrypto:
    """Signature and AES for the callback URL, the enterprise scheme (doc 90968).

    The receive-id inside every plaintext must be our CorpID.
    """

    def __init__(self, token: str, aes_key: str, corp_id: str) -> None:
        self._crypto = WeChatCrypto(token, aes_key, corp_id)

    def echo(self, signature: str, timestamp: str, nonce: str, echostr: str) -> str:
        return self._open(signature, timestamp, nonce, echostr, url_check=True)

    def decrypt(self, signature: str, timestamp: str, nonce: str, encrypt: str) -> str:
        return self._open(signature, timestamp, nonce, encrypt, url_check=False)

    def _open(
        self, signature: str, timestamp: str, nonce: str, cipher: str, url_check: bool
    ) -> str:
        try:
            if url_check:
                return str(self._crypto.check_signature(signature, timestamp, nonce, cipher))
            return str(self._crypto.decrypt_message(
                {"Encrypt": cipher}, signature, timestamp, nonce
            ))
        except InvalidSignatureException:
            raise CallbackError(403, "invalid signature (-40001)") from None
        except InvalidCorpIdException:
            raise CallbackError(400, "receive-id is not our corp id (-40005)") from None
        except Exception as exc:  # bad base64, bad padding, bad length, not UTF-8
            raise CallbackError(400, f"cannot decrypt (-40007, {type(exc).__name__})") from None


# ---- the access token, shared through the database ----------------------------------


class TokenCache:
    """One access token per app, shared by every process through the access_tokens table.

    In a process, a lock makes concurrent callers wait for one refresh. Across processes,
    the refresher first swaps the row's token for a lease (compare and set), so the
    others wait for its result instead of calling gettoken themselves (C04).
    """

    def __init__(
        self, rt: Runtime, app: str, fetch: Callable[[], Awaitable[tuple[str, int]]]
    ) -> None:
        self.rt = rt
        self.app = app
        self._fetch = fetch
        self._lock = asyncio.Lock()
        self._token: str | None = None
        self._expires_at: datetime | None = None
        self._refused: tuple[float, CredentialsRefused] | None = None

    async def get(self) -> str:
        if self._fresh():
            return self._token or ""
        async with self._lock:
            if self._fresh():
                return self._token or ""
            return await self._load(stale=None)

    async def renew(self, stale: str) -> str:
        """A new token after the platform refused `stale` (40014, 42001)."""
        async with self._lock:
            if self._fresh() and self._token != stale:
                return self._token or ""
            self._token = None
            return await self._load(stale=stale)

    def _fresh(self) -> bool:
        return bool(self._token) and self._expires_at is not None and (
            self._expires_at > self.rt.now()
        )

    async def _load(self, stale: str | None) -> str:
        if self._refused and time.monotonic() < self._refused[0]:
            raise self._refused[1]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + TOKEN_WAIT
        while True:
            row = await self._read()
            now = self.rt.now()
            if row is not None and self._usable(row, stale, now):
                return self._keep(row.token, row.expires_at)
            lease = await self._take_lease(row, now, force=loop.time() >= deadline)
            if lease is not None:
                return await self._refresh(lease)
            await asyncio.sleep(0.05)

    @staticmethod
    def _usable(row: AccessToken, stale: str | None, now: datetime) -> bool:
        return (
            bool(row.token) and not row.token.startswith(LEASE_PREFIX)
            and row.token != stale and row.expires_at > now
        )

    async def _refresh(self, lease: str) -> str:
        try:
            token, expires_in = await self._fetch()
        except CredentialsRefused as exc:
            self._refused = (time.monotonic() + CREDENTIALS_PAUSE, exc)
            await self._release(lease)
            raise
        except BaseException:
            await self._release(lease)
            raise
        self._refused = None
        now = self.rt.now()
        expires_at = now + timedelta(seconds=max(expires_in - TOKEN_MARGIN, expires_in / 2))
        async with self.rt.sessions() as session, session.begin():
            await session.execute(
                update(AccessToken)
                .where(AccessToken.app == self.app, AccessToken.token == lease)
                .values(token=token, expires_at=expires_at, refreshed_at=now)
            )
            # The credentials work (again): a later refusal opens a new alert episode.
            await resolve(session, ALERT_KEY)
        log.info("wecom access token refreshed for %s", self.app)
        return self._keep(token, expires_at)

    def _keep(self, token: str, expires_at: datetime) -> str:
        self._token, self._expires_at = token, expires_at
        return token

    async def _read(self) -> AccessToken | None:
        async with self.rt.sessions() as session:
            return await session.scalar(select(AccessToken).where(AccessToken.app == self.app))

    async def _take_lease(
        self, row: AccessToken | None, now: datetime, force: bool
    ) -> str | None:
        lease = LEASE_PREFIX + uuid.uuid4().hex
        async with self.rt.sessions() as session, session.begin():
            if row is None:
                dialect = sqlite if self.rt.is_sqlite else postgresql
                inserted = await session.execute(
                    dialect.insert(AccessToken)
                    .values(app=self.app, token=lease, expires_at=now, refreshed_at=now)
                    .on_conflict_do_nothing(index_elements=["app"])
                    .returning(AccessToken.app)
                )
                return lease if inserted.scalar() is not None else None
            leased = row.token.startswith(LEASE_PREFIX) and row.refreshed_at > now - TOKEN_LEASE
            if leased and not force:
                return None
            swapped = await session.execute(
                update(AccessToken)
                .where(AccessToken.app == self.app, AccessToken.token == row.token)
                .values(token=lease, refreshed_at=now)
            )
            return lease if swapped.rowcount == 1 else None

    async def _release(self, lease: str) -> None:
        try:
            async with self.rt.sessions() as session, session.begin():
                await session.execute(
                    update(AccessToken)
                    .where(AccessToken.app == self.app, AccessToken.token == lease)
                    .values(token="", expires_at=self.rt.now())
                )
        except Exception:
            log.exception("could not release the wecom token lease for %s", self.app)


# ---- the channel ------------------------------------------------------------------


def _required(query: Mapping[str, str], *names: str) -> list[str]:
    # aiohttp's request.query is decoded exactly once, so a `+` in echostr survives (C02).
    values = [query.get(name, "") for name in names]
    missing = [name for name, value in zip(names, values, strict=True) if not value]
    if missing:
        raise CallbackError(400, "missing " + ", ".join(missing))
    return values


def _code(answer: Mapping[str, Any]) -> int:
    try:
        return int(answer.get("errcode", -1))
    except (TypeError, ValueError):
        return -1


def _ids(value: Any) -> list[str]:
    """WeCom lists refused users as "a|b"; accept a JSON list as well."""
    if isinstance(value, list):
        return [str(v) for v in value if v]
    return [v for v in str(value or "").split("|") if v]


def _failure(code: int, answer: Mapping[str, Any]) -> Delivery:
    """What to do about an error answer: retry soon, later, or never.

    Only a message that can never be delivered is given up at once (no such member,
    a malformed message); an unknown code is retried with backoff like a busy one, and a
    setup error waits for the admins to fix it (deliver() alerts them).
    """
    message = f"errcode {code}: {str(answer.get('errmsg', ''))[:120]}"
    if code in BUSY or code in TOKEN_REFUSED:
        return Delivery.retry(message)
    if code in THROTTLED:
        return Delivery.retry(message, after=60)
    if code in SETUP:
        return Delivery.retry(message, after=CREDENTIALS_RETRY)
    if code in UNDELIVERABLE:
        return Delivery.failed(message)
    return Delivery.retry(message, after=30)


class WeComChannel:
    """The self-built app's one-to-one chat, and the team group robots (send only)."""

    name = "wecom"

    def __init__(self, rt: Runtime) -> None:
        settings = rt.settings.wecom
        if not (settings.corp_id and settings.agent_id and settings.secret and settings.token
                and settings.aes_key):
            raise ValueError("the WeCom channel needs corp_id, agent_id, secret, token, aes_key")
        self.rt = rt
        self._setup_refused = False
        self.corp_id = settings.corp_id
        self.agent_id = settings.agent_id
        self._secret = settings.secret
        self.api_base = settings.api_base.rstrip("/")
        self.budget = Budget(settings.per_minute, settings.per_hour)
        # The group robot takes 20 a minute (doc 91770); keep a margin.
        self.group_budget = Budget(18, None)
        self.crypto = CallbackCrypto(settings.token, settings.aes_key, settings.corp_id)
        self.tokens = TokenCache(rt, f"wecom:{self.corp_id}:{self.agent_id}", self._gettoken)
        self._http: aiohttp.ClientSession | None = None

    # -- the Channel protocol --

    def address_of(self, member: Any) -> str | None:
        return getattr(member, "wecom_userid", None) or None

    def group_address(self, team: str | None) -> str | None:
        settings = self.rt.settings
        own = settings.teams.get(team) if team else None
        if own is not None and own.wecom_webhook:
            return own.wecom_webhook
        return settings.wecom.group_webhook or None

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get(CALLBACK_PATH, self.verify_url)
        app.router.add_post(CALLBACK_PATH, self.receive)

    async def start(self, app: web.Application | None) -> None:
        if self._http is None:
            self._http = aiohttp.ClientSession(timeout=TIMEOUT)

    async def stop(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def deliver(self, parcel: Parcel) -> Delivery:
        try:
            if parcel.is_group:
                return await self._to_group(parcel)
            if parcel.kind == "card_update":
                return await self._update_card(parcel)
            body = self._message(parcel)
            if body is None:
                return Delivery.failed(f"cannot send a {parcel.kind} parcel on WeCom")
            return await self._alert_on_setup(self._judge_send(parcel, await self._api(SEND,
                                                                                      body)))
        except CredentialsRefused as exc:
            return await self._credentials_refused(exc)
        except WeComUnavailable as exc:
            return Delivery.retry(exc.reason, exc.after)

    # -- inbound --

    async def verify_url(self, request: web.Request) -> web.Response:
        """URL verification: answer the decrypted echostr as bare text (doc 90968)."""
        try:
            signature, timestamp, nonce, echostr = _required(
                request.query, "msg_signature", "timestamp", "nonce", "echostr"
            )
            plain = self.crypto.echo(signature, timestamp, nonce, echostr)
        except CallbackError as exc:
            return self._refuse("verification", exc)
        return web.Response(text=plain, content_type="text/plain")

    async def receive(self, request: web.Request) -> web.Response:
        """An encrypted message or event: record it, answer 200 at once, work later."""
        try:
            event = await self._read_callback(request)
        except CallbackError as exc:
            return self._refuse("callback", exc)
        except web.HTTPException:
            raise  # 413 for a body over the limit
        except Exception:
            log.exception("wecom callback could not be read")
            return web.Response(status=400, text="cannot read the callback")
        try:
            fresh = await asyncio.wait_for(self.rt.inbox.record(event), RECORD_SECONDS)
        except Exception as exc:  # WeCom delivers again on anything but 200
            log.error("wecom callback not recorded (%s); asking WeCom to retry",
                      type(exc).__name__)
            return web.Response(status=503, text="try again later")
        if not fresh:
            log.info("wecom callback delivered again: kind=%s, already recorded", event.kind)
        return web.Response(status=200)

    async def _read_callback(self, request: web.Request) -> Event:
        signature, timestamp, nonce = _required(
            request.query, "msg_signature", "timestamp", "nonce"
        )
        limit = self.rt.settings.http.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            raise web.HTTPRequestEntityTooLarge(limit, request.content_length)
        outer = parse_xml(await request.read())
        encrypt = outer.get("Encrypt", "").strip()
        if not encrypt:
            raise CallbackError(400, "no Encrypt element")
        return callback_event(self.crypto.decrypt(signature, timestamp, nonce, encrypt))

    @staticmethod
    def _refuse(what: str, exc: CallbackError) -> web.Response:
        # Never the payload: one line with the reason.
        log.warning("wecom %s refused with %s: %s", what, exc.status, exc.reason)
        return web.Response(status=exc.status, text=exc.reason)

    # -- outbound --

    def _message(self, parcel: Parcel) -> dict[str, Any] | None:
        # Limitation: texts carry no idempotency key (WeCom's enable_duplicate_check
        # would also swallow a genuine repeat within its window), so a text whose send
        # timed out after WeCom had accepted it is shown twice when the outbox retries.
        # Cards do not have this problem: their task_id makes a repeat answer 42014.
        body: dict[str, Any] = {"touser": parcel.address, "agentid": self.agent_id}
        text = str(parcel.payload.get("text", ""))
        if parcel.kind == "text":
            body |= {"msgtype": "text", "text": {"content": text}}
        elif parcel.kind == "markdown":
            body |= {"msgtype": "markdown", "markdown": {"content": text}}
        elif parcel.kind == "card" and parcel.card is not None and parcel.card_ref:
            body |= {"msgtype": "template_card",
                     "template_card": template_card(parcel.card, parcel.card_ref)}
        else:
            return None
        return body

    def _judge_send(self, parcel: Parcel, answer: Mapping[str, Any]) -> Delivery:
        code = _code(answer)
        if code == 0:
            # A partial failure still answers 0: the refused users are listed (doc 90236).
            refused = _ids(answer.get("invaliduser")) + _ids(answer.get("unlicenseduser"))
            if parcel.address in refused:
                return Delivery(ok=False, error="WeCom refused the recipient (invaliduser)",
                                refused=refused)
            return Delivery.sent(response_code=answer.get("response_code") or None)
        if code == TASK_EXISTS and parcel.kind == "card":
            # The task_id is our idempotency key: the card went out on an earlier try.
            return Delivery.sent()
        if code == ALL_INVALID:
            return Delivery(ok=False, error=f"errcode {code}: recipient invalid",
                            refused=[parcel.address])
        return _failure(code, answer)

    async def _update_card(self, parcel: Parcel) -> Delivery:
        if not parcel.response_code or parcel.card is None or not parcel.card_ref:
            # Limitation: without a response code (the card was sent under another
            # process's code, or the code was spent) WeCom offers no way to change the
            # card; the member keeps seeing the old buttons, and a click is answered
            # as stale by the handler.
            log.info("wecom card %s has no response code; not updated in place",
                     parcel.card_ref)
            return Delivery.sent()
        body = {
            "userids": [parcel.address], "agentid": self.agent_id,
            "response_code": parcel.response_code,
            "template_card": updated_template_card(parcel.card, parcel.card_ref),
        }
        answer = await self._api(UPDATE_CARD, body)
        code = _code(answer)
        if code == 0:
            return Delivery.sent()
        failure = _failure(code, answer)
        if code not in BUSY | THROTTLED | TOKEN_REFUSED:
            # A spent or expired response code will not work on a retry either.
            return Delivery.failed(failure.error or f"errcode {code}")
        return failure

    async def _to_group(self, parcel: Parcel) -> Delivery:
        """A team message through the group robot's webhook (docs 91770, 99398)."""
        content = str(parcel.payload.get("text", ""))
        if parcel.mentions:
            content += "\n" + " ".join(f"<@{userid}>" for userid in parcel.mentions)
        answer = await self._request(
            "POST", parcel.address, json={"msgtype": "markdown", "markdown": {"content": content}}
        )
        code = _code(answer)
        if code == 0:
            return Delivery.sent()
        if code == BAD_WEBHOOK:
            return Delivery.failed(f"errcode {code}: the group robot's webhook key is invalid")
        return _failure(code, answer)

    async def _alert_on_setup(self, delivery: Delivery) -> Delivery:
        code = delivery.error.split(":", 1)[0].removeprefix("errcode ") if delivery.error else ""
        if not delivery.ok and code.lstrip("-").isdigit() and int(code) in SETUP:
            log.error("wecom refused the app's setup: errcode %s", code)
            self._setup_refused = True
            try:
                async with self.rt.sessions() as session, session.begin():
                    await alert_admins(session, self.rt, SETUP_ALERT_KEY,
                                       T_SETUP.format(code=code))
            except Exception:
                log.exception("could not raise the wecom setup alert")
        elif delivery.ok and self._setup_refused:
            self._setup_refused = False
            async with self.rt.sessions() as session, session.begin():
                await resolve(session, SETUP_ALERT_KEY)
        return delivery

    async def _credentials_refused(self, exc: CredentialsRefused) -> Delivery:
        log.error("wecom gettoken refused the credentials: errcode %s", exc.code)
        try:
            async with self.rt.sessions() as session, session.begin():
                await alert_admins(session, self.rt, ALERT_KEY,
                                   T_CREDENTIALS.format(code=exc.code))
        except Exception:
            log.exception("could not raise the wecom credentials alert")
        return Delivery.retry(str(exc), after=CREDENTIALS_RETRY)

    # -- the API client --

    async def _gettoken(self) -> tuple[str, int]:
        answer = await self._request("GET", self.api_base + GETTOKEN, params={
            "corpid": self.corp_id, "corpsecret": self._secret,
        })
        code = _code(answer)
        token = answer.get("access_token")
        if code == 0 and isinstance(token, str) and token:
            try:
                expires_in = int(answer.get("expires_in") or 7200)
            except (TypeError, ValueError):
                expires_in = 7200
            return token, max(expires_in, 60)
        if code in BUSY:
            raise WeComUnavailable(f"gettoken errcode {code}")
        if code in THROTTLED:
            raise WeComUnavailable(f"gettoken errcode {code}", after=60)
        raise CredentialsRefused(code)

    async def _api(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """An app API call with the shared token; renewed once on 40014 / 42001."""
        token = await self.tokens.get()
        answer = await self._request("POST", self.api_base + path,
                                     params={"access_token": token}, json=body)
        code = _code(answer)
        if code in TOKEN_REFUSED:
            log.info("wecom refused the access token (errcode %s); renewing it", code)
            token = await self.tokens.renew(token)
            answer = await self._request("POST", self.api_base + path,
                                         params={"access_token": token}, json=body)
        return answer

    async def _request(
        self, method: str, url: str, *, params: dict[str, str] | None = None,
        json: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        # Logs and errors name the path at most: the query holds the token, and a
        # webhook URL holds the robot's key.
        if self._http is None:
            raise WeComUnavailable("the WeCom channel is not started")
        try:
            async with self._http.request(
                method, url, params=params, json=json, timeout=TIMEOUT
            ) as response:
                if response.status >= 500:
                    raise WeComUnavailable(f"HTTP {response.status}")
                if response.status != 200:
                    raise WeComUnavailable(f"HTTP {response.status}", after=60)
                answer = await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise WeComUnavailable(f"{type(exc).__name__} calling WeCom") from None
        if not isinstance(answer, dict):
            raise WeComUnavailable("WeCom answered something other than a JSON object")
        return answer
