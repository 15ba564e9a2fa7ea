#!/usr/bin/env python3
"""Private, offline SpamAssassin (spamd) and rspamd instances for the throughput benchmark.

    python3 bench/peers.py selftest [--keep]     # start both, train on 15+15 generated messages, classify 20, stop
    python3 bench/peers.py dns-refuser PORT      # the loopback DNS stub rspamd is pointed at (started by Peers)

Used by bench/throughput.py through :class:`Peers`::

    with Peers(workdir) as peers:          # writes configs under workdir, starts both daemons on free loopback ports
        peers.train(spam_paths, ham_paths)  # sa-learn + rspamd /learnspam,/learnham over the controller
        rows = peers.classify("sa", paths)  # one message at a time (concurrency 1)
    # both daemons stopped (by their pid files), workdir left for the caller to remove

Install the packages first with ``bench/install-peers.sh`` (root).

SpamAssassin 4.0 (Debian): ``spamd -L`` (local tests only: no DNS, no RBLs, no Razor/Pyzor/DCC),
Bayes on (``use_bayes 1``, ``bayes_auto_learn 0``, ``bayes_min_{ham,spam}_num 10`` so a small
training set counts), site config copied from ``/etc/spamassassin`` (its ``.pre`` files load
the Bayes plugin), default ``required_score`` (5.0) unless ``sa_required_score`` is given.
The client speaks the spamd protocol (``CHECK SPAMC/1.5``) itself, one connection per message,
exactly what ``spamc -c`` does, without a process per message; the verdict is spamd's own
``Spam: True`` (score >= required_score).

rspamd 3.4 (Debian): Debian's ``/etc/rspamd`` with private ``local.d`` / ``override.d``;
DNS goes to a loopback stub that answers NXDOMAIN at once (see :func:`dns_refuser`), with a
10 ms resolver timeout, and the modules that need the network or redis are disabled; Bayes uses
the sqlite3 backend in the work directory (no redis), learns every message it is given (a
``learn_condition`` that always agrees) and is active after 10 learns per class. Scanning is HTTP ``POST /checkv2`` to the normal worker, one message at a time; the verdict
is positive when the action is anything but ``no action`` / ``greylist`` (with Debian's
actions: score >= 6 "add header", 15 "reject"); score and action are kept for other cut-offs.
"""

from __future__ import annotations

import http.client
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

from _stack import free_ports  # noqa: E402 - bench/ is on sys.path when run as a script

SA_USER = "debian-spamd"
RS_USER = "_rspamd"

#: rspamd modules that would need the network (DNS lists, URL reputation, ...) or redis
RS_DISABLED_MODULES = (
    "rbl", "surbl", "fuzzy_check", "spf", "dkim", "dmarc", "arc", "asn", "emails", "phishing",
    "url_redirector", "mx_check", "neural", "ratelimit", "greylist", "replies", "history_redis",
    "reputation", "dcc", "rspamd_update", "multimap", "bimi", "whitelist", "dkim_signing",
    "clickhouse", "elastic", "metadata_exporter", "external_services", "antivirus",
)


class PeerError(RuntimeError):
    pass


@dataclass
class Scan:
    positive: bool
    score: float
    threshold: float
    action: str = ""
    error: str | None = None


def wait_port(port: int, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise PeerError(f"nothing listens on 127.0.0.1:{port} after {seconds:.0f}s")


def _chown(path: Path, user: str) -> None:
    pw = pwd.getpwnam(user)
    for root, dirs, files in os.walk(path):
        os.chown(root, pw.pw_uid, pw.pw_gid)
        for f in files:
            os.chown(os.path.join(root, f), pw.pw_uid, pw.pw_gid)


def _stop_pidfile(pidfile: Path, wait: float = 15.0) -> None:
    """TERM the daemon whose pid the file holds (one we started) and wait until it is gone."""
    try:
        pid = int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def dns_refuser(port: int) -> None:
    """A loopback DNS stub that answers every query at once with NXDOMAIN (the machine is offline).

    rspamd's DNS-based checks (hfilter's A/MX/PTR lookups, once_received's PTR) then fail
    immediately, as they would on an offline host with a local resolver, instead of waiting for
    a timeout on every message (a closed port costs 0.1-0.2 s per lookup: waiting, not scanning).
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", port))
    while True:
        try:
            data, addr = sock.recvfrom(65535)
            if len(data) < 12:
                continue
            qd = int.from_bytes(data[4:6], "big")
            end = 12
            if qd >= 1:  # echo the first question: QNAME labels, then QTYPE + QCLASS
                while end < len(data) and data[end] != 0:
                    end += 1 + data[end]
                end = min(end + 5, len(data))
            # QR, opcode and RD copied, RA, RCODE 3 (NXDOMAIN)
            flags = 0x8000 | ((data[2] & 0x79) << 8) | 0x0080 | 3
            reply = data[:2] + flags.to_bytes(2, "big") + (1 if qd else 0).to_bytes(2, "big") + bytes(6) + data[12:end]
            sock.sendto(reply, addr)
            if os.environ.get("DNS_DEBUG"):
                print(len(data), data[12:end], file=sys.stderr, flush=True)
        except Exception as exc:  # never die: a dead stub turns every lookup into a timeout
            print(f"dns-refuser: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)


def _proc_stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, utime + stime + cutime + cstime in seconds) from /proc/PID/stat."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2:].split()  # after "pid (comm)"; comm may hold spaces
    ticks = os.sysconf("SC_CLK_TCK")
    return int(fields[1]), sum(int(x) for x in fields[11:15]) / ticks


def tree_cpu(root: int) -> float:
    """CPU seconds of ``root`` and every live descendant, each with its reaped children."""
    stats = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = _proc_stat(int(entry))
            if st is not None:
                stats[int(entry)] = st
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in stats.items():
        children.setdefault(ppid, []).append(pid)
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        if pid in stats:
            total += stats[pid][1]
            todo.extend(children.get(pid, ()))
    return total


def check_installed() -> list[str]:
    """Missing programs (empty when bench/install-peers.sh has run)."""
    return [p for p in ("spamd", "sa-learn", "rspamd", "rspamc") if shutil.which(p) is None]


class Peers:
    def __init__(self, workdir: Path, *, sa_required_score: float | None = None,
                 log: Callable[[str], None] | None = None) -> None:
        if os.geteuid() != 0:
            raise PeerError("the peer filters need root (spamd and rspamd drop to their own users)")
        missing = check_installed()
        if missing:
            raise PeerError(f"not installed: {', '.join(missing)} (run bench/install-peers.sh)")
        self.dir = Path(workdir).resolve()
        self.dir.mkdir(parents=True, exist_ok=True)
        # the daemons' users must be able to walk into it (mkdtemp makes directories 0700)
        self.dir.chmod(0o755)
        for p in self.dir.parents:
            if not p.stat().st_mode & 0o001:
                raise PeerError(f"{p} is not searchable by other users; spamd/rspamd could not read their config")
        self.sa_dir = self.dir / "sa"
        self.rs_dir = self.dir / "rspamd"
        self.sa_required_score = sa_required_score
        self.log = log or (lambda m: print(f"[peers] {m}", file=sys.stderr, flush=True))
        self.spamd_port, self.rs_port, self.rs_ctrl_port, self.rs_proxy_port = free_ports(4)
        self.dns_port = free_ports(1)[0]
        self._dns: subprocess.Popen | None = None
        self.sa_threshold = sa_required_score if sa_required_score is not None else 5.0
        self._started: list[str] = []

    # -- context manager ---------------------------------------------------------------------
    def __enter__(self) -> "Peers":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- SpamAssassin ---------------------------------------------------------------------------
    def _sa_config(self) -> None:
        etc = self.sa_dir / "etc"
        if etc.exists():
            shutil.rmtree(etc)
        shutil.copytree("/etc/spamassassin", etc, symlinks=True)
        for d in ("bayes", "home"):
            (self.sa_dir / d).mkdir(parents=True, exist_ok=True)
        (self.sa_dir / "user_prefs").write_text("# empty: all settings are in the private site config\n")
        lines = [
            "", "# ---- guard bench/peers.py: private offline instance ----",
            "use_bayes 1",
            "bayes_auto_learn 0",
            f"bayes_path {self.sa_dir / 'bayes' / 'bayes'}",
            "bayes_file_mode 0770",
            # the defaults (200 each) would keep Bayes silent on a small training set
            "bayes_min_ham_num 10",
            "bayes_min_spam_num 10",
            "dns_available no",
            "skip_rbl_checks 1",
            "use_razor2 0",
            "use_pyzor 0",
            "use_dcc 0",
            "lock_method flock",
            # an explicit value keeps SA from trusting private addresses in Received headers
            "trusted_networks 192.0.2.1/32",
        ]
        if self.sa_required_score is not None:
            lines.append(f"required_score {self.sa_required_score}")
        with open(etc / "local.cf", "a", encoding="utf-8") as fh:
            fh.write("\n".join(lines) + "\n")

    def _sa_learn(self, cls: str, paths: Sequence[Path]) -> float:
        if not paths:
            return 0.0
        listing = self.sa_dir / f"learn-{cls}.txt"
        listing.write_text("".join(f"{p}\n" for p in paths))
        t0 = time.perf_counter()
        r = subprocess.run(
            ["sa-learn", "-L", f"--siteconfigpath={self.sa_dir / 'etc'}", "-p", str(self.sa_dir / "user_prefs"),
             f"--{cls}", "--max-size", "0", "-f", str(listing)],
            capture_output=True, text=True, stdin=subprocess.DEVNULL,
        )
        dt = time.perf_counter() - t0
        out = (r.stdout + r.stderr).strip().splitlines()
        self.log(f"sa-learn --{cls}: {out[-1] if out else ''} ({dt:.1f}s, rc {r.returncode})")
        if r.returncode != 0:
            raise PeerError(f"sa-learn --{cls} failed: {' | '.join(out[-5:])}")
        return dt

    def sa_start(self) -> None:
        _stop_pidfile(self.sa_dir / "spamd.pid")
        _chown(self.sa_dir / "bayes", SA_USER)
        _chown(self.sa_dir / "home", SA_USER)
        stderr = open(self.sa_dir / "spamd.stderr", "ab")
        # -L local tests only; -x no per-user config; one child: the benchmark sends one message at a time
        subprocess.run(
            ["spamd", "-d", "-L", "-x", "-u", SA_USER, f"--siteconfigpath={self.sa_dir / 'etc'}",
             "-H", str(self.sa_dir / "home"), "-i", f"127.0.0.1:{self.spamd_port}", "-A", "127.0.0.1",
             "--min-children=1", "--max-children=1", "-r", str(self.sa_dir / "spamd.pid"),
             "-s", str(self.sa_dir / "spamd.log")],
            stdin=subprocess.DEVNULL, stdout=stderr, stderr=stderr, check=True,
        )
        self._started.append("sa")
        wait_port(self.spamd_port, 60)
        self.log(f"spamd on 127.0.0.1:{self.spamd_port}")

    def sa_scan(self, data: bytes, timeout: float = 120) -> Scan:
        """What ``spamc -c`` does: spamd protocol 1.5, CHECK, one connection."""
        req = b"CHECK SPAMC/1.5\r\nContent-length: %d\r\n\r\n" % len(data) + data
        with socket.create_connection(("127.0.0.1", self.spamd_port), timeout=timeout) as s:
            s.sendall(req)
            s.shutdown(socket.SHUT_WR)
            chunks = []
            while True:
                c = s.recv(65536)
                if not c:
                    break
                chunks.append(c)
        head = b"".join(chunks).split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
        if not head[0].startswith("SPAMD/") or " 0 " not in head[0]:
            raise PeerError(f"spamd: {head[0]!r}")
        for line in head[1:]:
            if line.lower().startswith("spam:"):
                flag, _, nums = line.split(":", 1)[1].partition(";")
                score, thr = (float(x) for x in nums.split("/"))
                return Scan(flag.strip().lower() in ("true", "yes"), score, thr)
        raise PeerError(f"spamd: no Spam header in {head!r}")

    # -- rspamd ----------------------------------------------------------------------------------
    def _rs_vars(self) -> list[str]:
        r = self.rs_dir
        return [f"--var=LOCAL_CONFDIR={r / 'etc'}", f"--var=DBDIR={r / 'db'}", f"--var=RUNDIR={r / 'run'}",
                f"--var=LOGDIR={r / 'log'}"]

    def _rs_config(self) -> None:
        r = self.rs_dir
        for d in ("etc/local.d", "etc/override.d", "db", "run", "log"):
            (r / d).mkdir(parents=True, exist_ok=True)
        local, override = r / "etc" / "local.d", r / "etc" / "override.d"
        (local / "options.inc").write_text(
            "# offline: the resolver is a loopback stub (bench/peers.py dns-refuser) answering NXDOMAIN at once;\n"
            "# rspamd's resolver sometimes defers a query to its retransmit timer (seen with strace), so a\n"
            "# short timeout keeps that from adding Debian's 1 s (x5 retransmits) of waiting to a scan\n"
            f'dns {{ nameserver = ["127.0.0.1:{self.dns_port}"]; timeout = 0.01s; retransmits = 1; }}\n'
            "map_watch_interval = 1d;\n"
        )
        # override.d replaces Debian's bind_socket (local.d would add to it and also bind the default ports)
        (override / "worker-normal.inc").write_text(f'bind_socket = "127.0.0.1:{self.rs_port}";\ncount = 1;\n')
        (override / "worker-controller.inc").write_text(f'bind_socket = "127.0.0.1:{self.rs_ctrl_port}";\ncount = 1;\n')
        (override / "worker-proxy.inc").write_text(f'bind_socket = "127.0.0.1:{self.rs_proxy_port}";\ncount = 1;\n')
        (override / "logging.inc").write_text(f'type = "file";\nfilename = "{r / "log" / "rspamd.log"}";\nlevel = "warning";\n')
        for m in RS_DISABLED_MODULES:
            (local / f"{m}.conf").write_text("enabled = false;\n")
        (override / "classifier-bayes.conf").write_text(
            "# Bayes without redis: sqlite3 statfiles and learn cache in the private DBDIR.\n"
            "# Learn every message given, like sa-learn (Debian's learn_condition refuses what Bayes\n"
            "# already classifies with > 95 % certainty, and a key cannot be removed from here).\n"
            "learn_condition = 'return function(task, is_spam, is_unlearn) return true end';\n"
            'tokenizer { name = "osb"; }\n'
            'backend = "sqlite3";\n'
            'cache { path = "${DBDIR}/learn_cache.sqlite"; }\n'
            "min_learns = 10;\n"
            "min_tokens = 11;\n"
            'statfile { symbol = "BAYES_HAM"; spam = false; path = "${DBDIR}/bayes.ham.sqlite"; }\n'
            'statfile { symbol = "BAYES_SPAM"; spam = true; path = "${DBDIR}/bayes.spam.sqlite"; }\n'
        )
        for d in ("db", "run", "log"):
            _chown(r / d, RS_USER)

    def rs_start(self, wait: bool = True) -> None:
        self._rs_config()
        _stop_pidfile(self.rs_dir / "run" / "rspamd.pid")
        if self._dns is None:
            self._dns = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "dns-refuser", str(self.dns_port)],
                                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
            self._dns_wait()  # rspamd marks a silent resolver as failed; it must answer from the first query
        out = open(self.rs_dir / "log" / "stdout.log", "ab")
        subprocess.run(["rspamd", "-u", RS_USER, "-g", RS_USER, *self._rs_vars()],
                       stdin=subprocess.DEVNULL, stdout=out, stderr=out, check=True)
        self._started.append("rspamd")
        if wait:
            self.rs_wait()

    def _dns_wait(self, seconds: float = 10.0) -> None:
        query = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x07example\x03org\x00\x00\x01\x00\x01"
        deadline = time.monotonic() + seconds
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(0.1)
            while time.monotonic() < deadline:
                try:
                    s.sendto(query, ("127.0.0.1", self.dns_port))
                    if s.recv(512)[:2] == b"\x12\x34":
                        return
                except OSError:
                    time.sleep(0.05)
        raise PeerError("the DNS stub did not answer")

    def rs_wait(self) -> None:
        # the first start compiles hyperscan patterns for the TLD list (~15 s)
        wait_port(self.rs_port, 180)
        wait_port(self.rs_ctrl_port, 60)
        self.log(f"rspamd scan 127.0.0.1:{self.rs_port}, controller :{self.rs_ctrl_port}")

    def _rs_post(self, port: int, path: str, data: bytes, timeout: float = 120) -> dict:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        try:
            c.request("POST", path, body=data, headers={"Content-Type": "message/rfc822"})
            resp = c.getresponse()
            body = resp.read()
        finally:
            c.close()
        try:
            return json.loads(body)
        except ValueError:
            return {"error": f"HTTP {resp.status}: {body[:200]!r}"}

    def rs_scan(self, data: bytes) -> Scan:
        js = self._rs_post(self.rs_port, "/checkv2", data)
        if "error" in js:
            raise PeerError(f"rspamd: {js['error']}")
        action = js.get("action", "no action")
        thr = js.get("thresholds") or {}
        return Scan(action not in ("no action", "greylist"), float(js.get("score", 0.0)),
                    float(thr.get("add header", 6.0)), action)

    def _rs_learn(self, cls: str, paths: Sequence[Path], jobs: int = 1) -> tuple[int, int, float]:
        from concurrent.futures import ThreadPoolExecutor

        reasons: Counter = Counter()

        def one(p: Path) -> bool:
            # one at a time: parallel learns make the sqlite backend answer "database is locked"
            try:
                js = self._rs_post(self.rs_ctrl_port, f"/learn{cls}", p.read_bytes())
            except OSError as exc:
                reasons[type(exc).__name__] += 1
                return False
            if not js.get("success"):
                reasons[str(js.get("error", js))[:80]] += 1
            return bool(js.get("success"))

        t0 = time.perf_counter()
        with ThreadPoolExecutor(jobs) as ex:
            res = list(ex.map(one, paths))
        dt = time.perf_counter() - t0
        ok = sum(res)
        why = "; ".join(f"{n} x {r}" for r, n in reasons.most_common(3))
        self.log(f"rspamd learn {cls}: {ok} learned, {len(res) - ok} refused{f' ({why})' if why else ''} ({dt:.1f}s)")
        return ok, len(res) - ok, dt

    # -- both ------------------------------------------------------------------------------------
    def start(self, which: Iterable[str] = ("sa", "rspamd")) -> None:
        """Write configs; start rspamd (without waiting: its first start is slow). spamd starts after training."""
        which = set(which)
        if "sa" in which:
            self._sa_config()
        if "rspamd" in which:
            self.rs_start(wait=False)

    def train(self, spam: Sequence[Path], ham: Sequence[Path], which: Iterable[str] = ("sa", "rspamd")) -> dict:
        """Train both Bayes stores on the same files (spam, then ham); the two filters learn side by side."""
        from concurrent.futures import ThreadPoolExecutor

        which = set(which)
        out: dict = {}

        def sa() -> None:
            t = self._sa_learn("spam", spam) + self._sa_learn("ham", ham)
            out["sa"] = {"spam": len(spam), "ham": len(ham), "seconds": round(t, 1)}

        def rs() -> None:
            self.rs_wait()
            s_ok, s_bad, t1 = self._rs_learn("spam", spam)
            h_ok, h_bad, t2 = self._rs_learn("ham", ham)
            if s_ok < 10 or h_ok < 10:
                raise PeerError(f"rspamd learned only {s_ok} spam / {h_ok} ham: its Bayes would stay silent")
            out["rspamd"] = {"spam": s_ok, "ham": h_ok, "refused": s_bad + h_bad, "seconds": round(t1 + t2, 1)}

        with ThreadPoolExecutor(2) as ex:
            futures = [ex.submit(f) for f, w in ((sa, "sa"), (rs, "rspamd")) if w in which]
            for f in futures:
                f.result()
        if "sa" in which:
            self.sa_start()  # after learning: spamd reads the finished Bayes store
        return out

    def scan(self, which: str, data: bytes) -> Scan:
        try:
            return self.sa_scan(data) if which == "sa" else self.rs_scan(data)
        except (OSError, PeerError) as exc:
            return Scan(False, float("nan"), float("nan"), error=str(exc))

    def classify(self, which: str, paths: Sequence[Path]) -> tuple[list[Scan], float]:
        """Scan each file in turn (concurrency 1); returns the scans and the seconds spent (files read first)."""
        data = [Path(p).read_bytes() for p in paths]
        t0 = time.perf_counter()
        scans = [self.scan(which, d) for d in data]
        return scans, time.perf_counter() - t0

    def timed(self, which: str, data: Sequence[bytes]) -> dict:
        """One timed pass over messages already in memory: wall seconds, the server's CPU seconds
        (:meth:`server_cpu` before and after) and the scan errors."""
        cpu0 = self.server_cpu(which)
        t0 = time.perf_counter()
        errors = sum(1 for d in data if self.scan(which, d).error)
        wall = time.perf_counter() - t0
        return {"wall_s": wall, "cpu_s": self.server_cpu(which) - cpu0, "errors": errors}

    def server_cpu(self, which: str) -> float:
        """CPU seconds (user + system) the daemon's whole process tree has used so far.

        Every live process under the pid file's master counts its own time plus that of its
        children it has reaped (cutime/cstime): spamd recycles a child every
        --max-conn-per-child scans (200 by default), and the recycled one's time is then in the
        master's cutime. The loopback DNS stub is guard's stand-in for the network, not rspamd,
        and is not counted."""
        pidfile = self.sa_dir / "spamd.pid" if which == "sa" else self.rs_dir / "run" / "rspamd.pid"
        return tree_cpu(int(pidfile.read_text().split()[0]))

    def stop(self) -> None:
        if "sa" in self._started:
            _stop_pidfile(self.sa_dir / "spamd.pid")
        if "rspamd" in self._started:
            _stop_pidfile(self.rs_dir / "run" / "rspamd.pid")
        if self._dns is not None:
            self._dns.terminate()
            self._dns.wait(10)
            self._dns = None
        self._started.clear()


# -- self-test ------------------------------------------------------------------------------------


def _toy(i: int, spam: bool) -> bytes:
    import random

    rnd = random.Random(i * 2 + spam)
    words_spam = "viagra cheap pills winner lottery claim prize bank transfer urgent offer free money click now".split()
    words_ham = "meeting agenda seminar paper draft review colleague lunch schedule theorem proof lecture notes".split()
    words = words_spam if spam else words_ham
    body = " ".join(rnd.choice(words) for _ in range(80))
    return (f"From: {'promo' if spam else 'alice'}{i}@example.{'biz' if spam else 'org'}\r\nTo: bob@example.org\r\n"
            f"Subject: {' '.join(rnd.choice(words) for _ in range(4))}\r\nMessage-ID: <t{i}.{int(spam)}@x>\r\n"
            f"Date: Mon, 02 Nov 2026 10:00:00 +0000\r\n\r\n{body}\r\n").encode()


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description="private offline spamd + rspamd; selftest trains and classifies toy mail")
    ap.add_argument("command", choices=["selftest", "dns-refuser"])
    ap.add_argument("port", nargs="?", type=int, help="dns-refuser: UDP port on 127.0.0.1")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    args = ap.parse_args(argv)
    if args.command == "dns-refuser":
        try:
            dns_refuser(args.port)
        except KeyboardInterrupt:
            pass
        return 0
    work = Path(tempfile.mkdtemp(prefix="guard-peers-"))
    work.chmod(0o755)
    try:
        mail = work / "mail"
        mail.mkdir()
        spam, ham = [], []
        for i in range(40):
            p = mail / f"{i}-{'spam' if i % 2 else 'ham'}.eml"
            p.write_bytes(_toy(i, bool(i % 2)))
            (spam if i % 2 else ham).append(p)
        with Peers(work / "peers") as peers:
            peers.start()
            print(peers.train(spam[:15], ham[:15]))
            for which in ("sa", "rspamd"):
                scans, dt = peers.classify(which, spam[15:] + ham[15:])
                truth = [True] * len(spam[15:]) + [False] * len(ham[15:])
                ok = sum(s.positive == t for s, t in zip(scans, truth))
                errs = [s.error for s in scans if s.error]
                print(f"{which}: {ok}/{len(scans)} right, {len(scans) / dt:.1f} msg/s, scores "
                      f"{[round(s.score, 1) for s in scans]}, errors {errs[:2]}")
        return 0
    finally:
        if args.keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
