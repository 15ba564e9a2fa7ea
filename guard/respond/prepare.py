"""From a classified message and its plan to a :class:`Decision`: gated, rendered, ready to journal. Pure.

    parse -> classify -> policy.decide -> pipeline.prepare (reply gate + render) -> executor

``prepare`` takes values only: the message, its verdict and plan, the reply
history snapshots the executor read from the journal, the clock reading and a
random token for Message-IDs. It returns what should be sent (rendered bytes),
what was suppressed and why, and where the message goes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
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
from guard.respond.languages import LanguageChoice
from guard.respond.reply_gate import GateConfig, GateResult, ReplyHistory, answers_guard, may_autoreply, normalise, \
    sender_key
from guard.settings import FolderNames
from guard.classification.verdict import Verdict

MODES = ("live", "dry-run", "shadow")
#: the journal's reply-history names (guard.daemon.journal): loop alerts, and every forward or
#: alert to the coordinator counted against the sender it is about
LOOP_ALERT = "loop_alert"
TO_COORDINATOR = "to-coordinator"
#: refusals that send the message to the coordinator instead (the participant is not answered)
ROUTE_REASONS = ("unauthenticated", "smtputf8")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SenderHistory:
    """What the journal knows about the sender (normalised address): taken just before deciding."""

    #: forwards and alerts to the coordinator about this sender in the last hour
    coordinator_last_hour: int = 0
    #: the last loop alert about this sender (None: never)
    loop_alert_last: datetime | None = None


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
    #: the language of the automatic reply and why (None: no reply rendered)
    language: LanguageChoice | None = None

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
            "language": self.language.code() if self.language else None,
        }


def reply_recipient(msg: ParsedMessage) -> str:
    """Who an automatic reply goes to: the writer (From), never Reply-To or a forwarded sender."""
    return msg.from_.addr if msg.from_ and msg.from_.addr else ""


def history_key(msg: ParsedMessage) -> str:
    """Whom the reply history counts this message's sender as: the normalised address (lower case,
    ``+tag`` removed), so ``support+ticket1@`` and ``Support+ticket2@`` are one sender."""
    return sender_key(reply_recipient(msg))


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
    sender_history: SenderHistory = SenderHistory(),
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
    key = sender_key(recipient)

    # the reply gate first, for every reply of the plan: its refusals decide what the coordinator is told
    gates: dict[int, GateResult] = {}
    breaker_count = None
    replies_planned = 0
    for i, action in enumerate(plan.sends):
        if action.do != "reply":
            continue
        history = histories.get(action.template, ReplyHistory())
        # a second reply in the same plan counts the first against the breaker (and the domain's limit)
        history = replace(history, last_hour=history.last_hour + replies_planned,
                          domain_last_hour=history.domain_last_hour + replies_planned)
        gate = gates[i] = may_autoreply(msg, recipient=recipient, template=action.template, now=now,
                                        arrived=arrived, cfg=env.gate, history=history)
        if gate.allowed:
            replies_planned += 1
        elif any(r.startswith("circuit-breaker") and "per domain" not in r for r in gate.reasons):
            breaker_count = history.last_hour
    refused = [r for g in gates.values() if not g.allowed for r in g.reasons]
    route = [r for r in refused if r.startswith(ROUTE_REASONS)]
    loop = answers_guard(msg, env.gate.auto_reply_prefixes) if refused else None
    held = "; ".join(route)[:500] or None

    coordinator_sends = sender_history.coordinator_last_hour

    def to_coordinator(describe: str, build) -> None:
        """A forward or alert about this sender, unless the sender's hourly limit is reached."""
        nonlocal coordinator_sends
        limit = env.gate.max_forwards_per_sender_hour
        if key and coordinator_sends >= limit:
            suppressed.append((describe, (f"rate-limit: {coordinator_sends} forwards or alerts about this sender "
                                          f"in the last hour (max {limit})",)))
            return
        coordinator_sends += 1
        r = build()
        out.append(replace(r, headers={**r.headers, "history_as": key or r.recipient}))

    loop_alert_due = (loop is not None and not looped and not from_ours
                      and (sender_history.loop_alert_last is None
                           or now - sender_history.loop_alert_last >= env.gate.window))
    routed = False
    language: LanguageChoice | None = None
    for i, action in enumerate(plan.sends):
        if action.do == "reply":
            gate = gates[i]
            if not gate.allowed:
                suppressed.append((action.describe(), gate.reasons))
                continue
            # the participant's own words decide the language (never a forwarded message's)
            language = language or env.renderer.reply_language(msg, action.template)
            r = build_reply(env.renderer, action.template, msg=msg, verdict=verdict, ident=env.ident,
                            now=now, message_id=next_id(), shadow_for_coordinator=env.mode == "shadow",
                            envelope_from=env.reply_envelope_from, language=language.language)
            out.append(replace(r, headers={**r.headers, "history_as": key}))
        elif looped:
            suppressed.append((action.describe(), (f"loop: our {env.gate.loop_header} header is present",)))
        elif from_ours:
            suppressed.append((action.describe(), ("loop: the mail comes from one of our own addresses",)))
        elif loop_alert_due and action.do == "forward":
            continue  # the loop alert below is this forward
        elif action.do == "forward":
            routed = True
            to_coordinator(action.describe(), lambda a=action: build_forward(
                env.renderer, a.template, raw=raw, msg=msg, verdict=verdict, ident=env.ident, now=now,
                message_id=next_id(), review=a.review or bool(held), held=held))
        elif action.do == "alert":
            routed = True
            to_coordinator(action.describe(), lambda a=action: build_alert(
                env.renderer, a.template, raw=raw, msg=msg, verdict=verdict, ident=env.ident, now=now,
                message_id=next_id(), held=held))
    if loop_alert_due:
        # once per sender and window: the coordinator learns that guard stopped answering this sender
        note = f"{loop}; guard does not answer this sender automatically"
        to_coordinator(f"forward {LOOP_ALERT}", lambda: replace(build_forward(
            env.renderer, "forward_summary", raw=raw, msg=msg, verdict=verdict, ident=env.ident, now=now,
            message_id=next_id(), review=True, held="; ".join(filter(None, (note, held)))), template=LOOP_ALERT))
    elif held and not routed and not looped and not from_ours:
        # the participant is not answered (unauthenticated, ...): the coordinator sees the message instead
        to_coordinator("forward forward_summary (routed: no automatic reply)", lambda: build_forward(
            env.renderer, "forward_summary", raw=raw, msg=msg, verdict=verdict, ident=env.ident, now=now,
            message_id=next_id(), review=True, held=held))
    if breaker_count is not None and breaker_alert_due:
        out.append(build_notice(env.renderer, "breaker_alert", msg=msg, verdict=verdict, ident=env.ident, now=now,
                                message_id=next_id(), breaker={"count": breaker_count, "max": env.gate.max_per_hour}))
    folder = env.folders.resolve(plan.folder) if plan.folder else None
    return Decision(verdict, plan, tuple(out), tuple(suppressed), folder, plan.flag, language)


def gate_config(settings) -> GateConfig:
    from datetime import timedelta

    d = settings.daemon
    if d.reply_to_unauthenticated:
        log.warning("[daemon] reply_to_unauthenticated is on: guard answers senders the receiving server did not "
                    "authenticate, so a forged From address gets guard's replies")
    elif not d.trusted_authserv_ids:
        log.warning("[daemon] trusted_authserv_ids is empty: no sender can be authenticated, so guard sends no "
                    "automatic replies (set it to the authserv-id of the institute's receiving server)")
    return GateConfig(
        our_addresses=frozenset(normalise(a) for a in settings.our_addresses()),
        loop_header=d.loop_header,
        require_our_address=d.require_our_address_in_recipients,
        window=timedelta(days=d.reply_window_days),
        max_per_hour=d.max_replies_per_hour,
        backlog=timedelta(hours=d.backlog_hours),
        trusted_authserv_ids=frozenset(d.trusted_authserv_ids),
        require_authenticated=not d.reply_to_unauthenticated,
        max_per_domain_hour=d.max_replies_per_domain_per_hour,
        max_forwards_per_sender_hour=d.max_forwards_per_sender_per_hour,
    )
