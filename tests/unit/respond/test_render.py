"""Rendering: headers of replies and forwards, escaping, header injection, card masking, strictness."""

from __future__ import annotations

import email
import email.policy
from datetime import datetime, timezone

import pytest

from guard.errors import ConfigError
from guard.mail.message import parse
from guard.paths import shipped
from guard.respond.render import (
    Identity,
    Renderer,
    build_alert,
    build_forward,
    build_reply,
    clean_header,
    mask_original,
)
from guard.classification.verdict import Reason, Verdict

NOW = datetime(2026, 1, 5, 12, 0, tzinfo=timezone.utc)
IDENT = Identity("Centre de Recerca Matemàtica", "CRM", "events@crm.cat", "Núria Hernández", "nhernandez@crm.cat",
                 "https://www.crm.cat", "https://www.crm.cat/scam-warning", "https://www.crm.cat/code-of-conduct")
R = Renderer(shipped("templates"))
CARD = "4111 1111 1111 1111"

INNER = (b"From: Conference Committee <committee@gmail.com>\r\nTo: pat@example.org\r\n"
         b"Subject: Your hotel room\r\nMessage-ID: <scam@gmail.com>\r\n\r\nSend your card number now.\r\n")


def report_raw(extra_text: str = "") -> bytes:
    return (b"From: Pat Participant <pat@example.org>\r\nTo: events@crm.cat\r\nSubject: Fwd: Your hotel room\r\n"
            b"Date: Mon, 05 Jan 2026 11:00:00 +0000\r\nMessage-ID: <rep@example.org>\r\n"
            b"References: <older@example.org>\r\nMIME-Version: 1.0\r\n"
            b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
            b"Is this real? " + extra_text.encode() + b"\r\n--b\r\nContent-Type: message/rfc822\r\n\r\n" + INNER
            + b"\r\n--b--\r\n")


def parsed(raw: bytes):
    return email.message_from_bytes(raw, policy=email.policy.default)


def parts(raw: bytes) -> dict[str, str]:
    m = parsed(raw)
    out = {}
    for p in m.walk():
        if p.get_content_type() in ("text/plain", "text/html") and p.get_content_type() not in out:
            out[p.get_content_type()] = p.get_content()
    return out


def scam_report() -> tuple:
    raw = report_raw()
    return raw, parse(raw), Verdict("report", 0.0, inner=Verdict("scam", 8.0))


def test_every_template_renders_with_strict_variables():
    R.check()
    assert {"inquiry_ack", "report_verdict", "report_paid", "forward_summary", "coordinator_alert",
            "breaker_alert"} <= R.templates()


def test_reply_headers_follow_rfc_3834():
    raw, msg, verdict = scam_report()
    r = build_reply(R, "report_verdict", msg=msg, verdict=verdict, ident=IDENT, now=NOW, message_id="<g.1@crm.cat>")
    m = parsed(r.raw)
    assert r.recipient == "pat@example.org" and r.envelope_from == ""
    assert m["To"].addresses[0].addr_spec == "pat@example.org"  # the reporter, never the scammer
    assert "committee@gmail.com" not in str(m["To"])
    assert m["Auto-Submitted"] == "auto-replied"
    assert m["In-Reply-To"] == "<rep@example.org>"
    assert m["References"] == "<older@example.org> <rep@example.org>"
    assert m["X-Auto-Response-Suppress"] == "All"
    assert m["X-Guard-Loop"] == "events@crm.cat"
    assert m["From"].addresses[0].addr_spec == "events@crm.cat"
    assert m["Message-ID"] == "<g.1@crm.cat>"
    assert m.get_content_type() == "multipart/alternative"
    text = parts(r.raw)["text/plain"]
    assert "This message is a scam" in text
    assert "never ask you for credit card or bank details" in text  # the three promises
    assert "never uses third parties" in text and "nhernandez@crm.cat" in text
    assert "code of conduct" in text and "https://www.crm.cat/code-of-conduct" in text


def test_rendering_is_deterministic():
    raw, msg, verdict = scam_report()
    a = build_reply(R, "report_verdict", msg=msg, verdict=verdict, ident=IDENT, now=NOW, message_id="<g.1@crm.cat>")
    b = build_reply(R, "report_verdict", msg=msg, verdict=verdict, ident=IDENT, now=NOW, message_id="<g.1@crm.cat>")
    assert a.raw == b.raw


def test_no_in_reply_to_without_a_message_id():
    msg = parse(b"From: pat@example.org\r\nTo: events@crm.cat\r\nSubject: Hi\r\n\r\nQuestion?\r\n")
    r = build_reply(R, "inquiry_ack", msg=msg, verdict=Verdict("inquiry", 0), ident=IDENT, now=NOW,
                    message_id="<g.2@crm.cat>")
    assert parsed(r.raw)["In-Reply-To"] is None and parsed(r.raw)["References"] is None


def test_header_injection_is_impossible():
    evil = "Hello\r\nBcc: victim@example.com\r\nX-Evil: 1"
    assert clean_header(evil) == "Hello Bcc: victim@example.com X-Evil: 1"
    msg = parse(("From: Pat\r\n <pat@example.org>\r\nTo: events@crm.cat\r\nSubject: =?utf-8?q?Hi=0D=0ABcc:_victim@example.com?="
                 "\r\nMessage-ID: <x@example.org>\r\n\r\nQ?\r\n").encode())
    r = build_reply(R, "inquiry_ack", msg=msg, verdict=Verdict("inquiry", 0), ident=IDENT, now=NOW,
                    message_id="<g.3@crm.cat>")
    m = parsed(r.raw)
    assert m["Bcc"] is None
    assert "\n" not in m["Subject"] and "\r" not in m["Subject"]
    head = r.raw.split(b"\r\n\r\n", 1)[0]
    assert not any(line.lower().startswith(b"bcc:") for line in head.split(b"\r\n"))


def test_non_ascii_headers_are_encoded():
    msg = parse("From: Dolça Pérez <dolca@example.org>\r\nTo: events@crm.cat\r\nSubject: Inscripció al taller\r\n"
                "Message-ID: <y@example.org>\r\n\r\nQ?\r\n".encode("utf-8"))
    r = build_reply(R, "inquiry_ack", msg=msg, verdict=Verdict("inquiry", 0), ident=IDENT, now=NOW,
                    message_id="<g.4@crm.cat>")
    head = r.raw.split(b"\r\n\r\n", 1)[0]
    assert head.isascii()
    m = parsed(r.raw)
    assert m["Subject"] == "Auto: Inscripció al taller"
    assert m["To"].addresses[0].display_name == "Dolça Pérez"


def test_html_is_autoescaped():
    msg = parse(b"From: pat@example.org\r\nTo: events@crm.cat\r\nSubject: <script>alert(1)</script>\r\n\r\nQ?\r\n")
    r = build_forward(R, "forward_summary", raw=b"", msg=msg, verdict=Verdict("inquiry", 0), ident=IDENT, now=NOW,
                      message_id="<g.5@crm.cat>")
    html = parts(r.raw)["text/html"]
    assert "<script>" not in html and "&lt;script&gt;" in html


def test_forward_attaches_the_original_with_reply_to_the_participant():
    raw = (b"From: Pat Participant <pat@example.org>\r\nReply-To: someone@elsewhere.example\r\nTo: events@crm.cat\r\n"
           b"Subject: Visa letter\r\nMessage-ID: <v@example.org>\r\n\r\nCould you send an invitation letter?\r\n")
    msg = parse(raw)
    verdict = Verdict("inquiry", 0.0, reasons=(Reason("ASKS", "Asks a question", 1.0),))
    r = build_forward(R, "forward_summary", raw=raw, msg=msg, verdict=verdict, ident=IDENT, now=NOW,
                      message_id="<g.6@crm.cat>")
    m = parsed(r.raw)
    assert r.recipient == "nhernandez@crm.cat" and r.envelope_from == "events@crm.cat"
    assert m["Reply-To"].addresses[0].addr_spec == "pat@example.org"  # the writer, not their Reply-To
    assert m["Auto-Submitted"] == "auto-generated"
    assert m.get_content_type() == "multipart/mixed"
    attached = [p for p in m.iter_attachments() if p.get_content_type() == "message/rfc822"]
    assert len(attached) == 1
    inner = attached[0].get_content()
    assert inner["Message-ID"] == "<v@example.org>" and "invitation letter" in inner.get_content()
    text = parts(r.raw)["text/plain"]
    assert "Verdict: inquiry" in text and "Asks a question" in text and "Visa letter" in text
    assert b"\r\n" in r.raw and b"\n" not in r.raw.replace(b"\r\n", b"")


def test_card_numbers_are_masked_everywhere_they_are_quoted():
    raw = report_raw(f"I already sent my card {CARD} to them")
    msg = parse(raw)
    verdict = Verdict("report", 0.0, inner=Verdict("scam", 8.0), paid=True)
    alert = build_alert(R, "coordinator_alert", raw=raw, msg=msg, verdict=verdict, ident=IDENT, now=NOW,
                        message_id="<g.7@crm.cat>")
    assert CARD.encode() not in alert.raw and CARD.replace(" ", "").encode() not in alert.raw
    assert "**** **** **** 1111" in parts(alert.raw)["text/plain"]
    attached = next(p for p in parsed(alert.raw).iter_attachments() if p.get_content_type() == "message/rfc822")
    inner_text = attached.get_content().get_body(("plain",)).get_content()
    assert "**** **** **** 1111" in inner_text and CARD not in inner_text
    assert parsed(alert.raw)["Importance"] == "high"


def test_mask_original_keeps_bytes_when_nothing_to_mask():
    raw = report_raw()
    assert mask_original(raw) == raw
    masked = mask_original(b"Subject: card " + CARD.encode() + b"\r\n\r\nnumber " + CARD.encode() + b"\r\n")
    assert CARD.encode() not in masked and b"X-Guard-Masked" in masked


def test_mask_original_rewraps_overlong_lines():
    raw = b"Subject: x\r\nContent-Type: text/html; charset=utf-8\r\n\r\n" + b"<p>word " * 300 + b"\r\n"
    out = mask_original(raw)
    assert max(len(line) for line in out.splitlines()) <= 998
    assert parse(out).text == parse(raw).text


def test_shadow_mode_reply_goes_to_the_coordinator():
    raw, msg, verdict = scam_report()
    r = build_reply(R, "report_verdict", msg=msg, verdict=verdict, ident=IDENT, now=NOW, message_id="<g.8@crm.cat>",
                    shadow_for_coordinator=True)
    m = parsed(r.raw)
    assert r.recipient == "nhernandez@crm.cat"
    assert m["Subject"].strip().startswith("[shadow: to pat@example.org]")
    assert "would have gone to pat@example.org" in parts(r.raw)["text/plain"]


def test_ack_does_not_reflect_the_senders_text():
    msg = parse(b"From: \"Pay now at http://evil.example\" <victim@example.org>\r\nTo: events@crm.cat\r\n"
                b"Subject: Hi\r\n\r\nVisit http://evil.example/pay\r\n")
    r = build_reply(R, "inquiry_ack", msg=msg, verdict=Verdict("inquiry", 0), ident=IDENT, now=NOW,
                    message_id="<g.9@crm.cat>")
    for body in parts(r.raw).values():
        assert "evil.example" not in body


def test_strict_undefined_is_caught_at_startup(tmp_path):
    d = tmp_path / "en"
    d.mkdir()
    for name in ("inquiry_ack", "report_verdict", "report_paid", "forward_summary", "coordinator_alert",
                 "breaker_alert"):
        (d / f"{name}.txt.j2").write_text("Subject: x\n{{ institute.name }}\n")
        (d / f"{name}.html.j2").write_text("<p>{{ institute.name }}</p>")
    Renderer(tmp_path).check()
    (d / "inquiry_ack.txt.j2").write_text("Subject: x\n{{ no_such_variable }}\n")
    with pytest.raises(ConfigError, match="inquiry_ack.*no_such_variable"):
        Renderer(tmp_path).check()
    (d / "inquiry_ack.txt.j2").write_text("no subject line\n")
    with pytest.raises(ConfigError, match="Subject"):
        Renderer(tmp_path).check()


def test_missing_language_falls_back_to_default():
    assert R.pick_language("xx") == "en" and R.pick_language(None) == "en"


def test_mask_original_leaves_identifier_headers_alone():
    from guard.respond.render import mask_original
    from guard.mail.textutil import luhn_ok

    digits = next(f"{n:013d}" for n in range(1732374982156, 1732374982256) if luhn_ok(f"{n:013d}"))
    raw = (f"Message-ID: <{digits}.49@mail.example>\r\nReferences: <{digits}@x.example>\r\n"
           f"Subject: card 4111 1111 1111 1111\r\n\r\nhello\r\n").encode()
    out = mask_original(raw)
    assert f"<{digits}.49@mail.example>".encode() in out and f"<{digits}@x.example>".encode() in out
    assert b"4111 1111 1111 1111" not in out


def _minimal_templates(d, text: str = "{{ institute.name }}") -> None:
    d.mkdir(parents=True, exist_ok=True)
    for name in ("inquiry_ack", "report_verdict", "report_paid", "forward_summary", "coordinator_alert",
                 "breaker_alert"):
        (d / f"{name}.txt.j2").write_text(f"Subject: x\n{text}\n{{% include '_footer.txt.j2' %}}")
        (d / f"{name}.html.j2").write_text(f"<p>{text}</p>")
    (d / "_footer.txt.j2").write_text("-- footer v1\n")


def test_templates_edited_on_disk_under_a_running_renderer_change_nothing(tmp_path):
    """The templates are read at construction (start-up or SIGHUP, then checked): editing, adding or
    deleting a file afterwards does not reach the running renderer (no UndefinedError half-way)."""
    from guard.respond.render import _sample_context

    _minimal_templates(tmp_path / "en")
    r = Renderer(tmp_path)
    r.check()
    ctx = _sample_context()
    before = r.render("inquiry_ack", ctx)
    assert before[0] == "x" and "Sample Institute" in before[1] and "footer v1" in before[1]
    # an edit using a variable the renderer does not give, a changed include, a deleted template,
    # a new language: none of it is seen until a new Renderer is built
    (tmp_path / "en" / "inquiry_ack.txt.j2").write_text("Subject: y\n{{ no_such_variable }}\n")
    (tmp_path / "en" / "_footer.txt.j2").write_text("-- footer v2 {{ nor_this }}\n")
    (tmp_path / "en" / "report_paid.html.j2").unlink()
    _minimal_templates(tmp_path / "es", "hola")
    assert r.render("inquiry_ack", ctx) == before
    assert "footer v1" in r.render("report_verdict", ctx)[1]  # first rendered after the edit: the loaded version
    assert "report_paid" in r.templates() and r.render("report_paid", ctx)[2] == "<p>Sample Institute</p>"
    assert r.languages() == ["en"] and r.pick_language("es") == "en"
    r.check()
    # a new renderer (what a restart or SIGHUP builds) sees the new files, and its check refuses them
    fresh = Renderer(tmp_path)
    assert "report_paid" not in fresh.templates() and fresh.languages() == ["en", "es"]
    with pytest.raises(ConfigError, match="no_such_variable|report_paid"):
        fresh.check()
