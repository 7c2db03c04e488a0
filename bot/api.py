"""The intake HTTP API (/api/v1): other systems post leads here."""

from __future__ import annotations

from aiohttp import web


def add_routes(app: web.Application) -> None:
    return None
