"""Sending mail: :class:`SmtpMailer` (aiosmtplib) and :class:`FileMailer` (``.eml`` files, for the demo).

``send(raw, envelope_from, recipients)`` either returns (the server took the
message) or raises :class:`~guard.errors.TransientIOError` (4xx answers,
refused or dropped connections, timeouts: the outbox retries with backoff) or
:class:`~guard.errors.PermanentIOError` (5xx answers, failed authentication:
journalled and logged, not retried).

TLS is implicit (``tls = "ssl"``) or STARTTLS, with certificates always
verified (``ca_file`` adds a private CA); plain SMTP is only allowed to a
loopback host (checked in :mod:`guard.settings`). Authentication is a
password, or XOAUTH2 with a bearer token from a token provider (a callable;
by default the configured token file or command). Credentials are never
logged.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import ssl
import subprocess
from pathlib import Path
from typing import Awaitable, Callable, Protocol

import aiosmtplib

from .errors import PermanentIOError, TransientIOError

log = logging.getLogger("guard.mailer")

TokenProvider = Callable[[], str]


class Mailer(Protocol):
    async def send(self, raw: bytes, envelope_from: str, recipients: list[str]) -> str: ...


def tls_context(ca_file: Path | None) -> ssl.SSLContext:
    """A verifying client context (system CAs, plus ``ca_file`` when given)."""
    ctx = ssl.create_default_context()
    if ca_file is not None:
        ctx.load_verify_locations(cafile=str(ca_file))
    return ctx


def token_provider_from(server_settings) -> TokenProvider | None:
    """The XOAUTH2 bearer-token source configured for a server (None for password auth)."""
    s = server_settings
    if s.auth != "xoauth2":
        return None
    if getattr(s, "oauth2", None) is not None:
        # guard fetches and refreshes the token itself (Microsoft 365, Google): guard/oauth.py
        from .oauth import token_source

        return token_source(s, "imap" if hasattr(s, "mailbox") else "smtp")
    if s.oauth2_token_file is not None:
        path = s.oauth2_token_file
        return lambda: path.read_text(encoding="utf-8").strip()
    cmd = list(s.oauth2_token_command or [])

    def run() -> str:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
        if out.returncode != 0 or not out.stdout.strip():
            raise PermanentIOError(f"oauth2_token_command {cmd[0]!r} failed (exit {out.returncode})")
        return out.stdout.strip()

    return run


def _code_error(code: int, what: str) -> Exception:
    if 400 <= code < 500:
        return TransientIOError(f"SMTP {what}: {code}")
    return PermanentIOError(f"SMTP {what}: {code}")


_SAFE_TEXT = re.compile(r"[^\x20-\x7e]")


def _server_text(exc: aiosmtplib.SMTPResponseException) -> str:
    return _SAFE_TEXT.sub("?", str(exc.message))[:200]


class SmtpMailer:
    def __init__(self, settings, *, token_provider: TokenProvider | None = None) -> None:
        self.s = settings
        self.token_provider = token_provider or token_provider_from(settings)
        self._tls = tls_context(settings.ca_file) if settings.tls != "none" else None

    async def send(self, raw: bytes, envelope_from: str, recipients: list[str]) -> str:
        s = self.s
        kwargs = dict(hostname=s.host, port=s.effective_port(), timeout=s.timeout_seconds,
                      use_tls=s.tls == "ssl", start_tls=True if s.tls == "starttls" else False,
                      tls_context=self._tls, validate_certs=s.tls != "none")
        client = aiosmtplib.SMTP(**kwargs)
        try:
            try:
                await client.connect()
            except (aiosmtplib.SMTPConnectError, aiosmtplib.SMTPTimeoutError, aiosmtplib.SMTPServerDisconnected,
                    OSError) as exc:
                raise TransientIOError(f"SMTP connect to {s.host}:{s.effective_port()}: {type(exc).__name__}") from None
            except ssl.SSLError as exc:
                raise PermanentIOError(f"SMTP TLS with {s.host}: {exc.reason or type(exc).__name__}") from None
            except aiosmtplib.SMTPResponseException as exc:
                raise _code_error(exc.code, f"greeting {_server_text(exc)}") from None
            await self._login(client)
            options = []
            if not raw.isascii() and client.supports_extension("8bitmime"):
                options.append("BODY=8BITMIME")
            rcpt_options = ["NOTIFY=NEVER"] if envelope_from == "" and client.supports_extension("dsn") else []
            try:
                errors, reply = await client.sendmail(envelope_from, recipients, raw, mail_options=options,
                                                      rcpt_options=rcpt_options)
            except aiosmtplib.SMTPRecipientsRefused as exc:
                codes = [r.code for r in exc.recipients]
                code = max(codes) if codes else 550
                # every recipient refused: temporary if any refusal was temporary
                if any(400 <= c < 500 for c in codes):
                    code = min(c for c in codes if 400 <= c < 500)
                raise _code_error(code, "recipient refused") from None
            except aiosmtplib.SMTPResponseException as exc:
                raise _code_error(exc.code, f"refused: {_server_text(exc)}") from None
            except (aiosmtplib.SMTPTimeoutError, aiosmtplib.SMTPServerDisconnected, OSError) as exc:
                raise TransientIOError(f"SMTP connection lost: {type(exc).__name__}") from None
            if errors:
                # one recipient per message in guard's outbox: a partial refusal cannot happen, but be exact
                code = max(r.code for r in errors.values())
                raise _code_error(code, "recipient refused")
            return reply
        finally:
            if client.is_connected:
                try:
                    await client.quit()
                except Exception:
                    client.close()

    async def _login(self, client: aiosmtplib.SMTP) -> None:
        s = self.s
        if not s.username:
            return
        try:
            if self.token_provider is not None:
                token = await asyncio.to_thread(self.token_provider)
                await client.auth_xoauth2(s.username, token)
            else:
                await client.login(s.username, s.secret())
        except aiosmtplib.SMTPAuthenticationError as exc:
            raise _code_error(exc.code, "authentication failed") from None
        except aiosmtplib.SMTPException as exc:
            raise PermanentIOError(f"SMTP authentication: {type(exc).__name__}") from None


class FileMailer:
    """Writes each message to ``directory`` as ``NNN-<kind>-<recipient>.eml`` (the demo's outbox)."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.written: list[Path] = []

    async def send(self, raw: bytes, envelope_from: str, recipients: list[str]) -> str:
        n = len(list(self.directory.glob("*.eml"))) + 1
        kind = "reply"
        m = re.search(rb"^Auto-Submitted: *(\S+)", raw, re.M | re.I)
        if m and m.group(1).lower().startswith(b"auto-generated"):
            kind = "to-coordinator"
        safe = re.sub(r"[^A-Za-z0-9@._-]", "_", ",".join(recipients))[:80]
        path = self.directory / f"{n:03d}-{kind}-{safe}.eml"
        tmp = path.with_name("." + path.name + ".tmp")
        head = f"X-Envelope-From: <{envelope_from}>\r\n" + "".join(f"X-Envelope-To: <{r}>\r\n" for r in recipients)
        tmp.write_bytes(head.encode() + raw)
        os.replace(tmp, path)
        self.written.append(path)
        return f"250 written to {path}"


class NullMailer:
    """Dry-run: records what would be sent and sends nothing."""

    def __init__(self) -> None:
        self.would_send: list[tuple[str, list[str]]] = []

    async def send(self, raw: bytes, envelope_from: str, recipients: list[str]) -> str:
        self.would_send.append((envelope_from, list(recipients)))
        return "250 dry-run: not sent"


AsyncTokenProvider = Callable[[], Awaitable[str]]
