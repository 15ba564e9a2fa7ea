"""Mail loops: guard against another guard, and against a dumb auto-responder.

- Two guard instances whose inboxes write to each other: each sends at most one reply, then it
  stops (their replies carry Auto-Submitted and the loop header; the other side files them).
- An auto-responder that answers everything it gets, without Auto-Submitted or any other marker,
  on the participant's side and on the coordinator's: the number of messages stays bounded.
"""

from __future__ import annotations

import email
import email.policy
import smtplib
import threading
import time

from harness import COORDINATOR, EVENTS, GuardProc, deliver, trusted_auth
from imapclient import IMAPClient

ALICE = "alice@example.org"
BOB = "bob@example.org"


def _inquiry(frm: str, to: str, n: int) -> bytes:
    return (trusted_auth(frm).replace("\n", "\r\n") +
            f"From: Sender {n} <{frm}>\r\nTo: {to}\r\nSubject: Registration for the workshop ({n})\r\n"
            f"Message-ID: <loop.{n}.{time.time_ns()}@harness.example>\r\nDate: Mon, 05 Jan 2026 10:00:00 +0100\r\n"
            "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
            "Hello,\r\n\r\nis there still time to register, and could you send me an invitation letter for my "
            "visa?\r\n\r\nThanks\r\n").encode()


def _guard_out(ms, loop_value: str, since: int = 0):
    out = []
    for m in ms.sink()[since:]:
        h = email.message_from_bytes(m.raw, policy=email.policy.compat32)
        if (h.get("X-Guard-Loop") or "").strip() == loop_value:
            out.append((h.get("Auto-Submitted", "").strip(), m.envelope_tos))
    return out


def _wait_quiet(ms, quiet: float = 5.0, timeout: float = 60.0) -> None:
    """Until the SMTP sink has not grown for ``quiet`` seconds."""
    deadline = time.monotonic() + timeout
    last, since = len(ms.sink()), time.monotonic()
    while time.monotonic() - since < quiet:
        assert time.monotonic() < deadline, f"mail still flowing after {timeout}s: {len(ms.sink())} messages"
        time.sleep(0.25)
        n = len(ms.sink())
        if n != last:
            last, since = n, time.monotonic()


def test_two_guards_writing_to_each_other_send_one_reply_each(clean_mailstack, tmp_path):
    ms = clean_mailstack
    a = GuardProc(ms, tmp_path / "a")
    b = GuardProc(ms, tmp_path / "b", user=ALICE, coordinator=BOB, institute="Example Institute",
                  short_name="EXI", domains=("example.org",))
    try:
        assert a.once() == 0 and b.once() == 0
        a.start()
        b.start()
        a.wait_log("IDLE)")
        b.wait_log("IDLE)")
        time.sleep(0.5)
        since = len(ms.sink())
        ms.send(_inquiry(ALICE, EVENTS, 1), ALICE, [EVENTS])  # B's address writes to A
        ms.send(_inquiry(EVENTS, ALICE, 2), EVENTS, [ALICE])  # A's address writes to B
        ms.wait_for_sink(since + 4, timeout=30)
        _wait_quiet(ms, quiet=6.0)
        a_replies = [t for auto, t in _guard_out(ms, EVENTS, since) if auto == "auto-replied"]
        b_replies = [t for auto, t in _guard_out(ms, ALICE, since) if auto == "auto-replied"]
        assert a_replies == [[ALICE]]
        assert b_replies == [[EVENTS]]
        assert a.stop() == 0 and b.stop() == 0
    finally:
        a.cleanup()
        b.cleanup()


class AutoResponder:
    """Answers every message in ``user``'s inbox to its From address: "Re: ...", the text quoted,
    no Auto-Submitted, no X-Autoreply, no Precedence -- a badly written vacation script."""

    def __init__(self, ms, user: str) -> None:
        self.ms, self.user = ms, user
        self.sent = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        c = IMAPClient(self.ms.host, self.ms.imap_port, ssl=False, timeout=30)
        c.login(self.user, self.ms.users[self.user])
        c.select_folder("INBOX")
        try:
            while not self.stop.is_set():
                for uid in c.search(["UNSEEN"]):
                    raw = c.fetch([uid], ["BODY[]"])[uid][b"BODY[]"]  # sets \\Seen
                    self._answer(email.message_from_bytes(raw, policy=email.policy.default))
                self.stop.wait(0.3)
        finally:
            c.logout()

    def _answer(self, msg) -> None:
        to = msg["From"].addresses[0].addr_spec if msg["From"] and msg["From"].addresses else None
        if not to:
            return
        body = msg.get_body(("plain",))
        quoted = "\r\n".join("> " + line for line in (body.get_content() if body else "").splitlines()[:20])
        # authenticated, like the participant's own mail: the loop is stopped by guard's loop rules
        raw = (trusted_auth(self.user).replace("\n", "\r\n") +
               f"From: {self.user}\r\nTo: {to}\r\nSubject: Re: {msg['Subject'] or ''}\r\n"
               f"In-Reply-To: {msg['Message-ID'] or ''}\r\n"
               f"Message-ID: <ar.{self.sent}.{time.time_ns()}@example.org>\r\nDate: Mon, 05 Jan 2026 10:00:00 +0100\r\n"
               "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
               f"Thank you for your message, I will get back to you shortly.\r\n\r\n{quoted}\r\n").encode()
        with smtplib.SMTP(self.ms.host, self.ms.smtp_port, timeout=30) as s:
            s.sendmail(self.user, [to], raw)
        self.sent += 1

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10)


def test_an_auto_responder_that_answers_everything_causes_no_loop(clean_mailstack, tmp_path):
    ms = clean_mailstack
    g = GuardProc(ms, tmp_path)
    responders = []
    try:
        assert g.once() == 0
        g.start()
        g.wait_log("IDLE)")
        # the participant and the coordinator both "on vacation" with a responder that answers everything
        responders = [AutoResponder(ms, BOB), AutoResponder(ms, COORDINATOR)]
        time.sleep(0.5)
        since = len(ms.sink())
        deliver(ms, [_inquiry(BOB, EVENTS, 1)])
        ms.wait_for_sink(since + 2, timeout=30)
        _wait_quiet(ms, quiet=8.0, timeout=90)
        out = _guard_out(ms, EVENTS, since)
        replies = [t for auto, t in out if auto == "auto-replied"]
        assert replies == [[BOB]], out  # one acknowledgement, never a second one
        assert len(out) <= 4, out  # bounded: the first forward, and at most one per answer that came back
        assert sum(r.sent for r in responders) <= 4
        assert g.proc.poll() is None
        assert g.stop() == 0
    finally:
        for r in responders:
            r.close()
        g.cleanup()
