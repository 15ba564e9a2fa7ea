"""OAuth2 bearer tokens for XOAUTH2 (IMAP and SMTP): Microsoft 365 and Google, refreshed before they expire.

A :class:`TokenSource` is a token provider (``source()`` returns an access token, the callable
that :mod:`guard.daemon.mailbox` and :mod:`guard.daemon.mailer` accept). It caches the token and fetches a
new one when the cached one is within ``refresh_margin_seconds`` of its expiry, so a login never
uses a token that is about to lapse. Every failure is remembered (:meth:`TokenSource.problem`)
for the health check and the digest (:func:`auth_problems`), and raised as
:class:`~guard.errors.PermanentIOError` (the daemon then reconnects with its long backoff).

Flows:

* ``microsoft``: msal, ``client_credentials`` (app-only access; the mailbox must be granted to
  the app's service principal in Exchange Online) or ``refresh_token`` (a delegated grant).
  Scopes: ``https://outlook.office365.com/.default`` for client credentials,
  ``https://outlook.office365.com/IMAP.AccessAsUser.All`` / ``SMTP.Send`` with a refresh token.
* ``google``: the refresh-token grant against ``https://oauth2.googleapis.com/token``, scope
  ``https://mail.google.com/``, plain HTTPS (no extra library).
* ``generic``: the same refresh-token grant against any ``token_url`` (Dovecot with an OAuth2
  server of the institute's own, tests).

Secrets (client secret, refresh token, access tokens) are never logged. A refresh token file is
re-read at every refresh, so rotating it needs no restart; a rotated refresh token returned by
the server is written back to that file when it is writable.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any, Callable

from guard.errors import PermanentIOError

log = logging.getLogger("guard.daemon.oauth")

GOOGLE_TOKEN_URL = "https://oauth2.googleapis.com/token"
GOOGLE_SCOPE = "https://mail.google.com/"
MS_RESOURCE = "https://outlook.office365.com"
MS_SCOPES = {"imap": [f"{MS_RESOURCE}/IMAP.AccessAsUser.All"], "smtp": [f"{MS_RESOURCE}/SMTP.Send"]}


def xoauth2_string(user: str, token: str) -> str:
    """The SASL XOAUTH2 initial response (before base64): ``user=U^Aauth=Bearer T^A^A``."""
    return f"user={user}\x01auth=Bearer {token}\x01\x01"


def xoauth2_b64(user: str, token: str) -> str:
    return base64.b64encode(xoauth2_string(user, token).encode()).decode()


@dataclass
class Token:
    access_token: str
    expires_at: float  # time.time()


class TokenSource:
    """A cached, self-refreshing bearer token. Thread-safe (logins run in worker threads)."""

    def __init__(self, name: str, fetch: Callable[[], tuple[str, float]], *, margin: float = 300.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.name = name
        self._fetch = fetch  # -> (access token, lifetime in seconds)
        self.margin = margin
        self.clock = clock
        self._token: Token | None = None
        self._lock = threading.Lock()
        self.last_error: str | None = None
        self.last_error_at: float | None = None
        self.refreshes = 0
        self.failures = 0

    def __call__(self) -> str:
        return self.token()

    @property
    def expires_at(self) -> float | None:
        return self._token.expires_at if self._token else None

    def seconds_left(self) -> float | None:
        return None if self._token is None else self._token.expires_at - self.clock()

    def needs_refresh(self) -> bool:
        return self._token is None or self._token.expires_at - self.clock() <= self.margin

    def token(self) -> str:
        with self._lock:
            if self.needs_refresh():
                self._refresh()
            assert self._token is not None
            return self._token.access_token

    def _refresh(self) -> None:
        try:
            access, lifetime = self._fetch()
        except Exception as exc:
            self.failures += 1
            self.last_error = _describe(exc)
            self.last_error_at = self.clock()
            log.error("OAuth2 token for %s: refresh failed: %s", self.name, self.last_error)
            if self._token is not None and self._token.expires_at > self.clock() + 30:
                log.warning("OAuth2 token for %s: using the current token until it expires", self.name)
                return
            raise PermanentIOError(f"OAuth2 token for {self.name}: {self.last_error}") from None
        self._token = Token(access, self.clock() + float(lifetime))
        self.refreshes += 1
        self.last_error = None
        self.last_error_at = None
        log.info("OAuth2 token for %s refreshed; valid for %.0f s", self.name, float(lifetime))

    def problem(self) -> str | None:
        """A sentence for the health check and the digest, or None when all is well."""
        if self.last_error:
            return f"OAuth2 token for {self.name}: refresh failed: {self.last_error}"
        left = self.seconds_left()
        if left is not None and left <= 0:
            return f"OAuth2 token for {self.name} has expired"
        return None


def _describe(exc: BaseException) -> str:
    text = str(exc).replace("\r", " ").replace("\n", " ")[:200]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _read(path) -> str:
    return path.read_text(encoding="utf-8").strip()


def _secret(o) -> str | None:
    if o.client_secret is not None:
        return o.client_secret.get_secret_value()
    if o.client_secret_file is not None:
        return _read(o.client_secret_file)
    return None


def _post_form(url: str, form: dict[str, str], timeout: float = 30.0) -> dict[str, Any]:
    data = urllib.parse.urlencode(form).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/x-www-form-urlencoded",
                                                          "Accept": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - configured https endpoint
            body = resp.read()
    except urllib.error.HTTPError as exc:
        try:
            err = json.loads(exc.read() or b"{}")
        except ValueError:
            err = {}
        raise RuntimeError(f"token endpoint answered {exc.code}: {err.get('error', '')} "
                           f"{err.get('error_description', '')}".strip()) from None
    except (urllib.error.URLError, OSError) as exc:
        raise RuntimeError(f"token endpoint unreachable: {getattr(exc, 'reason', exc)}") from None
    return json.loads(body)


def refresh_token_fetcher(o, protocol: str) -> Callable[[], tuple[str, float]]:
    """Google / generic: the RFC 6749 refresh-token grant over HTTPS."""
    url = o.token_url or GOOGLE_TOKEN_URL
    scopes = o.scopes or ([GOOGLE_SCOPE] if o.provider == "google" else [])

    def fetch() -> tuple[str, float]:
        form = {"grant_type": "refresh_token", "client_id": o.client_id, "refresh_token": _read(o.refresh_token_file)}
        secret = _secret(o)
        if secret:
            form["client_secret"] = secret
        if scopes:
            form["scope"] = " ".join(scopes)
        got = _post_form(url, form)
        if "access_token" not in got:
            raise RuntimeError(f"no access_token in the answer ({got.get('error', 'unknown error')})")
        _store_rotated(o.refresh_token_file, got.get("refresh_token"))
        return got["access_token"], float(got.get("expires_in", 3600))

    return fetch


def _store_rotated(path, new: str | None) -> None:
    if not new or path is None:
        return
    try:
        if _read(path) == new:
            return
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(new + "\n", encoding="utf-8")
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except OSError:
        log.warning("the token endpoint rotated the refresh token but %s is not writable: the old one is kept",
                    path)


def microsoft_fetcher(o, protocol: str, app_factory=None) -> Callable[[], tuple[str, float]]:
    """Microsoft 365 through msal (client credentials or a refresh token)."""
    authority = o.token_url or f"https://login.microsoftonline.com/{o.tenant}"

    def make_app():
        import msal

        if app_factory is not None:
            return app_factory(o, authority)
        secret = _secret(o)
        if secret:
            return msal.ConfidentialClientApplication(o.client_id, authority=authority, client_credential=secret)
        return msal.PublicClientApplication(o.client_id, authority=authority)

    app_box: list = []

    def fetch() -> tuple[str, float]:
        if not app_box:
            app_box.append(make_app())
        app = app_box[0]
        if o.flow == "client_credentials":
            result = app.acquire_token_for_client(scopes=o.scopes or [f"{MS_RESOURCE}/.default"])
        else:
            result = app.acquire_token_by_refresh_token(_read(o.refresh_token_file),
                                                        scopes=o.scopes or MS_SCOPES[protocol])
        if not result or "access_token" not in result:
            result = result or {}
            raise RuntimeError(f"{result.get('error', 'no token')}: {str(result.get('error_description', ''))[:120]}")
        _store_rotated(o.refresh_token_file, result.get("refresh_token"))
        return result["access_token"], float(result.get("expires_in", 3600))

    return fetch


#: every TokenSource built, by name: what auth_problems() and the metrics read
_REGISTRY: dict[str, TokenSource] = {}
_REGISTRY_LOCK = threading.Lock()


def token_source(server_settings, protocol: str, name: str | None = None) -> TokenSource | None:
    """The TokenSource for a server's ``[oauth2]`` table (None when it has none); one per name."""
    o = getattr(server_settings, "oauth2", None)
    if getattr(server_settings, "auth", None) != "xoauth2" or o is None:
        return None
    name = name or f"{protocol}:{server_settings.username}@{server_settings.host}"
    with _REGISTRY_LOCK:
        src = _REGISTRY.get(name)
        if src is None:
            fetch = microsoft_fetcher(o, protocol) if o.provider == "microsoft" else refresh_token_fetcher(o, protocol)
            src = TokenSource(name, fetch, margin=o.refresh_margin_seconds)
            _REGISTRY[name] = src
        return src


def register(src: TokenSource) -> TokenSource:
    with _REGISTRY_LOCK:
        _REGISTRY[src.name] = src
    return src


def sources() -> list[TokenSource]:
    with _REGISTRY_LOCK:
        return list(_REGISTRY.values())


def auth_problems() -> list[str]:
    """Current authentication problems, one sentence each (the health check and the digest)."""
    return [p for p in (s.problem() for s in sources()) if p]


def reset_registry() -> None:
    with _REGISTRY_LOCK:
        _REGISTRY.clear()
