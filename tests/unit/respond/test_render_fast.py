"""guard.respond.render writes replies, forwards and alerts without the email package's object model
(guard.respond.render._alternative_bytes, memoised header lines, a header registry that builds each
class once, the last message's event remembered). The bytes must be exactly those of the
EmailMessage construction it replaced, kept here as the reference, for any input: the shipped
samples, hostile generated mail, non-ASCII and over-long names and subjects, every template and
language, shadow mode, and an odd loop header name.
"""

from __future__ import annotations

import email.policy
import email.utils
import re
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from email.headerregistry import Address
from email.message import EmailMessage
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from strategies import addressed_messages, messages

from guard.respond import render
from guard.mail.message import parse
from guard.paths import samples_dir, shipped
from guard.respond.render import (
    Identity,
    Renderer,
    _address,
    _boundary,
    _defang_for_reply,
    defang,
    _shadow_note,
    _with_original,
    build_alert,
    build_forward,
    build_notice,
    build_reply,
    clean_header,
    context_for,
)
from guard.classification.verdict import Reason, Verdict

#: the policy as it was: the stdlib's own header registry
PLAIN = email.policy.SMTP.clone(max_line_length=78, refold_source="none")  # set_raw headers as they are
R = Renderer(shipped("templates"))
NOW = datetime(2026, 1, 5, 12, 0, tzinfo=timezone.utc)
IDENTS = [
    Identity("Centre de Recerca Matemàtica", "CRM", "events@crm.cat", "Núria Hernández", "nhernandez@crm.cat",
             "https://www.crm.cat", "https://www.crm.cat/scam-warning", "https://www.crm.cat/code-of-conduct"),
    Identity("Institut \"Quoted\", Long Name " + "x" * 60, "I, \"Q\"", "events@inst.example", "Ann O'Neil, Jr.",
             "ann@inst.example", loop_header="X-Loop-" + "L" * 70),
    # a loop header the email package treats specially: the EmailMessage path is taken
    Identity("CRM", "CRM", "events@crm.cat", "Coord", "coord@crm.cat", loop_header="Content-X-Guard"),
    Identity("CRM", "CRM", "events@crm.cat", "Coord", "coord@crm.cat", loop_header="MIME-Version"),
]
VERDICTS = [
    Verdict("inquiry", 0.0),
    Verdict("report", 0.0, inner=Verdict("scam", 8.0, reasons=(Reason("R", "Asks for card details", 5.0,
                                                                      ("scam", "payment")),))),
    Verdict("report", 0.0, inner=Verdict("scam", 8.0), paid=True),
    Verdict("scam", 6.5),
]
#: the reply's language beside each verdict (None: the message's own, as the daemon's fallback)
LANGUAGES = ["en", "es", None, "xx"]
REPLIES = ("inquiry_ack", "report_verdict", "report_paid")


# -- the reference: the EmailMessage construction as it was -------------------------------


def is_id(value: str) -> bool:
    """A message identifier worth repeating: printable ASCII in angle brackets, at most 900 inside."""
    inner = value[1:-1]
    return (value.startswith("<") and value.endswith(">") and 0 < len(inner) <= 900
            and all(33 <= ord(c) <= 126 and c not in "<>" for c in inner))


def set_ids(m: EmailMessage, name: str, ids: list[str]) -> None:
    """In-Reply-To / References as RFC 5322 wants them: identifiers as they are (never an encoded
    word), lines folded only between identifiers once they would pass 78 characters."""
    lines = [f"{name}: {ids[0]}"]
    for mid in ids[1:]:
        if len(lines[-1]) + 1 + len(mid) > 78:
            lines.append(f" {mid}")
        else:
            lines[-1] += f" {mid}"
    m.set_raw(name, "\r\n".join(lines)[len(name) + 2:])


def ref_base(ident, *, to, subject, now, message_id, auto, reply_to=None) -> EmailMessage:
    m = EmailMessage(policy=PLAIN)
    m["From"] = Address(ident.from_name, addr_spec=ident.events_address)
    m["To"] = to
    if reply_to is not None:
        m["Reply-To"] = reply_to
    m["Subject"] = clean_header(subject, 250)
    m["Date"] = email.utils.format_datetime(now)
    m["Message-ID"] = message_id
    m["Auto-Submitted"] = auto
    m["X-Auto-Response-Suppress"] = "All"
    m[ident.loop_header] = ident.events_address
    return m


def ref_alternative(m, text, html, seed) -> None:
    headers_policy = m.policy
    m.policy = headers_policy.clone(max_line_length=76)  # bodies at RFC 2045's quoted-printable width
    m.set_content(text, subtype="plain", charset="utf-8", cte="quoted-printable")
    m.add_alternative(html, subtype="html", charset="utf-8", cte="quoted-printable")
    m.policy = headers_policy
    m.set_boundary(_boundary(seed, 1))


def ref_reply(renderer, template, *, msg, verdict, ident, now, message_id, shadow_for_coordinator=False,
              language=None) -> bytes:
    to_addr = msg.from_.addr if msg.from_ else ""
    ctx = _defang_for_reply(context_for(msg, verdict, ident))  # sender text never a live link in a reply
    subject, text, html = renderer.render(template, ctx, language or msg.language)
    recipient, shadow_for = to_addr, None
    if shadow_for_coordinator:
        recipient, shadow_for = ident.coordinator_address, to_addr
        subject = f"[shadow: to {clean_header(to_addr, 100)}] {subject}"
    text, html = _shadow_note(shadow_for, text, html)
    to = (_address(ident.coordinator_name, recipient) if shadow_for
          else _address(defang(msg.from_.name, 60) if msg.from_ else "", recipient))
    m = ref_base(ident, to=to, subject=subject, now=now, message_id=message_id, auto="auto-replied")
    if msg.message_id and is_id(msg.message_id):
        set_ids(m, "In-Reply-To", [msg.message_id])
        refs = [r for r in msg.references if is_id(r)][-10:]
        set_ids(m, "References", [*refs, msg.message_id])
    ref_alternative(m, text, html, message_id)
    return m.as_bytes()


def ref_forward(renderer, template, *, raw, msg, verdict, ident, now, message_id, review=False) -> bytes:
    ctx = context_for(msg, verdict, ident, review=review)
    subject, text, html = renderer.render(template, ctx, None)
    participant = (msg.from_.addr if msg.from_ and "@" in (msg.from_.addr or "") and msg.from_.addr.isascii()
                   else None)  # no SMTPUTF8: a non-ASCII Reply-To is left out
    reply_to = _address(msg.from_.name, participant) if participant else None
    m = ref_base(ident, to=_address(ident.coordinator_name, ident.coordinator_address), subject=subject, now=now,
                 message_id=message_id, auto="auto-generated", reply_to=reply_to)
    if msg.message_id and is_id(msg.message_id):
        set_ids(m, "References", [msg.message_id])
    ref_alternative(m, text, html, message_id)
    return _with_original(m.as_bytes(), raw, message_id)  # (it took the EmailMessage and called as_bytes)


def ref_notice(renderer, template, *, msg, verdict, ident, now, message_id, breaker=None) -> bytes:
    ctx = context_for(msg, verdict, ident, breaker=breaker)
    subject, text, html = renderer.render(template, ctx, None)
    m = ref_base(ident, to=_address(ident.coordinator_name, ident.coordinator_address), subject=subject, now=now,
                 message_id=message_id, auto="auto-generated")
    ref_alternative(m, text, html, message_id)
    return m.as_bytes()


def outcome(fn, *args, **kw):
    """The bytes, or the exception's type and text (both ways must fail alike)."""
    try:
        out = fn(*args, **kw)
    except Exception as exc:  # noqa: BLE001 - compared, not swallowed
        return ("raised", type(exc).__name__, str(exc))
    return out if isinstance(out, bytes) else out.raw


def check_all(raw: bytes, ident: Identity, verdict: Verdict, language: str | None, now: datetime, n: int) -> None:
    msg = parse(raw)
    mid = f"<guard.{n:016x}.1@{ident.domain}>"
    for template in REPLIES:
        for shadow in (False, True):
            kw = dict(msg=msg, verdict=verdict, ident=ident, now=now, message_id=mid, shadow_for_coordinator=shadow,
                      language=language)
            want = outcome(ref_reply, R, template, **kw)
            assert outcome(build_reply, R, template, **kw) == want, (template, shadow)
            assert outcome(build_reply, R, template, **kw) == want  # again: memoised header lines, same bytes
    for template in ("forward_summary", "coordinator_alert"):
        kw = dict(raw=raw, msg=msg, verdict=verdict, ident=ident, now=now, message_id=mid)
        want = outcome(ref_forward, R, template, review=True, **kw)
        assert outcome(build_forward, R, template, review=True, **kw) == want, template
    kw = dict(raw=raw, msg=msg, verdict=verdict, ident=ident, now=now, message_id=mid)
    want = outcome(ref_forward, R, "coordinator_alert", review=True, **kw)
    got = outcome(build_alert, R, "coordinator_alert", **kw)
    if isinstance(want, bytes):
        head, sep, rest = want.partition(b"\r\n")
        want = head + sep + b"Importance: high\r\nX-Priority: 1\r\n" + rest
    assert got == want
    kw = dict(msg=msg, verdict=verdict, ident=ident, now=now, message_id=mid, breaker={"count": 61, "max": 60})
    assert outcome(build_notice, R, "breaker_alert", **kw) == outcome(ref_notice, R, "breaker_alert", **kw)


SAMPLES = sorted(samples_dir().glob("*.eml"))


@pytest.mark.parametrize("path", SAMPLES, ids=[p.stem for p in SAMPLES])
def test_samples_give_the_same_bytes_as_the_email_message_construction(path):
    raw = path.read_bytes()
    for i, ident in enumerate(IDENTS):
        for j, verdict in enumerate(VERDICTS):
            check_all(raw, ident, verdict, LANGUAGES[j], NOW + timedelta(seconds=i), i * 10 + j)


names = st.text(st.characters(blacklist_categories=("Cs",)), max_size=90)
subjects = st.one_of(names, st.text(st.sampled_from("aé 日\t=?_:;,<>\"'()[]\\@."), max_size=200))


@st.composite
def hand_made(draw) -> bytes:
    """A plausible message with generated non-ASCII, quoted, long or odd names, subjects and ids."""
    name = draw(names).replace("\r", " ").replace("\n", " ").replace('"', "'")
    local = draw(st.sampled_from(["pat", "a.b+c", "x" * 70, "o'neil", "user_1"]))
    domain = draw(st.sampled_from(["example.org", "uni.example", "xn--80ak6aa92e.com", "a" * 60 + ".example"]))
    mid = draw(st.sampled_from(["<m1@example.org>", "<" + "A" * 90 + "@outlook.example>", "<x y@z>", "", "<>"]))
    refs = " ".join(draw(st.lists(st.sampled_from(["<r1@example.org>", "<" + "B" * 70 + "@b.example>", "junk"]),
                                  max_size=12)))
    subject = draw(subjects).replace("\r", " ").replace("\n", " ")
    body = draw(st.text(max_size=600))
    head = f'From: "{name}" <{local}@{domain}>\r\nTo: events@crm.cat\r\nSubject: {subject}\r\n'
    if mid:
        head += f"Message-ID: {mid}\r\n"
    if refs:
        head += f"References: {refs}\r\n"
    return (head + "Content-Type: text/plain; charset=utf-8\r\n\r\n" + body + "\r\n").encode("utf-8")


@settings(max_examples=150, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])
@given(raw=st.one_of(hand_made(), addressed_messages(), messages()), i=st.integers(0, len(IDENTS) - 1),
       j=st.integers(0, len(VERDICTS) - 1), second=st.integers(0, 3))
def test_generated_mail_gives_the_same_bytes(raw, i, j, second):
    check_all(raw, IDENTS[i], VERDICTS[j], LANGUAGES[j], NOW + timedelta(seconds=second), i * 10 + j)


def test_header_injection_is_still_refused():
    """A CR/LF in a header value raises in the email package, memo or not."""
    for value in ("a\r\nBcc: x@y", "a\nb"):
        for _ in range(2):
            with pytest.raises(ValueError):
                render._header_line("Message-ID", value)
    msg = parse(b"From: pat@example.org\r\nTo: events@crm.cat\r\nSubject: Hi\r\n\r\nQ?\r\n")
    with pytest.raises(ValueError):
        build_reply(R, "inquiry_ack", msg=msg, verdict=VERDICTS[0], ident=IDENTS[0], now=NOW,
                    message_id="<a@b>\r\nBcc: victim@example.com")


def test_the_header_memo_is_bounded_and_exact():
    render.clear_memos()
    for n in range(render.HEADER_MEMO_SIZE + 10):
        line = render._header_line("Subject", f"Subject {n} é")
        assert line == PLAIN.fold_binary("Subject", PLAIN.header_store_parse("Subject", f"Subject {n} é")[1])
    assert render._text_line.cache_info().currsize <= render.HEADER_MEMO_SIZE
    a = Address("Dolça, Pérez", "dolca", "example.org")
    assert render._header_line("To", a) == PLAIN.fold_binary("To", PLAIN.header_store_parse("To", a)[1])
    # equal display text, different address: different keys
    assert render._header_line("To", Address("Dolça, Pérez", "other", "example.org")) != render._header_line("To", a)


def test_the_event_memo_follows_the_message():
    """Two messages (or two event lists) one after the other each get their own event."""
    from guard.settings import load_settings

    ident = Identity.from_settings(load_settings())
    assert len(ident.events) >= 2
    texts = [f"Subject: About {e.name}\r\n\r\nQuestion about {e.name}.\r\n" for e in ident.events[:2]]
    msgs = [parse(("From: pat@example.org\r\nTo: events@crm.cat\r\n" + t).encode()) for t in texts]
    from guard.respond import facts

    for _ in range(2):
        for m in msgs:
            got = context_for(m, VERDICTS[0], ident)["event"]
            want = facts.detect_event(ident.events, m)
            assert (got and got["id"]) == (want and want.id)
    assert context_for(msgs[0], VERDICTS[0], replace(ident, events=()))["event"] is None


def test_the_event_memo_keeps_no_message_alive():
    import gc
    import weakref

    msg = parse(b"From: pat@example.org\r\nTo: events@crm.cat\r\nSubject: Hi\r\n\r\n" + b"long text " * 10000)
    context_for(msg, VERDICTS[0], IDENTS[0])
    ref = weakref.ref(msg)
    del msg
    gc.collect()
    assert ref() is None


def test_long_message_ids_thread_instead_of_becoming_encoded_words():
    """Outlook's identifiers run past 78 characters; In-Reply-To and References must carry them
    as they are (an encoded word is no identifier), folded only between identifiers."""
    long_id = "<" + "AS8PR04MB" * 11 + "@EURPRD04.PROD.OUTLOOK.COM>"
    refs = "<r1@example.org> " + "<" + "B" * 70 + "@b.example>"
    raw = (f"From: Pat <pat@example.org>\r\nTo: events@crm.cat\r\nSubject: visa\r\nMessage-ID: {long_id}\r\n"
           f"References: {refs}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nHello\r\n").encode()
    msg = parse(raw)
    out = build_reply(R, "inquiry_ack", msg=msg, verdict=VERDICTS[0], ident=IDENTS[0], now=NOW,
                      message_id="<guard.1@crm.cat>").raw
    reparsed = email.message_from_bytes(out, policy=email.policy.default)
    assert b"=?" not in out.split(b"\r\n\r\n", 1)[0].split(b"In-Reply-To:", 1)[1].split(b"MIME-Version")[0]
    assert str(reparsed["In-Reply-To"]).strip() == long_id
    assert str(reparsed["References"]).split() == [*refs.split(), long_id]
    head = out.split(b"\r\n\r\n", 1)[0]
    assert all(len(line) <= 998 for line in head.split(b"\r\n"))


def test_a_subject_that_fits_78_columns_stays_on_its_line():
    # at 76 columns the email package moved this whole digest subject to a continuation line
    line = render._header_line("Subject", "[guard] digest 2026-11-23: 1 urgent, 2 scam campaign(s), 0 to review")
    assert line.startswith(b"Subject: [guard] digest") and line.count(b"\r\n") == 1


def test_quoted_printable_lines_stay_within_rfc_2045s_76_characters():
    raw = (SAMPLES[0]).read_bytes()
    msg = parse(raw)
    for template in REPLIES:
        out = build_reply(R, template, msg=msg, verdict=VERDICTS[1], ident=IDENTS[0], now=NOW,
                          message_id="<guard.2@crm.cat>").raw
        body = out.split(b"\r\n\r\n", 1)[1]
        assert max(len(line) for line in body.split(b"\r\n")) <= 76, template
