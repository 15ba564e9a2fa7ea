"""XOAUTH2 against real servers: Dovecot 2.3's oauth2 passdb validating JWTs locally
(introspection_mode = local, an HMAC key in a dict of files) and the test SMTP server's opt-in
AUTH XOAUTH2 (same key, same checks), with guard fetching its tokens from a token endpoint on
127.0.0.1 through the refresh-token grant (guard/daemon/oauth.py, provider "generic": the Google flow).

A stack of its own (MAIL_OAUTH_KEY, MAIL_OAUTH_SMTP=1 in scripts/mailstack.sh) so the shared
session stack stays password-only.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import shutil
import tempfile
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
from daemon_messages import COORDINATOR, EVENTS, INSTITUTE_TOML, PARTICIPANT, inquiry
from stack_module import integration_conftest

from guard.daemon import oauth
from guard.cli.main import main as guard_main
from guard.errors import PermanentIOError
from guard.daemon.health import Health
from guard.daemon.mailbox import ImapMailbox
from guard.daemon.mailer import SmtpMailer
from guard.daemon.metrics import Registry
from guard.settings import ImapSettings, OAuth2Settings, SmtpSettings

pytestmark = pytest.mark.integration




_cf = integration_conftest()
MailStack, _free_ports, _missing_prerequisite = _cf.MailStack, _cf._free_ports, _cf._missing_prerequisite

HERE = Path(__file__).resolve().parent
KEY = b"guard-test-hmac-key-0123456789abcdef"
KEY_B64 = base64.b64encode(KEY).decode()


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def make_jwt(sub: str, lifetime: float, key: bytes = KEY) -> str:
    now = int(time.time())
    head = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64url(json.dumps({"sub": sub, "iat": now, "exp": int(now + lifetime)}).encode())
    sig = b64url(hmac.new(key, f"{head}.{body}".encode(), hashlib.sha256).digest())
    return f"{head}.{body}.{sig}"


class OAuthStack(MailStack):
    def _script_env(self) -> dict[str, str]:
        env = super()._script_env()
        env.update(MAIL_OAUTH_KEY=KEY_B64, MAIL_OAUTH_SMTP="1")
        return env


@pytest.fixture(scope="module")
def stack():
    reason = _missing_prerequisite()
    if reason:
        pytest.skip(f"integration tests need the local mail stack: {reason}")
    mail_dir = Path(tempfile.mkdtemp(prefix="guard-oauth-", dir="/tmp"))
    mail_dir.chmod(0o711)
    imap_port, imaps_port, smtp_port = _free_ports(3)
    ms = OAuthStack(mail_dir=mail_dir, imap_port=imap_port, imaps_port=imaps_port, smtp_port=smtp_port)
    try:
        ms.start()
        yield ms
    finally:
        ms.stop()
        shutil.rmtree(mail_dir, ignore_errors=True)


class TokenEndpoint:
    """An RFC 6749 token endpoint: refresh token "rt-<user>" -> a JWT for <user>."""

    def __init__(self) -> None:
        self.lifetime = 3600.0
        self.requests: list[dict] = []
        self.revoked = False
        endpoint = self

        class H(BaseHTTPRequestHandler):
            def do_POST(self):
                n = int(self.headers["Content-Length"])
                form = dict(urllib.parse.parse_qsl(self.rfile.read(n).decode()))
                endpoint.requests.append(form)
                rt = form.get("refresh_token", "")
                if endpoint.revoked or form.get("grant_type") != "refresh_token" or not rt.startswith("rt-"):
                    status, answer = 400, {"error": "invalid_grant", "error_description": "Token has been revoked."}
                else:
                    status = 200
                    answer = {"access_token": make_jwt(rt[3:], endpoint.lifetime), "token_type": "Bearer",
                              "expires_in": int(endpoint.lifetime)}
                body = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):
                pass

        self.server = HTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.server.server_port}/token"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def endpoint():
    oauth.reset_registry()
    ep = TokenEndpoint()
    yield ep
    ep.close()
    oauth.reset_registry()


def oauth_settings(tmp_path: Path, ep: TokenEndpoint, user: str = EVENTS, margin: float = 300) -> OAuth2Settings:
    rt = tmp_path / f"refresh-{user}"
    rt.write_text(f"rt-{user}\n")
    return OAuth2Settings(provider="generic", client_id="guard-test", refresh_token_file=rt, token_url=ep.url,
                          refresh_margin_seconds=margin)


def imap_settings(stack, **kw) -> ImapSettings:
    base = dict(host="127.0.0.1", port=stack.imap_port, tls="starttls", ca_file=stack.ca_cert, username=EVENTS,
                auth="xoauth2", timeout_seconds=10)
    base.update(kw)
    return ImapSettings(**base)


def test_imap_xoauth2_login_and_refresh_before_expiry(stack, endpoint, tmp_path):
    # tokens valid for 302 s, refreshed 300 s before expiry: fresh for only 2 s
    endpoint.lifetime = 302
    s = imap_settings(stack, oauth2=oauth_settings(tmp_path, endpoint))
    mb = ImapMailbox(s)

    async def scenario():
        assert await mb.open() > 0
        await mb.close()
        assert await mb.open() > 0  # within 2 s: the cached token, no new request
        await mb.close()
        await asyncio.sleep(2.2)
        assert await mb.open() > 0  # a new token, fetched while the old one was still valid
        await mb.close()

    asyncio.run(scenario())
    assert len(endpoint.requests) == 2
    assert endpoint.requests[0]["grant_type"] == "refresh_token" and endpoint.requests[0]["client_id"] == "guard-test"
    log = (stack.mail_dir / "dovecot" / "dovecot.log").read_text()
    assert f"Login: user=<{EVENTS}>, method=XOAUTH2" in log


def test_dovecot_refuses_expired_foreign_and_forged_tokens(stack, tmp_path):
    cases = {"expired": make_jwt(EVENTS, -60), "another user's": make_jwt("alice@example.org", 600),
             "forged": make_jwt(EVENTS, 600, key=b"not-the-key-0123456789")}
    for what, token in cases.items():
        f = tmp_path / "token"
        f.write_text(token)
        mb = ImapMailbox(imap_settings(stack, oauth2_token_file=f))
        with pytest.raises(PermanentIOError, match="refused"):
            asyncio.run(mb.open())
        asyncio.run(mb.close())


def test_refresh_failure_shows_in_health_and_auth_problems(stack, endpoint, tmp_path):
    endpoint.revoked = True
    s = imap_settings(stack, oauth2=oauth_settings(tmp_path, endpoint))
    health = Health(stale_seconds=60, registry=Registry())
    health.connected("other-account")
    mb = ImapMailbox(s)
    with pytest.raises(PermanentIOError, match="invalid_grant"):
        asyncio.run(mb.open())
    problems = health.problems()
    assert any("invalid_grant" in p and EVENTS in p for p in problems), problems
    assert oauth.auth_problems() and not health.ready()
    endpoint.revoked = False
    assert asyncio.run(mb.open()) > 0
    asyncio.run(mb.close())
    assert oauth.auth_problems() == []


def test_smtp_xoauth2_accepts_a_valid_token_and_refuses_a_bad_one(stack, endpoint, tmp_path):
    s = SmtpSettings(host="127.0.0.1", port=stack.smtp_port, tls="none", username=EVENTS, auth="xoauth2",
                     oauth2=oauth_settings(tmp_path, endpoint))
    raw = (f"From: {EVENTS}\r\nTo: {COORDINATOR}\r\nSubject: xoauth2\r\nMessage-ID: <x1@crm.cat>\r\n\r\nhi\r\n").encode()
    async def send(settings):
        async with SmtpMailer(settings) as m:  # QUITs the connection it keeps for a batch
            await m.send(raw, EVENTS, [COORDINATOR])

    asyncio.run(send(s))
    assert any(m.envelope_tos == [COORDINATOR] for m in stack.sink())
    bad = tmp_path / "bad-token"
    bad.write_text(make_jwt(EVENTS, -10))
    s_bad = SmtpSettings(host="127.0.0.1", port=stack.smtp_port, tls="none", username=EVENTS, auth="xoauth2",
                         oauth2_token_file=bad)
    with pytest.raises(PermanentIOError, match="authentication failed: 535"):
        asyncio.run(send(s_bad))


def test_guard_run_once_end_to_end_with_xoauth2_for_imap_and_smtp(stack, endpoint, tmp_path):
    stack.reset()
    rt = tmp_path / "refresh-token"
    rt.write_text(f"rt-{EVENTS}\n")
    oauth_table = f"""provider = "generic"
client_id = "guard-test"
refresh_token_file = "{rt}"
token_url = "{endpoint.url}"
"""
    config = tmp_path / "guard.toml"
    config.write_text(f"""
{INSTITUTE_TOML}
[imap]
host = "127.0.0.1"
port = {stack.imap_port}
tls = "starttls"
ca_file = "{stack.ca_cert}"
username = "{EVENTS}"
auth = "xoauth2"
timeout_seconds = 10
[imap.oauth2]
{oauth_table}
[smtp]
host = "127.0.0.1"
port = {stack.smtp_port}
tls = "none"
username = "{EVENTS}"
auth = "xoauth2"
[smtp.oauth2]
{oauth_table}
[daemon]
journal = "{tmp_path / 'journal.sqlite3'}"
max_replies_per_hour = 10000
trusted_authserv_ids = ["mx.crm.cat"]

[rules]
shipped_dir = "{HERE / 'daemon_rules'}"
local_dir = "{tmp_path / 'no-local-rules'}"
""")
    args = ["--config", str(config), "run", "--once", "--no-model"]
    assert guard_main(args) == 0  # the first start
    stack.send(inquiry(), PARTICIPANT, [EVENTS])
    assert guard_main(args) == 0
    assert len(stack.fetch_all(EVENTS, "Guard/Routed")) == 1
    # the forward to the coordinator and the acknowledgement went out over SMTP with XOAUTH2
    assert stack.wait_for_messages(COORDINATOR, 1) and stack.wait_for_messages(PARTICIPANT, 1)
    assert "AUTH XOAUTH2 for events@crm.cat accepted" in (stack.mail_dir / "smtp.log").read_text()
    assert all(r["refresh_token"] == f"rt-{EVENTS}" for r in endpoint.requests)
