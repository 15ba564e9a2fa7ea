"""guard's Prometheus metrics, kept in a ``prometheus_client`` registry (its metric types and text
exposition), with the standard process, platform and garbage-collector metrics beside them
(``process_*``, ``python_*``).

Exposed at ``/metrics`` by :mod:`guard.daemon.health`. guard's metric names:

    guard_messages_total{account,category}              messages decided, by category
    guard_replies_sent_total{account,kind}              replies and forwards sent (kind: reply, forward, alert ...)
    guard_replies_suppressed_total{account,reason}      automatic replies held back, by gate reason
    guard_errors_total{account,kind}                    processing errors, IMAP errors, SMTP errors
    guard_imap_reconnects_total{account}                successful reconnects after the first connection
    guard_imap_connected{account}                       1 while the IMAP connection is up
    guard_last_activity_timestamp_seconds{account}      end of the last IDLE round or poll (unix time)
    guard_processing_seconds{account}                   histogram: fetch to filed, per message
    guard_oauth2_token_expiry_timestamp_seconds{source} when the current access token expires (unix time)
    guard_oauth2_refresh_failures_total{source}

The daemon reports through :class:`Registry` (``inc``, ``set``, ``observe`` by metric name), so
the code that counts needs no metric objects; values owned elsewhere (the OAuth2 token sources)
are read at scrape time by the callables in ``Registry.collectors``, each yielding
``prometheus_client`` metric families.
"""

from __future__ import annotations

from typing import Callable, Iterable

import prometheus_client
from prometheus_client import (CollectorRegistry, Counter, GCCollector, Gauge, Histogram, PlatformCollector,
                               ProcessCollector)
from prometheus_client.core import Metric
from prometheus_client.exposition import choose_encoder, generate_latest

prometheus_client.disable_created_metrics()  # no *_created series beside each counter: guard's names only

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

#: name -> (type, help, label names) of the metrics guard counts itself
METRICS = {
    "guard_messages_total": (Counter, "Messages decided, by category.", ("account", "category")),
    "guard_replies_sent_total": (Counter, "Outgoing messages (replies, forwards, alerts) accepted by the SMTP server.",
                                 ("account", "kind")),
    "guard_replies_suppressed_total": (Counter, "Automatic replies held back by the reply gate, by reason.",
                                       ("account", "reason")),
    "guard_errors_total": (Counter, "Errors, by kind.", ("account", "kind")),
    "guard_imap_reconnects_total": (Counter, "IMAP reconnects after the first successful connection.", ("account",)),
    "guard_imap_connected": (Gauge, "1 while the IMAP connection is up.", ("account",)),
    "guard_last_activity_timestamp_seconds": (Gauge, "Unix time of the last completed IDLE round or poll.", ("account",)),
    "guard_processing_seconds": (Histogram, "Time from fetch to filed, per message.", ("account",)),
}


class _Callbacks:
    """A prometheus_client collector that asks ``Registry.collectors`` at each scrape."""

    def __init__(self, owner: "Registry") -> None:
        self.owner = owner

    def collect(self) -> Iterable[Metric]:
        for collect in list(self.owner.collectors):
            yield from collect()

    def describe(self) -> list:
        return []  # the families are known only at scrape time


class Registry:
    """guard's metrics in a ``prometheus_client.CollectorRegistry`` of their own (one per Registry)."""

    def __init__(self, *, process: bool = True) -> None:
        self.prometheus = CollectorRegistry(auto_describe=True)
        self._metrics = {}
        for name, (kind, text, labels) in METRICS.items():
            extra = {"buckets": LATENCY_BUCKETS} if kind is Histogram else {}
            self._metrics[name] = kind(name, text, labels, registry=self.prometheus, **extra)
        #: callables returning metric families, read at each scrape (guard.daemon.health.collect_tokens)
        self.collectors: list[Callable[[], Iterable[Metric]]] = []
        self.prometheus.register(_Callbacks(self))
        if process:  # the standard process_* and python_* metrics dashboards expect
            ProcessCollector(registry=self.prometheus)
            PlatformCollector(registry=self.prometheus)
            GCCollector(registry=self.prometheus)

    def _child(self, name: str, kind: type, labels: dict[str, str]):
        metric = self._metrics.get(name)
        if metric is None or METRICS[name][0] is not kind:
            raise KeyError(f"{name}: not a guard {kind.__name__.lower()} (guard.daemon.metrics.METRICS)")
        return metric.labels(**{k: str(v) for k, v in labels.items()})

    def inc(self, name: str, amount: float = 1.0, **labels: str) -> None:
        self._child(name, Counter, labels).inc(amount)

    def set(self, name: str, value: float, **labels: str) -> None:
        self._child(name, Gauge, labels).set(float(value))

    def observe(self, name: str, seconds: float, **labels: str) -> None:
        self._child(name, Histogram, labels).observe(seconds)

    def get(self, name: str, **labels: str) -> float:
        """The current value of one sample (0.0 when it has none yet)."""
        v = self.prometheus.get_sample_value(name, {k: str(v) for k, v in labels.items()})
        return 0.0 if v is None else v

    def render(self) -> str:
        """The Prometheus text exposition format."""
        return generate_latest(self.prometheus).decode("utf-8")

    def exposition(self, accept: str | None) -> tuple[bytes, str]:
        """(body, content type) for a scrape with this Accept header (text format, or OpenMetrics when asked)."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.prometheus), content_type


def suppressed_reasons(summaries: Iterable[str]) -> list[str]:
    """Gate reason labels from an outcome's suppressed summaries ("reply ack: window: ...; list: ...")."""
    out = []
    for s in summaries:
        _, _, reasons = s.partition(": ")
        for r in reasons.split("; "):
            label = r.split(":", 1)[0].strip()
            if label:
                out.append(label)
    return out


REGISTRY = Registry()
