"""What every channel adapter offers the runtime: addressing a member and delivering.

A channel translates only; it knows nothing of leads. Inbound, it records events
through the Inbox; outbound, the outbox worker hands it one Parcel at a time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from aiohttp import web

from cards.model import CardModel


class CallbackError(Exception):
    """An inbound callback we refuse, with the HTTP status that tells the platform why."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(slots=True)
class Parcel:
    """One outbox row, resolved: the kind, the platform address and the content."""

    outbox_id: int
    kind: str  # text | markdown | card | card_update
    address: str  # platform user id, or a group's webhook / conversation id
    is_group: bool
    payload: dict[str, Any]
    dedupe_key: str
    card: CardModel | None = None
    card_ref: str | None = None
    response_code: str | None = None
    mentions: list[str] = field(default_factory=list)  # platform user ids to @-mention
    mention_names: dict[str, str] = field(default_factory=dict)  # user id → display name


@dataclass(slots=True)
class Delivery:
    ok: bool
    # Retry later (rate limit, 5xx, busy); None with ok=False means give up now.
    retry_after: float | None = None
    error: str | None = None
    response_code: str | None = None
    # Users the platform refused although the call succeeded (WeCom invaliduser).
    refused: list[str] = field(default_factory=list)

    @classmethod
    def sent(cls, response_code: str | None = None) -> Delivery:
        return cls(ok=True, response_code=response_code)

    @classmethod
    def retry(cls, error: str, after: float = 5.0) -> Delivery:
        return cls(ok=False, retry_after=after, error=error)

    @classmethod
    def failed(cls, error: str) -> Delivery:
        return cls(ok=False, error=error)


@dataclass(slots=True, frozen=True)
class Budget:
    """Messages one recipient may get from us: kept under the platform's own limits."""

    per_minute: int | None
    per_hour: int | None


class Channel(Protocol):
    name: str
    budget: Budget
    group_budget: Budget

    def address_of(self, member: Any) -> str | None:
        """The member's id on this platform, or None when the member has none."""

    def group_address(self, team: str | None) -> str | None:
        """The team channel's address on this platform, or None."""

    def add_routes(self, app: web.Application) -> None:
        """Register the inbound HTTP routes, if the channel has any."""

    async def start(self, app: web.Application) -> None:
        """Open sessions or connections; called once the app runs."""

    async def stop(self) -> None: ...

    async def deliver(self, parcel: Parcel) -> Delivery: ...
