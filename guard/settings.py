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
import ipaddress
import os
import re
from pathlib import Path
from typing import Any, Iterable, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from guard.errors import ConfigError, read_toml
from guard.paths import bundled_config, shipped
from guard.mail.textutil import fold

# Start-up time: email_validator (its regular expressions) and pydantic-settings (its many
# sources) are imported only when they are needed; see _check_address and load_settings.

# defer_build: a model's validator is built the first time something is validated with it, not when
# the module is imported; a start whose settings come validated from guard's cache (see
# _cached_settings) builds none of them. The class-level default instances below are made with
# model_construct() for the same reason: the very values ``Model()`` gives (defaults are not
# validated there either), without building the model's validator.
_FROZEN = ConfigDict(extra="forbid", frozen=True, defer_build=True)


def _check_address(value: str) -> str:
    """email_validator's verdict (imported here: a start whose settings come validated from guard's
    cache, see _cached_settings, needs no email_validator at all)."""
    from email_validator import EmailNotValidError, validate_email  # noqa: PLC0415

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
    #: a text, or a table of texts per language ({ en = "Milan, Italy", it = "Milano, Italia" })
    venue: str | dict[str, str] | None = None
    official_domains: list[str] = []
    #: names that must not appear inside a foreign domain (mfml2026 -> mfml2026-hotels.com)
    protected_names: list[str] = []
    coordinator: Person | None = None
    #: registration and official lodging: a text, or a table of texts per language ({ en = "...", es = "..." })
    registration: str | dict[str, str] | None = None
    lodging: str | dict[str, str] | None = None
    #: the official event page
    url: str | None = Field(default=None, pattern=r"^https?://[^\s<>\"']+$")

    _domains = field_validator("official_domains")(classmethod(lambda cls, v: _domain_list(v)))

    @field_validator("registration", "lodging", "venue")
    @classmethod
    def _languages(cls, v):
        if isinstance(v, dict):
            bad = [k for k in v if not re.fullmatch(r"[a-z]{2}", k)]
            if bad or not v:
                raise ValueError(f"a table of texts needs two-letter language keys (en, es, ca), not {bad or 'none'}")
        return v

    @model_validator(mode="after")
    def _dates(self):
        if self.start and self.end and self.end < self.start:
            raise ValueError(f"end {self.end} is before start {self.start}")
        if self.end and not self.start:
            raise ValueError("end without start")
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


# -- daemon: IMAP, SMTP, journal, folders, reply safety ----------------------------------

TlsMode = Literal["ssl", "starttls", "none"]
_HEADER_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9-]{0,60}$")


def _is_loopback(host: str) -> bool:
    if host.lower() in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _expand(path: Path | None) -> Path | None:
    """``$CREDENTIALS_DIRECTORY/imap`` and ``~`` in secret paths (systemd LoadCredential=)."""
    return None if path is None else Path(os.path.expanduser(os.path.expandvars(str(path))))


def _readable(path: Path, what: str) -> None:
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise ValueError(f"{what} {str(path)!r} cannot be read: {exc.strerror or exc}") from None


class OAuth2Settings(BaseModel):
    """XOAUTH2 tokens fetched and refreshed by guard itself (guard/daemon/oauth.py)."""

    model_config = _FROZEN
    #: microsoft (msal), google (its token endpoint) or generic (any RFC 6749 token endpoint: token_url)
    provider: Literal["microsoft", "google", "generic"]
    #: refresh_token (a delegated mailbox grant) or client_credentials (Microsoft app-only access)
    flow: Literal["refresh_token", "client_credentials"] = "refresh_token"
    client_id: str = Field(min_length=1)
    client_secret: SecretStr | None = None
    #: a file holding the client secret ($CREDENTIALS_DIRECTORY expanded)
    client_secret_file: Path | None = None
    #: a file holding the refresh token (refresh_token flow)
    refresh_token_file: Path | None = None
    #: Microsoft Entra tenant id or domain
    tenant: str = "organizations"
    #: token endpoint; defaults per provider (required for generic)
    token_url: str | None = None
    #: scopes; defaults per provider and protocol
    scopes: list[str] = []
    #: a token is refreshed this long before it expires
    refresh_margin_seconds: float = Field(default=300.0, ge=0, le=3000)

    _paths = field_validator("client_secret_file", "refresh_token_file")(classmethod(lambda cls, v: _expand(v)))

    @model_validator(mode="after")
    def _check(self):
        if self.flow == "refresh_token" and self.refresh_token_file is None:
            raise ValueError("flow = \"refresh_token\" needs refresh_token_file")
        if self.flow == "client_credentials" and self.provider != "microsoft":
            raise ValueError("flow = \"client_credentials\" is only offered for provider = \"microsoft\"")
        if self.flow == "client_credentials" and self.client_secret is None and self.client_secret_file is None:
            raise ValueError("flow = \"client_credentials\" needs client_secret or client_secret_file")
        if self.provider == "generic" and not self.token_url:
            raise ValueError("provider = \"generic\" needs token_url")
        for name in ("client_secret_file", "refresh_token_file"):
            path = getattr(self, name)
            if path is not None:
                _readable(path, name)
        return self


class _ServerSettings(BaseModel):
    """What IMAP and SMTP share: where, how encrypted, who, and the secret (never logged)."""

    model_config = _FROZEN
    host: str = Field(min_length=1)
    port: int | None = Field(default=None, ge=1, le=65535)
    #: ssl = implicit TLS, starttls = upgrade a plain connection, none = plain (loopback only)
    tls: TlsMode = "ssl"
    username: str | None = None
    #: the password itself (better: password_file, or GUARD_IMAP__PASSWORD in the environment)
    password: SecretStr | None = None
    #: a file holding the password; ``$CREDENTIALS_DIRECTORY`` is expanded (systemd LoadCredential=)
    password_file: Path | None = None
    #: password, or xoauth2 with a bearer token from oauth2_token_file / oauth2_token_command
    auth: Literal["password", "xoauth2"] = "password"
    oauth2_token_file: Path | None = None
    oauth2_token_command: list[str] | None = None
    #: or let guard fetch and refresh the tokens itself (Microsoft 365, Google): see OAuth2Settings
    oauth2: OAuth2Settings | None = None
    #: extra CA certificates to trust (a private CA, tests); certificates are always verified
    ca_file: Path | None = None
    timeout_seconds: float = Field(default=30.0, gt=0, le=600)

    _paths = field_validator("password_file", "oauth2_token_file", "ca_file")(classmethod(lambda cls, v: _expand(v)))

    @model_validator(mode="after")
    def _check(self):
        if self.tls == "none" and not _is_loopback(self.host):
            raise ValueError(f"tls = \"none\" is only allowed for a loopback host, not {self.host!r}")
        if self.password is not None and self.password_file is not None:
            raise ValueError("give password or password_file, not both")
        if self.username is not None and self.auth == "password" and self.password is None and self.password_file is None:
            raise ValueError("auth = \"password\" needs password or password_file")
        if self.auth == "xoauth2":
            if self.username is None:
                raise ValueError("auth = \"xoauth2\" needs a username")
            given = [x for x in (self.oauth2_token_file, self.oauth2_token_command, self.oauth2) if x is not None]
            if len(given) != 1:
                raise ValueError("auth = \"xoauth2\" needs exactly one of oauth2_token_file, oauth2_token_command, "
                                 "[oauth2]")
        for name in ("password_file", "oauth2_token_file", "ca_file"):
            path = getattr(self, name)
            if path is not None:
                _readable(path, name)
        return self

    def secret(self) -> str:
        """The password, read now (a rotated password file is picked up at the next login)."""
        if self.password is not None:
            return self.password.get_secret_value()
        if self.password_file is not None:
            return self.password_file.read_text(encoding="utf-8").strip("\r\n")
        return ""

    def describe(self) -> str:
        """host:port (tls) as user: for logs; never the secret."""
        return f"{self.host}:{self.effective_port()} ({self.tls}) as {self.username or 'anonymous'}"

    def effective_port(self) -> int:  # pragma: no cover - overridden
        raise NotImplementedError


class ImapSettings(_ServerSettings):
    username: str = Field(min_length=1)
    #: the watched mailbox
    mailbox: str = "INBOX"
    #: IDLE is ended and re-issued at least this often (RFC 2177 allows 29 min; providers drop ~5-10 min)
    idle_seconds: float = Field(default=540.0, ge=5, le=1740)
    #: polling interval where the server has no IDLE
    poll_seconds: float = Field(default=60.0, ge=1, le=3600)
    #: reconnect backoff: first wait, cap (exponential with jitter in between)
    reconnect_initial_seconds: float = Field(default=1.0, gt=0, le=600)
    reconnect_max_seconds: float = Field(default=300.0, gt=0, le=3600)
    #: messages larger than this are read only up to this size (the original stays in the mailbox)
    max_message_bytes: int = Field(default=25_000_000, ge=10_000)

    def effective_port(self) -> int:
        return self.port or (993 if self.tls == "ssl" else 143)


class SmtpSettings(_ServerSettings):
    tls: TlsMode = "starttls"
    #: automatic replies go out with the null envelope sender <> (RFC 3834 section 3.3) so that
    #: nothing bounces back into the watched inbox; set false if the provider refuses MAIL FROM:<>
    null_sender_for_replies: bool = True
    #: the outbox retries temporary (4xx, connection) failures with exponential backoff ...
    retry_initial_seconds: float = Field(default=30.0, gt=0, le=3600)
    retry_max_seconds: float = Field(default=3600.0, gt=0, le=86400)
    #: ... and gives up (as a permanent failure, surfaced in the journal and the log) after this many attempts
    max_attempts: int = Field(default=20, ge=1, le=1000)
    #: connections a batch's sends share (each message's own sends stay in order); 1 sends one after
    #: the other, for providers that limit concurrent sessions
    connections: int = Field(default=4, ge=1, le=16)

    def effective_port(self) -> int:
        return self.port or {"ssl": 465, "starttls": 587, "none": 25}[self.tls]


class FolderNames(BaseModel):
    """Folders guard files into (created when missing). ``/`` is replaced by the server's separator."""

    model_config = _FROZEN
    quarantine: str = "Guard/Quarantine"
    review: str = "Guard/Review"
    routed: str = "Guard/Routed"
    automated: str = "Guard/Automated"
    not_scam: str = "Guard/NotScam"
    scam: str = "Guard/Scam"
    #: where "other" mail is filed; none leaves it in the inbox
    other: str | None = None

    @model_validator(mode="after")
    def _check(self):
        seen: dict[str, str] = {}
        for key, name in self.model_dump().items():
            if name is None:
                continue
            if not name.strip() or any(c in name for c in "\r\n\x00*%\"") or name.strip("/") != name:
                raise ValueError(f"folder {key} = {name!r} is not a usable folder name")
            if name.upper() == "INBOX":
                raise ValueError(f"folder {key} must not be INBOX")
            if name in seen:
                raise ValueError(f"folders {seen[name]} and {key} are both {name!r}")
            seen[name] = key
        return self

    def resolve(self, key: str) -> str | None:
        return getattr(self, key)


class DaemonSettings(BaseModel):
    model_config = _FROZEN
    #: the SQLite journal (ledger, decisions, outbox, reply history)
    journal: Path = Path("/var/lib/guard/journal.sqlite3")
    #: ledger account name; default: the IMAP username
    account: str | None = None
    #: the decision table; default: the shipped rules/policy.toml
    policy_file: Path | None = None
    #: reply templates (one directory per language); default: the shipped templates/
    templates_dir: Path | None = None
    #: the institute's own language (two letters): the first fallback of a reply (below) and the
    #: default language of what goes to the coordinator
    language: str = Field(default="en", pattern=r"^[a-z]{2}$")
    #: a reply is written in the participant's own language (read from their own text, never from a
    #: forwarded message) when templates exist for it; else, and when the text is too short to tell, in
    #: the first of these that has templates. Default: [language, "en"]
    reply_fallback_languages: list[str] = []
    #: the language of the digest, forwards and alerts to the coordinator; default: language
    coordinator_language: str | None = Field(default=None, pattern=r"^[a-z]{2}$")
    folders: FolderNames = FolderNames.model_construct()
    #: the same sender gets the same template at most once in this many days (RFC 5230 :days)
    reply_window_days: float = Field(default=7.0, gt=0, le=365)
    #: circuit breaker: at most this many automatic replies per hour, then pause and alert
    max_replies_per_hour: int = Field(default=60, ge=1, le=100_000)
    #: never auto-reply to mail that arrived more than this many hours ago, or before the first start
    backlog_hours: float = Field(default=24.0, gt=0, le=24 * 365)
    #: reply only when one of our addresses is in To/Cc (RFC 5230 section 4.5)
    require_our_address_in_recipients: bool = True
    #: more addresses that count as ours (aliases of the events inbox)
    extra_addresses: list[str] = []
    #: our loop-detection header; its value is the events address
    loop_header: str = "X-Guard-Loop"
    #: a message whose processing failed this many times goes to Review, flagged, with no reply
    max_attempts: int = Field(default=3, ge=1, le=100)
    #: live, dry-run (decide and record, never send or move) or shadow (replies go to the coordinator)
    mode: Literal["live", "dry-run", "shadow"] = "live"
    #: a backlog is read, decided, sent and filed in batches of at most this many messages ...
    batch_size: int = Field(default=50, ge=1, le=1000)
    #: ... and at most this many bytes of mail held in memory at once (a bigger message goes alone)
    batch_bytes: int = Field(default=16_000_000, ge=100_000, le=1_000_000_000)
    #: each message is parsed and classified in a worker process within this many seconds; past it
    #: the worker is killed and the message filed for review as poison ("time budget exceeded")
    message_time_budget_seconds: float = Field(default=20.0, gt=0, le=3600)
    #: the bodies of sent mail (a forward holds the whole original) are dropped from the journal's
    #: outbox this many days after the send; 0 drops them as soon as the server has taken the mail
    outbox_retention_days: float = Field(default=0.0, ge=0, le=3650)
    #: start with a new, empty journal although the IMAP account already has guard's folders (a lost
    #: journal: mail already handled may be handled again); also `guard run --new-journal`
    allow_new_journal: bool = False
    #: the authserv-id(s) of the institute's own receiving server (RFC 8601): only its
    #: Authentication-Results (the topmost ones) are believed; empty: no automatic replies
    trusted_authserv_ids: list[str] = []
    #: answer participants whose mail the trusted server did not authenticate (DMARC pass, or SPF or
    #: DKIM pass aligned with From); off by default, a warning is logged at start-up when on
    reply_to_unauthenticated: bool = False
    #: at most this many automatic replies per hour to one domain (the normalised recipient's); 0: no limit
    max_replies_per_domain_per_hour: int = Field(default=0, ge=0, le=100_000)
    #: at most this many forwards and alerts to the coordinator per sender (normalised) per hour;
    #: beyond it they are suppressed with a reason (the digest lists them)
    max_forwards_per_sender_per_hour: int = Field(default=5, ge=1, le=100_000)

    _extra = field_validator("extra_addresses")(classmethod(lambda cls, v: [_check_address(a) for a in v]))

    @field_validator("reply_fallback_languages")
    @classmethod
    def _fallback_languages(cls, v):
        bad = [x for x in v if not re.fullmatch(r"[a-z]{2}", x or "")]
        if bad:
            raise ValueError(f"languages are two lower-case letters (en, ca, fr), not {bad}")
        return list(dict.fromkeys(v))

    def reply_fallback(self) -> tuple[str, ...]:
        """The fallback order of replies: reply_fallback_languages, else the institute's language then English."""
        return tuple(dict.fromkeys(self.reply_fallback_languages or (self.language, "en")))

    def coordinator_lang(self) -> str:
        return self.coordinator_language or self.language

    @field_validator("trusted_authserv_ids")
    @classmethod
    def _authserv_ids(cls, v):
        for i in v:
            if not re.fullmatch(r"[A-Za-z0-9._-]{1,253}", i or ""):
                raise ValueError(f"{i!r} is not an authserv-id (a host name such as mx.example.org)")
        return [i.lower().rstrip(".") for i in v]

    @field_validator("loop_header")
    @classmethod
    def _header(cls, v):
        if not _HEADER_NAME.match(v):
            raise ValueError(f"{v!r} is not a header name")
        return v


class HealthSettings(BaseModel):
    """/healthz and /metrics over HTTP on a loopback address (guard/daemon/health.py)."""

    model_config = _FROZEN
    enabled: bool = False
    host: str = "127.0.0.1"
    #: 0 picks a free port (tests)
    port: int = Field(default=9187, ge=0, le=65535)
    #: /healthz is not ready when the last IDLE round or poll is older than this; default 2 x idle_seconds + 60
    stale_seconds: float | None = Field(default=None, gt=0)
    #: /healthz is not ready when a watcher has work in hand and nothing moved on (no message read,
    #: sent or filed) for this long; default 3 x daemon.message_time_budget_seconds + 120
    stuck_seconds: float | None = Field(default=None, gt=0)

    @field_validator("host")
    @classmethod
    def _loopback(cls, v):
        if not _is_loopback(v):
            raise ValueError(f"the health endpoint only listens on a loopback address, not {v!r}")
        return v


class LoggingSettings(BaseModel):
    model_config = _FROZEN
    #: text (one line per record, key=value) or json (one object per line)
    format: Literal["text", "json"] = "text"
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


class AccountSettings(BaseModel):
    """One watched mailbox of several ([[accounts]]); each gets its own watcher task."""

    model_config = _FROZEN
    #: the ledger account name (unique); default: the IMAP username
    name: str | None = Field(default=None, min_length=1, max_length=200)
    imap: ImapSettings
    #: default: the top-level [smtp]
    smtp: SmtpSettings | None = None


class DigestSettings(BaseModel):
    """The coordinator's digest (guard/digest/build.py): when, and when a campaign gets an advisory draft."""

    model_config = _FROZEN
    enabled: bool = True
    #: local wall-clock times (HH:MM) in ``timezone``, on ``weekdays`` (0 = Monday)
    times: list[dt.time] = Field(default=[dt.time(8, 0)], min_length=1)
    #: the institute's time zone (IANA name)
    timezone: str = "Europe/Madrid"
    weekdays: list[int] = Field(default=[0, 1, 2, 3, 4, 5, 6], min_length=1)
    #: also send a digest when nothing happened (a daily "all quiet")
    send_empty: bool = True
    #: a campaign with this many copies or reports within advisory_hours carries an advisory draft
    advisory_threshold: int = Field(default=3, ge=1)
    advisory_hours: float = Field(default=24.0, gt=0, le=24 * 31)
    #: minimum estimated Jaccard similarity of two messages of one campaign
    similarity: float = Field(default=0.5, gt=0, le=1)

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v):
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{v!r} is not a known time zone") from None
        return v

    @field_validator("weekdays")
    @classmethod
    def _days(cls, v):
        if any(d < 0 or d > 6 for d in v):
            raise ValueError("weekdays are 0 (Monday) to 6 (Sunday)")
        return v


class LearningSettings(BaseModel):
    """Learning from the coordinator's corrections (guard/learning/corrections.py)."""

    model_config = _FROZEN
    enabled: bool = True
    #: how often Guard/NotScam and Guard/Scam are checked (at most; also after every wake-up)
    poll_seconds: float = Field(default=60.0, ge=1, le=3600)
    #: what a correction lists: the sender's address, or its whole domain (never a free-mail domain)
    list_by: Literal["address", "domain"] = "address"
    #: where labelled copies go (labelled/scam, labelled/genuine); default: beside the journal
    labelled_dir: Path | None = None
    #: retrain on the labelled mail every this many hours and swap the model only when it evaluates
    #: no worse (0 = never; off by default)
    retrain_hours: float = Field(default=0.0, ge=0)
    #: where `guard train` (and the scheduled retrain) write the models they make, and where guard
    #: looks first for a verified model before the shipped one; default: models/ beside the journal
    models_dir: Path | None = None


class GuardSettings(BaseModel):
    """The whole configuration. :func:`load_settings` reads it from the TOML file, the ``GUARD_*``
    environment and the secrets directory (pydantic-settings, ``_settings_class``)."""

    # what pydantic-settings' BaseSettings would add to the validation: defaults validated too
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True, arbitrary_types_allowed=True,
                              defer_build=True)
    institute: Institute
    events: list[Event] = []
    #: directories of event fact sheets (*.toml, one event each; see guard/respond/facts.py), merged with
    #: [[events]] at load time; "shipped" = guard's own events/, relative paths = next to this file
    events_dirs: list[str] = []
    thresholds: ThresholdSettings = ThresholdSettings.model_construct()
    rules: RuleSettings = RuleSettings.model_construct()
    imap: ImapSettings | None = None
    smtp: SmtpSettings | None = None
    daemon: DaemonSettings = DaemonSettings.model_construct()
    #: several watched mailboxes (instead of [imap]); see guard/daemon/supervisor.py
    accounts: list[AccountSettings] = []
    health: HealthSettings = HealthSettings.model_construct()
    logging: LoggingSettings = LoggingSettings.model_construct()
    digest: DigestSettings = DigestSettings.model_construct()
    learning: LearningSettings = LearningSettings.model_construct()

    @model_validator(mode="after")
    def _accounts(self):
        if self.accounts and self.imap is not None:
            raise ValueError("give either [imap] or [[accounts]], not both")
        seen = set()
        for a in self.accounts:
            name = a.name or a.imap.username
            if name in seen:
                raise ValueError(f"account {name!r} appears twice")
            seen.add(name)
        return self

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
            names.extend(n.strip().lower() for n in e.protected_names)
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
        return tuple(dict.fromkeys((self.institute.events_address, self.institute.coordinator.address,
                                    *self.daemon.extra_addresses)))


def _secrets_dir() -> str | None:
    d = os.environ.get("CREDENTIALS_DIRECTORY")
    return d if d and os.path.isdir(d) else None


def _settings_class(file: Path):
    """GuardSettings read by pydantic-settings: arguments, then ``GUARD_*`` variables (nested keys
    joined by ``__``, any case), then ``file``, then the secrets directory."""
    from pydantic_settings import BaseSettings, SettingsConfigDict, TomlConfigSettingsSource  # noqa: PLC0415

    class _FromFile(GuardSettings, BaseSettings):
        model_config = SettingsConfigDict(
            env_prefix="GUARD_", env_nested_delimiter="__", extra="forbid", frozen=True, case_sensitive=False,
            validate_default=True, arbitrary_types_allowed=True,
        )

        @classmethod
        def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings, file_secret_settings):
            return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls, toml_file=file), file_secret_settings)

    return _FromFile


def _file_only(data: dict, overrides: dict) -> bool:
    """True when pydantic-settings would find nothing but the file's table as it is: no arguments,
    no ``GUARD_*`` variable naming a setting, no secrets directory, and top-level keys that are
    already lower case (it matches those in any case). Then the table is validated directly, the
    same validation without importing pydantic-settings (start-up time)."""
    return _nothing_but_files(overrides) and all(isinstance(k, str) and k == k.lower() for k in data)


def _nothing_but_files(overrides: dict) -> bool:
    """No arguments, no ``GUARD_*`` variable naming a setting, no secrets directory (see _file_only)."""
    if overrides or _secrets_dir() is not None:
        return False
    fields = GuardSettings.model_fields
    return not any(words[0] in fields for words in _environment_keys())


def load_settings(path: Path | str | None = None, **overrides: Any) -> GuardSettings:
    """Load and validate the configuration; ``path`` None means the bundled sample institute."""
    file = Path(path) if path is not None else bundled_config()
    if not file.is_file():
        raise ConfigError(f"{file}: configuration file not found")
    lines = [f"{var}: {msg}" for var, msg in unknown_environment()]
    if _nothing_but_files(overrides):
        # kept only for these very bytes, once they had validated from the file alone (_file_only)
        cached = _cached_settings(file)
        if cached is not None:
            if lines:
                raise ConfigError("\n".join(lines)) from None
            return cached
    data = read_toml(file)  # a clear error before pydantic-settings reads it
    file_only = _file_only(data, overrides)
    try:
        if file_only:
            loaded = GuardSettings.model_validate(data)
        else:
            loaded = _settings_class(file)(_secrets_dir=_secrets_dir(), **overrides)
    except ValidationError as exc:
        env = _environment_keys()
        for err in exc.errors():
            lines.append(_describe_error(err, file, env, set(overrides)))
    if lines:
        raise ConfigError("\n".join(lines)) from None
    sheets_seen = None
    if loaded.events_dirs:
        dirs = [resolve_dir(d, file) for d in loaded.events_dirs]
        sheets_seen = _sheet_files(dirs)
        sheets = load_fact_sheets(dirs)
        loaded = loaded.model_copy(update={"events": merge_events(loaded.events, sheets)})
    if file_only:
        _keep_settings(file, loaded, sheets_seen)
    return loaded


# -- validated settings kept in guard's cache ---------------------------------------------------
#
# What validation gives for a configuration read from its file alone (_file_only) is a function of
# the file's bytes, the event fact sheets it names, the environment variables its paths name (see
# _expand), the home directory, guard's settings code and the installed pydantic and
# email_validator -- and of three facts about the machine: that the files named by password_file,
# oauth2_token_file, ca_file, client_secret_file and refresh_token_file can be read, and that the
# digest's time zone is known. The cache entry's name carries all of the former; the latter are
# checked again at every start (_still_valid). Anything else -- another file, a GUARD_* variable
# naming a setting, a secrets directory, a secret in the file itself (never written to the cache),
# an entry that cannot be read -- means the configuration is validated as always.

#: bump when what _keep_settings keeps changes
_SETTINGS_CACHE_VERSION = 1
_ENV_REFERENCE = re.compile(r"\$(\w+|\{[^}]*\})")


def _settings_cache_entry(file: Path) -> Path | None:
    import hashlib  # noqa: PLC0415
    import importlib.util  # noqa: PLC0415
    import sys  # noqa: PLC0415

    from guard import cache, errors, paths  # noqa: PLC0415
    from guard.mail import textutil  # noqa: PLC0415

    try:
        raw = file.read_bytes()
    except OSError:
        return None
    text = raw.decode("utf-8", "replace")
    if re.search(r"~[^/\s]", text):  # ~user: the password database decides (_expand); not kept
        return None
    env = sorted({(m, os.environ.get(m.strip("{}"))) for m in _ENV_REFERENCE.findall(text)})
    try:
        spec = importlib.util.find_spec("email_validator")
        validator = spec.origin if spec is not None else None
    except (ImportError, ValueError):
        validator = None
    import pydantic  # noqa: PLC0415
    import pydantic_core  # noqa: PLC0415

    code = cache.code_key(__file__, errors.__file__, paths.__file__, textutil.__file__,
                          *([validator] if validator else []))
    return cache.entry("settings", file, hashlib.sha256(raw).hexdigest(), str(file.resolve()), repr(env),
                       os.environ.get("HOME"), _SETTINGS_CACHE_VERSION, code, pydantic.VERSION,
                       pydantic_core.__version__, sys.version)


def _sheet_files(dirs: list[Path]) -> list[list]:
    """The fact sheets load_fact_sheets reads from ``dirs``: name, size and time of each."""
    out = []
    for d in dirs:
        files = []
        if d.is_dir():
            for f in sorted(d.glob("*.toml")):
                try:
                    st = f.stat()
                except OSError:
                    files = None
                    break
                files.append([str(f), st.st_size, st.st_mtime_ns])
        out.append([str(d), d.is_dir(), files])
    return out


def _model_classes() -> dict[str, type]:
    return {c.__name__: c for c in globals().values()
            if isinstance(c, type) and issubclass(c, BaseModel) and c.__module__ == __name__}


def _keep_settings(file: Path, loaded: GuardSettings, sheets_seen) -> None:
    """Keep ``loaded`` in guard's cache when it can be rebuilt exactly (guard.cache.freeze/thaw)."""
    import json  # noqa: PLC0415

    from guard import cache  # noqa: PLC0415

    if type(loaded) is not GuardSettings:
        return
    where = _settings_cache_entry(file)
    if where is None:
        return
    try:
        kept = json.loads(json.dumps({"settings": cache.freeze(loaded), "sheets": sheets_seen}, ensure_ascii=False))
        if not cache.identical(cache.thaw(kept["settings"], _model_classes()), loaded):
            return
    except (TypeError, ValueError, KeyError):
        return
    cache.write_json(where, kept)


def _cached_settings(file: Path) -> GuardSettings | None:
    """The settings _keep_settings kept for this file as it is now, when the machine still agrees (see above)."""
    from guard import cache  # noqa: PLC0415

    kept = cache.read_json(_settings_cache_entry(file))
    if not isinstance(kept, dict):
        return None
    try:
        loaded = cache.thaw(kept["settings"], _model_classes())
        if type(loaded) is not GuardSettings:
            return None
        if loaded.events_dirs and kept["sheets"] != _sheet_files([resolve_dir(d, file) for d in loaded.events_dirs]):
            return None
    except (KeyError, TypeError, ValueError, AttributeError):
        return None
    return loaded if _still_valid(loaded) else None


def _still_valid(s: GuardSettings) -> bool:
    """The checks of validation that read the machine rather than the file, made again."""
    servers = [s.imap, s.smtp, *(x for a in s.accounts for x in (a.imap, a.smtp))]
    try:
        for server in servers:
            if server is None:
                continue
            for name in ("password_file", "oauth2_token_file", "ca_file"):
                if getattr(server, name) is not None:
                    _readable(getattr(server, name), name)
            if server.oauth2 is not None:
                for name in ("client_secret_file", "refresh_token_file"):
                    if getattr(server.oauth2, name) is not None:
                        _readable(getattr(server.oauth2, name), name)
        DigestSettings._tz(s.digest.timezone)
    except ValueError:
        return False
    return True


def _environment_keys() -> dict[tuple[str, ...], str]:
    """The settings keys given by GUARD_* environment variables: (``imap``, ``idle_seconds``) -> the variable."""
    out = {}
    for var in os.environ:
        if var.upper().startswith("GUARD_") and len(var) > 6:
            out[tuple(p.lower() for p in var[6:].split("__"))] = var
    return out


def _model_at(loc: Iterable) -> type[BaseModel] | None:
    """The settings model that holds the last key of ``loc`` (list indexes and Optional skipped)."""
    model: Any = GuardSettings
    for part in loc:
        if isinstance(part, int):
            continue
        f = model.model_fields.get(str(part)) if isinstance(model, type) and issubclass(model, BaseModel) else None
        if f is None:
            return None
        found = _models_in(f.annotation)
        if not found:
            return None
        model = found[0]
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def _models_in(annotation) -> list:
    import typing  # noqa: PLC0415

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for a in typing.get_args(annotation) for m in _models_in(a)]


def _did_you_mean(loc: tuple) -> str:
    import difflib  # noqa: PLC0415

    model = _model_at(loc[:-1])
    if model is None:
        return ""
    close = difflib.get_close_matches(str(loc[-1]).lower(), list(model.model_fields), n=1, cutoff=0.6)
    return f"; did you mean {close[0]}?" if close else ""


def _describe_error(err: dict, file: Path, env: dict[tuple[str, ...], str], overridden: set[str]) -> str:
    """One ``where: key: reason`` line: the file, or the GUARD_* variable the value came from."""
    loc = tuple(err["loc"])
    key = ".".join(str(p) for p in loc) or "(top level)"
    msg = err["msg"].removeprefix("Value error, ")
    if err.get("type") == "extra_forbidden":
        msg = "unknown key" + _did_you_mean(loc)
    words = tuple(str(p).lower() for p in loc if not isinstance(p, int))
    for n in range(len(words), 0, -1):  # the longest variable that gave this key or a table around it
        var = env.get(words[:n])
        if var is not None and (n == len(words) or _file_value(file, loc) != err.get("input", _ABSENT)):
            return f"environment variable {var}: {key}: {msg}"
    if loc and str(loc[0]) in overridden:
        return f"(given by the caller): {key}: {msg}"
    return f"{file}: {key}: {msg}"


_ABSENT = object()


def _file_value(file: Path, loc: tuple) -> Any:
    """The value the configuration file gives at ``loc`` (``_ABSENT`` when it gives none)."""
    try:
        node: Any = read_toml(file)
        for part in loc:
            node = node[part]
    except (ConfigError, KeyError, IndexError, TypeError):
        return _ABSENT
    return node


def unknown_environment() -> list[tuple[str, str]]:
    """GUARD_* variables that name no setting (pydantic-settings ignores those silently): (variable, reason)."""
    import difflib  # noqa: PLC0415

    known = set(GuardSettings.model_fields)
    out = []
    for words, var in sorted(_environment_keys().items(), key=lambda kv: kv[1]):
        if words[0] in known or len(words) < 2:  # GUARD_FULL, GUARD_TEST_...: not settings (no __)
            continue
        close = difflib.get_close_matches(words[0], sorted(known), n=1, cutoff=0.6)
        hint = f"; did you mean GUARD_{close[0].upper()}__{'__'.join(w.upper() for w in words[1:])}?" if close else ""
        out.append((f"environment variable {var}", f"{words[0]}: unknown setting{hint}"))
    return out


SHIPPED = "shipped"


# -- event fact sheets (events/*.toml; what they hold: guard/respond/facts.py) -----------------------------------------------------------------------------


def load_fact_sheet(path: Path):
    """One validated :class:`~guard.settings.Event` from a TOML file (ConfigError naming file, key, reason)."""
    data = read_toml(path)
    try:
        return Event.model_validate(data)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            key = ".".join(str(p) for p in err["loc"]) or "(top level)"
            lines.append(f"{path}: {key}: {err['msg'].removeprefix('Value error, ')}")
        raise ConfigError("\n".join(lines)) from None


def resolve_dir(entry: str, config_file: Path | None) -> Path:
    if entry == SHIPPED:
        return shipped("events")
    p = Path(entry).expanduser()
    if not p.is_absolute() and config_file is not None:
        p = config_file.resolve().parent / p
    return p


def load_fact_sheets(directories: Iterable[Path]) -> list:
    """Every ``*.toml`` in the directories, sorted by file name; ids must be unique across them."""
    events, seen, errors = [], {}, []
    for d in directories:
        if not d.is_dir():
            raise ConfigError(f"{d}: events_dirs: directory of event fact sheets not found")
        for f in sorted(d.glob("*.toml")):
            try:
                e = load_fact_sheet(f)
            except ConfigError as exc:
                errors.append(str(exc))
                continue
            if e.id in seen:
                errors.append(f"{f}: id: event id {e.id!r} is also used by {seen[e.id]}")
                continue
            seen[e.id] = f
            events.append(e)
    if errors:
        raise ConfigError("\n".join(errors))
    return events


def merge_events(configured: Sequence, sheets: Sequence) -> list:
    """The configuration's events first, then the sheets whose id the configuration does not use."""
    ids = {e.id for e in configured}
    return [*configured, *(e for e in sheets if e.id not in ids)]
