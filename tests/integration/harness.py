"""A reusable fault-injection harness for `guard run` against the real test mail stack.

    g = GuardProc(ms, tmp_path)               # a config for the stack (overrides per section)
    g.once()                                   # the first start: mail arriving from now on is new
    mix = MessageMix(seed=1)                   # mixed test messages with their expected outcome
    g.start(); deliver(ms, mix.take(50)); ...; g.kill9(); g.start()
    g.wait_idle_inbox(...); report = account(ms, mix); report.assert_exactly_once()

``account`` counts in the real SMTP sink (everything the SMTP server accepted) and in the IMAP
folders: every message delivered must be filed exactly once in its expected folder, and every
expected reply / forward / alert must have been accepted by SMTP exactly once (no missing one,
no second one with a different Message-ID). A second copy of the *same* outgoing message (same
Message-ID) is counted separately (``resent``): guard journals each send at its commit point,
just before the message text goes to the server, and never sends such a send again, so the
crash tests require ``resent == 0``.

``FreezableProxy`` is a TCP proxy that can silently blackhole its open connections (the socket
stays open, nothing more is forwarded either way), for guard's dead-connection detection.
"""

from __future__ import annotations

import email
import email.parser
import email.policy
import os
import random
import re
import select
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from imapclient import IMAPClient

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
EVENTS = "events@crm.cat"
COORDINATOR = "nhernandez@crm.cat"
FOLDERS = ("INBOX", "Guard/Quarantine", "Guard/Review", "Guard/Routed", "Guard/Automated", "Guard/NotScam",
           "Guard/Scam", "Guard/Other")

# kind -> (expected sends as {kind: count}, expected folder)
EXPECTED = {
    "inquiry": ({"reply": 1, "forward": 1}, "Guard/Routed"),
    "scam": ({}, "Guard/Quarantine"),
    "report": ({"reply": 1}, "Guard/Routed"),
    "report_paid": ({"reply": 1, "alert": 1}, "Guard/Review"),
    "bounce": ({}, "Guard/Automated"),
    "ooo": ({}, "Guard/Automated"),
}
DEFAULT_WEIGHTS = {"inquiry": 3, "scam": 3, "report": 2, "report_paid": 1, "bounce": 1, "ooo": 1}


def _crlf(text: str) -> bytes:
    return text.replace("\r\n", "\n").replace("\n", "\r\n").encode("utf-8")


def trusted_auth(sender: str) -> str:
    """The Authentication-Results line the institute's receiving server (authserv-id mx.crm.cat, the
    one guard's test configurations trust) adds on top of a genuine message from ``sender``."""
    domain = sender.rpartition("@")[2]
    return f"Authentication-Results: mx.crm.cat; spf=pass smtp.mailfrom={sender}; dmarc=pass header.from={domain}\n"


def make_message(kind: str, n: int, tag: str = "h", to: str = EVENTS) -> tuple[str, bytes]:
    """A test message of ``kind`` (see EXPECTED), every sender distinct; returns (Message-ID, raw)."""
    mid = f"<{tag}.{kind}.{n}.{time.time_ns()}@harness.example>"
    date = "Date: Mon, 05 Jan 2026 10:00:00 +0100\nMIME-Version: 1.0\n"
    if kind == "inquiry":
        raw = trusted_auth(f"p{n}.{tag}@example.net") + f"""From: Participant {n} <p{n}.{tag}@example.net>
To: {to}
Subject: Question about the workshop programme ({n})
Message-ID: {mid}
{date}Content-Type: text/plain; charset="utf-8"

Hello,

is there a poster session on the second day, and when does registration close?
I would also need an invitation letter for my visa.

Best regards,
Participant {n}
"""
    elif kind == "scam":
        raw = f"""From: "Conference Housing" <housing{n}@travellerpoint.example>
To: {to}
Subject: Your room for the CRM workshop - 7 rooms left
Message-ID: {mid}
{date}Content-Type: text/plain; charset="utf-8"

Dear participant,

we manage the room block for the workshop. Only 7 rooms left at the conference
rate. A credit card is required to hold the reservation.

Conference Housing Team
"""
    elif kind in ("report", "report_paid"):
        own = ("I already paid them with my card yesterday, what do I do now?" if kind == "report_paid"
               else "Is this for real? It looks odd to me.")
        raw = trusted_auth(f"r{n}.{tag}@example.net") + f"""From: Reporter {n} <r{n}.{tag}@example.net>
To: {to}
Subject: Fwd: Your room for the CRM workshop
Message-ID: {mid}
{date}Content-Type: multipart/mixed; boundary="fwd-{n}"

--fwd-{n}
Content-Type: text/plain; charset="utf-8"

{own}

--fwd-{n}
Content-Type: message/rfc822
Content-Disposition: inline

From: "Conference Housing" <housing@travellerpoint.example>
To: r{n}.{tag}@example.net
Subject: Your room for the CRM workshop - 7 rooms left
Message-ID: <inner.{n}.{time.time_ns()}@travellerpoint.example>

Only 7 rooms left in the room block. A credit card is required to hold it.

--fwd-{n}--
"""
    elif kind == "bounce":
        raw = f"""From: Mail Delivery System <MAILER-DAEMON@mx{n}.example.org>
To: {to}
Subject: Undelivered Mail Returned to Sender
Message-ID: {mid}
Auto-Submitted: auto-replied
{date}Content-Type: multipart/report; report-type=delivery-status; boundary="dsn-{n}"

--dsn-{n}
Content-Type: text/plain; charset="us-ascii"

Your message to nobody{n}@example.org could not be delivered.

--dsn-{n}
Content-Type: message/delivery-status

Reporting-MTA: dns; mx{n}.example.org

Final-Recipient: rfc822; nobody{n}@example.org
Action: failed
Status: 5.1.1

--dsn-{n}--
"""
    elif kind == "ooo":
        raw = f"""From: Away {n} <o{n}.{tag}@example.net>
To: {to}
Subject: Out of office: Re: workshop registration
Message-ID: {mid}
Auto-Submitted: auto-replied
X-Autoreply: yes
{date}Content-Type: text/plain; charset="utf-8"

I am away until 12 January with limited access to e-mail.
"""
    else:
        raise ValueError(kind)
    return mid, _crlf(raw)


class MessageMix:
    """Generates mixed messages and remembers what each should lead to."""

    def __init__(self, seed: int = 0, weights: dict[str, int] | None = None, tag: str = "h") -> None:
        self.rng = random.Random(seed)
        w = weights or DEFAULT_WEIGHTS
        self.kinds = [k for k, n in w.items() for _ in range(n)]
        self.tag = tag
        self.expected: dict[str, str] = {}  # Message-ID -> kind
        self.n = 0

    def take(self, count: int) -> list[bytes]:
        out = []
        for _ in range(count):
            kind = self.rng.choice(self.kinds)
            mid, raw = make_message(kind, self.n, self.tag)
            self.n += 1
            self.expected[mid] = kind
            out.append(raw)
        return out


class Deliverer:
    """IMAP APPEND into a user's INBOX over one connection (reconnecting if needed)."""

    def __init__(self, ms, user: str = EVENTS) -> None:
        self.ms, self.user = ms, user
        self.client: IMAPClient | None = None

    def append(self, raw: bytes) -> None:
        for attempt in range(20):
            try:
                if self.client is None:
                    self.client = IMAPClient(self.ms.host, self.ms.imap_port, ssl=False, timeout=30)
                    self.client.login(self.user, self.ms.users[self.user])
                self.client.append("INBOX", raw)
                return
            except Exception:
                self.close()
                time.sleep(0.25)
        raise AssertionError("could not APPEND to the test Dovecot")

    def close(self) -> None:
        c, self.client = self.client, None
        if c is not None:
            try:
                c.logout()
            except Exception:
                try:
                    c.shutdown()
                except Exception:
                    pass


def deliver(ms, raws, user: str = EVENTS, rate: float | None = None) -> None:
    d = Deliverer(ms, user)
    try:
        for raw in raws:
            t = time.monotonic()
            d.append(raw)
            if rate:
                time.sleep(max(0.0, 1 / rate - (time.monotonic() - t)))
    finally:
        d.close()


# ----------------------------------------------------------------------------------------- guard


def _toml_value(v) -> str:
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    return '"' + str(v) + '"'


class GuardProc:
    """A guard configuration for the test stack, runnable as ``--once`` or as a daemon subprocess."""

    def __init__(self, ms, tmp: Path, *, user: str = EVENTS, coordinator: str = COORDINATOR,
                 institute: str = "Centre de Recerca Matemàtica", short_name: str = "CRM",
                 domains: tuple[str, ...] = ("crm.cat",), imap_port: int | None = None,
                 imap: dict | None = None, smtp: dict | None = None, daemon: dict | None = None) -> None:
        self.ms = ms
        self.tmp = Path(tmp)
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.user = user
        self.journal = self.tmp / "journal.sqlite3"
        self.log = self.tmp / "guard.log"
        pw = self.tmp / "imap-password"
        pw.write_text(ms.users[user] + "\n")
        imap_s = dict(idle_seconds=30, reconnect_initial_seconds=0.5, reconnect_max_seconds=2, timeout_seconds=10)
        imap_s.update(imap or {})
        smtp_s = dict(retry_initial_seconds=1, retry_max_seconds=2)
        smtp_s.update(smtp or {})
        daemon_s = dict(max_replies_per_hour=10000, trusted_authserv_ids=["mx.crm.cat"])
        daemon_s.update(daemon or {})

        def lines(d: dict) -> str:
            return "".join(f"{k} = {_toml_value(v)}\n" for k, v in d.items())

        domains_toml = ", ".join(f'"{d}"' for d in domains)
        self.config = self.tmp / "guard.toml"
        self.config.write_text(f"""
[institute]
name = "{institute}"
short_name = "{short_name}"
official_domains = [{domains_toml}]
events_address = "{user}"
website = "https://www.crm.cat"
scam_warning_url = "https://www.crm.cat/scam-warning"
code_of_conduct_url = "https://www.crm.cat/code-of-conduct"
[institute.coordinator]
name = "Coordinator"
address = "{coordinator}"

[imap]
host = "127.0.0.1"
port = {imap_port or ms.imap_port}
tls = "starttls"
ca_file = "{ms.ca_cert}"
username = "{user}"
password_file = "{pw}"
{lines(imap_s)}
[smtp]
host = "127.0.0.1"
port = {ms.smtp_port}
tls = "none"
{lines(smtp_s)}
[daemon]
journal = "{self.journal}"
{lines(daemon_s)}
[rules]
shipped_dir = "{HERE / 'daemon_rules'}"
local_dir = "{self.tmp / 'no-local-rules'}"
""")
        self.proc: subprocess.Popen | None = None
        self._logf = None
        self.starts = 0
        self.kills = 0
        self._offset = 0  # where the log of the latest start() begins

    def cmd(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "guard", "--config", str(self.config), "run", "--no-model", *args]

    def env(self) -> dict[str, str]:
        return dict(os.environ, PYTHONPATH=str(REPO))

    def once(self, *flags: str, timeout: float = 120) -> int:
        with open(self.log, "ab") as log:
            return subprocess.run(self.cmd("--once", *flags), cwd=REPO, env=self.env(), stdout=log,
                                  stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, timeout=timeout).returncode

    def start(self) -> None:
        assert self.proc is None
        self._offset = self.log.stat().st_size if self.log.exists() else 0
        self._logf = open(self.log, "ab")
        self.proc = subprocess.Popen(self.cmd(), cwd=REPO, env=self.env(), stdout=self._logf,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.starts += 1

    def log_text(self) -> str:
        """The whole log (every run), decoded with replacement (offsets are in characters of this text)."""
        return self.log.read_bytes().decode("latin-1") if self.log.exists() else ""

    def wait_log(self, text: str, timeout: float = 30, count: int = 1) -> None:
        """Until ``text`` appears ``count`` times in the log of the latest start()."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.log_text()[self._offset:].count(text) >= count:
                return
            assert self.proc is None or self.proc.poll() is None, f"guard exited:\n{self.tail()}"
            time.sleep(0.05)
        raise AssertionError(f"{text!r} (x{count}) not in the log after {timeout}s:\n{self.tail()}")

    def tail(self, n: int = 60) -> str:
        return "\n".join(self.log_text().splitlines()[-n:])

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self.proc = None
        self._logf.close()
        self.kills += 1

    def stop(self) -> int:
        if self.proc is None:
            return 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(20)
        finally:
            self.proc = None
            self._logf.close()
        return rc

    def cleanup(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None
            self._logf.close()

    def journal_counts(self) -> dict[str, int]:
        if not self.journal.exists():
            return {}
        db = sqlite3.connect(f"file:{self.journal}?mode=ro", uri=True, timeout=5)
        try:
            out = dict(db.execute("SELECT state, COUNT(*) FROM messages GROUP BY state").fetchall())
            out["outbox_pending"] = db.execute(
                "SELECT COUNT(*) FROM outbox WHERE state NOT IN ('sent','failed')").fetchone()[0]
            return out
        except sqlite3.OperationalError:
            return {}
        finally:
            db.close()

    def wait_settled(self, ms, total: int, timeout: float = 120) -> None:
        """Until the inbox is empty, ``total`` messages are done and no send is pending."""
        deadline = time.monotonic() + timeout
        while True:
            c = self.journal_counts()
            if c.get("done", 0) >= total and not c.get("outbox_pending") and c.get("new", 0) == 0 \
                    and c.get("decided", 0) == 0 and inbox_count(ms, self.user) == 0:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"not settled after {timeout}s: journal {c}, inbox "
                                     f"{inbox_count(ms, self.user)}\n{self.tail()}")
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"guard exited ({self.proc.returncode}):\n{self.tail()}")
            time.sleep(0.2)


def inbox_count(ms, user: str = EVENTS) -> int:
    with ms.imap(user) as c:
        return c.select_folder("INBOX", readonly=True)[b"EXISTS"]


# ----------------------------------------------------------------------------------------- accounting


_hp = email.parser.BytesHeaderParser(policy=email.policy.compat32)


def _header_ids(value: str | None) -> list[str]:
    return re.findall(r"<[^<>\s]+>", value or "")


@dataclass
class Report:
    delivered: int
    by_kind: Counter
    filed: dict[str, str]  # original Message-ID -> folder (the last seen)
    filed_count: Counter  # original Message-ID -> copies found across folders
    sends: dict[tuple[str, str], set]  # (original Message-ID, send kind) -> distinct outgoing Message-IDs
    raw_sends: int  # every guard message the SMTP server accepted
    resent: int  # accepted again with the same Message-ID (a resend after a crash: must be 0)
    unexpected: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def summary(self) -> str:
        exp = sum(sum(EXPECTED[k][0].values()) for k in self._kinds.values())
        return (f"delivered {self.delivered} ({dict(self.by_kind)}); filed {len(self.filed)}; "
                f"expected sends {exp}; distinct sends {sum(len(v) for v in self.sends.values())}; "
                f"SMTP-accepted guard messages {self.raw_sends} (same-Message-ID resends {self.resent}); "
                f"problems {len(self.problems)}")

    def assert_exactly_once(self) -> None:
        assert not self.problems, "\n".join(self.problems[:40]) + f"\n({len(self.problems)} problems)\n" + self.summary()


def account(ms, expected: dict[str, str], *, user: str = EVENTS, since: int = 0,
            loop_value: str = EVENTS) -> Report:
    """Count what guard did with every message of ``expected`` (Message-ID -> kind), in the SMTP
    sink (from index ``since``) and in ``user``'s folders."""
    problems: list[str] = []
    filed: dict[str, str] = {}
    filed_count: Counter = Counter()
    with ms.imap(user) as c:
        for folder in FOLDERS:
            if folder != "INBOX" and not c.folder_exists(folder):
                continue
            c.select_folder(folder, readonly=True)
            uids = c.search("ALL")
            if not uids:
                continue
            data = c.fetch(uids, ["BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]"])
            for uid, item in data.items():
                blob = next(v for k, v in item.items() if isinstance(k, bytes) and k.startswith(b"BODY"))
                ids = _header_ids(_hp.parsebytes(blob).get("Message-ID"))
                mid = ids[0] if ids else f"(none:{folder}:{uid})"
                filed[mid] = folder
                filed_count[mid] += 1
    sends: dict[tuple[str, str], set] = defaultdict(set)
    seen_out: Counter = Counter()
    unexpected = []
    raw_sends = 0
    for m in ms.sink()[since:]:
        h = _hp.parsebytes(m.raw)
        if (h.get("X-Guard-Loop") or "").strip() != loop_value:
            continue
        raw_sends += 1
        out_id = (_header_ids(h.get("Message-ID")) or ["?"])[0]
        seen_out[out_id] += 1
        auto = (h.get("Auto-Submitted") or "").strip().lower()
        if auto == "auto-replied":
            kind, refs = "reply", _header_ids(h.get("In-Reply-To"))
        elif (h.get("Importance") or "").lower() == "high":
            kind, refs = "alert", _header_ids(h.get("References"))
        else:
            kind, refs = "forward", _header_ids(h.get("References"))
        orig = refs[-1] if refs else None
        if orig not in expected:
            unexpected.append(f"{kind} {out_id} to {m.envelope_tos} refers to {orig}")
            continue
        sends[(orig, kind)].add(out_id)
    resent = sum(n - 1 for n in seen_out.values() if n > 1)
    for mid, kind in expected.items():
        want, folder = EXPECTED[kind]
        if filed_count[mid] != 1:
            problems.append(f"{kind} {mid}: found {filed_count[mid]} times in the mailbox (expected once)")
        elif filed[mid] != folder:
            problems.append(f"{kind} {mid}: filed in {filed[mid]}, expected {folder}")
        for send_kind in ("reply", "forward", "alert"):
            got = len(sends.get((mid, send_kind), ()))
            if got != want.get(send_kind, 0):
                problems.append(f"{kind} {mid}: {got} distinct {send_kind}(s) accepted by SMTP, "
                                f"expected {want.get(send_kind, 0)}")
    problems.extend(f"unexpected: {u}" for u in unexpected)
    extra = [mid for mid in filed if mid not in expected]
    problems.extend(f"a message nobody delivered is in the mailbox: {mid}" for mid in extra)
    r = Report(len(expected), Counter(expected.values()), filed, filed_count, dict(sends), raw_sends, resent,
               unexpected, problems)
    r._kinds = expected
    return r


# ----------------------------------------------------------------------------------------- network faults


class FreezableProxy:
    """A TCP proxy 127.0.0.1:port -> target. ``freeze()`` silently blackholes every connection open
    at that moment (sockets stay open, nothing is forwarded or closed); new connections work.
    ``reply_delay`` holds every chunk from the target for that many seconds before passing it on
    (a slow server: nothing is lost, what the client wrote still reaches the target in order)."""

    def __init__(self, target_port: int, target_host: str = "127.0.0.1", reply_delay: float = 0.0) -> None:
        self.target = (target_host, target_port)
        self.reply_delay = reply_delay
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        self.closed = False
        self.conns: list[dict] = []
        self.lock = threading.Lock()
        self.accepted = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                a, _ = self.listener.accept()
            except OSError:
                return
            try:
                b = socket.create_connection(self.target, timeout=5)
            except OSError:
                a.close()
                continue
            conn = {"a": a, "b": b, "frozen": False, "open": True}
            with self.lock:
                self.conns.append(conn)
                self.accepted += 1
            threading.Thread(target=self._pump, args=(conn,), daemon=True).start()

    def _pump(self, conn: dict) -> None:
        a, b = conn["a"], conn["b"]
        try:
            while not self.closed and conn["open"]:
                if conn["frozen"]:
                    time.sleep(0.05)
                    continue
                r, _, _ = select.select([a, b], [], [], 0.1)
                if conn["frozen"]:
                    continue
                for s in r:
                    data = s.recv(65536)
                    if not data:
                        conn["open"] = False
                        break
                    if s is b and self.reply_delay:
                        time.sleep(self.reply_delay)
                    (b if s is a else a).sendall(data)
        except OSError:
            pass
        finally:
            if not conn["frozen"] or self.closed:
                for s in (a, b):
                    try:
                        s.close()
                    except OSError:
                        pass

    def open_connections(self) -> int:
        with self.lock:
            return sum(1 for c in self.conns if c["open"] and not c["frozen"])

    def freeze(self) -> int:
        """Blackhole all open connections; returns how many."""
        with self.lock:
            live = [c for c in self.conns if c["open"] and not c["frozen"]]
            for c in live:
                c["frozen"] = True
        return len(live)

    def close(self) -> None:
        self.closed = True
        try:
            self.listener.close()
        except OSError:
            pass
        with self.lock:
            for c in self.conns:
                for s in (c["a"], c["b"]):
                    try:
                        s.close()
                    except OSError:
                        pass


def wait_until(cond, timeout: float = 20, what: str = "") -> None:
    """Poll ``cond`` every 0.1 s; fail the test with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out: {what}"
        time.sleep(0.1)


def doveadm(ms, *args: str) -> str:
    env = dict(os.environ, PATH=os.environ.get("PATH", "") + ":/usr/sbin:/usr/bin")
    proc = subprocess.run(["doveadm", "-c", str(ms.mail_dir / "dovecot" / "dovecot.conf"), *args],
                          capture_output=True, text=True, env=env, timeout=30)
    assert proc.returncode == 0, f"doveadm {' '.join(args)}: {proc.stderr}"
    return proc.stdout


def full() -> bool:
    return os.environ.get("GUARD_FULL", "") not in ("", "0")
