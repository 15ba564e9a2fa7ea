"""Fixtures for integration tests against a real Dovecot (IMAP/LMTP) and SMTP server.

The stack is started by ``scripts/mailstack.sh`` with its own MAIL_DIR under pytest's tmp dir and
free loopback ports, so it never touches a developer's running stack (default MAIL_DIR
/tmp/guard-mailstack on 10143/10025). Every test in tests/integration gets the ``integration``
marker; deselect them with ``-m "not integration"``.

    def test_x(clean_mailstack):          # function scope: empty mailboxes + sink, servers up
        ms = clean_mailstack
        ms.send(raw, "someone@example.org", ["events@crm.cat"])
        assert len(ms.fetch_all("events@crm.cat")) == 1
        assert [m.envelope_tos for m in ms.sink()] == [["events@crm.cat"]]

Without Dovecot the tests are skipped; with the CI environment variable set they fail instead,
telling to run ``scripts/install-test-deps.sh``.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import tempfile
import smtplib
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import pytest
from imapclient import IMAPClient

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]
MAILSTACK = REPO_ROOT / "scripts" / "mailstack.sh"
INSTALL_HINT = ("run `bash scripts/install-test-deps.sh` as root "
                "(installs Dovecot for the integration tests)")

PASSWORD = "secret"
EVENTS = "events@crm.cat"
COORDINATOR = "nhernandez@crm.cat"
PARTICIPANT = "participant@example.org"
USERS = {addr: PASSWORD for addr in
         (EVENTS, COORDINATOR, PARTICIPANT, "alice@example.org", "bob@example.org")}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # This hook sees the whole session's items: mark only those under tests/integration.
    for item in items:
        if Path(item.path).resolve().is_relative_to(HERE):
            item.add_marker(pytest.mark.integration)


class SinkMessage(NamedTuple):
    """One message accepted by the SMTP server: its envelope and the bytes the client sent."""
    envelope_from: str          # "" for the null sender <>
    envelope_tos: list[str]
    raw: bytes


class FetchedMessage(NamedTuple):
    uid: int
    flags: tuple[bytes, ...]
    raw: bytes


class MailStackError(RuntimeError):
    pass


def _free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _missing_prerequisite() -> str | None:
    """Why the stack cannot run here (with what to do about it), or None."""
    path = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
    if shutil.which("dovecot", path=path) is None:
        return f"Dovecot is not installed; {INSTALL_HINT}"
    if not Path("/usr/lib/dovecot/lmtp").exists():
        return f"dovecot-lmtpd is not installed; {INSTALL_HINT}"
    if shutil.which("openssl") is None:
        return f"openssl is not installed; {INSTALL_HINT}"
    if os.geteuid() != 0:
        return ("the private Dovecot instance must be started as root (it stores mail as "
                "user 'mail'): run the integration tests as root")
    return None


def _sink_parse(blob: bytes) -> SinkMessage:
    env_from, env_tos, pos = "", [], 0
    while True:
        end = blob.find(b"\r\n", pos)
        if end < 0:
            break
        line = blob[pos:end]
        if line.startswith(b"X-Envelope-From: "):
            value = line[len(b"X-Envelope-From: "):].decode("utf-8", "surrogateescape")
            env_from = "" if value == "<>" else value
        elif line.startswith(b"X-Envelope-To: "):
            env_tos.append(line[len(b"X-Envelope-To: "):].decode("utf-8", "surrogateescape"))
        else:
            break
        pos = end + 2
    return SinkMessage(env_from, env_tos, blob[pos:])


@dataclass
class MailStack:
    """A running private mail stack (see scripts/mailstack.sh)."""

    mail_dir: Path
    imap_port: int
    imaps_port: int
    smtp_port: int
    host: str = "127.0.0.1"
    users: dict[str, str] = field(default_factory=lambda: dict(USERS))
    timeout: float = 30.0

    # ---------------------------------------------------------------- paths
    @property
    def lmtp_socket(self) -> Path:
        return self.mail_dir / "dovecot" / "run" / "lmtp"

    @property
    def ca_cert(self) -> Path:
        """Self-signed certificate of IMAP STARTTLS/IMAPS (CN localhost, SAN 127.0.0.1)."""
        return self.mail_dir / "dovecot" / "cert.pem"

    @property
    def sink_dir(self) -> Path:
        return self.mail_dir / "smtp-sink"

    # ---------------------------------------------------------------- control (mailstack.sh)
    def _script_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            MAIL_DIR=str(self.mail_dir),
            IMAP_PORT=str(self.imap_port),
            IMAPS_PORT=str(self.imaps_port),
            SMTP_PORT=str(self.smtp_port),
            LMTP_PORT="0",
            MAIL_USERS=" ".join(f"{u}:{p}" for u, p in self.users.items()),
            PYTHON=sys.executable,
        )
        return env

    def run_script(self, *args: str) -> str:
        """Run scripts/mailstack.sh with this stack's settings; returns its stdout."""
        proc = subprocess.run(["bash", str(MAILSTACK), *args], env=self._script_env(),
                              stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=120)
        if proc.returncode != 0:
            raise MailStackError(
                f"mailstack.sh {' '.join(args)} failed (rc={proc.returncode}):\n"
                f"{proc.stderr}{self.logs()}")
        return proc.stdout

    def logs(self, lines: int = 30) -> str:
        out = []
        for f in (self.mail_dir / "dovecot" / "dovecot.log",
                  self.mail_dir / "dovecot" / "dovecot.stderr", self.mail_dir / "smtp.log"):
            if f.exists():
                tail = f.read_text(errors="replace").splitlines()[-lines:]
                out.append(f"--- {f}\n" + "\n".join(tail))
        return "\n".join(out)

    def start(self) -> None:
        """Start whatever is not running (idempotent; returns once the ports answer)."""
        self.run_script("start")

    def stop(self) -> None:
        self.run_script("stop")

    def restart_dovecot(self) -> None:
        """Stop and start Dovecot (~1 s); clients are disconnected, mail is kept."""
        self.run_script("restart", "dovecot")

    def stop_dovecot(self) -> None:
        self.run_script("stop", "dovecot")

    def start_dovecot(self) -> None:
        self.run_script("start", "dovecot")

    def stop_smtp(self) -> None:
        """SMTP connections are refused until start_smtp()."""
        self.run_script("stop", "smtp")

    def start_smtp(self) -> None:
        self.run_script("start", "smtp")

    def reset(self) -> None:
        """Disconnect IMAP clients, empty every mailbox (folders included) and the SMTP sink,
        and clear the SMTP failure switch. UIDVALIDITYs change."""
        self.run_script("reset")

    def smtp_fail(self, reply: str = "451 4.3.0 try later", stage: str = "rcpt,data",
                  times: int | None = None) -> None:
        """Make the SMTP server answer `reply` at `stage` (comma-separated: mail, rcpt, data),
        `times` times or until smtp_ok()."""
        self.run_script("smtp-fail", reply, stage, "" if times is None else str(times))

    def smtp_ok(self) -> None:
        self.run_script("smtp-ok")

    def status(self) -> str:
        proc = subprocess.run(["bash", str(MAILSTACK), "status"], env=self._script_env(),
                              stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=30)
        return proc.stdout

    def env(self) -> dict[str, str]:
        """The GUARD_TEST_* variables printed by `mailstack.sh env`."""
        out = {}
        for line in self.run_script("env").splitlines():
            words = shlex.split(line)
            if len(words) == 2 and words[0] == "export":
                key, _, value = words[1].partition("=")
                out[key] = value
        return out

    # ---------------------------------------------------------------- IMAP helpers
    @contextmanager
    def imap(self, user: str, password: str | None = None) -> Iterator[IMAPClient]:
        """A logged-in IMAPClient (plain TCP on the IMAP port); logged out afterwards."""
        client = IMAPClient(self.host, self.imap_port, ssl=False, timeout=self.timeout)
        try:
            client.login(user, self.users[user] if password is None else password)
            yield client
        finally:
            try:
                client.logout()
            except Exception:
                try:
                    client.shutdown()
                except Exception:
                    pass

    def append(self, user: str, raw_bytes: bytes, folder: str = "INBOX",
               flags: Iterable[bytes | str] = ()) -> int | None:
        """IMAP APPEND (the folder is created if missing); returns the new UID."""
        with self.imap(user) as c:
            if folder.upper() != "INBOX" and not c.folder_exists(folder):
                c.create_folder(folder)
            resp = c.append(folder, raw_bytes, flags=tuple(flags))
        m = re.search(rb"APPENDUID \d+ (\d+)", resp or b"")
        return int(m.group(1)) if m else None

    def fetch(self, user: str, folder: str = "INBOX") -> list[FetchedMessage]:
        """All messages of a folder in UID order, without setting \\Seen."""
        with self.imap(user) as c:
            c.select_folder(folder, readonly=True)
            uids = sorted(c.search("ALL"))
            if not uids:
                return []
            data = c.fetch(uids, ["FLAGS", "BODY.PEEK[]"])
        return [FetchedMessage(uid, tuple(data[uid][b"FLAGS"]), data[uid][b"BODY[]"])
                for uid in uids]

    def fetch_all(self, user: str, folder: str = "INBOX") -> list[bytes]:
        """Raw bytes of every message in the folder (UID order); raises if it does not exist."""
        return [m.raw for m in self.fetch(user, folder)]

    def folders(self, user: str) -> list[str]:
        with self.imap(user) as c:
            return [name for _flags, _sep, name in c.list_folders()]

    def wait_for_messages(self, user: str, count: int = 1, folder: str = "INBOX",
                          timeout: float = 10.0) -> list[bytes]:
        """Poll until the folder holds at least `count` messages; returns them."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                msgs = self.fetch_all(user, folder)
            except IMAPClient.Error:
                msgs = []  # folder not created yet
            if len(msgs) >= count or time.monotonic() > deadline:
                if len(msgs) < count:
                    raise AssertionError(f"{user}/{folder}: {len(msgs)} messages after "
                                         f"{timeout}s, expected {count}")
                return msgs
            time.sleep(0.05)

    # ---------------------------------------------------------------- SMTP helpers
    def send(self, raw_bytes: bytes | str, mail_from: str,
             rcpt_tos: str | Iterable[str]) -> dict:
        """Submit over SMTP to our server (local users get it through LMTP before this returns).
        Returns smtplib's dict of refused recipients; raises if all were refused."""
        rcpts = [rcpt_tos] if isinstance(rcpt_tos, str) else list(rcpt_tos)
        if isinstance(raw_bytes, str):
            raw_bytes = raw_bytes.encode("utf-8")
        with smtplib.SMTP(self.host, self.smtp_port, timeout=self.timeout) as s:
            return s.sendmail(mail_from, rcpts, raw_bytes)

    def sink(self) -> list[SinkMessage]:
        """Everything the SMTP server accepted so far, in order of acceptance."""
        if not self.sink_dir.is_dir():
            return []
        files = sorted(p for p in self.sink_dir.iterdir() if p.suffix == ".eml"
                       and not p.name.startswith("."))
        return [_sink_parse(p.read_bytes()) for p in files]

    def wait_for_sink(self, count: int = 1, timeout: float = 10.0) -> list[SinkMessage]:
        deadline = time.monotonic() + timeout
        while True:
            msgs = self.sink()
            if len(msgs) >= count:
                return msgs
            if time.monotonic() > deadline:
                raise AssertionError(f"SMTP sink: {len(msgs)} messages after {timeout}s, "
                                     f"expected {count}")
            time.sleep(0.05)


@pytest.fixture(scope="session")
def mailstack() -> Iterator[MailStack]:
    """A private Dovecot + SMTP stack for the whole session (stopped at the end)."""
    reason = _missing_prerequisite()
    if reason:
        msg = f"integration tests need the local mail stack: {reason}"
        if os.environ.get("CI"):
            pytest.fail(msg, pytrace=False)
        pytest.skip(msg)
    # Outside pytest's temp root: every new pytest run resets that root to 0700, which would
    # lock Dovecot's 'mail' user out of a stack another run is still using. Short, too, for
    # the 108-byte limit on unix socket paths.
    mail_dir = Path(tempfile.mkdtemp(prefix="guard-stack-", dir="/tmp"))
    mail_dir.chmod(0o711)
    imap_port, imaps_port, smtp_port = _free_ports(3)
    stack = MailStack(mail_dir=mail_dir, imap_port=imap_port, imaps_port=imaps_port,
                      smtp_port=smtp_port)
    try:
        stack.start()
        yield stack
    finally:
        stack.stop()
        shutil.rmtree(mail_dir, ignore_errors=True)


@pytest.fixture
def clean_mailstack(mailstack: MailStack) -> MailStack:
    """The session stack with both servers running, empty mailboxes, an empty sink and no
    SMTP failure switch (a previous test may have stopped a server or left mail)."""
    mailstack.start()
    mailstack.reset()
    return mailstack
