"""Shared plumbing of the bench/ scripts: a private mail stack, a guard config, guard as a subprocess.

Not a benchmark itself. Every script starts its own stack (scripts/mailstack.sh: Dovecot + the SMTP
test server) on free loopback ports under a temporary directory, so nothing else is touched.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EVENTS = "events@crm.cat"
COORDINATOR = "nhernandez@crm.cat"


def free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def rss_kb(pid: int) -> int | None:
    """VmRSS of a process in kB (None when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


class Stack:
    """A private mail stack plus a guard configuration for it (use as a context manager)."""

    def __init__(self, *, test_rules: bool = False, keep: bool = False, daemon_extra: str = "") -> None:
        if os.geteuid() != 0:
            raise SystemExit("bench needs root (the private Dovecot stores mail as user 'mail')")
        self.keep = keep
        self.work = Path(tempfile.mkdtemp(prefix="guard-bench-"))
        self.work.chmod(0o755)
        self.mail_dir = self.work / "stack"
        self.imap_port, self.imaps_port, self.smtp_port = free_ports(3)
        self.env = dict(os.environ, MAIL_DIR=str(self.mail_dir), IMAP_PORT=str(self.imap_port),
                        IMAPS_PORT=str(self.imaps_port), SMTP_PORT=str(self.smtp_port), PYTHON=sys.executable)
        self.config = self.work / "guard.toml"
        self.journal = self.work / "journal.sqlite3"
        self.log = self.work / "guard.log"
        self.test_rules = test_rules
        self.daemon_extra = daemon_extra
        self.proc: subprocess.Popen | None = None

    def script(self, *args: str) -> None:
        subprocess.run(["bash", str(REPO / "scripts" / "mailstack.sh"), *args], env=self.env, check=True,
                       capture_output=True)

    def __enter__(self) -> "Stack":
        self.script("start")
        (self.work / "pw").write_text("secret\n")
        rules = (f'[rules]\nshipped_dir = "{REPO / "tests" / "integration" / "daemon_rules"}"\n'
                 if self.test_rules else "")
        self.config.write_text(f"""
[institute]
name = "Centre de Recerca Matemàtica"
short_name = "CRM"
official_domains = ["crm.cat"]
protected_names = ["crm"]
events_address = "{EVENTS}"
[institute.coordinator]
name = "Núria Hernández"
address = "{COORDINATOR}"
[imap]
host = "127.0.0.1"
port = {self.imap_port}
tls = "starttls"
ca_file = "{self.mail_dir / 'dovecot' / 'cert.pem'}"
username = "{EVENTS}"
password_file = "{self.work / 'pw'}"
[smtp]
host = "127.0.0.1"
port = {self.smtp_port}
tls = "none"
[daemon]
journal = "{self.journal}"
max_replies_per_hour = 100000
trusted_authserv_ids = ["{AUTHSERV_ID}"]
{self.daemon_extra}
{rules}""")
        return self

    def __exit__(self, *exc) -> None:
        self.stop_guard()
        subprocess.run(["bash", str(REPO / "scripts" / "mailstack.sh"), "stop"], env=self.env, capture_output=True)
        if self.keep:
            print(f"work directory kept: {self.work}", file=sys.stderr)
        else:
            shutil.rmtree(self.work, ignore_errors=True)

    def guard_cmd(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "guard", "--config", str(self.config), "run", *args]

    def guard_env(self) -> dict[str, str]:
        return dict(os.environ, PYTHONPATH=str(REPO))

    def run_once(self) -> float:
        """`guard run --once`; returns its wall time in seconds (its CPU seconds, user + system,
        its parse worker included, are left in ``last_cpu``; the CPU seconds of guard's main
        process, its worker, the SMTP test server and Dovecot while it ran, sampled from /proc, in
        ``last_breakdown``: see :class:`CpuSampler`)."""
        import resource

        ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        sampler = CpuSampler(self)
        t0 = time.monotonic()
        with open(self.log, "ab") as log:
            proc = subprocess.Popen(self.guard_cmd("--once"), cwd=REPO, env=self.guard_env(), stdout=log,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            sampler.start(proc.pid)
            try:
                rc = proc.wait()
            finally:
                sampler.stop()
        wall = time.monotonic() - t0
        ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.last_cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
        self.last_user = ru1.ru_utime - ru0.ru_utime
        self.last_breakdown = sampler.result(wall)
        if rc != 0:
            raise SystemExit(f"guard run --once failed ({rc}):\n{self.log.read_text()[-3000:]}")
        return wall

    def pid_of(self, what: str) -> int | None:
        """The pid of the stack's SMTP server ("smtp") or Dovecot's master ("dovecot"), from its pid file."""
        path = self.mail_dir / "smtp.pid" if what == "smtp" else self.mail_dir / "dovecot" / "run" / "master.pid"
        try:
            return int(path.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def start_guard(self, timeout: float = 60) -> None:
        self._logf = open(self.log, "ab")
        start = self.log.stat().st_size if self.log.exists() else 0
        self.proc = subprocess.Popen(self.guard_cmd(), cwd=REPO, env=self.guard_env(), stdout=self._logf,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while b"IDLE)" not in self.log.read_bytes()[start:]:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"guard did not start:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.05)
        time.sleep(0.5)

    def stop_guard(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc is not None:
            self._logf.close()
        self.proc = None

    def imap(self, user: str = EVENTS):
        from imapclient import IMAPClient

        c = IMAPClient("127.0.0.1", self.imap_port, ssl=False, timeout=60)
        c.login(user, "secret")
        return c

    def sink_count(self) -> int:
        d = self.mail_dir / "smtp-sink"
        return sum(1 for p in d.glob("*.eml") if not p.name.startswith(".")) if d.is_dir() else 0


_HZ = os.sysconf("SC_CLK_TCK")


def _proc_stat(pid: int) -> tuple[int, float, float] | None:
    """(parent pid, user seconds, system seconds) of a process; None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
    except OSError:
        return None
    return int(fields[1]), int(fields[11]) / _HZ, int(fields[12]) / _HZ


def _machine_busy() -> tuple[float, float]:
    """(all CPU seconds, busy CPU seconds) of the whole machine so far, from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return sum(v) / _HZ, (sum(v) - v[3] - v[4]) / _HZ


class CpuSampler:
    """Where the CPU went while guard ran: guard's main process, its parse worker(s), the SMTP test
    server and Dovecot (its master's children: imap, lmtp, auth...), and the whole machine.

    A thread reads /proc every 50 ms and keeps each process's latest user + system time, so the
    processes that end during the run (guard's worker, Dovecot's imap session) count up to their
    last sample (at most 50 ms short each). For the bench's report, not for exact accounting:
    ``last_cpu`` (getrusage) stays the figure for guard as a whole."""

    PERIOD = 0.05

    def __init__(self, stack: "Stack") -> None:
        self.smtp = stack.pid_of("smtp")
        self.dovecot = stack.pid_of("dovecot")
        self.base: dict[int, float] = {}
        for pid in (self.smtp, self.dovecot, *self._children(self.dovecot)):
            st = _proc_stat(pid) if pid else None
            if st is not None:
                self.base[pid] = st[1] + st[2]
        self.seen: dict[int, tuple[str, float, float]] = {}
        self.guard: int | None = None
        self._stop = False
        self._thread = None
        self.machine0 = _machine_busy()

    @staticmethod
    def _children(pid: int | None) -> list[int]:
        if not pid:
            return []
        out = []
        try:
            for task in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{task}/children") as f:
                    out += [int(x) for x in f.read().split()]
        except OSError:
            pass
        return out

    def start(self, guard_pid: int) -> None:
        import threading

        self.guard = guard_pid
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        roles = {self.guard: "guard_main", self.smtp: "smtp_server", self.dovecot: "dovecot"}
        roles.update({pid: "guard_worker" for pid in self._children(self.guard)})
        roles.update({pid: "dovecot" for pid in self._children(self.dovecot)})
        for pid, role in roles.items():
            st = _proc_stat(pid) if pid else None
            if st is not None:
                self.seen[pid] = (role, st[1], st[2])

    def _run(self) -> None:
        while not self._stop:
            self._sample()
            time.sleep(self.PERIOD)

    def stop(self) -> None:
        self._stop = True
        if self._thread is not None:
            self._thread.join()
        self.machine1 = _machine_busy()

    def result(self, wall: float) -> dict:
        """CPU seconds per role (``guard_main_user`` and ``guard_main_system`` apart), and the
        machine's busy CPU seconds against its capacity over the run."""
        out: dict[str, float] = {}
        for pid, (role, user, system) in self.seen.items():
            used = user + system - self.base.get(pid, 0.0)
            out[role] = out.get(role, 0.0) + used
            if role == "guard_main":
                out["guard_main_user"], out["guard_main_system"] = user, system
        total, busy = (b - a for a, b in zip(self.machine0, self.machine1))
        out["machine_busy"], out["machine_capacity"] = busy, total
        return {k: round(v, 3) for k, v in out.items()}


#: the institute's receiving server in the benchmark stack (guard answers only senders it authenticated)
AUTHSERV_ID = "mx.crm.cat"


def received_by_mx(sender: str) -> str:
    """The Authentication-Results line the receiving server adds for an authenticated participant."""
    domain = sender.rpartition("@")[2]
    return f"Authentication-Results: {AUTHSERV_ID}; spf=pass smtp.mailfrom={sender}; dmarc=pass header.from={domain}\r\n"


def mixed_message(i: int, tag: str = "bench") -> bytes:
    """One of five kinds in turn: inquiry, scam, report, bounce, out-of-office (distinct senders)."""
    mid = f"<{tag}.{i}.{time.time_ns()}@example.net>"
    kind = i % 5
    head = "Date: Mon, 05 Jan 2026 10:00:00 +0100\r\nMIME-Version: 1.0\r\n"
    if kind == 0:
        return (received_by_mx(f"p{i}@example.net") +
                f"From: Participant {i} <p{i}@example.net>\r\nTo: {EVENTS}\r\nSubject: Invitation letter ({i})\r\n"
                f"Message-ID: {mid}\r\n{head}Content-Type: text/plain; charset=utf-8\r\n\r\n"
                "Hello,\r\n\r\ncould you send me an invitation letter for my visa application?\r\n\r\n"
                f"Thank you,\r\nParticipant {i}\r\n").encode()
    if kind == 1:
        return (f"From: \"Conference Housing\" <housing{i}@travellerpoint.example>\r\nTo: {EVENTS}\r\n"
                f"Subject: Your room for the CRM workshop - 7 rooms left\r\nMessage-ID: {mid}\r\n{head}"
                "Content-Type: text/plain; charset=utf-8\r\n\r\nDear participant,\r\n\r\nWe manage the room block "
                "for the workshop. Only 7 rooms left. A credit card is required to hold the reservation.\r\n").encode()
    if kind == 2:
        inner = (f"From: \"Conference Housing\" <housing@travellerpoint.example>\r\nTo: r{i}@example.net\r\n"
                 "Subject: Your room - 7 rooms left\r\nMessage-ID: <inner.{i}@travellerpoint.example>\r\n\r\n"
                 "Only 7 rooms left at the conference rate. A credit card is required.\r\n")
        return (received_by_mx(f"r{i}@example.net") +
                f"From: Reporter {i} <r{i}@example.net>\r\nTo: {EVENTS}\r\nSubject: Fwd: Your room\r\n"
                f"Message-ID: {mid}\r\n{head}Content-Type: multipart/mixed; boundary=\"fb\"\r\n\r\n"
                "--fb\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nIs this real? It looks odd.\r\n\r\n"
                f"--fb\r\nContent-Type: message/rfc822\r\nContent-Disposition: inline\r\n\r\n{inner}\r\n--fb--\r\n"
                ).encode()
    if kind == 3:
        return (f"From: Mail Delivery System <MAILER-DAEMON@mx{i}.example.org>\r\nTo: {EVENTS}\r\n"
                f"Subject: Undelivered Mail Returned to Sender\r\nMessage-ID: {mid}\r\nAuto-Submitted: auto-replied\r\n"
                f"{head}Content-Type: multipart/report; report-type=delivery-status; boundary=\"d\"\r\n\r\n"
                "--d\r\nContent-Type: text/plain\r\n\r\nYour message could not be delivered.\r\n"
                "--d\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example.org\r\n\r\n"
                "Final-Recipient: rfc822; nobody@example.org\r\nAction: failed\r\nStatus: 5.1.1\r\n--d--\r\n").encode()
    return (f"From: Away {i} <o{i}@example.net>\r\nTo: {EVENTS}\r\nSubject: Out of office: workshop\r\n"
            f"Message-ID: {mid}\r\nAuto-Submitted: auto-replied\r\nX-Autoreply: yes\r\n{head}"
            "Content-Type: text/plain; charset=utf-8\r\n\r\nI am away until 12 January.\r\n").encode()
