"""Signed, expiring links for spreadsheet import, and the /import pages they open.

Owns the tokens (member, purpose, object, channel, expiry under an HMAC) that every page
the bot links to uses (bot.merge_pages signs its comparison links here too), the upload
page, the upload itself and the two downloads; what an upload leads to (the check, the
result card) is handlers.import_chat's job, and the checking itself handlers.lead_import's.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import html
import logging
import os
import re
import secrets
import tempfile
import time
import weakref
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO, TYPE_CHECKING
from urllib.parse import quote, unquote

from aiohttp import BodyPartReader, web
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from storage.models import ConfigValue, LeadImport, Member

if TYPE_CHECKING:
    from bot.runtime import Runtime

log = logging.getLogger(__name__)

MAX_UPLOAD_BYTES = 20 * 1024 * 1024
# The form's own fields and multipart framing around the file.
MULTIPART_SLACK = 64 * 1024
READ_CHUNK = 64 * 1024
# Uploads wait for their check on disk, not in memory (twelve 19 MB uploads held in
# memory took the server from 110 to 448 MB); the worker deletes each once read, and the
# sweep what a crash left behind.
SPOOL_DIR = Path(tempfile.gettempdir()) / f"salesbot-uploads-{os.getuid()}"
SPOOL_KEEP = timedelta(days=1)
# How long the upload page waits for the check before saying the result goes to the chat.
PAGE_WAIT_SECONDS = 8.0
LIFETIMES = {
    "upload": timedelta(minutes=30),
    # As long as a WeCom card can still be changed after a click (72 h).
    "rejected": timedelta(hours=72),
    "template": timedelta(hours=24),
    # A merge proposal's comparison: as long as its card can be acted on (72 h).
    "merge": timedelta(hours=72),
}
CHANNELS = ("wecom", "dingtalk", "console")
# The random half of the signing key, created once and kept in config_values.
# Limitation: /配置 must not list this key's value when it learns to list config_values.
KEY_NAME = "secret.import_links"
KEY_CONTEXT = b"salesbot import links v1"
TEMPLATE_NAME = "线索导入模板.xlsx"
REJECTED_NAME = "导入问题行_{id}.xlsx"
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"

T_PAGE_TITLE = "导入线索"
T_FORGED = "链接无效。请在聊天中发送 /导入 获取新的上传链接。"
T_EXPIRED = "链接已过期。请在聊天中重新发送 /导入 获取新的上传链接。"
T_NOT_ALLOWED = "您现在没有导入线索的权限。如有疑问请联系管理员。"
T_NOT_YOUR_IMPORT = "这份问题明细不属于您。"
T_NO_IMPORT = "没有找到这次导入。"
T_INTRO = "{name}，请选择要导入的 xlsx 或 csv 文件（不超过 {mb} MB）。链接 {until} 前有效。"
T_PICK = "选择文件"
T_SEND = "上传并检查"
T_TEMPLATE = "下载导入模板"
T_NO_FILE = "没有收到文件，请选择一个 xlsx 或 csv 文件后再上传。"
T_EMPTY = "文件是空的，请检查后重新上传。"
T_TOO_LARGE = "文件超过 {mb} MB，无法导入。请拆分成几个文件分别上传。"
T_BUSY = "您上传的上一个文件还在检查，请等结果发到聊天后再上传下一个。"
T_BAD_FORM = "上传的内容无法识别，请用本页的表单上传文件。"
T_CHECKED = "已检查「{name}」：可导入 {accepted} 行，有问题 {rejected} 行，重复 {duplicates} 行。"
T_CHECKED_NEXT = "结果卡片已发到聊天中，请回到聊天确认导入或取消。"
T_CHECKING = "已收到「{name}」，正在检查。检查结果会发到聊天中，您可以关闭本页。"
T_REFUSED = "无法导入「{name}」：{reason}"
T_AGAIN = "修改后可以在本页重新上传。"

# The look every page the bot serves shares; a page adds its own rules after it.
STYLE = """body { font-family: -apple-system, "PingFang SC", "Microsoft YaHei", sans-serif;
  margin: 0; padding: 1.2em; background: #f5f6f8; color: #222; line-height: 1.6; }
main { max-width: 32em; margin: 0 auto; background: #fff; border-radius: 8px;
  padding: 1.2em; }
h1 { font-size: 1.3em; margin-top: 0; }
.note { padding: .6em .8em; border-radius: 6px; background: #eef6ee; }
.error { background: #fdecea; }
a { color: #1677ff; }
"""
PAGE = """<!doctype html>
<html lang="zh-CN"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
{style}</style></head>
<body><main><h1>{title}</h1>
{body}
</main></body></html>
"""
UPLOAD_STYLE = """input[type=file] { display: block; width: 100%; margin: 1em 0; font-size: 1em; }
button { width: 100%; padding: .8em; font-size: 1.05em; border: 0; border-radius: 6px;
  background: #1677ff; color: #fff; }
"""
FORM = """<p>{intro}</p>
<form method="post" enctype="multipart/form-data">
<label>{pick}<input type="file" name="file" accept=".xlsx,.csv" required></label>
<button type="submit">{send}</button>
</form>
<p><a href="{template}">{template_label}</a></p>
"""
# Nothing on these pages comes from another host, and no script runs.
HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": ("default-src 'none'; style-src 'unsafe-inline'; "
                                "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"),
}


# ---- tokens: pure functions ---------------------------------------------------------------


class BadLink(Exception):
    """A token that is forged, malformed or past its expiry."""

    def __init__(self, expired: bool = False) -> None:
        super().__init__("expired" if expired else "invalid")
        self.expired = expired


@dataclass(frozen=True, slots=True)
class LinkToken:
    member_id: int
    purpose: str  # upload | rejected | template | merge
    expires: int  # Unix seconds
    object_id: int | None = None  # the import (rejected), the merge proposal (merge)
    channel: str | None = None  # where the member asked: the answers go back there


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def encode_token(token: LinkToken, key: bytes) -> str:
    fields = (str(token.member_id), token.purpose, str(token.object_id or ""),
              token.channel or "", str(token.expires))
    payload = _b64(".".join(fields).encode("ascii"))
    return payload + "." + _b64(hmac.new(key, payload.encode("ascii"), hashlib.sha256).digest())


def decode_token(text: str, key: bytes, now: float, purpose: str) -> LinkToken:
    """The token's content once its signature, purpose and expiry are right."""
    payload, _, signature = text.partition(".")
    expected = _b64(hmac.new(key, payload.encode("ascii", "replace"), hashlib.sha256).digest())
    if not signature or not hmac.compare_digest(expected.encode(), signature.encode("ascii",
                                                                                   "replace")):
        raise BadLink()
    try:
        member, kind, object_id, channel, expires = _unb64(payload).decode("ascii").split(".")
        token = LinkToken(int(member), kind, int(expires), int(object_id) if object_id else None,
                          channel or None)
    except ValueError:
        raise BadLink() from None
    if token.purpose != purpose:
        raise BadLink()
    if token.expires <= now:
        raise BadLink(expired=True)
    return token


# ---- the signing key ----------------------------------------------------------------------

_KEYS: weakref.WeakKeyDictionary[Runtime, bytes] = weakref.WeakKeyDictionary()


def derive_key(stored: str, *secrets_set: str | None) -> bytes:
    """The HMAC key: the random value kept in the database, mixed with the app secrets
    from the settings, so neither a database copy nor the settings alone can sign links."""
    mixed = KEY_CONTEXT + b"\0" + b"\0".join(s.encode() for s in secrets_set if s)
    return hmac.new(_unb64(stored), mixed, hashlib.sha256).digest()


async def signing_key(session: AsyncSession, rt: Runtime) -> bytes:
    """The process's link key; the random half is created on first use (in `session`)."""
    cached = _KEYS.get(rt)
    if cached is not None:
        return cached
    row = await session.get(ConfigValue, KEY_NAME)
    fresh = row is None
    if row is None:
        dialect = sqlite if rt.is_sqlite else postgresql
        await session.execute(
            dialect.insert(ConfigValue)
            .values(key=KEY_NAME, value={"key": _b64(secrets.token_bytes(32))},
                    updated_at=rt.now())
            .on_conflict_do_nothing(index_elements=["key"]))
        row = await session.get(ConfigValue, KEY_NAME)
        assert row is not None
    settings = rt.settings
    key = derive_key(str(row.value["key"]), settings.wecom.secret,
                     settings.dingtalk.client_secret, settings.api.token)
    if not fresh:
        # A key created in this transaction is cached once it is read back committed.
        _KEYS[rt] = key
    return key


# ---- links ------------------------------------------------------------------------------


def public_url(rt: Runtime) -> str | None:
    return rt.settings.http.public_url


async def signed_token(
    session: AsyncSession, rt: Runtime, member_id: int, purpose: str, *,
    object_id: int | None = None, channel: str | None = None,
) -> str:
    """A token for `member_id` and `purpose`, valid for that purpose's lifetime."""
    expires = int((rt.now() + LIFETIMES[purpose]).timestamp())
    token = LinkToken(member_id, purpose, expires, object_id,
                      channel if channel in CHANNELS else None)
    return encode_token(token, await signing_key(session, rt))


async def read_token(
    session: AsyncSession, rt: Runtime, text: str, purpose: str
) -> LinkToken:
    """The token's content; raises BadLink when it is forged, for another purpose or
    expired."""
    return decode_token(text, await signing_key(session, rt), rt.now().timestamp(), purpose)


async def upload_link(session: AsyncSession, rt: Runtime, member: Member,
                      channel: str | None) -> str | None:
    """The member's upload page, or None when no public URL is set."""
    base = public_url(rt)
    if base is None:
        return None
    token = await signed_token(session, rt, member.id, "upload", channel=channel)
    return f"{base}/import/{token}"


async def rejected_link(session: AsyncSession, rt: Runtime, member_id: int,
                        import_id: int) -> str | None:
    base = public_url(rt)
    if base is None:
        return None
    token = await signed_token(session, rt, member_id, "rejected", object_id=import_id)
    return f"{base}/import/{token}/rejected.xlsx"


async def template_link(session: AsyncSession, rt: Runtime, member: Member) -> str | None:
    base = public_url(rt)
    if base is None:
        return None
    token = await signed_token(session, rt, member.id, "template")
    return f"{base}/import/template.xlsx?t={token}"


# ---- the pages --------------------------------------------------------------------------


def add_routes(app: web.Application) -> None:
    # The template first: "template.xlsx" would otherwise be taken for an upload token.
    app.router.add_get("/import/template.xlsx", template)
    app.router.add_get("/import/{token}", page)
    app.router.add_post("/import/{token}", upload)
    app.router.add_get("/import/{token}/rejected.xlsx", rejected)


def _runtime(request: web.Request) -> Runtime:
    from bot.app import RUNTIME

    return request.app[RUNTIME]


def _page(body: str, status: int = 200) -> web.Response:
    return web.Response(text=PAGE.format(title=T_PAGE_TITLE, body=body,
                                         style=STYLE + UPLOAD_STYLE), status=status,
                        content_type="text/html", charset="utf-8", headers=HEADERS)


def _note(text: str, error: bool = False) -> str:
    return f'<p class="note{" error" if error else ""}">{html.escape(text)}</p>'


def _refused(status: int, text: str) -> web.Response:
    return _page(_note(text, error=True), status=status)


async def _resolve(
    request: web.Request, purpose: str, text: str
) -> tuple[LinkToken, Member] | web.Response:
    """The token and its member, or the page that refuses the link (403)."""
    from handlers.import_chat import IMPORT_ROLES

    rt = _runtime(request)
    async with rt.sessions() as session, session.begin():
        key = await signing_key(session, rt)
        try:
            token = decode_token(text, key, rt.now().timestamp(), purpose)
        except BadLink as exc:
            log.info("import link refused: %s (%s)", exc, purpose)
            return _refused(403, T_EXPIRED if exc.expired else T_FORGED)
        member = await session.get(Member, token.member_id)
    if member is None or member.status == "left" or member.role not in IMPORT_ROLES:
        return _refused(403, T_NOT_ALLOWED)
    return token, member


async def _form(rt: Runtime, member: Member, token: LinkToken) -> str:
    """The upload form, with a template link of its own."""
    async with rt.sessions() as session, session.begin():
        template = await signed_token(session, rt, member.id, "template")
    template_url = f"/import/template.xlsx?t={template}"
    until = datetime.fromtimestamp(token.expires, rt.settings.zone).strftime("%H:%M")
    intro = T_INTRO.format(name=member.name, mb=MAX_UPLOAD_BYTES // (1024 * 1024), until=until)
    return FORM.format(intro=html.escape(intro), pick=T_PICK, send=T_SEND,
                       template=html.escape(template_url), template_label=T_TEMPLATE)


async def page(request: web.Request) -> web.Response:
    """GET /import/{token}: the upload form."""
    found = await _resolve(request, "upload", request.match_info["token"])
    if isinstance(found, web.Response):
        return found
    token, member = found
    return _page(await _form(_runtime(request), member, token))


async def upload(request: web.Request) -> web.Response:
    """POST /import/{token}: one file, read up to the limit, then checked."""
    found = await _resolve(request, "upload", request.match_info["token"])
    if isinstance(found, web.Response):
        return found
    token, member = found
    rt = _runtime(request)
    form = await _form(rt, member, token)
    limit_mb = MAX_UPLOAD_BYTES // (1024 * 1024)
    if request.content_length is not None and (
            request.content_length > MAX_UPLOAD_BYTES + MULTIPART_SLACK):
        return _page(_note(T_TOO_LARGE.format(mb=limit_mb), error=True) + form, status=413)
    if member.id in _uploading:
        # One file at a time per member: received, spooled and checked before the next.
        return _page(_note(T_BUSY, error=True) + form, status=429)
    _uploading.add(member.id)
    checking = False
    try:
        try:
            received = await _read_file(request)
        except _TooLarge:
            return _page(_note(T_TOO_LARGE.format(mb=limit_mb), error=True) + form,
                         status=413)
        except (ValueError, AssertionError):
            return _page(_note(T_BAD_FORM, error=True) + form, status=400)
        if received is None:
            return _page(_note(T_NO_FILE, error=True) + form, status=400)
        filename, path, size = received
        if not size:
            await asyncio.to_thread(path.unlink, missing_ok=True)
            return _page(_note(T_EMPTY, error=True) + form, status=400)
        checking = True
        return await _checked_page(rt, member, token, filename, path, form)
    finally:
        if not checking:
            _uploading.discard(member.id)


# Members whose upload is being received or checked by this process.
# Limitation: per process; behind a load balancer each process takes one at a time.
_uploading: set[int] = set()


class _TooLarge(Exception):
    pass


def spool_file(filename: str) -> tuple[Path, IO[bytes]]:
    """A new file in the spool, open for writing (readable by this user only)."""
    SPOOL_DIR.mkdir(mode=0o700, exist_ok=True)
    suffix = Path(filename).suffix.lower()[:10]
    handle = tempfile.NamedTemporaryFile(dir=SPOOL_DIR, prefix="upload-", suffix=suffix,
                                         delete=False)
    return Path(handle.name), handle


def spool_bytes(data: bytes, filename: str) -> Path:
    """`data` written to the spool (blocking: call it in a thread)."""
    path, handle = spool_file(filename)
    with handle:
        handle.write(data)
    return path


async def clean_spool(rt: Runtime) -> int:
    """Spooled uploads older than SPOOL_KEEP: left by a process killed before its worker
    read them. For the sweep; returns how many were deleted."""
    def clean() -> int:
        deleted = 0
        cutoff = time.time() - SPOOL_KEEP.total_seconds()
        for path in SPOOL_DIR.glob("upload-*") if SPOOL_DIR.is_dir() else ():
            try:
                if path.stat().st_mtime < cutoff:
                    path.unlink()
                    deleted += 1
            except OSError:
                continue  # taken by a worker meanwhile
        return deleted

    return await asyncio.to_thread(clean)


async def _read_file(request: web.Request) -> tuple[str, Path, int] | None:
    """The `file` part of the form, spooled to disk in chunks and refused past the limit:
    its name, where it is and its size.

    The app's client_max_size does not apply to a multipart reader, so the limit is ours.
    A body that is no multipart form (none at all, or urlencoded) raises ValueError.
    """
    if not request.content_type.startswith("multipart/"):
        raise ValueError(f"not a multipart form: {request.content_type}")
    reader = await request.multipart()
    while True:
        part = await reader.next()
        if part is None:
            return None
        if not isinstance(part, BodyPartReader) or part.name != "file":
            continue
        name = _file_name(part.filename)
        path, handle = await asyncio.to_thread(spool_file, name)
        size = 0
        try:
            with handle:
                while chunk := await part.read_chunk(READ_CHUNK):
                    size += len(chunk)
                    if size > MAX_UPLOAD_BYTES:
                        raise _TooLarge()
                    await asyncio.to_thread(handle.write, chunk)
        except BaseException:
            await asyncio.to_thread(path.unlink, missing_ok=True)
            raise
        return name, path, size


def _file_name(sent: str | None) -> str:
    """The file's own name: browsers send it as UTF-8, some clients percent-encoded; a
    path some old browsers include is dropped."""
    name = sent or ""
    if re.search(r"%[0-9A-Fa-f]{2}", name):
        try:
            name = unquote(name, errors="strict")
        except UnicodeDecodeError:
            pass
    name = name.replace("\\", "/").rsplit("/", 1)[-1].strip()
    return name[:200] or "upload"


async def _checked_page(
    rt: Runtime, member: Member, token: LinkToken, filename: str, path: Path, form: str,
) -> web.Response:
    from handlers.import_chat import check_and_report

    task = rt.spawn(check_and_report(rt, member.id, path, filename, token.channel),
                    name=f"import-check-{member.id}")
    member_id = member.id
    task.add_done_callback(lambda _task: _uploading.discard(member_id))
    try:
        outcome = await asyncio.wait_for(asyncio.shield(task), PAGE_WAIT_SECONDS)
    except TimeoutError:
        return _page(_note(T_CHECKING.format(name=filename)))
    if outcome.error is not None:
        refused = T_REFUSED.format(name=filename, reason=outcome.error)
        return _page(_note(refused, error=True) + f"<p>{T_AGAIN}</p>" + form, status=422)
    report = outcome.report
    assert report is not None
    checked = T_CHECKED.format(name=filename, accepted=report.accepted,
                               rejected=len({r.get("row") for r in report.rejected}),
                               duplicates=len(report.duplicates))
    return _page(_note(checked) + f"<p>{T_CHECKED_NEXT}</p>")


def _download(data: bytes, filename: str) -> web.Response:
    headers = dict(HEADERS)
    headers["Content-Disposition"] = f"attachment; filename*=UTF-8''{quote(filename)}"
    return web.Response(body=data, content_type=XLSX, headers=headers)


async def rejected(request: web.Request) -> web.Response:
    """GET /import/{token}/rejected.xlsx: the rows that were not imported, with reasons."""
    from handlers import lead_import

    found = await _resolve(request, "rejected", request.match_info["token"])
    if isinstance(found, web.Response):
        return found
    token, member = found
    rt = _runtime(request)
    async with rt.sessions() as session:
        imp = await session.get(LeadImport, token.object_id) if token.object_id else None
    if imp is None:
        return _refused(404, T_NO_IMPORT)
    if imp.actor_id != member.id and member.role != "admin":
        return _refused(403, T_NOT_YOUR_IMPORT)
    rows = await lead_import.stored_rejected_rows(rt, imp.id)
    # Building a workbook of thousands of rows takes a while: not on the event loop.
    data = await asyncio.to_thread(lead_import.rejected_rows_xlsx, rows)
    return _download(data, REJECTED_NAME.format(id=imp.id))


async def template(request: web.Request) -> web.Response:
    """GET /import/template.xlsx?t=…: the import template."""
    from handlers import lead_import

    found = await _resolve(request, "template", request.query.get("t", ""))
    if isinstance(found, web.Response):
        return found
    data = await asyncio.to_thread(lead_import.template_bytes, "xlsx")
    return _download(data, TEMPLATE_NAME)
