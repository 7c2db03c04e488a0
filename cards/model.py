"""The neutral card: title, fields, buttons with `<action>:<object id>` keys, mentions.

Renderers in this package turn it into a WeCom template_card, a DingTalk card or text;
the model itself knows no platform.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

ACTIONS = frozenset({
    "accept", "decline", "transfer", "approve", "reject", "merge", "notdup", "link",
    "create", "tags", "import", "cancel", "reassign",
})

Style = Literal["primary", "default", "danger"]


@dataclass(slots=True)
class Button:
    label: str
    key: str
    style: Style = "default"

    def __post_init__(self) -> None:
        action, _, object_id = self.key.partition(":")
        if action not in ACTIONS or not object_id:
            raise ValueError(f"bad button key {self.key!r}")


@dataclass(slots=True)
class CardField:
    label: str
    value: str
    # A link behind the value (a download, a page): each renderer shows it its own way.
    url: str | None = None


@dataclass(slots=True)
class CardModel:
    title: str
    kind: str
    object_id: int | None = None
    description: str = ""
    fields: list[CardField] = field(default_factory=list)
    buttons: list[Button] = field(default_factory=list)
    # After a click: who did what and when; the buttons are gone.
    status: str | None = None
    mentions: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CardModel:
        data = dict(data)
        data["fields"] = [CardField(**f) for f in data.get("fields") or []]
        data["buttons"] = [Button(**b) for b in data.get("buttons") or []]
        return cls(**data)

    def closed(self, status: str) -> CardModel:
        """The same card after a decision: fields kept, buttons removed, status shown."""
        return CardModel(
            title=self.title, kind=self.kind, object_id=self.object_id,
            description=self.description, fields=list(self.fields), buttons=[],
            status=status, mentions=list(self.mentions),
        )


def parse_key(key: str) -> tuple[str, str, str | None]:
    """`decline:12:2` → ("decline", "12", "2"); the option part is optional."""
    action, _, rest = key.partition(":")
    object_id, _, option = rest.partition(":")
    return action, object_id, option or None
