"""Mailboxes: :class:`ImapMailbox` (imapclient, the daemon's) and :class:`MaildirMailbox` (the demo's).

Both offer the same small async interface used by the executor and the daemon:

    uidvalidity = await mb.open()          # connect, log in, select; folders created
    uids = await mb.uids_after(last_uid)   # UID SEARCH reconciliation
    sizes = await mb.sizes(uids)           # RFC822.SIZE, to bound a batch's bytes
    fetched = await mb.fetch_many(uids)    # {uid: bytes + arrival time}, \\Seen untouched
    await mb.flag_many(uids); moved = await mb.move_many(uids, "Guard/Quarantine")
    why = await mb.wait(timeout, stop)     # IDLE (or a poll interval): "changed", "timeout", "stopped"
    await mb.close()

Every call takes a batch of UIDs and is one IMAP command (two for a move: the
UID SEARCH that tells which are still there, then UID MOVE), so a backlog costs
a few round trips per batch, not per message.

IMAP specifics: every blocking imapclient call runs in ``asyncio.to_thread``,
one at a time (a lock), so the event loop never blocks. TLS is implicit or
STARTTLS with verified certificates; login is by password or XOAUTH2 (a
token-provider callable). IDLE is ended and re-issued at least every
``idle_seconds``; a dead connection is noticed by TCP keepalive, the server's
BYE, an EOF, or the socket timeout when IDLE ends. Any connection failure
surfaces as :class:`~guard.errors.TransientIOError` and the daemon reconnects
with backoff. MOVE is used when offered; otherwise UID COPY, STORE \\Deleted
and UID EXPUNGE of that one UID (UIDPLUS). Mail is never deleted: without
UIDPLUS the copy is made and the original only flagged \\Deleted, never expunged.
"""

from __future__ import annotations

import asyncio
import imaplib
import json
import logging
import os
import shutil
import socket
import ssl
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Protocol

from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError, LoginError

from guard.errors import PermanentIOError, TransientIOError
from guard.daemon.mailer import TokenProvider, tls_context, token_provider_from

log = logging.getLogger("guard.daemon.mailbox")

FLAGGED = b"\\Flagged"
DELETED = b"\\Deleted"


@dataclass(frozen=True)
class Fetched:
    uid: int
    raw: bytes
    arrived: datetime | None
    size: int
    truncated: bool = False


class Mailbox(Protocol):
    account: str
    mailbox: str

    async def open(self) -> int: ...
    async def close(self) -> None: ...
    async def uids_after(self, uid: int) -> list[int]: ...
    async def sizes(self, uids: list[int]) -> dict[int, int]: ...
    async def fetch_many(self, uids: list[int]) -> dict[int, Fetched]: ...
    async def move_many(self, uids: list[int], folder: str) -> set[int]: ...
    async def flag_many(self, uids: list[int]) -> None: ...
    async def wait(self, timeout: float, stop: asyncio.Event) -> str: ...


def _enable_keepalive(sock: socket.socket) -> None:
    """Let the kernel notice a silently dead peer (NAT drop, pulled cable) within ~90 s."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        for name, value in (("TCP_KEEPIDLE", 60), ("TCP_KEEPINTVL", 10), ("TCP_KEEPCNT", 3)):
            if hasattr(socket, name):
                sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)
    except OSError:
        pass


_CONNECTION_ERRORS = (imaplib.IMAP4.abort, imaplib.IMAP4.error, IMAPClientError, OSError, ssl.SSLError, EOFError)


class ImapMailbox:
    """One IMAP connection to one watched mailbox."""

    def __init__(self, settings, *, account: str | None = None, folders: list[str] | tuple[str, ...] = (),
                 client_factory: Callable[..., IMAPClient] = IMAPClient,
                 token_provider: TokenProvider | None = None) -> None:
        self.s = settings
        self.account = account or settings.username
        self.mailbox = settings.mailbox
        self.folders = tuple(folders)
        #: guard's folders that existed at the first connection (before guard created any)
        self.preexisting_folders: tuple[str, ...] | None = None
        self.client_factory = client_factory
        self.token_provider = token_provider or token_provider_from(settings)
        self._client: IMAPClient | None = None
        self._caps: frozenset[bytes] = frozenset()
        self._delimiter = "/"
        self._lock = asyncio.Lock()
        self._ctx = tls_context(settings.ca_file) if settings.tls != "none" else None

    # -- plumbing ----------------------------------------------------------------------
    async def _call(self, fn, *args, **kwargs):
        """Run one blocking imapclient call in a thread; connection trouble -> TransientIOError."""
        if self._client is None:
            raise TransientIOError("IMAP: not connected")
        try:
            return await asyncio.to_thread(fn, *args, **kwargs)
        except (TransientIOError, PermanentIOError):
            raise
        except _CONNECTION_ERRORS as exc:
            self._drop()
            raise TransientIOError(f"IMAP {getattr(fn, '__name__', 'call')}: {type(exc).__name__}: {_short(exc)}") from None

    def _drop(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                client.shutdown()
            except Exception:
                pass

    @property
    def capabilities(self) -> frozenset[bytes]:
        return self._caps

    @property
    def idle_supported(self) -> bool:
        return b"IDLE" in self._caps

    def folder_name(self, name: str) -> str:
        """A configured folder name ("Guard/Quarantine") in the server's hierarchy delimiter."""
        return name.replace("/", self._delimiter) if self._delimiter else name

    # -- connection --------------------------------------------------------------------
    def _connect_sync(self) -> tuple[IMAPClient, int]:
        s = self.s
        client = self.client_factory(s.host, s.effective_port(), ssl=s.tls == "ssl", ssl_context=self._ctx,
                                     timeout=s.timeout_seconds)
        try:
            sock = client.socket() if hasattr(client, "socket") else None
            if isinstance(sock, socket.socket):
                _enable_keepalive(sock)
            if s.tls == "starttls":
                client.starttls(self._ctx)
            try:
                if self.token_provider is not None:
                    client.oauth2_login(s.username, self.token_provider())
                else:
                    client.login(s.username, s.secret())
            except LoginError as exc:
                raise PermanentIOError(f"IMAP login as {s.username} refused: {_short(exc)}") from None
            client.normalise_times = False
            self._caps = frozenset(c.upper() for c in client.capabilities())
            try:
                listing = client.list_folders(directory="", pattern="")
                if listing and listing[0][1]:
                    d = listing[0][1]
                    self._delimiter = d.decode() if isinstance(d, bytes) else str(d)
            except Exception:
                self._delimiter = "/"
            existing = []
            for name in self.folders:
                if self._ensure_folder_sync(client, self.folder_name(name)):
                    existing.append(name)
            if self.preexisting_folders is None:  # what guard found at its first connection
                self.preexisting_folders = tuple(existing)
            info = client.select_folder(self.mailbox)
            uidvalidity = int(info[b"UIDVALIDITY"])
            return client, uidvalidity
        except BaseException:
            try:
                client.shutdown()
            except Exception:
                pass
            raise

    @staticmethod
    def _ensure_folder_sync(client: IMAPClient, name: str) -> bool:
        """Create the folder when missing; True when it existed already."""
        if client.folder_exists(name):
            return True
        try:
            client.create_folder(name)
        except IMAPClientError as exc:
            if not client.folder_exists(name):
                raise PermanentIOError(f"IMAP: cannot create folder {name!r}: {_short(exc)}") from None
        try:
            client.subscribe_folder(name)
        except IMAPClientError:
            pass
        log.info("created folder %s", name)
        return False

    async def open(self) -> int:
        """Connect, log in, create missing folders, select the mailbox; returns its UIDVALIDITY."""
        async with self._lock:
            self._drop()
            try:
                client, uidvalidity = await asyncio.to_thread(self._connect_sync)
            except (TransientIOError, PermanentIOError):
                raise
            except ssl.SSLCertVerificationError as exc:
                raise PermanentIOError(f"IMAP TLS certificate of {self.s.host} not trusted: {exc.verify_message}") from None
            except _CONNECTION_ERRORS as exc:
                raise TransientIOError(f"IMAP connect to {self.s.host}:{self.s.effective_port()}: "
                                       f"{type(exc).__name__}: {_short(exc)}") from None
            self._client = client
            log.info("connected to %s, %s selected (UIDVALIDITY %s, %s)", self.s.describe(), self.mailbox,
                     uidvalidity, "IDLE" if self.idle_supported else "polling")
            return uidvalidity

    async def close(self) -> None:
        async with self._lock:
            client, self._client = self._client, None
            if client is None:
                return
            try:
                await asyncio.wait_for(asyncio.to_thread(client.logout), timeout=5)
            except Exception:
                try:
                    client.shutdown()
                except Exception:
                    pass

    # -- reading -----------------------------------------------------------------------
    async def uids_after(self, uid: int) -> list[int]:
        """UIDs above ``uid`` (``UID SEARCH UID n+1:*``; ``*`` alone would return the last one)."""
        async with self._lock:
            client = self._client
            found = await self._call(lambda: client.search(["UID", f"{uid + 1}:*"]))
        return sorted(u for u in found if u > uid)

    async def sizes(self, uids: list[int]) -> dict[int, int]:
        """RFC822.SIZE of each UID still in the mailbox (one FETCH)."""
        if not uids:
            return {}
        async with self._lock:
            client = self._client
            data = await self._call(lambda: client.fetch(sorted(uids), ["RFC822.SIZE"]))
        wanted = set(uids)
        return {u: int(item.get(b"RFC822.SIZE", 0)) for u, item in data.items() if u in wanted}

    async def fetch(self, uid: int) -> Fetched | None:
        return (await self.fetch_many([uid])).get(uid)

    async def fetch_many(self, uids: list[int]) -> dict[int, Fetched]:
        """The messages still in the mailbox among ``uids``, each read up to ``max_message_bytes``,
        in one FETCH (\\Seen untouched: BODY.PEEK)."""
        if not uids:
            return {}
        limit = self.s.max_message_bytes
        async with self._lock:
            client = self._client
            data = await self._call(
                lambda: client.fetch(sorted(uids), ["RFC822.SIZE", "INTERNALDATE", f"BODY.PEEK[]<0.{limit}>"]))
        return fetched_from(data, uids)

    # -- writing -----------------------------------------------------------------------
    async def flag(self, uid: int) -> None:
        await self.flag_many([uid])

    async def flag_many(self, uids: list[int]) -> None:
        if not uids:
            return
        async with self._lock:
            client = self._client
            await self._call(lambda: client.add_flags(_uid_set(uids), [FLAGGED], silent=True))

    async def move(self, uid: int, folder: str) -> bool:
        """Move one message; False when it is no longer in the mailbox."""
        return uid in await self.move_many([uid], folder)

    async def move_many(self, uids: list[int], folder: str) -> set[int]:
        """Move the messages to ``folder`` (one command); returns the UIDs that were still there."""
        if not uids:
            return set()
        target = self.folder_name(folder)
        async with self._lock:
            client = self._client
            present = set(await self._call(lambda: client.search(["UID", _uid_set(uids)]))) & set(uids)
            if present:
                await self.move_selected(present, target)
        return present

    async def move_selected(self, uids: set[int] | list[int], target: str) -> None:
        """UID MOVE (or COPY + STORE \\Deleted + UID EXPUNGE of exactly these UIDs) from the selected
        folder; the caller holds the lock and knows the UIDs are there."""
        client = self._client
        todo = _uid_set(list(uids))
        if b"MOVE" in self._caps:
            await self._call(lambda: client.move(todo, target))
            return
        await self._call(lambda: client.copy(todo, target))
        await self._call(lambda: client.add_flags(todo, [DELETED], silent=True))
        if b"UIDPLUS" in self._caps:
            await self._call(lambda: client.uid_expunge(todo))
        else:
            log.warning("server has neither MOVE nor UIDPLUS: %s message(s) copied to %s and flagged \\Deleted, "
                        "not expunged (guard never expunges other messages)", len(uids), target)

    # -- waiting -----------------------------------------------------------------------
    async def wait(self, timeout: float, stop: asyncio.Event) -> str:
        """IDLE until the mailbox changes, ``timeout`` passes or ``stop`` is set; polling without IDLE."""
        if not self.idle_supported:
            try:
                await asyncio.wait_for(stop.wait(), timeout=min(timeout, self.s.poll_seconds))
                return "stopped"
            except asyncio.TimeoutError:
                async with self._lock:
                    client = self._client
                    await self._call(client.noop)
                return "timeout"
        async with self._lock:
            client = self._client
            await self._call(client.idle)
            deadline = time.monotonic() + min(timeout, self.s.idle_seconds)
            why = "timeout"
            try:
                while True:
                    if stop.is_set():
                        why = "stopped"
                        break
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    step = min(1.0, left)
                    t0 = time.monotonic()
                    responses = await self._call(client.idle_check, timeout=step)
                    if any(_is_bye(r) for r in responses):
                        self._drop()
                        raise TransientIOError("IMAP: server said BYE")
                    if any(_is_change(r) for r in responses):
                        why = "changed"
                        break
                    if not responses and time.monotonic() - t0 < step * 0.5:
                        # imapclient returns nothing, at once, on EOF: let DONE find out
                        why = "check"
                        break
            finally:
                if self._client is not None:
                    try:
                        await self._call(client.idle_done)
                    except TransientIOError:
                        if why != "stopped":
                            raise
            return why


def _is_change(resp) -> bool:
    return isinstance(resp, tuple) and len(resp) >= 2 and resp[1] in (b"EXISTS", b"EXPUNGE", b"RECENT")


def _is_bye(resp) -> bool:
    return isinstance(resp, tuple) and len(resp) >= 1 and resp[0] == b"BYE"


def fetched_from(data: dict, uids: list[int]) -> dict[int, Fetched]:
    """imapclient's FETCH answer (RFC822.SIZE, INTERNALDATE, BODY[]) as :class:`Fetched` per asked UID;
    unsolicited FETCH responses (another client's flag change) are ignored."""
    wanted = set(uids)
    out = {}
    for uid, item in data.items():
        if uid not in wanted:
            continue
        raw = next((v for k, v in item.items() if isinstance(k, bytes) and k.startswith(b"BODY[]")), None)
        if raw is None:
            continue
        size = int(item.get(b"RFC822.SIZE", len(raw)))
        arrived = item.get(b"INTERNALDATE")
        if isinstance(arrived, datetime) and arrived.tzinfo is None:
            arrived = arrived.replace(tzinfo=timezone.utc)
        out[uid] = Fetched(uid, bytes(raw), arrived, size, truncated=size > len(raw))
    return out


def _uid_set(uids: list[int]) -> str:
    """An IMAP sequence set with ranges ("3:5,9"), so a batch stays one short command."""
    out, run = [], []
    for u in sorted(set(uids)):
        if run and u == run[-1] + 1:
            run.append(u)
            continue
        if run:
            out.append(f"{run[0]}:{run[-1]}" if len(run) > 1 else str(run[0]))
        run = [u]
    if run:
        out.append(f"{run[0]}:{run[-1]}" if len(run) > 1 else str(run[0]))
    return ",".join(out)


def _short(exc: BaseException) -> str:
    text = str(exc).replace("\r", " ").replace("\n", " ")
    return text[:200]


# ---------------------------------------------------------------------------------------
# Maildir (the demo)


class MaildirMailbox:
    """A Maildir++ tree with the same interface: UIDs are assigned in arrival order and kept in
    ``guard-uids.json``; folders are ``.Guard.Quarantine`` and so on; moving renames the file."""

    def __init__(self, root: Path, *, account: str = "demo", folders: list[str] | tuple[str, ...] = ()) -> None:
        self.root = Path(root)
        self.account = account
        self.mailbox = "INBOX"
        self.folders = tuple(folders)
        self._state = self.root / "guard-uids.json"

    def folder_dir(self, folder: str) -> Path:
        return self.root / ("." + folder.replace("/", "."))

    @staticmethod
    def _make(d: Path) -> None:
        for sub in ("cur", "new", "tmp"):
            (d / sub).mkdir(parents=True, exist_ok=True)

    def _load(self) -> dict:
        if self._state.is_file():
            return json.loads(self._state.read_text())
        return {"uidvalidity": int(time.time()), "next": 1, "uids": {}}

    def _save(self, st: dict) -> None:
        tmp = self._state.with_suffix(".tmp")
        tmp.write_text(json.dumps(st, indent=1, sort_keys=True))
        os.replace(tmp, self._state)

    def _files(self) -> dict[str, Path]:
        out = {}
        for sub in ("new", "cur"):
            for p in sorted((self.root / sub).iterdir()):
                if not p.name.startswith("."):
                    out[p.name.split(":", 1)[0]] = p
        return out

    def _scan(self) -> tuple[dict, dict[int, Path]]:
        st = self._load()
        files = self._files()
        for base in sorted(files, key=lambda b: (files[b].stat().st_mtime, b)):
            if base not in st["uids"]:
                st["uids"][base] = st["next"]
                st["next"] += 1
        self._save(st)
        return st, {st["uids"][b]: p for b, p in files.items()}

    async def open(self) -> int:
        self._make(self.root)
        for f in self.folders:
            self._make(self.folder_dir(f))
        st, _ = self._scan()
        return st["uidvalidity"]

    async def close(self) -> None:
        return None

    async def uids_after(self, uid: int) -> list[int]:
        _, by_uid = self._scan()
        return sorted(u for u in by_uid if u > uid)

    async def sizes(self, uids: list[int]) -> dict[int, int]:
        _, by_uid = self._scan()
        return {u: by_uid[u].stat().st_size for u in uids if u in by_uid}

    async def fetch(self, uid: int) -> Fetched | None:
        return (await self.fetch_many([uid])).get(uid)

    async def fetch_many(self, uids: list[int]) -> dict[int, Fetched]:
        _, by_uid = self._scan()
        out = {}
        for uid in uids:
            p = by_uid.get(uid)
            if p is not None:
                raw = p.read_bytes()
                out[uid] = Fetched(uid, raw, datetime.fromtimestamp(p.stat().st_mtime, timezone.utc), len(raw))
        return out

    async def flag(self, uid: int) -> None:
        await self.flag_many([uid])

    async def flag_many(self, uids: list[int]) -> None:
        _, by_uid = self._scan()
        for uid in uids:
            p = by_uid.get(uid)
            if p is None:
                continue
            base, _, info = p.name.partition(":2,")
            flags = "".join(sorted(set(info) | {"F"}))
            os.replace(p, self.root / "cur" / f"{base}:2,{flags}")

    async def move(self, uid: int, folder: str) -> bool:
        return uid in await self.move_many([uid], folder)

    async def move_many(self, uids: list[int], folder: str) -> set[int]:
        _, by_uid = self._scan()
        d = self.folder_dir(folder)
        self._make(d)
        moved = set()
        for uid in uids:
            p = by_uid.get(uid)
            if p is None:
                continue
            name = p.name if ":2," in p.name else p.name + ":2,"
            shutil.move(str(p), str(d / "cur" / name))
            moved.add(uid)
        return moved

    async def wait(self, timeout: float, stop: asyncio.Event) -> str:
        try:
            await asyncio.wait_for(stop.wait(), timeout=timeout)
            return "stopped"
        except asyncio.TimeoutError:
            return "timeout"
