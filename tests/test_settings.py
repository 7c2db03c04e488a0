"""Settings: defaults < TOML < environment, and one clear line for anything wrong."""

from __future__ import annotations

import subprocess
import sys

import pytest

from config.settings import SettingsError, load_settings

KEY = "hDAEYqL62pBum9BIy2ewA5s02KGvdiP4TLqi58G5tLS"


def test_defaults_match_the_contract(monkeypatch):
    s = load_settings()
    assert s.database.url == "sqlite+aiosqlite:///data/salesbot.db"
    assert (s.http.host, s.http.port, s.timezone) == ("127.0.0.1", 8080, "Asia/Shanghai")
    assert (s.leads.accept_minutes, s.leads.sla_working_hours, s.leads.pool_working_days) == (
        30, 2, 7)
    assert s.leads.max_open_leads is None and s.api.token is None
    assert s.wecom.api_base == "https://qyapi.weixin.qq.com" and not s.wecom.enabled
    assert s.dingtalk.mode == "stream" and s.voice.model == "small"
    assert s.sim_enabled


def test_toml_is_overridden_by_the_environment(tmp_path, monkeypatch):
    config = tmp_path / "salesbot.toml"
    config.write_text(
        '[http]\nport = 9000\nhost = "0.0.0.0"\n[leads]\naccept_minutes = 45\n'
        '[teams."华南"]\nwecom_webhook = "http://127.0.0.1:1/cgi-bin/webhook/send?key=k"\n',
        encoding="utf-8",
    )
    monkeypatch.setenv("SALESBOT_HTTP__PORT", "9100")
    s = load_settings(config)
    assert (s.http.port, s.http.host, s.leads.accept_minutes) == (9100, "0.0.0.0", 45)
    assert s.teams["华南"].wecom_webhook.endswith("key=k")
    assert not s.sim_enabled  # not on a loopback address


def test_a_half_set_wecom_names_what_is_missing(monkeypatch):
    monkeypatch.setenv("SALESBOT_WECOM__CORP_ID", "ww0123456789abcdef")
    monkeypatch.setenv("SALESBOT_WECOM__AES_KEY", KEY)
    with pytest.raises(SettingsError) as error:
        load_settings()
    message = str(error.value)
    assert "\n" not in message
    assert "SALESBOT_WECOM__AGENT_ID, SALESBOT_WECOM__SECRET, SALESBOT_WECOM__TOKEN" in message


@pytest.mark.parametrize(("name", "value", "expected"), [
    ("SALESBOT_HTTP__PORT", "eighty", "SALESBOT_HTTP__PORT"),
    ("SALESBOT_TIMEZONE", "Mars/Base", "unknown timezone"),
    ("SALESBOT_LEADS__WORKING_HOURS", "18:00-09:00", "the end must be after the start"),
    ("SALESBOT_LEADS__MAX_OPEN_LEADS", "-3", "SALESBOT_LEADS__MAX_OPEN_LEADS"),
    ("SALESBOT_DATABASE__URL", "mysql://x", "sqlite+aiosqlite"),
    ("SALESBOT_WECOM__AES_KEY", "short", "43 characters"),
])
def test_malformed_values_are_refused_with_their_name(monkeypatch, name, value, expected):
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as error:
        load_settings()
    assert expected in str(error.value)


def test_a_broken_toml_file_is_one_line(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[http\nport=", encoding="utf-8")
    with pytest.raises(SettingsError, match="is not valid TOML"):
        load_settings(bad)
    with pytest.raises(SettingsError, match="config file not found"):
        load_settings(tmp_path / "missing.toml")


def test_serve_stops_at_start_up_with_one_line(tmp_path):
    env = {"SALESBOT_WECOM__CORP_ID": "ww0123456789abcdef", "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "-m", "bot.cli", "serve"], env=env, capture_output=True, text=True,
        timeout=60, cwd=tmp_path,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("salesbot: invalid settings: SALESBOT_WECOM")


def test_a_misspelt_setting_is_refused_not_ignored(tmp_path, monkeypatch):
    monkeypatch.setenv("SALESBOT_LEADS__NOSUCH", "1")
    with pytest.raises(SettingsError, match="SALESBOT_LEADS__NOSUCH: unknown setting"):
        load_settings()
    monkeypatch.delenv("SALESBOT_LEADS__NOSUCH")
    config = tmp_path / "s.toml"
    config.write_text('[teams."华南"]\nwecom_webhok = "http://127.0.0.1:1/x"\n', "utf-8")
    with pytest.raises(SettingsError, match="unknown setting"):
        load_settings(config)


@pytest.mark.parametrize(("name", "value"), [
    ("SALESBOT_WECOM__API_BASE", "ftp://example"),
    ("SALESBOT_WECOM__GROUP_WEBHOOK", "not a url"),
])
def test_urls_must_be_http(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match="http:// or https://"):
        load_settings()
