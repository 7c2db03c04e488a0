"""The DingTalk renderer: a CardModel as the interactive card template's data, or markdown.

It builds the `cardParamMap` of the template shipped in config/dingtalk_card_template.json
and, when no template id is configured, a markdown message whose actions are commands;
the channel (bot.channels.dingtalk) owns the API calls.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import quote

from cards.model import ACTIONS, CardField, CardModel

TEMPLATE_FILE = Path(__file__).resolve().parent.parent / "config" / "dingtalk_card_template.json"

# The card platform takes every cardParamMap value as a string; lists go as JSON text
# (open.dingtalk.com "create and deliver cards": cardData.cardParamMap is Map<String,String>).
MAX_BUTTONS = 6
TITLE_CHARS = 40
MARKDOWN_TITLE_CHARS = 20

# The template colours its buttons by name.
COLORS = {"primary": "blue", "default": "gray", "danger": "red"}

T_DONE = "已处理"
T_HOW_TO_ACT = "点上面的操作，或回复括号里的整段文字。"

# A tapped markdown action sends "<label> (<key>)" as the member's own message; the
# channel reads such a message back as the click it stands for.
_ACTION_TEXT = re.compile(
    # The option is a number (decline:12:2) or a field=value pair (tags:12:urgency=high).
    r"^(?P<label>[^()]{0,20}?)\s*\(\s*(?P<key>[a-z]+:\d+(?::[a-z_]+=[A-Za-z0-9_-]+|:\d+)?)\s*\)$"
)


def clip(text: str, limit: int) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _value(item: CardField) -> str:
    return f"[{item.value or item.url}]({item.url})" if item.url else (item.value or "-")


def _body(card: CardModel) -> str:
    """Description and fields as the card's markdown body."""
    lines = []
    if card.description:
        lines.append(card.description)
    lines.extend(f"**{f.label}**：{_value(f)}" for f in card.fields)
    return "  \n".join(lines)


def card_data(card: CardModel) -> dict[str, str]:
    """The template variables for this card, as the card platform takes them."""
    closed = not card.buttons
    buttons = [
        {"text": b.label, "color": COLORS.get(b.style, "gray"), "action": b.key}
        for b in card.buttons[:MAX_BUTTONS]
    ]
    return {
        "title": clip(card.title, TITLE_CHARS),
        "content": _body(card),
        "status": (card.status or T_DONE) if closed else (card.status or ""),
        "closed": "true" if closed else "false",
        "buttons": json.dumps(buttons, ensure_ascii=False),
    }


def notice_data(title: str, content: str) -> dict[str, str]:
    """A message without buttons (a team notice) as the template's variables: no status
    line, no button area."""
    return {"title": clip(title, TITLE_CHARS), "content": content, "status": "",
            "closed": "true", "buttons": "[]"}


def action_text(label: str, key: str) -> str:
    """The message that stands for a click on the button `key`."""
    return f"{label} ({key})"


def parse_action_text(text: str) -> str | None:
    """The button key a message like "接受 (accept:12)" stands for, or None."""
    match = _ACTION_TEXT.match(text.strip())
    if match is None:
        return None
    key = match.group("key")
    return key if key.partition(":")[0] in ACTIONS else None


def markdown(card: CardModel) -> tuple[str, str]:
    """(title, text) of the card as a markdown message whose actions are commands.

    Each action is a `dtmd://dingtalkclient/sendMessage` link: tapping it sends the
    action's text as the member's own message, which the channel reads as the click.
    """
    lines = [f"#### {card.title}"]
    body = _body(card)
    if body:
        lines.append(body)
    if card.status:
        lines.append(f"✔ {card.status}")
    if card.buttons:
        links = []
        for button in card.buttons:
            command = action_text(button.label, button.key)
            links.append(f"[{button.label}](dtmd://dingtalkclient/sendMessage?content="
                         f"{quote(command, safe='')})")
        lines.append(" · ".join(links))
        lines.append(T_HOW_TO_ACT + " " + "；".join(
            f"「{action_text(b.label, b.key)}」" for b in card.buttons))
    return clip(card.title, MARKDOWN_TITLE_CHARS), "\n\n".join(lines)


def template_variables() -> set[str]:
    """The variables the shipped template declares (kept in step with card_data)."""
    definition = json.loads(TEMPLATE_FILE.read_text(encoding="utf-8"))
    return {variable["name"] for variable in definition["variables"]}
