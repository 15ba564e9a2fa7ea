"""`guard preview`: render a reply, forward or alert template with sample data (registered by guard.cli.main).

    guard preview TEMPLATE [--event ID] [--lang xx] [--out FILE.eml]

The sample is a participant's message (a question, or a forwarded scam for the
report templates) about the chosen event; without ``--event`` the institute's
own facts are used. The message is built exactly as the daemon builds it
(:mod:`guard.respond.render`), so what you see is what a participant or the
coordinator receives. Without ``--out`` the message goes to standard output.
"""

from __future__ import annotations

import sys
from datetime import datetime, timezone
from pathlib import Path

from guard.errors import ConfigError

#: how each shipped template is sent: to the participant (reply), the coordinator (forward, alert, notice)
KINDS = {
    "inquiry_ack": "reply",
    "report_verdict": "reply",
    "report_paid": "reply",
    "forward_summary": "forward",
    "coordinator_alert": "alert",
    "breaker_alert": "notice",
}
SAMPLE_CARD = "4111 1111 1111 1111"


def add_commands(sub) -> None:
    p = sub.add_parser("preview", help="render a reply or forward template with sample data (an .eml message)")
    p.add_argument("template", help="template name, e.g. inquiry_ack, report_verdict, report_paid, forward_summary")
    p.add_argument("--event", default=None, metavar="ID", help="fill in this event's facts (an id from the fact sheets "
                   "or the configuration; default: the institute's own facts)")
    p.add_argument("--lang", default=None, metavar="xx", help="language of the template set (default: daemon.language)")
    p.add_argument("--out", type=Path, default=None, metavar="FILE.eml", help="write the message here (default: stdout)")
    p.set_defaults(func=cmd_preview)


def _sample_raw(template: str, event, lang: str, ident) -> bytes:
    """A participant's message: a question, or a report forwarding a booking scam (with a card number)."""
    about = event.name if event is not None else f"your events at {ident.short_name}"
    if template in ("inquiry_ack", "forward_summary"):
        subject = f"Question about {about}"
        body = ("Dear events office,\n\nCould you tell me whether I need an invitation letter for my visa, "
                f"and where I can find the official lodging information for {about}?\n\nBest regards,\nPat Example\n")
        return _message(subject, body)
    paid = template in ("report_paid", "coordinator_alert")
    own = ("Is this message genuine? " + (f"I already sent them my card {SAMPLE_CARD} - what should I do?"
                                          if paid else "I have not answered it."))
    inner = (f"From: Conference Committee <committee.bookings@gmail.com>\r\nTo: pat@example.org\r\n"
             f"Subject: Hotel reservation for {about}\r\nMessage-ID: <scam.preview@gmail.com>\r\n"
             "Content-Type: text/plain; charset=utf-8\r\n\r\n"
             "Dear participant, we are the official housing service of the workshop. Rooms are limited: "
             "send your card number, expiry date and CVV today to keep your room.\r\n")
    return _message(f"Fwd: Hotel reservation for {about}", own + "\n", inner)


def _message(subject: str, body: str, inner: str | None = None) -> bytes:
    from email.header import Header

    head = ("From: Pat Example <pat@example.org>\r\nTo: events@example.invalid\r\n"
            f"Subject: {Header(subject, 'utf-8').encode()}\r\n"
            "Date: Mon, 05 Jan 2026 10:00:00 +0000\r\nMessage-ID: <preview.sample@example.org>\r\nMIME-Version: 1.0\r\n")
    text = body.replace("\n", "\r\n").encode("utf-8")
    if inner is None:
        return (head + "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n").encode() + text
    return ((head + 'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\n'
             "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n").encode() + text
            + b"\r\n--b\r\nContent-Type: message/rfc822\r\n\r\n" + inner.encode("utf-8") + b"\r\n--b--\r\n")


def _sample_verdict(template: str):
    from guard.classification.verdict import Reason, Verdict

    if template in ("inquiry_ack", "forward_summary", "breaker_alert"):
        return Verdict("inquiry", 0.0, reasons=(Reason("ASKS_VISA_LETTER", "Asks about an invitation letter", 1.5,
                                                       ("inquiry",)),))
    inner = Verdict("scam", 11.5, reasons=(
        Reason("HOUSING_OFFICIAL_CLAIM", "Claims to be the event's official housing provider", 3.0, ("scam", "housing")),
        Reason("CARD_DETAILS_REQUEST", "Asks for payment-card details", 4.0, ("scam", "payment")),
        Reason("FREEMAIL_ORGANISER", "A free-mail sender signs as an organising committee", 2.5, ("scam", "sender")),
        Reason("ROOM_BLOCK_PRESSURE", "Talks of limited rooms to push a quick booking", 2.0, ("scam", "pressure")),
    ))
    paid = template in ("report_paid", "coordinator_alert")
    return Verdict("report", 0.0, reasons=(Reason("FORWARDED_SUSPECT", "Forwards a suspect message", 3.0, ("report",)),),
                   inner=inner, paid=paid)


def render_preview(settings, template: str, *, event_id: str | None = None, lang: str | None = None,
                   now: datetime | None = None):
    """The :class:`~guard.respond.render.Rendered` message of ``template`` with sample data."""
    import jinja2

    from guard.respond.facts import find_event
    from guard.mail.message import parse
    from guard.paths import shipped
    from guard.respond.render import Identity, Renderer, build_alert, build_forward, build_notice, build_reply

    d = settings.daemon
    lang = lang or d.language
    kind = KINDS.get(template, "reply")
    # a reply in --lang; what goes to the coordinator as if --lang were the coordinator's language
    renderer = Renderer(d.templates_dir or shipped("templates"), d.language, fallback=d.reply_fallback(),
                        coordinator_language=lang if kind != "reply" else d.coordinator_lang())
    if lang not in renderer.languages():
        raise ConfigError(f"{renderer.root / lang}: no templates in {lang!r} (have: {', '.join(renderer.languages())})")
    used = renderer.pick_language(lang, template)
    available = renderer.templates(used)
    if template not in available:
        raise ConfigError(f"{renderer.root / lang}: no template {template!r} (have: {', '.join(sorted(available))})")
    if used != lang:
        print(f"guard preview: {template} has no {lang!r} version: shown in {used!r}, as guard would send it",
              file=sys.stderr)
    ident = Identity.from_settings(settings)
    event = None
    if event_id is not None:
        event = find_event(settings.events, event_id)
        if event is None:
            have = ", ".join(e.id for e in settings.events) or "none"
            raise ConfigError(f"--event: no event {event_id!r} in the configuration or fact sheets (have: {have})")
    ident = ident.with_events([event] if event is not None else [])
    raw = _sample_raw(template, event, lang, ident)
    msg = parse(raw)
    verdict = _sample_verdict(template)
    now = now or datetime.now(timezone.utc).replace(microsecond=0)
    mid = f"<guard.preview.{template}@{ident.domain}>"
    try:
        if kind == "reply":
            return build_reply(renderer, template, msg=msg, verdict=verdict, ident=ident, now=now, message_id=mid,
                               language=lang)
        if kind == "forward":
            return build_forward(renderer, template, raw=raw, msg=msg, verdict=verdict, ident=ident, now=now,
                                 message_id=mid)
        if kind == "alert":
            return build_alert(renderer, template, raw=raw, msg=msg, verdict=verdict, ident=ident, now=now,
                               message_id=mid)
        return build_notice(renderer, template, msg=msg, verdict=verdict, ident=ident, now=now, message_id=mid,
                            breaker={"count": settings.daemon.max_replies_per_hour,
                                     "max": settings.daemon.max_replies_per_hour})
    except jinja2.TemplateError as exc:
        raise ConfigError(f"{renderer.root / lang / template}: {type(exc).__name__}: {exc}") from None


def cmd_preview(args) -> int:
    from guard.settings import load_settings

    settings = load_settings(args.config)
    r = render_preview(settings, args.template, event_id=args.event, lang=args.lang)
    if args.out is None:
        sys.stdout.buffer.write(r.raw)
        sys.stdout.flush()
    else:
        args.out.write_bytes(r.raw)
        print(f"{args.out}: {r.kind} {r.template} to {r.recipient} ({len(r.raw)} bytes)", file=sys.stderr)
    return 0
