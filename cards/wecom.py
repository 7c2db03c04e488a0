"""The WeCom renderer: a CardModel as a `button_interaction` template_card.

It builds the `template_card` object for message/send and for update_template_card;
the channel (bot.channels.wecom) owns the rest of each call.
"""

from __future__ import annotations

from typing import Any

from cards.model import CardField, CardModel

# Limits from the template_card reference (developer.work.weixin.qq.com/document/path/90236):
# at most 6 buttons and 6 horizontal items; the lengths are the documented
# recommendations, past which the client cuts the text itself.
MAX_BUTTONS = 6
MAX_ITEMS = 6
TITLE_CHARS = 26
SUBTITLE_CHARS = 112
KEYNAME_CHARS = 5
VALUE_CHARS = 26
BUTTON_CHARS = 10
REPLACE_CHARS = 24

# WeCom draws button styles 1-4; 1 is the prominent blue, 3 the red one.
STYLES = {"primary": 1, "default": 2, "danger": 3}
CLOSED_STYLE = 4

T_DONE = "已处理"


def clip(text: str, limit: int) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def template_card(card: CardModel, task_id: str) -> dict[str, Any]:
    """The card as sent: title, description, fields and its buttons.

    A card sent already decided (no buttons) looks like a closed one: a button_interaction
    card needs at least one button.
    """
    if not card.buttons:
        return updated_template_card(card, task_id)
    body = _content(card, task_id)
    body["button_list"] = [
        {"text": clip(b.label, BUTTON_CHARS), "style": STYLES.get(b.style, 2), "key": b.key}
        for b in card.buttons[:MAX_BUTTONS]
    ]
    return body


def updated_template_card(card: CardModel, task_id: str) -> dict[str, Any]:
    """The card after a decision, for update_template_card.

    A card that still has buttons is sent as it is now. A closed card shows its status
    (who did what, when) at the top, and `replace_text` turns the buttons into one
    grey button that cannot be clicked, labelled with the status.
    """
    if card.buttons:
        return template_card(card, task_id)
    status = card.status or T_DONE
    body = _content(card, task_id, status=status)
    body["button_list"] = [
        {"text": clip(status, BUTTON_CHARS), "style": CLOSED_STYLE, "key": f"closed:{task_id}"}
    ]
    body["replace_text"] = clip(status, REPLACE_CHARS)
    return body


def _content(card: CardModel, task_id: str, status: str | None = None) -> dict[str, Any]:
    shown, rest = card.fields[:MAX_ITEMS], card.fields[MAX_ITEMS:]
    lines = [f"✔ {status}"] if status else []
    if card.description:
        lines.append(card.description)
    lines.extend(f"{f.label}：{f.value}" for f in rest)
    body: dict[str, Any] = {
        "card_type": "button_interaction",
        "main_title": {"title": clip(card.title, TITLE_CHARS)},
        "task_id": task_id,
    }
    if lines:
        body["sub_title_text"] = clip("\n".join(lines), SUBTITLE_CHARS)
    if shown:
        body["horizontal_content_list"] = [_item(f) for f in shown]
    return body


def _item(item: CardField) -> dict[str, Any]:
    """A horizontal item; one with a link is `type` 1, opened by a tap (doc 90236)."""
    shown: dict[str, Any] = {"keyname": clip(item.label, KEYNAME_CHARS),
                             "value": clip(item.value or "-", VALUE_CHARS)}
    if item.url:
        shown |= {"type": 1, "url": item.url}
    return shown
