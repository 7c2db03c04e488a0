"""Operations: health, metrics, one log line per event, phones masked in logs."""

from __future__ import annotations

import logging

from bot.cli import MaskingFilter


async def test_healthz_answers_once_the_database_does(app_client):
    response = await app_client.get("/healthz")
    assert response.status == 200
    body = await response.json()
    assert body["status"] == "ok" and body["database"] == "up" and body["alerts"] == []


async def test_metrics_show_outbox_depth_and_events(chat, app_client):
    await chat.add_members({"name": "王芳", "role": "rep"})
    await chat.say("王芳", "/帮助")
    text = await (await app_client.get("/metrics")).text()
    assert 'salesbot_events_total{channel="console",kind="text",outcome="ok"} 1.0' in text
    assert 'salesbot_outbox_sent_total{channel="console",kind="text"} 1.0' in text
    assert 'salesbot_outbox_depth{state="failed"} 0.0' in text
    assert "salesbot_leads_queued 0.0" in text


async def test_one_log_line_per_event_with_id_kind_outcome_and_time(chat, caplog):
    await chat.add_members({"name": "王芳", "role": "rep"})
    with caplog.at_level(logging.INFO, logger="salesbot.events"):
        await chat.say("王芳", "胡言乱语")
    [line] = [r.getMessage() for r in caplog.records if r.name == "salesbot.events"]
    assert line.startswith("event id=1 channel=console kind=text outcome=not_understood ms=")


def test_phone_numbers_are_masked_in_log_lines():
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "lead from %s", ("13800005678",),
                               None)
    MaskingFilter().filter(record)
    assert record.getMessage() == "lead from 138****5678"
