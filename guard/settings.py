"""Configuration: a TOML file, GUARD_* environment variables and secret files.

Precedence, highest first: environment (``GUARD_INSTITUTE__NAME=...``, nested
keys joined by ``__``), the TOML file, secret files (one file per key in the
secrets directory, e.g. systemd's ``$CREDENTIALS_DIRECTORY``), then defaults.

Everything is validated when loaded; :func:`load_settings` raises
:class:`~guard.errors.ConfigError` listing every problem as
``file: key: reason``. Unknown keys are errors, so typos do not pass
silently. The result is an immutable value passed down explicitly.
"""

from __future__ import annotations

import datetime as dt
import os
import tomllib
from pathlib import Path
from typing import Any

from email_validator import EmailNotValidError, validate_email
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict, TomlConfigSettingsSource

from .errors import ConfigError
from .textutil import fold
from .paths import bundled_config

_FROZEN = ConfigDict(extra="forbid", frozen=True)


def _check_address(value: str) -> str:
    try:
        return validate_email(value, check_deliverability=False).normalized.lower()
    except EmailNotValidError as exc:
        raise ValueError(f"{value!r} is not a valid e-mail address: {exc}") from None


def _domain_list(values: list[str]) -> list[str]:
    out = []
    for v in values:
        d = v.strip().lower().strip(".")
        if not d or "." not in d or " " in d or "@" in d:
            raise ValueError(f"{v!r} is not a domain name")
        out.append(d)
    return out


class Person(BaseModel):
    model_config = _FROZEN
    name: str = Field(min_length=1)
    address: str

    _addr = field_validator("address")(classmethod(lambda cls, v: _check_address(v)))


class Institute(BaseModel):
    model_config = _FROZEN
    name: str = Field(min_length=2)
    short_name: str = Field(min_length=2)
    official_domains: list[str] = Field(min_length=1)
    #: short names that must not appear inside a foreign domain (crm -> crm-housing.com)
    protected_names: list[str] = []
    events_address: str
    coordinator: Person
    code_of_conduct_url: str | None = None
    scam_warning_url: str | None = None
    website: str | None = None

    _domains = field_validator("official_domains")(classmethod(lambda cls, v: _domain_list(v)))
    _events = field_validator("events_address")(classmethod(lambda cls, v: _check_address(v)))


class Event(BaseModel):
    model_config = _FROZEN
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
    name: str = Field(min_length=3)
    aliases: list[str] = []
    start: dt.date | None = None
    end: dt.date | None = None
    venue: str | None = None
    official_domains: list[str] = []
    coordinator: Person | None = None
    registration: str | None = None
    lodging: str | None = None

    _domains = field_validator("official_domains")(classmethod(lambda cls, v: _domain_list(v)))

    @model_validator(mode="after")
    def _dates(self):
        if self.start and self.end and self.end < self.start:
            raise ValueError(f"end {self.end} is before start {self.start}")
        return self


class ThresholdSettings(BaseModel):
    model_config = _FROZEN
    scam: float = 4.0
    suspicious: float = 2.5
    report: float = 3.0
    automated: float = 3.0
    inquiry: float = 1.0
    paid: float = 2.0

    @model_validator(mode="after")
    def _order(self):
        if self.suspicious > self.scam:
            raise ValueError(f"suspicious ({self.suspicious}) must not exceed scam ({self.scam})")
        return self


class RuleSettings(BaseModel):
    model_config = _FROZEN
    #: site-local rule overrides, read after the shipped rules
    local_dir: Path = Path("/etc/guard/rules.d")
    #: extra shipped-rules directory (tests and development); None = the bundled rules
    shipped_dir: Path | None = None
    #: senders (addresses or domains) always trusted / always treated as scam
    allowlist: list[str] = []
    denylist: list[str] = []


class GuardSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="GUARD_", env_nested_delimiter="__", extra="forbid", frozen=True, case_sensitive=False
    )
    institute: Institute
    events: list[Event] = []
    thresholds: ThresholdSettings = ThresholdSettings()
    rules: RuleSettings = RuleSettings()

    @model_validator(mode="after")
    def _unique_events(self):
        seen = set()
        for e in self.events:
            if e.id in seen:
                raise ValueError(f"event id {e.id!r} appears twice")
            seen.add(e.id)
        return self

    # -- derived facts -------------------------------------------------
    def official_domains(self) -> tuple[str, ...]:
        out = list(self.institute.official_domains)
        for e in self.events:
            out.extend(e.official_domains)
        return tuple(dict.fromkeys(out))

    def protected_names(self) -> tuple[str, ...]:
        names = [self.institute.short_name.lower(), *[n.lower() for n in self.institute.protected_names]]
        for e in self.events:
            names.extend(a.lower() for a in e.aliases if " " not in a.strip() and len(a.strip()) >= 4)
        return tuple(dict.fromkeys(n for n in names if n))

    def display_names(self) -> tuple[str, ...]:
        """Folded names a scammer might put in a From display name."""
        inst = self.institute
        names = [inst.name, inst.short_name, inst.coordinator.name]
        for e in self.events:
            names.append(e.name)
            names.extend(e.aliases)
            if e.coordinator:
                names.append(e.coordinator.name)
        return tuple(dict.fromkeys(fold(n) for n in names if len(n.strip()) >= 3))

    def our_addresses(self) -> tuple[str, ...]:
        return (self.institute.events_address, self.institute.coordinator.address)


def _secrets_dir() -> str | None:
    d = os.environ.get("CREDENTIALS_DIRECTORY")
    return d if d and os.path.isdir(d) else None


def load_settings(path: Path | str | None = None, **overrides: Any) -> GuardSettings:
    """Load and validate the configuration; ``path`` None means the bundled sample institute."""
    file = Path(path) if path is not None else bundled_config()
    if not file.is_file():
        raise ConfigError(f"{file}: configuration file not found")
    try:
        tomllib.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{file}: cannot read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file}: not valid TOML: {exc}") from None

    class _FromFile(GuardSettings):
        @classmethod
        def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings, file_secret_settings):
            return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls, toml_file=file), file_secret_settings)

    try:
        loaded = _FromFile(_secrets_dir=_secrets_dir(), **overrides)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            key = ".".join(str(p) for p in err["loc"]) or "(top level)"
            msg = err["msg"].removeprefix("Value error, ")
            lines.append(f"{file}: {key}: {msg}")
        raise ConfigError("\n".join(lines)) from None
    return loaded
