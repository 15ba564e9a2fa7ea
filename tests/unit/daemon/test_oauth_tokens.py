"""guard/daemon/oauth.py: refresh before expiry, failures surfaced, Google/generic and Microsoft flows, SASL string."""

from __future__ import annotations

import base64
import json
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from guard.daemon import oauth
from guard.errors import PermanentIOError
from guard.daemon.mailer import token_provider_from
from guard.settings import ImapSettings, OAuth2Settings, SmtpSettings


@pytest.fixture(autouse=True)
def _clean():
    oauth.reset_registry()
    yield
    oauth.reset_registry()


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_token_is_cached_and_refreshed_before_it_expires():
    clock = Clock()
    issued = []

    def fetch():
        issued.append(clock.t)
        return f"tok{len(issued)}", 3600.0

    src = oauth.TokenSource("imap:events", fetch, margin=300, clock=clock)
    assert src() == "tok1"
    clock.t = 3299
    assert src() == "tok1"          # 301 s left: still good
    clock.t = 3300
    assert src() == "tok2"          # within the margin: refreshed before expiry
    assert issued == [0, 3300]
    assert src.expires_at == 6900 and src.problem() is None


def test_refresh_failure_is_visible_and_keeps_a_still_valid_token():
    clock = Clock()
    state = {"fail": False}

    def fetch():
        if state["fail"]:
            raise RuntimeError("token endpoint answered 400: invalid_grant")
        return "tok", 600.0

    src = oauth.register(oauth.TokenSource("smtp:events", fetch, margin=300, clock=clock))
    assert src() == "tok"
    state["fail"] = True
    clock.t = 400                   # refresh due, fails, the current token still has 200 s
    assert src() == "tok"
    assert "invalid_grant" in oauth.auth_problems()[0]
    clock.t = 590                   # 10 s left: no longer usable
    with pytest.raises(PermanentIOError, match="invalid_grant"):
        src()
    assert src.failures == 2
    state["fail"] = False
    assert src() == "tok"
    assert oauth.auth_problems() == []


class TokenEndpoint(BaseHTTPRequestHandler):
    seen: list = []
    answer: dict = {}
    status = 200

    def do_POST(self):
        n = int(self.headers["Content-Length"])
        TokenEndpoint.seen.append(dict(urllib.parse.parse_qsl(self.rfile.read(n).decode())))
        body = json.dumps(TokenEndpoint.answer).encode()
        self.send_response(TokenEndpoint.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


@pytest.fixture
def endpoint():
    server = HTTPServer(("127.0.0.1", 0), TokenEndpoint)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    TokenEndpoint.seen, TokenEndpoint.status = [], 200
    yield f"http://127.0.0.1:{server.server_port}/token"
    server.shutdown()
    server.server_close()


def test_refresh_token_grant_google_style(tmp_path, endpoint):
    rt = tmp_path / "refresh"
    rt.write_text("RT-1\n")
    TokenEndpoint.answer = {"access_token": "AT-1", "expires_in": 3599, "refresh_token": "RT-2"}
    o = OAuth2Settings(provider="google", client_id="cid", client_secret="csecret", refresh_token_file=rt,
                       token_url=endpoint)
    imap = ImapSettings(host="imap.gmail.com", username="events@crm.cat", auth="xoauth2", oauth2=o)
    provider = token_provider_from(imap)
    assert isinstance(provider, oauth.TokenSource) and provider.name == "imap:events@crm.cat@imap.gmail.com"
    assert provider() == "AT-1"
    assert TokenEndpoint.seen == [{"grant_type": "refresh_token", "client_id": "cid", "refresh_token": "RT-1",
                                   "client_secret": "csecret", "scope": "https://mail.google.com/"}]
    assert rt.read_text().strip() == "RT-2"          # a rotated refresh token is kept
    # the same server settings give the same (cached) source
    assert token_provider_from(imap) is provider

    TokenEndpoint.status, TokenEndpoint.answer = 400, {"error": "invalid_grant", "error_description": "revoked"}
    smtp = SmtpSettings(host="smtp.gmail.com", username="events@crm.cat", auth="xoauth2", oauth2=o)
    with pytest.raises(PermanentIOError, match="400: invalid_grant revoked"):
        token_provider_from(smtp)()
    assert any("smtp:events@crm.cat" in p for p in oauth.auth_problems())


class FakeMsalApp:
    def __init__(self):
        self.calls = []

    def acquire_token_for_client(self, scopes):
        self.calls.append(("client", scopes))
        return {"access_token": "MS-AT", "expires_in": 3599}

    def acquire_token_by_refresh_token(self, rt, scopes):
        self.calls.append(("refresh", rt, scopes))
        return {"error": "invalid_grant", "error_description": "AADSTS70000: expired"}


def test_microsoft_flows_through_msal(tmp_path):
    app = FakeMsalApp()
    secret = tmp_path / "secret"
    secret.write_text("s3cr3t")
    o = OAuth2Settings(provider="microsoft", flow="client_credentials", client_id="cid", tenant="crm.cat",
                       client_secret_file=secret)
    fetch = oauth.microsoft_fetcher(o, "imap", app_factory=lambda o, authority: app)
    assert fetch() == ("MS-AT", 3599.0)
    assert app.calls == [("client", ["https://outlook.office365.com/.default"])]

    rt = tmp_path / "rt"
    rt.write_text("RT")
    o2 = OAuth2Settings(provider="microsoft", client_id="cid", refresh_token_file=rt)
    fetch2 = oauth.microsoft_fetcher(o2, "smtp", app_factory=lambda o, authority: app)
    with pytest.raises(RuntimeError, match="invalid_grant"):
        fetch2()
    assert app.calls[-1] == ("refresh", "RT", ["https://outlook.office365.com/SMTP.Send"])


def test_settings_validation(tmp_path):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="needs refresh_token_file"):
        OAuth2Settings(provider="google", client_id="c")
    with pytest.raises(ValidationError, match="only offered for provider"):
        OAuth2Settings(provider="google", flow="client_credentials", client_id="c", client_secret="x")
    rt = tmp_path / "rt"
    rt.write_text("x")
    o = OAuth2Settings(provider="google", client_id="c", refresh_token_file=rt)
    with pytest.raises(ValidationError, match="exactly one of"):
        ImapSettings(host="h", username="u", auth="xoauth2", oauth2=o, oauth2_token_file=rt)


def test_xoauth2_sasl_string_matches_aiosmtplib():
    import aiosmtplib.auth

    assert oauth.xoauth2_string("u@crm.cat", "T") == "user=u@crm.cat\x01auth=Bearer T\x01\x01"
    assert base64.b64decode(oauth.xoauth2_b64("u@crm.cat", "T")) == b"user=u@crm.cat\x01auth=Bearer T\x01\x01"
    if hasattr(aiosmtplib.auth, "auth_xoauth2_encode"):  # the client's own encoder, where it has one
        assert aiosmtplib.auth.auth_xoauth2_encode("u@crm.cat", "T") == oauth.xoauth2_b64("u@crm.cat", "T").encode()
