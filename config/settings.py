"""The one Settings object: defaults < TOML file (--config) < SALESBOT_* environment.

It owns loading and validating settings; it does not hold the live values that admins
change by command (those live in the database and arrive with the admin commands).
"""

from __future__ import annotations

import ipaddress
import re
from datetime import time
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel as _BaseModel
from pydantic import ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)


class BaseModel(_BaseModel):
    """A settings group: a misspelt key is an error, not silently ignored."""

    model_config = ConfigDict(extra="forbid")


def _http_url(value: str) -> str:
    if not re.match(r"^https?://[^\s/]+", value or ""):
        raise ValueError("must be an http:// or https:// URL")
    return value.rstrip("/")


class SettingsError(Exception):
    """A setting is missing, malformed or half-set; the message is one line."""


class HttpSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    public_url: str | None = None
    max_body_bytes: int = Field(1_048_576, ge=1024)

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if not re.match(r"^https?://[^\s/]+", value):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")

    @property
    def is_loopback(self) -> bool:
        if self.host in ("localhost", ""):
            return self.host == "localhost"
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


class DatabaseSettings(BaseModel):
    url: str = "sqlite+aiosqlite:///data/salesbot.db"

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
            raise ValueError("must be sqlite+aiosqlite:///… or postgresql+asyncpg://…")
        return value


class WorkingHours(BaseModel):
    start: time
    end: time


def parse_working_hours(text: str) -> WorkingHours:
    """`09:00-18:00` → WorkingHours; the end must be after the start."""
    match = re.fullmatch(r"\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*", text)
    if not match:
        raise ValueError("must look like 09:00-18:00")
    h1, m1, h2, m2 = (int(g) for g in match.groups())
    if h1 > 23 or h2 > 24 or m1 > 59 or m2 > 59 or (h2 == 24 and m2):
        raise ValueError("hours 00-24, minutes 00-59")
    start = time(h1, m1)
    end = time(23, 59, 59) if h2 == 24 else time(h2, m2)
    if end <= start:
        raise ValueError("the end must be after the start")
    return WorkingHours(start=start, end=end)


class LeadSettings(BaseModel):
    working_hours: str = "09:00-18:00"
    max_open_leads: int | None = Field(None, ge=0)
    accept_minutes: int = Field(30, ge=1)
    sla_working_hours: float = Field(2, gt=0)
    pool_working_days: int = Field(7, ge=1)
    max_reroutes: int = Field(3, ge=1)
    # The weekly assignment analysis flags a rep or rule below either share (in %).
    analysis_contact_percent: int = Field(85, ge=0, le=100)
    analysis_conversion_percent: int = Field(22, ge=0, le=100)
    industries: dict[str, str] = {"industrial": "工业", "medical": "医疗", "education": "教育"}
    sources: dict[str, str] = {"expo": "展会", "sem": "SEM", "referral": "转介绍"}
    # The engine's weights (load, conversion, online), whole numbers summing to 100;
    # /权重 sets the live value.
    weights: dict[str, int] = {"load": 30, "conversion": 40, "online": 30}

    @field_validator("weights")
    @classmethod
    def _weights(cls, value: dict[str, int]) -> dict[str, int]:
        if set(value) != {"load", "conversion", "online"}:
            raise ValueError("give load, conversion and online")
        if any(v < 0 for v in value.values()) or sum(value.values()) != 100:
            raise ValueError("whole numbers >= 0 that sum to 100")
        return value

    @field_validator("working_hours")
    @classmethod
    def _hours(cls, value: str) -> str:
        parse_working_hours(value)
        return value

    @field_validator("max_open_leads", mode="before")
    @classmethod
    def _empty_cap(cls, value: Any) -> Any:
        return None if value == "" else value

    @property
    def hours(self) -> WorkingHours:
        return parse_working_hours(self.working_hours)


class ApiSettings(BaseModel):
    token: str | None = None

    @field_validator("token")
    @classmethod
    def _token(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if len(value) < 16:
            raise ValueError("must be at least 16 characters")
        return value


def _all_or_nothing(name: str, model: BaseModel, required: tuple[str, ...]) -> None:
    given = [f for f in required if getattr(model, f) not in (None, "")]
    if given and len(given) != len(required):
        missing = ", ".join(
            f"SALESBOT_{name.upper()}__{f.upper()}" for f in required if f not in given
        )
        raise ValueError(f"the {name} channel is half configured: missing {missing}")


class WeComSettings(BaseModel):
    corp_id: str | None = None
    agent_id: int | None = Field(None, ge=1)
    secret: str | None = None
    token: str | None = None
    aes_key: str | None = None
    api_base: str = "https://qyapi.weixin.qq.com"
    group_webhook: str | None = None
    per_minute: int = Field(25, ge=1, le=30)
    per_hour: int = Field(900, ge=1, le=1000)

    @field_validator("api_base")
    @classmethod
    def _base(cls, value: str) -> str:
        return _http_url(value)

    @field_validator("group_webhook")
    @classmethod
    def _webhook(cls, value: str | None) -> str | None:
        return _http_url(value) if value else None

    @field_validator("corp_id", "secret", "token")
    @classmethod
    def _no_blank(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("must not be blank")
        return value

    @field_validator("aes_key")
    @classmethod
    def _aes_key(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        if not re.fullmatch(r"[A-Za-z0-9+/]{43}", value):
            raise ValueError("the EncodingAESKey must be 43 characters of base64")
        return value

    @model_validator(mode="after")
    def _complete(self) -> WeComSettings:
        _all_or_nothing("wecom", self, ("corp_id", "agent_id", "secret", "token", "aes_key"))
        return self

    @property
    def enabled(self) -> bool:
        return self.corp_id is not None


class DingTalkSettings(BaseModel):
    client_id: str | None = None
    client_secret: str | None = None
    robot_code: str | None = None
    mode: Literal["stream", "http"] = "stream"
    card_template_id: str | None = None
    api_base: str = "https://api.dingtalk.com"
    oapi_base: str = "https://oapi.dingtalk.com"

    @model_validator(mode="after")
    def _complete(self) -> DingTalkSettings:
        _all_or_nothing("dingtalk", self, ("client_id", "client_secret", "robot_code"))
        return self

    @property
    def enabled(self) -> bool:
        return self.client_id is not None


class SimSettings(BaseModel):
    enabled: bool | None = None


class VoiceSettings(BaseModel):
    model: str = "small"


class OutboxSettings(BaseModel):
    poll_seconds: float = Field(0.5, gt=0)
    batch: int = Field(50, ge=1)
    max_attempts: int = Field(8, ge=1)
    cards_per_digest: int = Field(3, ge=0)


class TeamChannel(BaseModel):
    wecom_webhook: str | None = None
    dingtalk_open_conversation_id: str | None = None

    @field_validator("wecom_webhook")
    @classmethod
    def _webhook(cls, value: str | None) -> str | None:
        return _http_url(value) if value else None


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="SALESBOT_",
        env_nested_delimiter="__",
        extra="forbid",
    )

    http: HttpSettings = HttpSettings()
    database: DatabaseSettings = DatabaseSettings()
    timezone: str = "Asia/Shanghai"
    leads: LeadSettings = LeadSettings()
    api: ApiSettings = ApiSettings()
    wecom: WeComSettings = WeComSettings()
    dingtalk: DingTalkSettings = DingTalkSettings()
    sim: SimSettings = SimSettings()
    voice: VoiceSettings = VoiceSettings()
    outbox: OutboxSettings = OutboxSettings()
    teams: dict[str, TeamChannel] = {}

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown timezone {value!r}") from exc
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [env_settings]
        toml_file = settings_cls.model_config.get("toml_file")
        if toml_file:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file))
        sources.append(init_settings)
        return tuple(sources)

    @property
    def sim_enabled(self) -> bool:
        if self.sim.enabled is not None:
            return self.sim.enabled
        return self.http.is_loopback

    @property
    def zone(self):  # noqa: ANN201 - ZoneInfo
        from zoneinfo import ZoneInfo

        return ZoneInfo(self.timezone)


def _one_line(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        where = "SALESBOT_" + "__".join(str(p).upper() for p in error["loc"] if p != "")
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown setting"
        parts.append(f"{where}: {message}" if error["loc"] else message)
    return "invalid settings: " + "; ".join(parts)


def load_settings(config_file: str | Path | None = None, **overrides: Any) -> Settings:
    """Load and validate the settings, raising SettingsError with one readable line."""
    if config_file is not None:
        path = Path(config_file)
        if not path.is_file():
            raise SettingsError(f"config file not found: {path}")
        import tomllib

        try:
            tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise SettingsError(f"config file {path} is not valid TOML: {exc}") from exc

    class _Loaded(Settings):
        model_config = SettingsConfigDict(toml_file=str(config_file) if config_file else None)

    try:
        loaded = _Loaded(**overrides)
    except ValidationError as exc:
        raise SettingsError(_one_line(exc)) from None
    return loaded
