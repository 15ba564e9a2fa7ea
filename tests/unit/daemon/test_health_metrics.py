"""guard/daemon/health.py and guard/daemon/metrics.py: /healthz readiness, the Prometheus text, token expiry."""

from __future__ import annotations

import asyncio

import pytest

from guard.daemon import oauth
from guard.daemon.health import Health, HealthServer
from guard.daemon.metrics import Registry, suppressed_reasons


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


@pytest.fixture(autouse=True)
def _clean_registry():
    oauth.reset_registry()
    yield
    oauth.reset_registry()


async def get(port: int, path: str) -> tuple[int, str]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.0\r\nHost: x\r\n\r\n".encode())
    await writer.drain()
    data = await reader.read()
    writer.close()
    await writer.wait_closed()
    head, _, body = data.decode().partition("\r\n\r\n")
    return int(head.split()[1]), body


def test_healthz_ready_only_when_connected_and_recent():
    clock = Clock()
    reg = Registry()
    health = Health(stale_seconds=100, registry=reg, clock=clock)

    async def scenario():
        server = HealthServer(health, "127.0.0.1", 0)
        port = await server.start()
        try:
            out = [await get(port, "/healthz")]          # nothing connected yet
            health.account("events")
            out.append(await get(port, "/healthz"))     # known, not connected
            health.connected("events")
            out.append(await get(port, "/healthz"))     # connected, fresh: ready
            clock.t += 99
            health.active("events")                      # an IDLE round ended
            clock.t += 99
            out.append(await get(port, "/healthz"))     # still within stale_seconds
            clock.t += 2
            out.append(await get(port, "/healthz"))     # stale
            health.active("events")
            health.disconnected("events", "IMAP: server said BYE")
            out.append(await get(port, "/healthz"))
            health.connected("events")                   # a reconnect
            out.append(await get(port, "/metrics"))
            out.append(await get(port, "/nope"))
            return out
        finally:
            await server.stop()

    res = asyncio.run(scenario())
    assert res[0] == (503, "no account connected yet\n")
    assert res[1][0] == 503 and "events: IMAP not connected" in res[1][1]
    assert res[2] == (200, "ok\n")
    assert res[3] == (200, "ok\n")
    assert res[4][0] == 503 and "no IDLE or poll for more than 100 s" in res[4][1]
    assert res[5][0] == 503 and "server said BYE" in res[5][1]
    status, metrics = res[6]
    assert status == 200
    assert 'guard_imap_reconnects_total{account="events"} 1' in metrics
    assert 'guard_imap_connected{account="events"} 1' in metrics
    assert 'guard_errors_total{account="events",kind="imap"} 1' in metrics
    assert res[7][0] == 404


def test_metrics_text_format_histogram_and_token_expiry():
    reg = Registry()
    reg.inc("guard_messages_total", account="a", category="scam")
    reg.inc("guard_messages_total", account="a", category="scam")
    reg.inc("guard_replies_suppressed_total", account="a", reason="window")
    reg.observe("guard_processing_seconds", 0.03, account="a")
    reg.observe("guard_processing_seconds", 2.0, account="a")
    src = oauth.register(oauth.TokenSource("imap:events", lambda: ("tok", 3600.0), clock=lambda: 5000.0))
    src.token()
    from guard.daemon.health import collect_tokens

    reg.collectors.append(collect_tokens)
    src.failures = 2
    text = reg.render()
    assert 'guard_messages_total{account="a",category="scam"} 2' in text
    assert 'guard_replies_suppressed_total{account="a",reason="window"} 1' in text
    assert "# TYPE guard_processing_seconds histogram" in text
    assert 'guard_processing_seconds_bucket{account="a",le="0.05"} 1' in text
    assert 'guard_processing_seconds_bucket{account="a",le="2.5"} 2' in text
    assert 'guard_processing_seconds_bucket{account="a",le="+Inf"} 2' in text
    assert 'guard_processing_seconds_count{account="a"} 2' in text
    assert 'guard_oauth2_token_expiry_timestamp_seconds{source="imap:events"} 8600' in text
    assert 'guard_oauth2_refresh_failures_total{source="imap:events"} 2' in text
    assert "# TYPE guard_oauth2_refresh_failures_total counter" in text
    assert reg.get("guard_messages_total", account="a", category="scam") == 2
    # every sample line is "name{labels} number": guard's own, and the standard process and Python metrics
    names = set()
    for line in text.splitlines():
        if not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            float(value.replace("+Inf", "inf"))
            names.add(name.split("{")[0])
            assert name.startswith(("guard_", "process_", "python_")), name
    assert not any(n.endswith("_created") for n in names), "no *_created series beside guard's counters"
    assert {"process_resident_memory_bytes", "python_info"} <= names


def test_metrics_are_prometheus_client_metrics_with_guards_names():
    """guard's registry is a prometheus_client CollectorRegistry: the names and types dashboards know."""
    from prometheus_client import CollectorRegistry
    from prometheus_client.parser import text_string_to_metric_families

    from guard.daemon.metrics import METRICS

    reg = Registry()
    assert isinstance(reg.prometheus, CollectorRegistry)
    reg.inc("guard_errors_total", account="a", kind="imap")
    reg.set("guard_imap_connected", 1, account="a")
    reg.observe("guard_processing_seconds", 0.2, account="a")
    families = {f.name: f.type for f in text_string_to_metric_families(reg.render())}
    for name, (kind, _, _) in METRICS.items():
        base = name.removesuffix("_total") if kind.__name__ == "Counter" else name
        assert families.get(base) == kind.__name__.lower(), (name, families.get(base))
    with pytest.raises(KeyError):
        reg.inc("guard_imap_connected", account="a")  # a gauge is not counted
    body, ctype = reg.exposition("application/openmetrics-text; version=1.0.0")
    assert ctype.startswith("application/openmetrics-text") and body.rstrip().endswith(b"# EOF")
    body, ctype = reg.exposition(None)
    assert ctype.startswith("text/plain") and b"guard_errors_total" in body


def test_suppressed_reason_labels():
    got = suppressed_reasons(["reply:inquiry_ack: window: this sender got inquiry_ack less than 7 days ago; "
                              "list: List-Id", "reply:x: backlog: arrived before guard's first start"])
    assert got == ["window", "list", "backlog"]


def test_health_reports_oauth_problems():
    health = Health(stale_seconds=100, registry=Registry())
    health.connected("events")
    assert health.ready()

    def boom():
        raise RuntimeError("token endpoint answered 400: invalid_grant")

    src = oauth.register(oauth.TokenSource("smtp:events", boom))
    with pytest.raises(Exception):
        src.token()
    assert not health.ready()
    assert any("smtp:events" in p and "invalid_grant" in p for p in health.problems())
