"""The DingTalk renderer: the template's data, the shipped template, markdown actions."""

from __future__ import annotations

import json
from urllib.parse import unquote

from bot.channels.dingtalk import message_event
from cards.dingtalk import (
    MAX_BUTTONS,
    TEMPLATE_FILE,
    action_text,
    card_data,
    markdown,
    parse_action_text,
    template_variables,
)
from cards.model import Button, CardField, CardModel
from tests.fakes.dingtalk import FakeDingTalk


def lead_card() -> CardModel:
    return CardModel(
        title="新线索 #12", kind="lead", object_id=12, description="轮流分配：您在岗",
        fields=[CardField("公司", "深圳示例科技有限公司"), CardField("联系人", "张伟"),
                CardField("电话", "138****1234")],
        buttons=[Button("接受", "accept:12", "primary"), Button("拒绝", "decline:12", "danger"),
                 Button("转给同事", "transfer:12")],
    )


def test_the_template_data_is_strings_with_buttons_as_json_text():
    data = card_data(lead_card())
    assert all(isinstance(value, str) for value in data.values())
    assert data["title"] == "新线索 #12" and data["closed"] == "false" and data["status"] == ""
    assert "**公司**：深圳示例科技有限公司" in data["content"]
    assert json.loads(data["buttons"]) == [
        {"text": "接受", "color": "blue", "action": "accept:12"},
        {"text": "拒绝", "color": "red", "action": "decline:12"},
        {"text": "转给同事", "color": "gray", "action": "transfer:12"},
    ]


def test_a_closed_card_shows_who_did_what_and_no_buttons():
    data = card_data(lead_card().closed("王芳 已于 12-02 10:00 接受"))
    assert data["closed"] == "true" and json.loads(data["buttons"]) == []
    assert data["status"] == "王芳 已于 12-02 10:00 接受"
    assert "深圳示例科技有限公司" in data["content"]


def test_at_most_six_buttons_are_drawn():
    card = CardModel(title="t", kind="decline", object_id=1,
                     buttons=[Button(f"原因{n}", f"decline:1:{n}") for n in range(1, 9)])
    assert len(json.loads(card_data(card)["buttons"])) == MAX_BUTTONS


def test_the_shipped_template_declares_every_variable_the_renderer_fills():
    assert set(card_data(lead_card())) == template_variables()
    definition = json.loads(TEMPLATE_FILE.read_text(encoding="utf-8"))
    assert set(definition["sample"]) == template_variables()
    buttons = next(c for c in definition["components"] if c.get("loop_over"))
    assert buttons["button"]["on_click"]["params"] == {"action": "${loop.action}"}


def test_markdown_actions_are_commands_that_come_back_as_clicks():
    title, text = markdown(lead_card())
    assert title == "新线索 #12" and text.startswith("#### 新线索 #12")
    assert "**联系人**：张伟" in text
    assert "「接受 (accept:12)」" in text
    links = [part.split("content=")[1].rstrip(")") for part in text.split("](")[1:]]
    commands = [unquote(link.split(")")[0]) for link in links]
    assert commands == ["接受 (accept:12)", "拒绝 (decline:12)", "转给同事 (transfer:12)"]
    sent = FakeDingTalk().text("wangfang", commands[1])
    event = message_event(sent)
    assert (event.kind, event.action) == ("card_action", "decline:12")


def test_a_closed_markdown_card_has_its_status_and_no_actions():
    _, text = markdown(lead_card().closed("王芳 已于 12-02 10:00 接受"))
    assert "✔ 王芳 已于 12-02 10:00 接受" in text and "dtmd://" not in text


def test_action_texts_round_trip_and_unknown_actions_do_not():
    for button in lead_card().buttons:
        assert parse_action_text(action_text(button.label, button.key)) == button.key
    assert parse_action_text("好 (hello:12)") is None
    assert parse_action_text("(accept:12)") == "accept:12"
