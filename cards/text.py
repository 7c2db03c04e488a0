"""Plain-text rendering of a card for the console and for platforms without cards."""

from __future__ import annotations

from cards.model import CardModel


def render_text(card: CardModel) -> str:
    lines = [f"【{card.title}】"]
    if card.description:
        lines.append(card.description)
    lines.extend(f"{f.label}：{f.value}" + (f" {f.url}" if f.url else "") for f in card.fields)
    if card.status:
        lines.append(f"✔ {card.status}")
    for number, button in enumerate(card.buttons, start=1):
        lines.append(f"[{number}] {button.label}")
    return "\n".join(lines)
