"""The console channel: members chat in the terminal or the web simulator.

Delivery stores nothing extra: the simulator and the terminal read the outbox rows
addressed to the member (and each card's current state) from the database.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from typing import Any

from aiohttp import web

from bot.channels.base import Budget, Delivery, Parcel

log = logging.getLogger(__name__)


class ConsoleChannel:
    name = "console"
    budget = Budget(per_minute=None, per_hour=None)
    group_budget = Budget(per_minute=None, per_hour=None)

    def __init__(self) -> None:
        # Listeners waiting for a member's next message (the simulator's long poll).
        self._listeners: dict[str, set[asyncio.Event]] = defaultdict(set)

    def address_of(self, member: Any) -> str | None:
        return member.name

    def group_address(self, team: str | None) -> str | None:
        return f"team:{team or ''}"

    def add_routes(self, app: web.Application) -> None:
        return None

    async def start(self, app: web.Application) -> None:
        return None

    async def stop(self) -> None:
        return None

    def listen(self, address: str) -> asyncio.Event:
        flag = asyncio.Event()
        self._listeners[address].add(flag)
        return flag

    def unlisten(self, address: str, flag: asyncio.Event) -> None:
        self._listeners[address].discard(flag)

    async def deliver(self, parcel: Parcel) -> Delivery:
        for flag in list(self._listeners.get(parcel.address, ())):
            flag.set()
        for flag in list(self._listeners.get("*", ())):
            flag.set()
        return Delivery.sent()
