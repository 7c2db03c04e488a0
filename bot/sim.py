"""The web chat simulator at /sim: a visitor chats as a roster member on the console channel.

Owns the page, its static files and the JSON API under /sim/api/. Events go through the
inbox like a platform callback's; what the bot answers is read back from the outbox.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from pathlib import Path
from typing import Any

from aiohttp import web
from sqlalchemy import select

from bot.console import Delivered, click_event, delivered_since, text_event
from bot.router import ROLE_NAMES
from cards.model import ACTIONS, parse_key
from storage.models import Card, Member

log = logging.getLogger(__name__)

STATIC = Path(__file__).with_name("static")
FILES = {
    "sim.js": "application/javascript",
    "sim.css": "text/css",
}
# Nothing on the page may come from another host.
HEADERS = {
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:",
}
EVENT_PREFIX = "sim"
MAX_TEXT = 2000
MAX_WAIT = 25.0  # seconds a long poll may hold; below common proxy idle timeouts
MAX_ID = 2**53  # ids beyond this are no outbox row's
POLL_SECONDS = 0.5  # the database is read again this often while a long poll waits

STATUS_NAMES = {"active": "在职", "leave": "休假", "left": "已离职"}

T_BAD_JSON = "请求体不是合法的 JSON 对象。"
T_LOCAL_ONLY = "模拟器只对本机开放（设置 SALESBOT_SIM__ENABLED=true 可对外开放）。"
T_NO_MEMBER = "名单中没有这位成员。"
T_MEMBER_REQUIRED = "请指定成员（member：编号或姓名）。"
T_TEXT_REQUIRED = "消息不能为空。"
T_TEXT_TOO_LONG = "消息太长（最多 {n} 个字）。"
T_BAD_KEY = "按钮标识不正确。"
T_NO_CARD = "没有这张卡片。"
T_NOT_YOUR_CARD = "这张卡片不是发给这位成员的。"
T_BAD_NUMBER = "{field} 必须是不小于 0 的数字，且不能过大。"
T_BUSY = "暂时无法记录消息，请稍后再试。"


# Set when the server shuts down, so that held long polls answer at once.
CLOSING = web.AppKey("sim_closing", asyncio.Event)


def add_routes(app: web.Application) -> None:
    app[CLOSING] = asyncio.Event()
    app.on_shutdown.append(_closing)
    explicit = _runtime_of(app).settings.sim.enabled is True
    guard = (lambda handler: handler) if explicit else _local_only
    app.router.add_get("/sim", guard(page))
    app.router.add_get("/sim/static/{name}", guard(static_file))
    app.router.add_get("/sim/api/members", guard(members))
    app.router.add_get("/sim/api/messages", guard(messages))
    app.router.add_post("/sim/api/say", guard(say))
    app.router.add_post("/sim/api/click", guard(click))


FORWARDED = ("X-Forwarded-For", "Forwarded", "X-Real-IP", "X-Forwarded-Host")


def _local_only(handler: Any) -> Any:
    """Served only to this machine: a bot behind a reverse proxy on 127.0.0.1 still
    listens on loopback, so a forwarded request means someone from outside."""

    @functools.wraps(handler)
    async def guarded(request: web.Request) -> web.StreamResponse:
        remote = request.remote or ""
        if any(h in request.headers for h in FORWARDED) or not _is_loopback(remote):
            return _error(403, T_LOCAL_ONLY)
        return await handler(request)

    return guarded


def _is_loopback(address: str) -> bool:
    import ipaddress

    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def _runtime_of(app: web.Application):  # noqa: ANN202 - bot.app imports this module lazily
    from bot.app import RUNTIME

    return app[RUNTIME]


async def _closing(app: web.Application) -> None:
    app[CLOSING].set()


def _runtime(request: web.Request):  # noqa: ANN202 - bot.app imports this module lazily
    from bot.app import RUNTIME

    return request.app[RUNTIME]


# Chinese stays readable for anyone looking at the API with curl.
_dumps = functools.partial(json.dumps, ensure_ascii=False)


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=_dumps)


def _error(status: int, message: str, field: str | None = None) -> web.Response:
    return _json({"errors": [{"field": field, "message": message}]}, status=status)


# ---- the page ---------------------------------------------------------------------------


async def page(request: web.Request) -> web.Response:
    body = (STATIC / "sim.html").read_bytes()
    return web.Response(body=body, content_type="text/html", charset="utf-8", headers=HEADERS)


async def static_file(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if name not in FILES:
        raise web.HTTPNotFound()
    body = (STATIC / name).read_bytes()
    return web.Response(body=body, content_type=FILES[name], charset="utf-8", headers=HEADERS)


# ---- the API ----------------------------------------------------------------------------


def member_json(member: Member, industries: dict[str, str]) -> dict[str, Any]:
    return {
        "id": member.id,
        "name": member.name,
        "role": member.role,
        "role_name": ROLE_NAMES.get(member.role, member.role),
        "team": member.team,
        "industries": [industries.get(i, i) for i in member.industries or []],
        "status": member.status,
        "status_name": STATUS_NAMES.get(member.status, member.status),
    }


def card_json(message: Delivered) -> dict[str, Any] | None:
    card = message.card
    if card is None:
        return None
    return {
        "id": message.card_id,
        "ref": message.card_ref,
        "state": message.card_state,
        "title": card.title,
        "description": card.description,
        "fields": [{"label": f.label, "value": f.value} for f in card.fields],
        "buttons": [{"label": b.label, "key": b.key, "style": b.style} for b in card.buttons],
        "status": card.status,
    }


def message_json(message: Delivered) -> dict[str, Any]:
    return {
        "id": message.id,
        "kind": message.kind,
        "text": message.text,  # a card as plain text too, for API readers
        "sent_at": message.sent_at.isoformat() if message.sent_at else None,
        "card": card_json(message),
    }


async def _find_member(request: web.Request, value: Any) -> Member | web.Response:
    """The member named by id or by name, or the error response to send."""
    if value is None or value == "" or isinstance(value, bool):
        return _error(400, T_MEMBER_REQUIRED, "member")
    by_id = isinstance(value, int) or (
        isinstance(value, str) and value.isascii() and value.isdigit()
    )
    rt = _runtime(request)
    async with rt.sessions() as session:
        if by_id:
            number = int(value)
            member = await session.get(Member, number) if 0 < number < MAX_ID else None
        elif isinstance(value, str):
            member = await session.scalar(select(Member).where(Member.name == value.strip()))
        else:
            return _error(400, T_MEMBER_REQUIRED, "member")
    if member is None:
        return _error(404, T_NO_MEMBER, "member")
    return member


async def _json_body(request: web.Request) -> dict[str, Any] | web.Response:
    try:
        body = await request.json(loads=json.loads)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        return _error(400, T_BAD_JSON)
    if not isinstance(body, dict):
        return _error(400, T_BAD_JSON)
    return body


def _number(
    request: web.Request, name: str, default: float, maximum: float
) -> float | web.Response:
    raw = request.query.get(name, "")
    if raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        return _error(400, T_BAD_NUMBER.format(field=name), name)
    if not 0 <= value <= maximum:  # also refuses nan
        return _error(400, T_BAD_NUMBER.format(field=name), name)
    return value


async def members(request: web.Request) -> web.Response:
    rt = _runtime(request)
    async with rt.sessions() as session:
        rows = (await session.scalars(select(Member).order_by(Member.id))).all()
    industries = rt.settings.leads.industries
    return _json({"members": [member_json(m, industries) for m in rows]})


async def messages(request: web.Request) -> web.Response:
    """What the bot sent the member after `after`; with `wait`, held until something
    arrives or `wait` seconds pass (a long poll)."""
    found = await _find_member(request, request.query.get("member"))
    if isinstance(found, web.Response):
        return found
    after = _number(request, "after", 0, MAX_ID)
    if isinstance(after, web.Response):
        return after
    wait = _number(request, "wait", 0, 3600)
    if isinstance(wait, web.Response):
        return wait
    rt = _runtime(request)
    delivered = await _wait_for_messages(request, found, int(after), min(wait, MAX_WAIT))
    industries = rt.settings.leads.industries
    last = delivered[-1].id if delivered else int(after)
    return _json({
        "member": member_json(found, industries),
        "messages": [message_json(m) for m in delivered],
        "last": last,
        "timezone": rt.settings.timezone,  # times are shown in the team's zone
    })


async def _wait_for_messages(
    request: web.Request, member: Member, after: int, wait: float
) -> list[Delivered]:
    rt = _runtime(request)
    closing = request.app[CLOSING]
    channel = rt.channels["console"]
    address = channel.address_of(member)
    flag = channel.listen(address)
    deadline = time.monotonic() + wait
    try:
        while True:
            async with rt.sessions() as session:
                delivered = await delivered_since(session, member, after)
            left = deadline - time.monotonic()
            if delivered or left <= 0 or closing.is_set() or _gone(request):
                return delivered
            # Woken by the console channel as it delivers; the row is marked sent just
            # after, and rows another process delivered are only seen by reading again.
            try:
                await asyncio.wait_for(flag.wait(), timeout=min(POLL_SECONDS, left))
                flag.clear()
                await asyncio.sleep(0.05)
            except TimeoutError:
                pass
    finally:
        channel.unlisten(address, flag)


def _gone(request: web.Request) -> bool:
    """The visitor closed the page or switched member: stop holding the poll."""
    return request.transport is None or request.transport.is_closing()


async def _record(request: web.Request, event: Any) -> web.Response:
    try:
        await _runtime(request).inbox.record(event)
    except Exception:  # the inbox logged it; the visitor may send again
        return _error(503, T_BUSY)
    return _json({"recorded": True, "key": event.key}, status=202)


async def say(request: web.Request) -> web.Response:
    body = await _json_body(request)
    if isinstance(body, web.Response):
        return body
    found = await _find_member(request, body.get("member"))
    if isinstance(found, web.Response):
        return found
    text = body.get("text")
    if not isinstance(text, str) or not text.strip():
        return _error(400, T_TEXT_REQUIRED, "text")
    if len(text) > MAX_TEXT:
        return _error(400, T_TEXT_TOO_LONG.format(n=MAX_TEXT), "text")
    return await _record(request, text_event(found, text.strip(), EVENT_PREFIX))


async def click(request: web.Request) -> web.Response:
    body = await _json_body(request)
    if isinstance(body, web.Response):
        return body
    found = await _find_member(request, body.get("member"))
    if isinstance(found, web.Response):
        return found
    key = body.get("key")
    if not isinstance(key, str) or len(key) > 128:
        return _error(400, T_BAD_KEY, "key")
    action, object_id, _ = parse_key(key)
    if action not in ACTIONS or not object_id:
        return _error(400, T_BAD_KEY, "key")
    card_ref = body.get("card_ref")
    if not isinstance(card_ref, str) or not card_ref:
        return _error(400, T_NO_CARD, "card_ref")
    rt = _runtime(request)
    async with rt.sessions() as session:
        card = await session.scalar(select(Card).where(Card.ref == card_ref))
    if card is None:
        return _error(404, T_NO_CARD, "card_ref")
    if card.member_id != found.id:
        return _error(403, T_NOT_YOUR_CARD, "card_ref")
    # A key that is no longer on the card (a stale tab) still goes in: the handler checks
    # the card's state and answers politely, as it does for a platform's late click.
    return await _record(request, click_event(found, key, card.ref, EVENT_PREFIX))

