"""From a classified message and its plan to a :class:`Decision`: gated, rendered, ready to journal. Pure.

    parse -> classify -> policy.decide -> pipeline.prepare (reply gate + render) -> executor

``prepare`` takes values only: the message, its verdict and plan, the reply
history snapshots the executor read from the journal, the clock reading and a
random token for Message-IDs. It returns what should be sent (rendered bytes),
what was suppressed and why, and where the message goes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from guard.mail.message import ParsedMessage
from guard.respond.policy import Plan
from guard.respond.render import (
    Identity,
    Rendered,
    Renderer,
    build_alert,
    build_forward,
    build_notice,
    build_reply,
)
from guard.respond.reply_gate import GateConfig, ReplyHistory, may_autoreply, normalise
from guard.settings import FolderNames
from guard.classification.verdict import Verdict

MODES = ("live", "dry-run", "shadow")


@dataclass(frozen=True)
class Env:
    """The fixed parts: built once at start-up."""

    renderer: Renderer
    ident: Identity
    gate: GateConfig
    folders: FolderNames
    mode: str = "live"
    #: envelope sender of automatic replies: "" (the null sender) or the events address
    reply_envelope_from: str = ""


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    plan: Plan
    outgoing: tuple[Rendered, ...]
    #: (action, reasons) for every send that was held back
    suppressed: tuple[tuple[str, tuple[str, ...]], ...]
    folder: str | None  # the real folder name, None = leave in place
    flag: bool

    def summary(self) -> dict:
        """Identifiers and decisions only (what the decision log and the journal show)."""
        return {
            "category": self.verdict.category,
            "score": round(self.verdict.score, 2),
            "inner": self.verdict.inner.category if self.verdict.inner else None,
            "paid": self.verdict.paid,
            "row": self.plan.row,
            "sends": [f"{o.kind}:{o.template}" for o in self.outgoing],
            "suppressed": [f"{a}: {'; '.join(r)}" for a, r in self.suppressed],
            "folder": self.folder,
            "flag": self.flag,
        }


def reply_recipient(msg: ParsedMessage) -> str:
    """Who an automatic reply goes to: the writer (From), never Reply-To or a forwarded sender."""
    return msg.from_.addr if msg.from_ and msg.from_.addr else ""


def prepare(
    raw: bytes,
    msg: ParsedMessage,
    verdict: Verdict,
    plan: Plan,
    *,
    env: Env,
    now: datetime,
    arrived: datetime | None,
    histories: dict[str, ReplyHistory],
    breaker_alert_due: bool,
    token: str,
) -> Decision:
    out: list[Rendered] = []
    suppressed: list[tuple[str, tuple[str, ...]]] = []
    seq = 0

    def next_id() -> str:
        nonlocal seq
        seq += 1
        return f"<guard.{token}.{seq}@{env.ident.domain}>"

    looped = msg.header(env.gate.loop_header) is not None
    # mail from one of our own addresses (the coordinator's auto-responder answering a forward) is
    # never forwarded or alerted back: that would go to the coordinator again, and again
    from_ours = bool(msg.from_ and msg.from_.addr) and normalise(msg.from_.addr) in env.gate.our_addresses
    recipient = reply_recipient(msg)
    breaker_count = None
    replies_planned = 0
    for action in plan.sends:
        if action.do == "reply":
            history = histories.get(action.template, ReplyHistory())
            # a second reply in the same plan counts the first against the breaker
            history = ReplyHistory(history.last_same, history.last_hour + replies_planned, history.first_start,
                                   history.uidvalidity_reset)
            gate = may_autoreply(msg, recipient=recipient, template=action.template, now=now, arrived=arrived,
                                 cfg=env.gate, history=history)
            if not gate.allowed:
                suppressed.append((action.describe(), gate.reasons))
                if any(r.startswith("circuit-breaker") for r in gate.reasons):
                    breaker_count = history.last_hour
                continue
            out.append(build_reply(env.renderer, action.template, msg=msg, verdict=verdict, ident=env.ident,
                                   now=now, message_id=next_id(), shadow_for_coordinator=env.mode == "shadow",
                                   envelope_from=env.reply_envelope_from))
            replies_planned += 1
        elif looped:
            suppressed.append((action.describe(), (f"loop: our {env.gate.loop_header} header is present",)))
        elif from_ours:
            suppressed.append((action.describe(), ("loop: the mail comes from one of our own addresses",)))
        elif action.do == "forward":
            out.append(build_forward(env.renderer, action.template, raw=raw, msg=msg, verdict=verdict,
                                     ident=env.ident, now=now, message_id=next_id(), review=action.review))
        elif action.do == "alert":
            out.append(build_alert(env.renderer, action.template, raw=raw, msg=msg, verdict=verdict,
                                   ident=env.ident, now=now, message_id=next_id()))
    if breaker_count is not None and breaker_alert_due:
        out.append(build_notice(env.renderer, "breaker_alert", msg=msg, verdict=verdict, ident=env.ident, now=now,
                                message_id=next_id(), breaker={"count": breaker_count, "max": env.gate.max_per_hour}))
    folder = env.folders.resolve(plan.folder) if plan.folder else None
    return Decision(verdict, plan, tuple(out), tuple(suppressed), folder, plan.flag)


def gate_config(settings) -> GateConfig:
    from datetime import timedelta

    d = settings.daemon
    return GateConfig(
        our_addresses=frozenset(normalise(a) for a in settings.our_addresses()),
        loop_header=d.loop_header,
        require_our_address=d.require_our_address_in_recipients,
        window=timedelta(days=d.reply_window_days),
        max_per_hour=d.max_replies_per_hour,
        backlog=timedelta(hours=d.backlog_hours),
    )
