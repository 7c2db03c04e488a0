"""The web chat simulator at /sim (loopback only unless enabled in the settings)."""

from __future__ import annotations

from aiohttp import web


def add_routes(app: web.Application) -> None:
    return None
