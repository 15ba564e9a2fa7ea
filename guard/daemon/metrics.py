"""A small Prometheus text-format registry (counters, gauges, one histogram): no extra dependency.

Exposed at ``/metrics`` by :mod:`guard.daemon.health`. Metric names:

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
"""

from __future__ import annotations

import threading
from collections import defaultdict
from typing import Callable, Iterable

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

HELP = {
    "guard_messages_total": ("counter", "Messages decided, by category."),
    "guard_replies_sent_total": ("counter", "Outgoing messages (replies, forwards, alerts) accepted by the SMTP server."),
    "guard_replies_suppressed_total": ("counter", "Automatic replies held back by the reply gate, by reason."),
    "guard_errors_total": ("counter", "Errors, by kind."),
    "guard_imap_reconnects_total": ("counter", "IMAP reconnects after the first successful connection."),
    "guard_imap_connected": ("gauge", "1 while the IMAP connection is up."),
    "guard_last_activity_timestamp_seconds": ("gauge", "Unix time of the last completed IDLE round or poll."),
    "guard_processing_seconds": ("histogram", "Time from fetch to filed, per message."),
    "guard_oauth2_token_expiry_timestamp_seconds": ("gauge", "Unix time at which the current OAuth2 access token expires."),
    "guard_oauth2_refresh_failures_total": ("counter", "Failed OAuth2 token refreshes."),
}


def _labels(labels: tuple[tuple[str, str], ...]) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{k}="{_esc(v)}"' for k, v in labels)
    return "{" + inner + "}"


def _esc(v: str) -> str:
    return str(v).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _num(v: float) -> str:
    if v == float("inf"):
        return "+Inf"
    if float(v).is_integer():
        return str(int(v))
    return repr(float(v))


class Registry:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[str, dict[tuple, float]] = defaultdict(dict)
        self._hist: dict[tuple, list] = {}  # labels -> [bucket counts..., sum, count]
        self.collectors: list[Callable[["Registry"], None]] = []

    @staticmethod
    def _key(labels: dict[str, str]) -> tuple:
        return tuple(sorted((k, str(v)) for k, v in labels.items()))

    def inc(self, name: str, amount: float = 1.0, **labels: str) -> None:
        k = self._key(labels)
        with self._lock:
            self._values[name][k] = self._values[name].get(k, 0.0) + amount

    def set(self, name: str, value: float, **labels: str) -> None:
        with self._lock:
            self._values[name][self._key(labels)] = float(value)

    def get(self, name: str, **labels: str) -> float:
        with self._lock:
            return self._values.get(name, {}).get(self._key(labels), 0.0)

    def observe(self, name: str, seconds: float, **labels: str) -> None:
        k = (name, self._key(labels))
        with self._lock:
            h = self._hist.setdefault(k, [0] * len(LATENCY_BUCKETS) + [0.0, 0])
            for i, b in enumerate(LATENCY_BUCKETS):
                if seconds <= b:
                    h[i] += 1
            h[-2] += seconds
            h[-1] += 1

    def render(self) -> str:
        for collect in list(self.collectors):
            collect(self)
        out: list[str] = []
        with self._lock:
            names = sorted(set(self._values) | {n for n, _ in self._hist} | set(HELP))
            for name in names:
                kind, text = HELP.get(name, ("untyped", name))
                out.append(f"# HELP {name} {text}")
                out.append(f"# TYPE {name} {kind}")
                if kind == "histogram":
                    for (hname, labels), h in sorted(self._hist.items()):
                        if hname != name:
                            continue
                        for i, b in enumerate(LATENCY_BUCKETS):
                            out.append(f"{name}_bucket{_labels(labels + (('le', _num(b)),))} {h[i]}")
                        out.append(f"{name}_bucket{_labels(labels + (('le', '+Inf'),))} {h[-1]}")
                        out.append(f"{name}_sum{_labels(labels)} {_num(h[-2])}")
                        out.append(f"{name}_count{_labels(labels)} {h[-1]}")
                    continue
                for labels, v in sorted(self._values.get(name, {}).items()):
                    out.append(f"{name}{_labels(labels)} {_num(v)}")
        return "\n".join(out) + "\n"


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
