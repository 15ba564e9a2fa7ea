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

from guard.errors import PermanentIOError, TransientIOError

log = logging.getLogger("guard.daemon.mailer")

TokenProvider = Callable[[], str]


class Mailer(Protocol):
    async def send(self, raw: bytes, envelope_from: str, recipients: list[str],
                   on_commit: Callable[[], None] | None = None) -> str: ...
    async def close(self) -> None: ...


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
        # guard fetches and refreshes the token itself (Microsoft 365, Google): guard/daemon/oauth.py
        from guard.daemon.oauth import token_source

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
    """One SMTP connection, reused for consecutive sends (a batch) and closed by :meth:`close`.

    ``on_commit`` (optional) is called once per message at its *commit point*: the whole text has
    left guard for the kernel and only the final dot is still to be written, right after the
    call. The executor journals ``sending`` there, so a crash of guard before that line means
    "not sent" and after it "the server has it" (see :mod:`guard.daemon.journal`). A reused connection
    that turns out dead before the commit point is replaced once, transparently.
    """

    #: QUIT and reconnect after this many messages on one connection (servers limit it too)
    MAX_PER_CONNECTION = 100

    def __init__(self, settings, *, token_provider: TokenProvider | None = None) -> None:
        self.s = settings
        self.token_provider = token_provider or token_provider_from(settings)
        self._tls = tls_context(settings.ca_file) if settings.tls != "none" else None
        self._client: aiosmtplib.SMTP | None = None
        self._used = 0
        self._lock = asyncio.Lock()

    async def send(self, raw: bytes, envelope_from: str, recipients: list[str],
                   on_commit: Callable[[], None] | None = None) -> str:
        async with self._lock:
            reused = self._client is not None
            committed: list[bool] = []

            def commit() -> None:
                committed.append(True)
                if on_commit is not None:
                    on_commit()

            try:
                client = await self._connection()
                try:
                    return await self._transaction(client, raw, envelope_from, recipients, commit)
                except TransientIOError:
                    if not (reused and not committed):
                        raise
                # the reused connection had died (server timeout) before anything was handed over
                await self._drop()
                client = await self._connection()
                return await self._transaction(client, raw, envelope_from, recipients, commit)
            except BaseException:
                await self._drop()
                raise
            finally:
                self._used += 1
                if self._used >= self.MAX_PER_CONNECTION:
                    await self.close_unlocked()

    async def __aenter__(self) -> "SmtpMailer":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def close(self) -> None:
        """QUIT the connection kept for the batch (if any)."""
        async with self._lock:
            await self.close_unlocked()

    async def close_unlocked(self) -> None:
        client, self._client, self._used = self._client, None, 0
        if client is not None and client.is_connected:
            try:
                await client.quit()
            except Exception:
                client.close()

    async def _drop(self) -> None:
        client, self._client, self._used = self._client, None, 0
        if client is not None:
            client.close()

    async def _connection(self) -> aiosmtplib.SMTP:
        if self._client is not None and self._client.is_connected:
            return self._client
        s = self.s
        client = aiosmtplib.SMTP(hostname=s.host, port=s.effective_port(), timeout=s.timeout_seconds,
                                 use_tls=s.tls == "ssl", start_tls=True if s.tls == "starttls" else False,
                                 tls_context=self._tls, validate_certs=s.tls != "none")
        try:
            await client.connect()
        except (aiosmtplib.SMTPConnectError, aiosmtplib.SMTPTimeoutError, aiosmtplib.SMTPServerDisconnected,
                OSError) as exc:
            client.close()
            tls = _tls_failure(exc)
            if tls is not None:
                # an untrusted or wrong certificate does not fix itself: permanent, never retried
                raise PermanentIOError(f"SMTP TLS with {s.host}:{s.effective_port()}: {tls}") from None
            raise TransientIOError(f"SMTP connect to {s.host}:{s.effective_port()}: {type(exc).__name__}") from None
        except ssl.SSLError as exc:
            client.close()
            raise PermanentIOError(f"SMTP TLS with {s.host}: {exc.reason or type(exc).__name__}") from None
        except aiosmtplib.SMTPResponseException as exc:
            client.close()
            raise _code_error(exc.code, f"greeting {_server_text(exc)}") from None
        try:
            await self._login(client)
        except BaseException:
            client.close()
            raise
        self._client, self._used = client, 0
        return client

    @staticmethod
    async def _transaction(client: aiosmtplib.SMTP, raw: bytes, envelope_from: str, recipients: list[str],
                           commit: Callable[[], None]) -> str:
        options = []
        if client.supports_extension("size"):
            options.append(f"SIZE={len(raw)}")
        if not raw.isascii() and client.supports_extension("8bitmime"):
            options.append("BODY=8BITMIME")
        encoding = "ascii"
        if not all(a.isascii() for a in [envelope_from, *recipients]):
            if not client.supports_extension("smtputf8"):
                raise PermanentIOError("SMTP: the server does not offer SMTPUTF8 for a non-ASCII address")
            options.append("SMTPUTF8")
            encoding = "utf-8"
        rcpt_options = ["NOTIFY=NEVER"] if envelope_from == "" and client.supports_extension("dsn") else []
        try:
            await client.mail(envelope_from, options=options, encoding=encoding)
            refused = []
            for rcpt in recipients:
                try:
                    await client.rcpt(rcpt, options=rcpt_options, encoding=encoding)
                except aiosmtplib.SMTPRecipientRefused as exc:
                    refused.append(exc.code)
            if refused:
                # guard sends to one recipient per message: refuse the whole message, temporary if any
                # refusal was temporary (a partial send would need per-recipient bookkeeping)
                temporary = [c for c in refused if 400 <= c < 500]
                raise _code_error(min(temporary) if temporary else max(refused), "recipient refused")
            response = await _data_with_commit_point(client, raw, commit)
        except (TransientIOError, PermanentIOError):
            raise
        except _CommitFailed as exc:
            client.close()  # the server waits for a message that will not come
            raise exc.original from None
        except aiosmtplib.SMTPResponseException as exc:
            raise _code_error(exc.code, f"refused: {_server_text(exc)}") from None
        except (aiosmtplib.SMTPTimeoutError, aiosmtplib.SMTPServerDisconnected, OSError) as exc:
            raise TransientIOError(f"SMTP connection lost: {type(exc).__name__}") from None
        return f"{response.code} {_server_text(response)}" if hasattr(response, "code") else str(response)

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


class SmtpPool:
    """Up to ``connections`` :class:`SmtpMailer` connections, so that the sends of several messages
    are in flight at once (the executor sends the rows of a batch over ``concurrency`` lanes). Each
    send is one whole :meth:`SmtpMailer.send` on one connection, with its own commit point; the
    connections are opened as needed and all QUIT by :meth:`close`."""

    def __init__(self, settings, *, connections: int = 4, token_provider: TokenProvider | None = None) -> None:
        self.s = settings
        self.concurrency = max(1, int(connections))
        self._provider = token_provider
        self._all: list[SmtpMailer] = []
        self._idle: list[SmtpMailer] = []
        self._free = asyncio.Semaphore(self.concurrency)

    async def send(self, raw: bytes, envelope_from: str, recipients: list[str],
                   on_commit: Callable[[], None] | None = None) -> str:
        async with self._free:
            if self._idle:
                m = self._idle.pop()
            else:
                m = SmtpMailer(self.s, token_provider=self._provider)
                if self._provider is None and m.token_provider is not None:
                    self._provider = m.token_provider  # one token source (and its cache) for all
                self._all.append(m)
            try:
                return await m.send(raw, envelope_from, recipients, on_commit)
            finally:
                self._idle.append(m)

    async def __aenter__(self) -> "SmtpPool":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def close(self) -> None:
        """QUIT every connection kept for the batch."""
        for m in list(self._all):
            await m.close()


def _tls_failure(exc: BaseException) -> str | None:
    """The TLS failure behind a connection error (aiosmtplib may wrap it), as text; None if none.
    A certificate that does not verify, or a TLS handshake refused, is permanent."""
    seen = 0
    e: BaseException | None = exc
    while e is not None and seen < 5:
        if isinstance(e, ssl.SSLCertVerificationError):
            return f"certificate not trusted: {e.verify_message or e.reason or 'verification failed'}"
        if isinstance(e, ssl.SSLError):
            return f"TLS failed: {e.reason or type(e).__name__}"
        e = e.__cause__ or e.__context__
        seen += 1
    text = str(exc)
    if "CERTIFICATE_VERIFY_FAILED" in text or "certificate verify failed" in text:
        return "certificate not trusted: " + _SAFE_TEXT.sub("?", text)[:200]
    return None


class _CommitFailed(Exception):
    """The commit-point callback raised: carried through aiosmtplib, re-raised as the original."""

    def __init__(self, original: BaseException) -> None:
        super().__init__(str(original))
        self.original = original


async def _data_with_commit_point(client: aiosmtplib.SMTP, raw: bytes, commit: Callable[[], None]):
    """DATA, with ``commit()`` called once the whole message text is with the kernel and only its
    final dot is still to be written.

    aiosmtplib writes ``DATA``, waits for 354, then writes the escaped message and its final
    ``.<CRLF>`` in one ``protocol.write``. The hook on that write hands over the text without the
    dot; a task waits until the transport's own buffer is empty (a big message may not fit the
    socket at once, and what is still in our buffer dies with the process), then calls
    ``commit()`` and writes the dot, with no await in between. So a crash before the commit means
    the server never saw the dot (it drops the message: an intent, sent again) and a crash after
    it means the kernel delivers the dot after the process is gone (the server has the message:
    taken as sent). (Pinned by tests/unit/daemon/test_mailer_commit_point.py against a real SMTP server.)"""
    proto = client.protocol
    original = proto.write
    failure: list[BaseException] = []
    finishing: list[asyncio.Task] = []

    async def hand_over_the_dot(dot: bytes) -> None:
        transport = proto.transport
        while transport is not None and not transport.is_closing() and transport.get_write_buffer_size():
            await asyncio.sleep(0.0005)
        if transport is None or transport.is_closing():
            return
        try:
            commit()
        except BaseException as exc:  # the journal failed: hand nothing over; the server drops the text
            failure.append(exc)
            transport.abort()
            return
        original(dot)

    def write(data: bytes) -> None:
        if data == b"DATA\r\n":
            original(data)
            return
        proto.write = original
        if data.endswith(b"\r\n.\r\n"):
            original(data[:-3])
            finishing.append(asyncio.ensure_future(hand_over_the_dot(data[-3:])))
            return
        try:  # not the shape expected of aiosmtplib: commit before the whole write, as the next best
            commit()
        except BaseException as exc:
            raise _CommitFailed(exc) from exc
        original(data)

    proto.write = write
    try:
        return await client.data(raw)
    except BaseException:
        if failure:
            raise _CommitFailed(failure[0]) from None
        raise
    finally:
        proto.write = original
        for task in finishing:
            if not task.done():
                task.cancel()


class FileMailer:
    """Writes each message to ``directory`` as ``NNN-<kind>-<recipient>.eml`` (the demo's outbox)."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.written: list[Path] = []

    async def send(self, raw: bytes, envelope_from: str, recipients: list[str],
                   on_commit: Callable[[], None] | None = None) -> str:
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
        if on_commit is not None:
            on_commit()
        os.replace(tmp, path)
        self.written.append(path)
        return f"250 written to {path}"

    async def close(self) -> None:
        return None


class NullMailer:
    """Dry-run: records what would be sent and sends nothing."""

    def __init__(self) -> None:
        self.would_send: list[tuple[str, list[str]]] = []

    async def send(self, raw: bytes, envelope_from: str, recipients: list[str],
                   on_commit: Callable[[], None] | None = None) -> str:
        if on_commit is not None:
            on_commit()
        self.would_send.append((envelope_from, list(recipients)))
        return "250 dry-run: not sent"

    async def close(self) -> None:
        return None


AsyncTokenProvider = Callable[[], Awaitable[str]]
