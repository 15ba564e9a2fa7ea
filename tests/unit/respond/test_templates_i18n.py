"""Every template in every language: it renders, the message parses with the right headers, the reply
follows the participant's language, event facts are filled in, and participant text stays harmless."""

from __future__ import annotations

import email
import email.policy
from datetime import datetime, timezone

import pytest

from guard.cli.main import main
from guard.mail.message import parse
from guard.paths import shipped
from guard.respond.render import (
    TEMPLATE_NAMES,
    Identity,
    Renderer,
    build_alert,
    build_forward,
    build_notice,
    build_reply,
)
from guard.settings import Event, Person, load_settings
from guard.classification.verdict import Reason, Verdict

NOW = datetime(2026, 1, 5, 12, 0, tzinfo=timezone.utc)
SETTINGS = load_settings()
IDENT = Identity.from_settings(SETTINGS)
LANGS = ("en", "es", "ca")
RENDERERS = {lang: Renderer(shipped("templates"), lang) for lang in LANGS}
R = RENDERERS["en"]
REPLIES = ("inquiry_ack", "report_verdict", "report_paid")
TO_COORDINATOR = ("forward_summary", "coordinator_alert", "breaker_alert")
#: the blocks guard's templates share (other parts of guard may add their own to templates/en)
PARTIALS = ("_scam_warning", "_code_of_conduct", "_signature", "_event_facts", "_signals")
CARD = "4111 1111 1111 1111"

#: the institute's three promises and the code of conduct, as each language says them
PROMISES = {
    "en": ("never uses third parties", "will never ask you for credit card or bank details",
           "If you have any doubt about a message you receive, write to", "code of conduct"),
    "es": ("Nunca recurrimos a terceros", "Nunca le pediremos datos de tarjeta de crédito ni datos bancarios",
           "Si tiene cualquier duda sobre un mensaje que reciba, escriba a", "código de conducta"),
    "ca": ("Mai no recorrem a tercers", "Mai no us demanarem dades de targeta de crèdit ni dades bancàries",
           "Si teniu qualsevol dubte sobre un missatge que rebeu, escriviu a", "codi de conducta"),
}
HELLO = {"en": "Hello,", "es": "Hola:", "ca": "Bon dia,"}
SPANISH = ("Buenos días: quería preguntarles si necesito una carta de invitación para solicitar el visado "
           "y dónde puedo encontrar la información sobre el alojamiento. Muchas gracias por su ayuda.")
CATALAN = ("Bon dia, voldria saber si necessito una carta d'invitació per demanar el visat i on puc trobar "
           "la informació sobre l'allotjament. Moltes gràcies per la vostra ajuda.")
ENGLISH = ("Good morning, I would like to ask whether I need an invitation letter to apply for the visa and "
           "where I can find the information about accommodation. Thank you very much for your help.")


def flat(text: str) -> str:
    return " ".join(text.split())


def inner_scam(subject: str = "Hotel reservation for MFML 2026") -> bytes:
    return (f"From: Conference Committee <committee@gmail.com>\r\nTo: pat@example.org\r\nSubject: {subject}\r\n"
            "Message-ID: <scam@gmail.com>\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
            "Send your card number and CVV today to keep your room.\r\n").encode("utf-8")


def message(text: str, *, subject: str = "Question", sender: str = "Pat Participant <pat@example.org>",
            inner: bytes | None = None) -> bytes:
    head = (f"From: {sender}\r\nTo: events@crm.cat\r\nSubject: {subject}\r\nDate: Mon, 05 Jan 2026 11:00:00 +0000\r\n"
            "Message-ID: <rep@example.org>\r\nReferences: <older@example.org>\r\nMIME-Version: 1.0\r\n")
    if inner is None:
        return (head + "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
                + text + "\r\n").encode("utf-8")
    return ((head + "Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain; charset=utf-8"
             "\r\nContent-Transfer-Encoding: 8bit\r\n\r\n" + text + "\r\n--b\r\nContent-Type: message/rfc822\r\n\r\n")
            .encode("utf-8") + inner + b"\r\n--b--\r\n")


def verdict_for(template: str, lang: str) -> Verdict:
    inner = Verdict("scam", 9.0, reasons=(
        Reason("CARD_DETAILS_REQUEST", "Asks for payment-card details", 4.0, ("scam", "payment")),
        Reason("HOUSING_OFFICIAL_CLAIM", "Claims to be the official housing", 3.0, ("scam", "housing")),
        Reason("FREEMAIL_ORGANISER", "Free-mail organiser", 2.0, ("scam", "sender")),
    ))
    if template in ("inquiry_ack", "forward_summary", "breaker_alert"):
        return Verdict("inquiry", 0.0, reasons=(Reason("ASKS", "Asks a question", 1.0, ("inquiry",)),))
    return Verdict("report", 0.0, inner=inner, paid=template in ("report_paid", "coordinator_alert"))


def render(template: str, lang: str, raw: bytes, *, ident: Identity = IDENT, verdict: Verdict | None = None,
           language: str | None = None):
    """``language``: the reply's language (default ``lang``)."""
    msg = parse(raw)
    verdict = verdict or verdict_for(template, lang)
    renderer = RENDERERS[lang]
    mid = f"<g.{template}.{lang}@crm.cat>"
    if template in REPLIES:
        return build_reply(renderer, template, msg=msg, verdict=verdict, ident=ident, now=NOW, message_id=mid,
                           language=lang if language is None else language)
    if template == "forward_summary":
        return build_forward(renderer, template, raw=raw, msg=msg, verdict=verdict, ident=ident, now=NOW, message_id=mid)
    if template == "coordinator_alert":
        return build_alert(renderer, template, raw=raw, msg=msg, verdict=verdict, ident=ident, now=NOW, message_id=mid)
    return build_notice(renderer, template, msg=msg, verdict=verdict, ident=ident, now=NOW, message_id=mid,
                        breaker={"count": 60, "max": 60})


def std(raw: bytes):
    return email.message_from_bytes(raw, policy=email.policy.default)


def bodies(raw: bytes) -> dict[str, str]:
    out: dict[str, str] = {}
    for p in std(raw).walk():
        if p.get_content_type() in ("text/plain", "text/html") and p.get_content_type() not in out:
            if p.get_content_disposition() != "attachment":
                out[p.get_content_type()] = p.get_content()
    return out


def sample_raw(template: str) -> bytes:
    if template in ("report_verdict", "report_paid", "coordinator_alert"):
        return message("Is this real? I think it is about MFML 2026.", subject="Fwd: Hotel reservation",
                       inner=inner_scam())
    return message(ENGLISH + " It is about MFML 2026.", subject="Visa letter for MFML 2026")


# -- the template sets ---------------------------------------------------------------------------


def test_every_language_is_a_complete_hand_written_set():
    assert set(R.languages()) >= set(LANGS)
    R.check()
    names = {f"{n}.{ext}.j2" for n in (*TEMPLATE_NAMES, *PARTIALS) for ext in ("txt", "html")}
    for lang in LANGS:
        files = {p.name for p in (shipped("templates") / lang).iterdir()}
        assert names <= files, (lang, sorted(names - files))
        assert set(TEMPLATE_NAMES) <= R.templates(lang)
    es = {p.name for p in (shipped("templates") / "es").iterdir()}
    ca = {p.name for p in (shipped("templates") / "ca").iterdir()}
    assert es == ca
    # hand-written: no template of one language is a copy of another's
    for name in names:
        texts = {(shipped("templates") / lang / name).read_text(encoding="utf-8") for lang in LANGS}
        assert len(texts) == 3, name


@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("template", REPLIES + TO_COORDINATOR)
def test_template_renders_and_the_message_carries_the_right_headers(template, lang):
    raw = sample_raw(template)
    r = render(template, lang, raw)
    m = std(r.raw)
    p = parse(r.raw)  # guard's own parser reads what guard writes
    assert p.from_.addr == "events@crm.cat" and p.subject and not p.defects
    assert m["From"].addresses[0].addr_spec == "events@crm.cat"
    assert m["X-Auto-Response-Suppress"] == "All"
    assert m["X-Guard-Loop"] == "events@crm.cat" and p.header("X-Guard-Loop") == "events@crm.cat"
    assert m["Message-ID"] == f"<g.{template}.{lang}@crm.cat>" and m["Date"]
    head = r.raw.split(b"\r\n\r\n", 1)[0]
    assert head.isascii()
    b = bodies(r.raw)
    assert set(b) == {"text/plain", "text/html"}
    assert b["text/html"].lstrip().startswith("<!DOCTYPE html>") and f'<html lang="{lang}"' in b["text/html"]
    if template in REPLIES:
        assert r.kind == "reply" and r.recipient == "pat@example.org" and r.envelope_from == ""
        assert m["Auto-Submitted"] == "auto-replied"
        assert m["To"].addresses[0].addr_spec == "pat@example.org"
        assert m["In-Reply-To"] == "<rep@example.org>"
        assert m["References"] == "<older@example.org> <rep@example.org>"
        assert m.get_content_type() == "multipart/alternative"
        assert "committee@gmail.com" not in str(m["To"])
        text = flat(b["text/plain"])
        assert b["text/plain"].startswith(HELLO[lang])
        for phrase in PROMISES[lang][:3]:
            assert phrase in text and phrase in flat(b["text/html"]), phrase
        assert "nhernandez@crm.cat" in text
        if template != "inquiry_ack":
            assert PROMISES[lang][3] in text and "https://www.crm.cat/code-of-conduct" in text
    else:
        assert r.recipient == "nhernandez@crm.cat"
        assert m["Auto-Submitted"] == "auto-generated"
        assert m["To"].addresses[0].addr_spec == "nhernandez@crm.cat"
        if template == "breaker_alert":
            assert m.get_content_type() == "multipart/alternative"
        else:
            assert m.get_content_type() == "multipart/mixed"
            kinds = [part.get_content_type() for part in m.iter_parts()]
            assert kinds == ["multipart/alternative", "message/rfc822"]
            assert m["References"] == "<rep@example.org>"
            assert m["Reply-To"].addresses[0].addr_spec == "pat@example.org"


@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("template", REPLIES + TO_COORDINATOR)
def test_template_renders_without_an_event(template, lang):
    raw = message("A general question.", subject="Question", inner=inner_scam("Your room") if "report" in template
                  or template == "coordinator_alert" else None)
    r = render(template, lang, raw, ident=IDENT.with_events([]))
    b = bodies(r.raw)
    assert "Bellaterra" not in b["text/plain"] and "mfml-2026" not in b["text/plain"]


# -- the reply follows the participant's language ------------------------------------------------


@pytest.mark.parametrize("text,lang", [(SPANISH, "es"), (CATALAN, "ca"), (ENGLISH, "en")])
def test_reply_language_follows_the_participants_message(classifier, text, lang):
    raw = message(text, subject="Carta")
    msg = parse(raw)
    assert msg.language == lang
    verdict = classifier.classify(msg)
    r = build_reply(R, "inquiry_ack", msg=msg, verdict=verdict, ident=IDENT, now=NOW, message_id="<l@crm.cat>")
    assert bodies(r.raw)["text/plain"].startswith(HELLO[lang])
    assert PROMISES[lang][1] in flat(bodies(r.raw)["text/plain"])


@pytest.mark.parametrize("lang", ["nl", "und", "zh", ""])
def test_other_languages_fall_back_to_english(lang):
    raw = message(ENGLISH)
    r = render("inquiry_ack", "en", raw, verdict=Verdict("inquiry", 0.0), language=lang)
    assert bodies(r.raw)["text/plain"].startswith("Hello,")


def test_report_reply_follows_the_reporter_not_the_forwarded_scam(classifier):
    raw = message("Hola, he recibido este mensaje sobre el alojamiento del taller y no sé si es auténtico. "
                  "¿Me pueden decir si es de ustedes?", subject="Fwd: Hotel", inner=inner_scam())
    msg = parse(raw)
    assert msg.language == "es"  # the reporter's own words, not the forwarded scam's
    verdict = classifier.classify(msg)
    r = build_reply(R, "report_verdict", msg=msg, verdict=verdict, ident=IDENT, now=NOW, message_id="<r@crm.cat>")
    assert bodies(r.raw)["text/plain"].startswith("Hola:")


# -- event facts ------------------------------------------------------------------------------------


@pytest.mark.parametrize("lang,dates,registration", [
    ("en", "7–9 January 2026", "Registration is free of charge"),
    ("es", "del 7 al 9 de enero de 2026", "La inscripción es gratuita"),
    ("ca", "del 7 al 9 de gener de 2026", "La inscripció és gratuïta"),
])
def test_reply_is_filled_with_the_events_facts(lang, dates, registration):
    r = render("inquiry_ack", lang, message(ENGLISH, subject="About MFML 2026"))
    for body in bodies(r.raw).values():
        text = flat(body)
        assert dates in text and registration in text
        assert "Centre de Recerca Matemàtica, Auditorium, Bellaterra" in text and "@crm.cat" in text


def test_report_verdict_names_the_signals_in_plain_words():
    raw = message("Is this real?", subject="Fwd: Hotel", inner=inner_scam())
    texts = {lang: flat(bodies(render("report_verdict", lang, raw).raw)["text/plain"]) for lang in LANGS}
    assert "What gave it away: - it asks for card or bank details, or for a payment" in texts["en"]
    assert "it offers hotel rooms or accommodation for the event" in texts["en"]
    assert "Lo que lo delata: - pide datos de tarjeta o bancarios, o un pago" in texts["es"]
    assert "El que el delata: - demana dades de targeta o bancàries, o un pagament" in texts["ca"]


def test_events_coordinator_is_named_and_the_office_still_routes():
    event = Event(id="ws", name="Winter Workshop on Examples", aliases=["WWE26"], official_domains=["ws.example.net"],
                  coordinator=Person(name="Bo Example", address="bo@ws.example.net"))
    ident = IDENT.with_events([event])
    r = render("inquiry_ack", "en", message(ENGLISH, subject="WWE26 question"), ident=ident)
    text = flat(bodies(r.raw)["text/plain"])
    assert "passed to Núria Hernández" in text  # who the forward goes to
    assert "write to Bo Example, the events coordinator, at bo@ws.example.net" in text
    assert "@ws.example.net, @crm.cat" in text
    fwd = render("forward_summary", "en", message(ENGLISH, subject="WWE26 question"), ident=ident)
    assert fwd.recipient == "nhernandez@crm.cat"
    assert "Winter Workshop on Examples (ws)" in bodies(fwd.raw)["text/plain"]


def test_event_facts_are_escaped_in_html():
    event = Event(id="ws", name="Tom & Jerry <b>Workshop</b>", registration="<script>x()</script>")
    r = render("inquiry_ack", "es", message(ENGLISH, subject="Tom & Jerry <b>Workshop</b>"),
               ident=IDENT.with_events([event]))
    html = bodies(r.raw)["text/html"]
    assert "Tom &amp; Jerry &lt;b&gt;Workshop&lt;/b&gt;" in html and "<script>" not in html and "<b>Workshop" not in html


# -- safety, in every language ------------------------------------------------------------------------


@pytest.mark.parametrize("lang", LANGS)
def test_header_injection_is_impossible(lang):
    raw = ("From: =?utf-8?q?Pat=0D=0ABcc:_x@evil.example?= <pat@example.org>\r\nTo: events@crm.cat\r\n"
           "Subject: =?utf-8?q?Hi=0D=0ABcc:_victim@example.com=0AX-Evil:_1?=\r\nMessage-ID: <x@example.org>\r\n\r\n"
           "Question?\r\n").encode()
    for template in ("inquiry_ack", "forward_summary"):
        r = render(template, lang, raw)
        m = std(r.raw)
        assert m["Bcc"] is None and m["X-Evil"] is None
        assert "\n" not in str(m["Subject"]) and "\r" not in str(m["Subject"])
        head = r.raw.split(b"\r\n\r\n", 1)[0]
        names = [line.split(b":", 1)[0].lower() for line in head.split(b"\r\n") if line[:1] not in (b" ", b"\t")]
        assert b"bcc" not in names and b"x-evil" not in names


@pytest.mark.parametrize("lang", LANGS)
def test_non_ascii_headers_are_encoded(lang):
    raw = message(CATALAN, subject="Inscripció al taller — ñandú", sender="Dolça Pérez-Núñez <dolca@example.org>")
    for template in ("inquiry_ack", "forward_summary"):
        r = render(template, lang, raw)
        head = r.raw.split(b"\r\n\r\n", 1)[0]
        assert head.isascii()
        m = std(r.raw)
        assert "Inscripció al taller — ñandú" in m["Subject"]
        if template == "inquiry_ack":
            assert m["To"].addresses[0].display_name == "Dolça Pérez-Núñez"
        else:
            assert m["Reply-To"].addresses[0].display_name == "Dolça Pérez-Núñez"
            assert m["To"].addresses[0].display_name == "Núria Hernández"
        assert parse(r.raw).subject == m["Subject"]


@pytest.mark.parametrize("lang", LANGS)
def test_no_participant_text_unescaped_in_html(lang):
    evil = "<script>alert(1)</script>"
    inner = inner_scam(subject="<img src=x onerror=alert(1)> room")
    raw = message(f"Look {evil} and <a href='http://evil.example'>this</a>", subject=f"Fwd: {evil}",
                  sender='"<b>Pat</b>" <pat@example.org>', inner=inner)
    for template in ("report_verdict", "report_paid", "forward_summary", "coordinator_alert"):
        html = bodies(render(template, lang, raw).raw)["text/html"]
        assert "<script" not in html and "<img" not in html and "<b>Pat" not in html, template
        assert "<a href='http://evil.example'" not in html
        assert "&lt;script&gt;" in html or "&lt;img" in html


@pytest.mark.parametrize("lang", LANGS)
def test_card_numbers_are_masked_wherever_quoted_or_forwarded(lang):
    inner = inner_scam(subject=f"Card {CARD} confirmed")
    raw = message(f"I already gave them my card {CARD}.", subject=f"Fwd: card {CARD}", inner=inner)
    for template in ("report_verdict", "report_paid", "forward_summary", "coordinator_alert"):
        r = render(template, lang, raw)
        assert CARD.encode() not in r.raw and CARD.replace(" ", "").encode() not in r.raw, template
        assert "**** **** **** 1111" in std(r.raw)["Subject"]
        for part in std(r.raw).walk():
            if part.get_content_maintype() == "text":
                assert CARD not in part.get_content()
        if template in ("forward_summary", "coordinator_alert"):
            text = bodies(r.raw)["text/plain"]
            assert "**** **** **** 1111" in text
            attached = next(p for p in std(r.raw).iter_attachments() if p.get_content_type() == "message/rfc822")
            assert CARD not in attached.get_content().as_string()


# -- guard preview -----------------------------------------------------------------------------------


@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("template", REPLIES + TO_COORDINATOR)
def test_preview_writes_a_parseable_message(tmp_path, capsys, template, lang):
    out = tmp_path / f"{template}.{lang}.eml"
    assert main(["preview", template, "--event", "mfml-2026", "--lang", lang, "--out", str(out)]) == 0
    raw = out.read_bytes()
    m = std(raw)
    assert parse(raw).from_.addr == "events@crm.cat" and m["Auto-Submitted"]
    assert CARD.encode() not in raw
    text = bodies(raw)["text/plain"]
    if template in REPLIES:
        assert text.startswith(HELLO[lang])
        assert "Mathematical Foundations of Machine Learning" in text


def test_preview_to_stdout_and_errors(capsysbinary):
    assert main(["preview", "inquiry_ack"]) == 0
    raw = capsysbinary.readouterr().out
    assert std(raw)["Subject"].startswith("Auto:") and "Bellaterra" not in bodies(raw)["text/plain"]
    assert main(["preview", "inquiry_ack", "--event", "no-such-event"]) == 2
    assert b"no-such-event" in capsysbinary.readouterr().err
    assert main(["preview", "no_such_template"]) == 2
    assert main(["preview", "inquiry_ack", "--lang", "xx"]) == 2
