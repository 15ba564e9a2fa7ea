#!/usr/bin/env python3
"""SMTP server for guard's integration tests (aiosmtpd), started by scripts/mailstack.sh.

    smtp_server.py --port 10025 --mail-dir DIR --users-file DIR/dovecot/users \
                   --lmtp DIR/dovecot/run/lmtp [--local-domain crm.cat ...] [--pidfile FILE]

* RCPT to an address in the users file (Dovecot's passwd-file; ``user+detail@`` counts as
  ``user@``) is delivered to Dovecot over LMTP once the message is complete, so it shows up
  over IMAP like real mail (Dovecot adds Return-Path and Delivered-To; we add a Received line).
* RCPT to an unknown user of a --local-domain is refused with 550 5.1.1, like a real MX.
* RCPT to any other domain is accepted and not relayed anywhere.
* Every accepted message, local or not, is written to DIR/smtp-sink/ as one .eml file: the
  envelope as ``X-Envelope-From:`` (``<>`` for the null sender) and one ``X-Envelope-To:`` per
  recipient, then the bytes exactly as the client sent them. File names sort in the order of
  acceptance; files are renamed into place complete.
* Fault injection: while the file DIR/smtp-fail exists, its first line (e.g.
  ``451 4.3.0 try later``) is the answer at the stages named on an optional ``stage:`` line
  (``mail``, ``rcpt``, ``data``, comma-separated; default ``rcpt,data``). An optional
  ``times: N`` line limits it to N answers (the file is rewritten, then removed at 0).
  Nothing is recorded or delivered for refused commands.
* If LMTP delivery fails (Dovecot down, user refused) the client gets a 451/550 after DATA and
  nothing is recorded.
* Once the final dot has arrived, the message is delivered and recorded even if the client
  disconnects before the answer (what a real MTA does: the duplicate-delivery case of RFC 1047).
* SIGTERM/SIGINT stop it; --pidfile is written once the port is open and removed at exit.
* Opt-in (--oauth-key-file FILE, a base64 HMAC key): AUTH XOAUTH2 is offered, also without TLS.
  The bearer token must be an HS256 JWT signed with that key whose "sub" is the user and whose
  "exp" lies ahead (what Dovecot's oauth2 passdb checks in the same stack). A bad token gets the
  RFC 7628-style 334 error challenge, then 535. Without the option nothing about AUTH changes.

Needs aiosmtpd; LMTP delivery uses the standard library's smtplib.
"""

from __future__ import annotations

import argparse
import asyncio
import email.utils
import itertools
import logging
import os
import signal
import smtplib
import sys
import time
from pathlib import Path

from aiosmtpd.smtp import SMTP, Envelope, Session

log = logging.getLogger("guard-test-smtp")

FAIL_STAGES = {"mail", "rcpt", "data"}
DEFAULT_FAIL_STAGES = {"rcpt", "data"}


class FailureSwitch:
    """The file DIR/smtp-fail: reply line, optional 'stage: ...' and 'times: N' lines."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def check(self, stage: str) -> str | None:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        if not lines:
            return None
        reply, stages, times = lines[0], set(DEFAULT_FAIL_STAGES), None
        for ln in lines[1:]:
            key, _, value = ln.partition(":")
            key, value = key.strip().lower(), value.strip()
            if key == "stage":
                stages = {s.strip().lower() for s in value.split(",") if s.strip()} & FAIL_STAGES
            elif key == "times":
                times = int(value)
        if stage not in stages:
            return None
        if not (len(reply) >= 3 and reply[:3].isdigit() and reply[0] in "45"):
            reply = "451 4.3.0 " + reply
        if times is not None:
            if times <= 0:
                self.path.unlink(missing_ok=True)
                return None
            if times == 1:
                self.path.unlink(missing_ok=True)
            else:
                rest = [ln for ln in lines[1:] if not ln.lower().startswith("times")]
                tmp = self.path.with_name(self.path.name + ".tmp")
                tmp.write_text("\n".join([lines[0], *rest, f"times: {times - 1}"]) + "\n")
                os.replace(tmp, self.path)
        log.info("failure switch: answering %r at %s", reply, stage)
        return reply


class Users:
    """Addresses of Dovecot's passwd-file, re-read when the file changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: tuple[int, int] | None = None
        self._users: frozenset[str] = frozenset()

    def get(self) -> frozenset[str]:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return frozenset()
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp != self._stamp:
            names = set()
            for line in self.path.read_text(encoding="utf-8").splitlines():
                name = line.split(":", 1)[0].strip().lower()
                if name and not name.startswith("#"):
                    names.add(name)
            self._users, self._stamp = frozenset(names), stamp
        return self._users


def canonical(address: str) -> str:
    """user+detail@Domain -> user@domain (Dovecot's recipient_delimiter is '+')."""
    local, _, domain = address.rpartition("@")
    local = local.split("+", 1)[0]
    return f"{local}@{domain}".lower()


class Handler:
    def __init__(self, args: argparse.Namespace) -> None:
        self.mail_dir = Path(args.mail_dir)
        self.sink = self.mail_dir / "smtp-sink"
        self.sink.mkdir(parents=True, exist_ok=True)
        self.users = Users(Path(args.users_file))
        self.local_domains = {d.lower() for d in args.local_domain}
        self.lmtp = args.lmtp
        self.hostname = args.hostname
        self.fail = FailureSwitch(self.mail_dir / "smtp-fail")
        self.seq = itertools.count(1)

    # -- classification
    def is_local_user(self, address: str) -> bool:
        return canonical(address) in self.users.get()

    def is_local_domain(self, address: str) -> bool:
        return address.rpartition("@")[2].lower() in self.local_domains

    # -- aiosmtpd hooks
    async def handle_MAIL(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, mail_options: list[str]) -> str:
        failure = self.fail.check("mail")
        if failure:
            return failure
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, rcpt_options: list[str]) -> str:
        failure = self.fail.check("rcpt")
        if failure:
            return failure
        if self.is_local_domain(address) and not self.is_local_user(address):
            return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        """Like a real MTA, a message whose final dot arrived is delivered and recorded even when the
        client goes away before our answer (Postfix logs "lost connection after END-OF-MESSAGE" and
        still queues it). aiosmtpd cancels the handler when the client's FIN arrives, so the work
        runs shielded from that cancellation."""
        return await asyncio.shield(asyncio.ensure_future(self._accept_message(session, envelope)))

    async def _accept_message(self, session: Session, envelope: Envelope) -> str:
        failure = self.fail.check("data")
        if failure:
            return failure
        data = envelope.original_content
        if data is None:
            data = envelope.content
        if isinstance(data, str):
            data = data.encode("utf-8", "surrogateescape")
        qid = f"{time.time_ns():x}{next(self.seq):04x}"
        local = [r for r in envelope.rcpt_tos if self.is_local_user(r)]
        if local:
            received = self.received_header(session, qid, local)
            try:
                errors = await asyncio.get_running_loop().run_in_executor(
                    None, self.lmtp_deliver, envelope, local, received + data)
            except (OSError, smtplib.SMTPException) as exc:
                log.warning("LMTP delivery failed: %r", exc)
                return f"451 4.3.0 mailbox server unavailable: {exc}"
            if errors:
                log.warning("LMTP refused: %s", errors)
                text = "; ".join(f"<{r}> {c} {m}" for r, (c, m) in errors.items())
                if all(c >= 500 for c, _ in errors.values()):
                    return f"550 5.1.1 delivery refused: {text}"
                return f"451 4.3.0 delivery failed: {text}"
        self.record(envelope, data, qid)
        log.info("accepted %s from <%s> to %s (local: %s)", qid, envelope.mail_from,
                 envelope.rcpt_tos, local)
        return f"250 2.0.0 Ok: queued as {qid}"

    # -- delivery and recording
    def received_header(self, session: Session, qid: str, rcpts: list[str]) -> bytes:
        peer = session.peer[0] if isinstance(session.peer, tuple) else str(session.peer)
        proto = "ESMTP" if session.extended_smtp else "SMTP"
        for_part = f"\r\n\tfor <{rcpts[0]}>" if len(rcpts) == 1 else ""
        date = email.utils.format_datetime(email.utils.localtime())
        return (f"Received: from {session.host_name or 'unknown'} ([{peer}])\r\n"
                f"\tby {self.hostname} (guard test smtp) with {proto} id {qid}"
                f"{for_part};\r\n\t{date}\r\n").encode("utf-8", "surrogateescape")

    def lmtp_connect(self) -> smtplib.LMTP:
        if self.lmtp.startswith("/"):
            return smtplib.LMTP(self.lmtp, timeout=30)  # unix socket
        host, _, port = self.lmtp.rpartition(":")
        return smtplib.LMTP(host, int(port), timeout=30)

    def lmtp_deliver(self, envelope: Envelope, rcpts: list[str],
                     data: bytes) -> dict[str, tuple[int, str]]:
        """One LMTP transaction; LMTP answers DATA once per accepted recipient (which
        smtplib.sendmail does not read), so the replies are collected by hand."""
        errors: dict[str, tuple[int, str]] = {}
        with self.lmtp_connect() as lm:
            lm.ehlo()  # LHLO
            opts = []
            if "SMTPUTF8" in envelope.mail_options and lm.has_extn("smtputf8"):
                opts.append("SMTPUTF8")
            if "BODY=8BITMIME" in envelope.mail_options and lm.has_extn("8bitmime"):
                opts.append("BODY=8BITMIME")
            code, msg = lm.mail(envelope.mail_from or "", opts)
            if code != 250:
                return {r: (code, msg.decode(errors="replace")) for r in rcpts}
            accepted = []
            for r in rcpts:
                code, msg = lm.rcpt(r)
                if code in (250, 251):
                    accepted.append(r)
                else:
                    errors[r] = (code, msg.decode(errors="replace"))
            if accepted:
                replies = [lm.data(data)]
                replies += [lm.getreply() for _ in accepted[1:]]
                for r, (code, msg) in zip(accepted, replies, strict=True):
                    if code != 250:
                        errors[r] = (code, msg.decode(errors="replace"))
        return errors

    def record(self, envelope: Envelope, data: bytes, qid: str) -> None:
        head = [f"X-Envelope-From: {envelope.mail_from or '<>'}"]
        head += [f"X-Envelope-To: {r}" for r in envelope.rcpt_tos]
        blob = ("\r\n".join(head) + "\r\n").encode("utf-8", "surrogateescape") + data
        name = f"{time.time_ns():020d}-{qid}.eml"
        tmp = self.sink / f".{name}.tmp"
        tmp.write_bytes(blob)
        os.replace(tmp, self.sink / name)


def check_jwt(token: str, key: bytes, user: str) -> str | None:
    """None when ``token`` is an HS256 JWT signed with ``key`` for ``user`` and not expired; else why not."""
    import base64
    import hashlib
    import hmac
    import json

    def unb64(part: str) -> bytes:
        return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))

    try:
        head, body, sig = token.split(".")
        header, claims = json.loads(unb64(head)), json.loads(unb64(body))
    except (ValueError, TypeError):
        return "not a JWT"
    if header.get("alg") != "HS256":
        return "unsupported alg"
    want = hmac.new(key, f"{head}.{body}".encode(), hashlib.sha256).digest()
    if not hmac.compare_digest(want, unb64(sig)):
        return "bad signature"
    if not isinstance(claims.get("exp"), (int, float)) or claims["exp"] < time.time():
        return "expired"
    if str(claims.get("sub", "")).lower() != user.lower():
        return "token is for another user"
    return None


class OAuthHandler(Handler):
    """Handler plus AUTH XOAUTH2 (opt-in, --oauth-key-file)."""

    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(args)
        import base64

        self.oauth_key = base64.b64decode(Path(args.oauth_key_file).read_text().strip())

    async def auth_XOAUTH2(self, server: SMTP, args: list[str]):
        import base64
        import json

        from aiosmtpd.smtp import AuthResult

        if len(args) > 1:
            blob = args[1].encode()
        else:
            got = await server.challenge_auth("", encode_to_b64=False)
            if not isinstance(got, bytes):
                return AuthResult(success=False, handled=True)
            blob = base64.b64encode(got)
        try:
            fields = dict(f.split("=", 1) for f in base64.b64decode(blob).decode().split("\x01") if "=" in f)
            user, auth = fields["user"], fields["auth"]
        except (ValueError, KeyError, UnicodeDecodeError):
            return AuthResult(success=False, handled=False, message="501 5.5.2 malformed XOAUTH2 response")
        token = auth[7:] if auth.lower().startswith("bearer ") else ""
        why = check_jwt(token, self.oauth_key, user)
        if why is not None:
            log.info("AUTH XOAUTH2 for %s refused: %s", user, why)
            # RFC 7628 / Google: an error challenge, the client answers with an empty line, then 535
            await server.challenge_auth(json.dumps({"status": "401", "schemes": "bearer"}))
            return AuthResult(success=False, handled=False)
        log.info("AUTH XOAUTH2 for %s accepted", user)
        return AuthResult(success=True, auth_data=user)


async def serve(args: argparse.Namespace) -> None:
    handler = OAuthHandler(args) if getattr(args, "oauth_key_file", None) else Handler(args)
    loop = asyncio.get_running_loop()
    extra = {"auth_require_tls": False} if isinstance(handler, OAuthHandler) else {}

    def factory() -> SMTP:
        return SMTP(handler, hostname=args.hostname, ident="guard test smtp",
                    decode_data=False, enable_SMTPUTF8=True, timeout=120, **extra)

    server = await loop.create_server(factory, host=args.host, port=args.port)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    pidfile = Path(args.pidfile) if args.pidfile else None
    if pidfile:
        tmp = pidfile.with_name(pidfile.name + ".tmp")
        tmp.write_text(f"{os.getpid()}\n")
        os.replace(tmp, pidfile)
    log.info("listening on %s:%s, lmtp %s, local domains %s, sink %s", args.host, args.port,
             args.lmtp, sorted(handler.local_domains), handler.sink)
    try:
        await stop.wait()
    finally:
        server.close()
        if pidfile:
            try:
                if pidfile.read_text().strip() == str(os.getpid()):
                    pidfile.unlink()
            except FileNotFoundError:
                pass
        log.info("stopped")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=int(os.environ.get("SMTP_PORT", "10025")))
    ap.add_argument("--mail-dir", default=os.environ.get("MAIL_DIR", "/tmp/guard-mailstack"))
    ap.add_argument("--users-file", help="Dovecot passwd-file (default MAIL_DIR/dovecot/users)")
    ap.add_argument("--lmtp", help="LMTP unix socket path or host:port "
                    "(default MAIL_DIR/dovecot/run/lmtp)")
    ap.add_argument("--local-domain", action="append", default=[],
                    help="domain whose unknown users are refused (repeatable; "
                    "default crm.cat and example.org)")
    ap.add_argument("--hostname", default="mail.crm.cat")
    ap.add_argument("--pidfile")
    ap.add_argument("--oauth-key-file", help="opt-in: offer AUTH XOAUTH2, accepting HS256 JWTs signed with "
                    "this base64 key")
    args = ap.parse_args(argv)
    args.users_file = args.users_file or os.path.join(args.mail_dir, "dovecot", "users")
    args.lmtp = args.lmtp or os.path.join(args.mail_dir, "dovecot", "run", "lmtp")
    args.local_domain = args.local_domain or ["crm.cat", "example.org"]
    logging.basicConfig(level=logging.INFO, stream=sys.stdout,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd's per-command chatter
    asyncio.run(serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
