"""The intake HTTP API (/api/v1): other systems post leads here and read them back.

Owns the HTTP contract (the bearer token, checking every field, the answer's shape);
storing and routing a lead is handlers.intake's job.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from bot.app import RUNTIME
from bot.batching import Batcher
from bot.runtime import Runtime
from config.settings import Settings
from handlers.customers import (
    SIMILAR_SHOWN,
    DoorCheck,
    Match,
    check_door,
    load_match,
    lock_door,
)
from handlers.enquiries import known_enquiries, record_enquiry
from handlers.intake import DRAFT, URGENCIES, LeadInput, canonical_tag, create_leads
from handlers.matching import keys_for
from handlers.phones import PhoneError, parse_phone
from storage.models import Customer, Enquiry, Lead, Member

log = logging.getLogger(__name__)

PREFIX = "/api/v1"
LIMITS = {"company": 200, "contact": 64, "phone": 40, "email": 200, "note": 2000,
          "external_id": 128, "industry": 32, "urgency": 32, "source": 32}
_EMAIL = re.compile(r"[^@\s]+@[^@\s.]+(?:\.[^@\s.]+)+")
_LEAD_ID = re.compile(r"[0-9]{1,18}")

T_NO_TOKEN_SET = "接口未启用：服务端未设置 SALESBOT_API__TOKEN"
T_BAD_TOKEN = "缺少或错误的访问令牌（Authorization: Bearer …）"
T_CONTROL = "含有不可见的控制字符"
T_NOT_JSON = "请求体不是合法的 JSON"
T_NOT_OBJECT = "请求体应为 JSON 对象"
T_REQUIRED = "必填"
T_NOT_STRING = "应为字符串"
T_TOO_LONG = "不能超过{n}个字符"
T_EMAIL = "邮箱格式不正确"
T_UNKNOWN_TAG = "未知的取值“{value}”（可选：{choices}）"
T_NO_LEAD = "找不到线索 {id}"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


INTAKE = web.AppKey("intake", Batcher)


def add_routes(app: web.Application) -> None:
    rt = app[RUNTIME]
    intake: Batcher[LeadInput, tuple[dict[str, Any], bool]] = Batcher(
        lambda batch: _create_batch(rt, batch))
    app[INTAKE] = intake

    async def close_intake(_app: web.Application) -> None:
        await intake.close()

    app.on_cleanup.append(close_intake)
    app.middlewares.append(require_token)
    app.router.add_post(f"{PREFIX}/leads", post_lead)
    app.router.add_get(f"{PREFIX}/leads/{{id}}", get_lead)


def errors(status: int, *items: tuple[str, str], **headers: str) -> web.Response:
    body = {"errors": [{"field": name, "message": message} for name, message in items]}
    return web.json_response(body, status=status, headers=headers or None,
                             dumps=_dumps)


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


# --- the token ---------------------------------------------------------------------


@web.middleware
async def require_token(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every /api/v1 route, known or not, answers 401 without the configured token."""
    if request.path != PREFIX and not request.path.startswith(PREFIX + "/"):
        return await handler(request)
    token = request.app[RUNTIME].settings.api.token
    if token is None:
        return errors(401, ("Authorization", T_NO_TOKEN_SET), **{"WWW-Authenticate": "Bearer"})
    if not token_matches(request.headers.get("Authorization", ""), token):
        log.info("api %s %s: refused, bad or missing token", request.method, request.path)
        return errors(401, ("Authorization", T_BAD_TOKEN), **{"WWW-Authenticate": "Bearer"})
    return await handler(request)


def token_matches(header: str, token: str) -> bool:
    scheme, _, given = header.strip().partition(" ")
    if scheme.casefold() != "bearer":
        return False
    # Constant time, so the answer's timing tells nothing about how much was right.
    return hmac.compare_digest(given.strip().encode(), token.encode())


# --- checking the body (pure) -------------------------------------------------------


_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f\u202a-\u202e\u2066-\u2069]")


def _string(body: dict[str, Any], name: str, *, required: bool) -> tuple[str | None, str | None]:
    """(value, error) for one text field: trimmed, None when absent or blank."""
    value = body.get(name)
    if name == "external_id" and isinstance(value, int) and not isinstance(value, bool):
        value = str(value)  # other systems often number their records
    if value is None or (isinstance(value, str) and not value.strip()):
        return None, T_REQUIRED if required else None
    if not isinstance(value, str):
        return None, T_NOT_STRING
    value = value.strip()
    if len(value) > LIMITS[name]:
        return None, T_TOO_LONG.format(n=LIMITS[name])
    if _CONTROL.search(value if name == "note" else value.replace("\n", "\0")):
        # NUL, escape sequences, direction overrides: they corrupt a terminal or a card.
        return None, T_CONTROL
    return value, None


def parse_lead(body: dict[str, Any], settings: Settings) -> tuple[LeadInput | None,
                                                                   list[tuple[str, str]]]:
    """The lead in canonical form, or every invalid field with its reason."""
    problems: list[tuple[str, str]] = []
    values: dict[str, str | None] = {}
    for name, required in (("company", True), ("contact", True), ("phone", True),
                           ("email", False), ("industry", True), ("urgency", True),
                           ("source", True), ("note", False), ("external_id", False)):
        value, problem = _string(body, name, required=required)
        if problem:
            problems.append((name, problem))
        values[name] = value
    if values["phone"] is not None:
        try:
            values["phone"] = parse_phone(values["phone"]).stored
        except PhoneError as exc:
            problems.append(("phone", str(exc)))
    if values["email"] is not None and not _EMAIL.fullmatch(values["email"]):
        problems.append(("email", T_EMAIL))
    lists = {"industry": settings.leads.industries, "urgency": URGENCIES,
             "source": settings.leads.sources}
    for name, choices in lists.items():
        if values[name] is None:
            continue
        key = canonical_tag(values[name] or "", choices)
        if key is None:
            listed = "、".join(f"{zh}/{en}" for en, zh in choices.items())
            problems.append((name, T_UNKNOWN_TAG.format(value=values[name], choices=listed)))
        values[name] = key
    if problems:
        return None, problems
    return LeadInput(
        company=values["company"] or "", contact=values["contact"] or "",
        phone=values["phone"], email=values["email"], industry=values["industry"],
        urgency=values["urgency"], source=values["source"], note=values["note"],
        external_id=values["external_id"],
    ), []


# --- the routes -------------------------------------------------------------------


async def _body(request: web.Request) -> dict[str, Any] | web.Response:
    raw = await request.read()
    try:
        body = json.loads(raw)
        # A lone surrogate (\ud800) is valid JSON but no text: it cannot be stored.
        json.dumps(body, ensure_ascii=False).encode("utf-8")
    except (ValueError, RecursionError):  # bad bytes and bad surrogates are ValueErrors
        return errors(400, ("body", T_NOT_JSON))
    if not isinstance(body, dict):
        return errors(400, ("body", T_NOT_OBJECT))
    return body


async def _create_batch(
    rt: Runtime, batch: list[LeadInput]
) -> list[tuple[dict[str, Any], bool]]:
    """Concurrent posts share one transaction; each lead is stored and routed as alone.

    Before anything is stored, each post is checked against the stored leads and
    customers (and the posts before it in the batch): a strong match is answered with
    that record and `"linked": true`, nothing new stored; a new lead lists its similar
    records. A known external_id is answered with its lead, as always (the first body
    wins)."""
    async with rt.sessions() as session, session.begin():
        now = rt.now()
        wanted = [d.external_id for d in batch if d.external_id]
        known = set((await session.scalars(
            select(Lead.external_id).where(Lead.external_id.in_(wanted)))).all()) \
            if wanted else set()
        enquired = await known_enquiries(session, [w for w in wanted if w not in known])
        probes = [keys_for(d.company, d.contact, d.phone, d.email) for d in batch]
        await lock_door(session, probes)
        checks = await check_door(session, probes)
        linked = {i for i, check in enumerate(checks) if batch[i].external_id not in known
                  and (batch[i].external_id in enquired or check.strong is not None
                       or check.earlier is not None)}
        fresh = [i for i in range(len(batch)) if i not in linked]
        stored = await create_leads(session, rt, [batch[i] for i in fresh], now,
                                    origin="api")
        leads = dict(zip(fresh, stored, strict=True))
        names = await _assignee_names(session, [lead for lead, _ in stored])
        views: list[tuple[dict[str, Any], bool]] = []
        for i, check in enumerate(checks):
            data = batch[i]
            if i in leads:
                lead, created = leads[i]
                view = _view(lead, names)
                if created:
                    view["similar"] = _similar(check, leads)
                views.append((view, created))
            elif data.external_id in enquired:
                # The same post again (a retry): answered as the first time, kept once.
                views.append((await _enquiry_view(session, enquired[data.external_id]),
                              False))
            elif check.strong is not None:
                views.append((await _linked_view(session, check.strong), False))
                _remember(enquired, data, await record_enquiry(
                    session, rt, data, check.strong.kind, check.strong.id, now, origin="api"))
            else:
                earlier = views[check.earlier or 0][0]
                views.append(({**earlier, "linked": True, "kind": earlier.get("kind", "lead"),
                               "similar": []}, False))
                # Posted twice at one moment: the owner hears of the lead once.
                _remember(enquired, data, await record_enquiry(
                    session, rt, data, views[-1][0]["kind"], earlier["id"], now,
                    origin="api", notify=False))
    if any(created for _, created in views):
        rt.outbox.wake()
    return views


def _remember(enquired: dict[str, Enquiry], data: LeadInput, enquiry: Enquiry) -> None:
    if data.external_id:
        enquired[data.external_id] = enquiry  # the same id later in the batch: first wins


def _similar(check: DoorCheck, stored: dict[int, tuple[Lead, bool]]) -> list[dict[str, Any]]:
    """The stored records a new lead resembles, and the leads of the same batch before it
    (posted at the same moment), best first as check_door ranks them."""
    found = list(check.matches)
    for position, score, reasons in check.batch_similar:
        if position in stored and stored[position][1]:
            found.append(Match("lead", stored[position][0].id, score, reasons, False))
    found.sort(key=lambda m: (not m.strong, m.kind != "customer", -m.score, m.id))
    return [m.as_json() for m in found[:SIMILAR_SHOWN]]


async def _enquiry_view(session: AsyncSession, enquiry: Enquiry) -> dict[str, Any]:
    """A repeated post of an enquiry: answered with the record it was linked to."""
    return await _linked_view(session, Match(enquiry.kind, enquiry.object_id, 100,
                                             ["strong"], True))


async def _linked_view(session: AsyncSession, match: Match) -> dict[str, Any]:
    """The stored record a strong match found, as the answer's body."""
    record = await load_match(session, match)
    if isinstance(record, Lead):
        return {**await lead_view(session, record), "kind": "lead", "linked": True}
    assert isinstance(record, Customer)
    owner = await session.get(Member, record.owner_id) if record.owner_id else None
    return {"id": record.id, "kind": "customer", "linked": True, "status": record.status,
            "assignee": owner.name if owner else None, "similar": [],
            "company": record.company, "contact": record.contact, "phone": record.phone,
            "email": record.email, "industry": record.industry,
            "created_at": record.created_at.isoformat()}


async def _assignee_names(session: AsyncSession, leads: list[Lead]) -> dict[int, str]:
    ids = {lead.assignee_id for lead in leads if lead.assignee_id}
    if not ids:
        return {}
    rows = await session.execute(select(Member.id, Member.name).where(Member.id.in_(ids)))
    return dict(rows.all())


async def lead_view(session: AsyncSession, lead: Lead) -> dict[str, Any]:
    return _view(lead, await _assignee_names(session, [lead]))


def _view(lead: Lead, names: dict[int, str]) -> dict[str, Any]:
    return {
        "id": lead.id,
        "status": lead.status,
        "assignee": names.get(lead.assignee_id) if lead.assignee_id else None,
        "similar": [],
        "company": lead.company,
        "contact": lead.contact,
        "phone": lead.phone,
        "email": lead.email,
        "industry": lead.industry,
        "urgency": lead.urgency,
        "source": lead.source,
        "note": lead.note,
        "external_id": lead.external_id,
        "created_at": lead.created_at.isoformat(),
    }


async def _known(rt: Runtime, external_id: str) -> dict[str, Any] | None:
    """The answer for an external_id already stored: its lead, or the record an enquiry
    with that id was linked to."""
    async with rt.sessions() as session:
        lead = await session.scalar(select(Lead).where(Lead.external_id == external_id))
        if lead is not None:
            return await lead_view(session, lead)
        enquired = await known_enquiries(session, [external_id])
        if external_id not in enquired:
            return None
        return await _enquiry_view(session, enquired[external_id])


async def post_lead(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    body = await _body(request)
    if isinstance(body, web.Response):
        return body
    data, problems = parse_lead(body, rt.settings)
    if data is None:
        return errors(422, *problems)
    try:
        view, created = await request.app[INTAKE].submit(data)
    except IntegrityError:
        # Two posts with one external_id raced past the lookup: the first one won.
        known = await _known(rt, data.external_id) if data.external_id else None
        if known is None:
            raise
        log.info("api lead %s: lost the race for its external_id", known["id"])
        view, created = known, False
    log.info("api lead %s: %s, status %s", view["id"], "created" if created else "known",
             view["status"])
    return web.json_response(view, status=201 if created else 200, dumps=_dumps)


async def get_lead(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    raw = request.match_info["id"]
    if not _LEAD_ID.fullmatch(raw):
        return errors(404, ("id", T_NO_LEAD.format(id=raw[:40])))
    async with rt.sessions() as session:
        lead = await session.get(Lead, int(raw))
        # A chat draft is not a lead yet: it waits for its tags (handlers.entry).
        view = await lead_view(session, lead) if lead and lead.status != DRAFT else None
    if view is None:
        return errors(404, ("id", T_NO_LEAD.format(id=raw)))
    return web.json_response(view, dumps=_dumps)
