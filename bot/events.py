"""The platform-neutral inbound event that every channel adapter produces.

Handlers see only this; WeCom XML and DingTalk JSON stop at the channel adapters.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

EventKind = Literal[
    "text", "image", "voice", "video", "file", "location", "link",
    "card_action", "enter", "location_report", "system", "unsupported",
]


@dataclass(slots=True)
class Location:
    lat: float
    lng: float
    accuracy: float | None = None
    label: str | None = None
    # WeCom sends Tencent-map (GCJ-02) coordinates in location messages.
    datum: str = "gcj02"


@dataclass(slots=True)
class Mention:
    """A colleague @-mentioned in the message (DingTalk); WeCom app chats have none."""

    platform_id: str
    name: str | None = None


@dataclass(slots=True)
class Event:
    channel: str
    kind: EventKind
    sender: str
    key: str
    text: str = ""
    media_id: str | None = None
    media_format: str | None = None
    location: Location | None = None
    link_url: str | None = None
    action: str | None = None
    card_ref: str | None = None
    response_code: str | None = None
    mentions: list[Mention] = field(default_factory=list)
    conversation: str | None = None
    is_group: bool = False
    created_at: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Event:
        data = dict(data)
        if data.get("location"):
            data["location"] = Location(**data["location"])
        data["mentions"] = [Mention(**m) for m in data.get("mentions") or []]
        return cls(**data)
