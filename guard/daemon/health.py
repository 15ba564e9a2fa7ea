"""Health and metrics: ``/healthz`` and ``/metrics`` over HTTP on a loopback port, for systemd,
container probes and Prometheus.

``GET /healthz`` answers 200 ``ok`` only when every watched account has its IMAP connection up
and its last IDLE round or poll ended less than ``stale_seconds`` ago; otherwise 503 with one
line per problem (OAuth2 refresh failures included). ``GET /metrics`` is the Prometheus text
format, or OpenMetrics when the scraper asks for it (``prometheus_client``; :mod:`guard.daemon.metrics`).

The daemon is observed from the outside: :class:`ObservedMailbox` wraps a mailbox (connection
state, last activity, reconnects, IMAP errors) and :func:`instrument` wraps the executor's
``process`` (latency, categories, replies sent and suppressed, errors), so the daemon's own
code needs no metric calls.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Callable

from guard.daemon import oauth
from guard.errors import PermanentIOError, TransientIOError
from guard.daemon.metrics import REGISTRY, Registry, suppressed_reasons

log = logging.getLogger("guard.daemon.health")


@dataclass
class AccountHealth:
    account: str
    connected: bool = False
    last_activity: float | None = None  # time.monotonic()
    last_error: str | None = None
    connections: int = 0
    #: when the batch in hand began (None: no work in hand), and when a message last moved on
    busy_since: float | None = None
    last_progress: float | None = None


@dataclass
class Health:
    stale_seconds: float = 1140.0
    #: work in hand and nothing moved on for this long: the watcher is stuck
    stuck_seconds: float = 180.0
    registry: Registry = field(default_factory=lambda: REGISTRY)
    clock: Callable[[], float] = time.monotonic
    accounts: dict[str, AccountHealth] = field(default_factory=dict)

    def account(self, name: str) -> AccountHealth:
        if name not in self.accounts:
            self.accounts[name] = AccountHealth(name)
            self.registry.set("guard_imap_connected", 0, account=name)
        return self.accounts[name]

    # -- events --------------------------------------------------------------------------
    def connected(self, name: str) -> None:
        a = self.account(name)
        a.connected = True
        a.connections += 1
        a.last_activity = self.clock()
        a.last_error = None
        if a.connections > 1:
            self.registry.inc("guard_imap_reconnects_total", account=name)
        self.registry.set("guard_imap_connected", 1, account=name)
        self._touch_metric(name)

    def disconnected(self, name: str, error: str | None = None) -> None:
        a = self.account(name)
        a.connected = False
        if error:
            a.last_error = error
            self.registry.inc("guard_errors_total", account=name, kind="imap")
        self.registry.set("guard_imap_connected", 0, account=name)

    def active(self, name: str) -> None:
        self.account(name).last_activity = self.clock()
        self._touch_metric(name)

    def busy(self, name: str) -> None:
        a = self.account(name)
        a.busy_since = a.last_progress = self.clock()

    def progressed(self, name: str) -> None:
        self.account(name).last_progress = self.clock()

    def idle(self, name: str) -> None:
        self.account(name).busy_since = None

    def _touch_metric(self, name: str) -> None:
        self.registry.set("guard_last_activity_timestamp_seconds", time.time(), account=name)

    # -- verdict -------------------------------------------------------------------------
    def problems(self) -> list[str]:
        out = []
        if not self.accounts:
            out.append("no account connected yet")
        now = self.clock()
        for a in self.accounts.values():
            if not a.connected:
                out.append(f"{a.account}: IMAP not connected" + (f" ({a.last_error})" if a.last_error else ""))
            elif a.last_activity is None or now - a.last_activity > self.stale_seconds:
                out.append(f"{a.account}: no IDLE or poll for more than {self.stale_seconds:.0f} s")
            if a.busy_since is not None:
                quiet = now - max(a.busy_since, a.last_progress or a.busy_since)
                if quiet > self.stuck_seconds:
                    out.append(f"{a.account}: watcher stuck: mail in hand and no message read, sent or filed "
                               f"for {quiet:.0f} s (limit {self.stuck_seconds:.0f} s)")
        out.extend(oauth.auth_problems())
        return out

    def auth_problems(self) -> list[str]:
        """Authentication problems only (OAuth2 refresh failures, refused logins): for the digest."""
        out = list(oauth.auth_problems())
        for a in self.accounts.values():
            if not a.connected and a.last_error and ("login" in a.last_error.lower() or "oauth2" in a.last_error.lower()):
                out.append(f"{a.account}: {a.last_error}")
        return out

    def ready(self) -> bool:
        return not self.problems()


#: the running process's Health (set by guard.daemon.supervisor.Supervisor), for the digest
CURRENT: Health | None = None


def auth_problems() -> list[str]:
    """Current authentication problems of the running guard (OAuth2 refresh failures, refused
    logins), one sentence each: what the digest shows. Empty when all is well."""
    return CURRENT.auth_problems() if CURRENT is not None else oauth.auth_problems()


def collect_tokens():
    """The OAuth2 token sources' expiry and refresh failures, read at scrape time (Registry.collectors)."""
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily  # noqa: PLC0415

    expiry = GaugeMetricFamily("guard_oauth2_token_expiry_timestamp_seconds",
                               "Unix time at which the current OAuth2 access token expires.", labels=["source"])
    failures = CounterMetricFamily("guard_oauth2_refresh_failures", "Failed OAuth2 token refreshes.",
                                   labels=["source"])
    for src in oauth.sources():
        if src.expires_at is not None:
            expiry.add_metric([src.name], src.expires_at)
        failures.add_metric([src.name], src.failures)
    return [expiry, failures]


REGISTRY.collectors.append(collect_tokens)


class ObservedMailbox:
    """A mailbox wrapper that reports connection state and activity to :class:`Health`."""

    def __init__(self, inner, health: Health) -> None:
        self._inner = inner
        self._health = health
        health.account(inner.account)

    def __getattr__(self, name):
        return getattr(self._inner, name)

    @property
    def account(self) -> str:
        return self._inner.account

    @property
    def mailbox(self) -> str:
        return self._inner.mailbox

    async def _watched(self, coro):
        try:
            return await coro
        except (TransientIOError, PermanentIOError) as exc:
            self._health.disconnected(self.account, str(exc)[:200])
            raise

    async def open(self) -> int:
        v = await self._watched(self._inner.open())
        self._health.connected(self.account)
        return v

    async def close(self) -> None:
        await self._inner.close()
        self._health.disconnected(self.account)

    async def uids_after(self, uid):
        return await self._watched(self._inner.uids_after(uid))

    async def sizes(self, uids):
        return await self._watched(self._inner.sizes(uids))

    async def fetch_many(self, uids):
        return await self._watched(self._inner.fetch_many(uids))

    async def move_many(self, uids, folder):
        return await self._watched(self._inner.move_many(uids, folder))

    async def flag_many(self, uids):
        return await self._watched(self._inner.flag_many(uids))

    async def wait(self, timeout, stop):
        why = await self._watched(self._inner.wait(timeout, stop))
        if why != "stopped":
            self._health.active(self.account)
        return why


def instrument(executor, registry: Registry = REGISTRY, health: Health | None = None) -> None:
    """Wrap ``executor.process_batch``: processing time per message (the batch's time shared out),
    messages by category, replies sent/suppressed, errors; with ``health``, the work in hand and
    the executor's progress (the stuck-watcher check of /healthz)."""
    inner = executor.process_batch
    account = executor.mailbox.account
    if health is not None:
        executor.progress = lambda: health.progressed(account)

    async def process_batch(uids, **kwargs):
        t0 = time.perf_counter()
        if health is not None:
            health.busy(account)
        try:
            results = await inner(uids, **kwargs)
        except (TransientIOError, PermanentIOError):
            registry.inc("guard_errors_total", account=account, kind="io")
            raise
        finally:
            if health is not None:
                health.idle(account)
        outs = [o for o in results.values() if o is not None]
        share = (time.perf_counter() - t0) / max(1, len(outs))
        for out in outs:
            registry.observe("guard_processing_seconds", share, account=account)
            if out.state == "error":
                registry.inc("guard_errors_total", account=account, kind="processing")
            elif out.state == "poison":
                registry.inc("guard_errors_total", account=account, kind="poison")
            if out.category:
                registry.inc("guard_messages_total", account=account, category=out.category)
            for sent in out.sent:
                registry.inc("guard_replies_sent_total", account=account, kind=sent.split(":", 1)[0])
            for reason in suppressed_reasons(out.suppressed):
                registry.inc("guard_replies_suppressed_total", account=account, reason=reason)
        return results

    executor.process_batch = process_batch


# -- the HTTP endpoint ---------------------------------------------------------------------


class HealthServer:
    """A minimal HTTP/1.0 server on the event loop: GET /healthz, GET /metrics."""

    def __init__(self, health: Health, host: str = "127.0.0.1", port: int = 9187) -> None:
        self.health = health
        self.host = host
        self.port = port
        self._server: asyncio.base_events.Server | None = None

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("health and metrics on http://%s:%s/healthz and /metrics", self.host, self.port)
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), timeout=5)
            accept = None
            while True:  # headers
                h = await asyncio.wait_for(reader.readline(), timeout=5)
                if h in (b"\r\n", b"\n", b""):
                    break
                name, _, value = h.decode("latin-1").partition(":")
                if name.strip().lower() == "accept":
                    accept = value.strip()
            parts = line.decode("latin-1").split()
            method, path = (parts[0], parts[1].split("?")[0]) if len(parts) >= 2 else ("", "")
            if method not in ("GET", "HEAD"):
                status, ctype, body = "405 Method Not Allowed", "text/plain", "GET only\n"
            elif path == "/healthz":
                problems = self.health.problems()
                if problems:
                    status, body = "503 Service Unavailable", "".join(f"{p}\n" for p in problems)
                else:
                    status, body = "200 OK", "ok\n"
                ctype = "text/plain; charset=utf-8"
            elif path == "/metrics":
                status = "200 OK"
                body, ctype = self.health.registry.exposition(accept)
            else:
                status, ctype, body = "404 Not Found", "text/plain", "not found\n"
            data = body if isinstance(body, bytes) else body.encode("utf-8")
            head = (f"HTTP/1.0 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(data)}\r\n"
                    "Connection: close\r\n\r\n").encode()
            writer.write(head + (b"" if method == "HEAD" else data))
            await writer.drain()
        except (asyncio.TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()
            try:
                await writer.wait_closed()
            except (ConnectionError, OSError):
                pass


def stuck_seconds_for(settings) -> float:
    if settings.health.stuck_seconds is not None:
        return settings.health.stuck_seconds
    return 3 * settings.daemon.message_time_budget_seconds + 120


def stale_seconds_for(settings) -> float:
    if settings.health.stale_seconds is not None:
        return settings.health.stale_seconds
    imaps = [settings.imap] if settings.imap is not None else [a.imap for a in settings.accounts]
    longest = max((max(i.idle_seconds, i.poll_seconds) for i in imaps), default=540.0)
    return 2 * longest + 60
