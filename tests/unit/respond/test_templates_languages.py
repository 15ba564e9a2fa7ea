"""Issue 17: every participant-facing template in every language, with every shipped fact sheet, and
nothing left in English in a non-English reply (beyond names and addresses); the reply's language
comes from the participant's own words with a configured fallback; the coordinator's language."""

from __future__ import annotations

import email
import email.policy
import re
from datetime import datetime, timezone

import pytest
from test_templates_i18n import message as participant_message

from guard.cli.main import main
from guard.mail.message import parse
from guard.paths import shipped
from guard.respond import languages
from guard.respond.render import Identity, Renderer, build_forward, build_reply
from guard.settings import Event, load_settings
from guard.classification.verdict import Reason, Verdict

NOW = datetime(2026, 1, 5, 12, 0, tzinfo=timezone.utc)
SETTINGS = load_settings()
IDENT = Identity.from_settings(SETTINGS)
R = Renderer(shipped("templates"), "en")
REPLY_LANGS = ("en", "ca", "es", "fr", "de", "it", "pt")
REPLIES = ("inquiry_ack", "report_verdict", "report_paid")
COORDINATOR = ("forward_summary", "coordinator_alert", "breaker_alert")
#: the three promises as each language words them (what the institute's warning means)
PROMISES = {
    "fr": ("Nous ne faisons jamais appel à des tiers", "Nous ne vous demanderons jamais de données de carte de crédit",
           "En cas de doute sur un message que vous recevez, écrivez à"),
    "de": ("Wir beauftragen für unsere Veranstaltungen niemals Dritte", "Wir werden Sie niemals nach Kreditkarten- oder "
           "Bankdaten fragen", "Wenn Sie an einer Nachricht zweifeln, die Sie erhalten, schreiben Sie bitte an"),
    "it": ("Non ci affidiamo mai a terzi", "Non le chiederemo mai i dati della carta di credito né le coordinate bancarie",
           "Se ha dubbi su un messaggio che riceve, scriva a"),
    "pt": ("Nunca recorremos a terceiros", "Nunca lhe pediremos dados de cartão de crédito nem dados bancários",
           "Se tiver qualquer dúvida sobre uma mensagem que receba, escreva a"),
}
HELLO = {"en": "Hello,", "es": "Hola:", "ca": "Bon dia,", "fr": "Bonjour,", "de": "Guten Tag,", "it": "Buongiorno,",
         "pt": "Bom dia,"}
#: words that only English uses among these languages: one of them in a non-English reply is leftover English
ENGLISH = re.compile(r"\b(the|and|your|you|please|with|from|this|that|our|which|event|registration|"
                     r"lodging|venue|hello|thank|official|never|details|scam|reply|automatic|office|emails?|"
                     r"only|available|about|card|call)\b", re.I)
OWN = {
    "en": "Good morning, could you tell me whether I need an invitation letter for the visa? Thank you very much.",
    "es": "Buenos días, ¿podrían decirme si necesito una carta de invitación para el visado? Muchas gracias.",
    "ca": "Bon dia, em podríeu dir si necessito una carta d'invitació per al visat? Moltes gràcies.",
    "fr": "Bonjour, pourriez-vous me dire si j'ai besoin d'une lettre d'invitation pour mon visa ? Merci beaucoup.",
    "de": "Guten Tag, könnten Sie mir bitte sagen, ob ich für das Visum ein Einladungsschreiben brauche? Vielen Dank.",
    "it": "Buongiorno, potreste dirmi se ho bisogno di una lettera di invito per il visto? Grazie mille.",
    "pt": "Bom dia, podem dizer-me se preciso de uma carta-convite para o visto? Muito obrigado.",
}


def inner_scam() -> bytes:
    return (b"From: Conference Committee <committee@gmail.com>\r\nTo: pat@example.org\r\nSubject: Hotel booking\r\n"
            b"Message-ID: <scam@gmail.com>\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
            b"Dear participant, send your card number and CVV today to keep your room for the workshop.\r\n")


def message(text: str, *, subject: str = "Carta", inner: bytes | None = None) -> bytes:
    return participant_message(text, subject=subject, inner=inner)


def verdict(template: str, lang: str, inner_category: str = "scam") -> Verdict:
    inner = Verdict(inner_category, 9.0, reasons=(
        Reason("CARD", "Asks for card details", 4.0, ("scam", "payment")),
        Reason("HOUSING", "Official housing claim", 3.0, ("scam", "housing")),
        Reason("FREEMAIL", "Free-mail organiser", 2.0, ("scam", "sender")),
        Reason("PRESSURE", "Pressure", 1.0, ("scam", "pressure", "named", "links", "identity", "invoice"))))
    if template == "inquiry_ack":
        return Verdict("inquiry", 0.0)
    return Verdict("report", 0.0, inner=inner, paid=template == "report_paid")


def bodies(raw: bytes) -> dict[str, str]:
    m = email.message_from_bytes(raw, policy=email.policy.default)
    return {t: m.get_body((t.split("/")[1],)).get_content() for t in ("text/plain", "text/html")}


def visible(html: str) -> str:
    return re.sub(r"<[^>]+>", " ", re.sub(r"<(style|title)>.*?</\1>", " ", html, flags=re.S))


def strip_names(text: str, event) -> str:
    """The reply without what is a name or an address (and the participant's own subject)."""
    for name in sorted({event.name, *event.aliases, IDENT.institute_name, "Conference Committee", "Carta",
                        "Hotel booking", *(["Auditorium"])}, key=len, reverse=True):
        text = text.replace(name, " ")
    text = re.sub(r"\S+@\S+|https?://\S+|\b[\w-]+(?:\[\.\]|\.)[\w.\[\]-]+\b", " ", text)
    return text


EVENTS = [e.id for e in SETTINGS.events]


@pytest.mark.parametrize("event_id", EVENTS)
@pytest.mark.parametrize("template", REPLIES)
@pytest.mark.parametrize("lang", REPLY_LANGS)
def test_every_reply_renders_in_every_language_with_every_fact_sheet(lang, template, event_id):
    event = next(e for e in SETTINGS.events if e.id == event_id)
    ident = IDENT.with_events([event])
    raw = message(OWN[lang] + f" {event.aliases[0] if event.aliases else event.name}.",
                  inner=None if template == "inquiry_ack" else inner_scam())
    for inner_category in (("scam",) if template != "report_verdict" else ("scam", "suspicious", "other")):
        r = build_reply(R, template, msg=parse(raw), verdict=verdict(template, lang, inner_category), ident=ident,
                        now=NOW, message_id="<t@crm.cat>", language=lang)
        assert r.headers["language"] == lang
        b = bodies(r.raw)
        assert b["text/plain"].startswith(HELLO[lang]) and f'<html lang="{lang}"' in b["text/html"]
        for body in (b["text/plain"], visible(b["text/html"])):
            flat = " ".join(body.split())
            if lang in PROMISES:
                for promise in PROMISES[lang]:
                    assert promise in flat, (lang, template, promise)
            assert "nhernandez@crm.cat" in flat
            if event.start:
                from guard.respond.facts import format_dates
                assert format_dates(event.start, event.end, lang) in flat
            if lang != "en":
                left = ENGLISH.findall(strip_names(flat, event))
                assert not left, (lang, template, event_id, inner_category, left)


def test_a_fact_the_sheet_lacks_in_the_language_falls_back_clearly():
    event = Event(id="ws", name="Winter School", aliases=["WS26"], registration={"es": "Inscripción en línea.",
                  "en": "Register online."}, lodging="Hotel Example, Plaça 1")
    ident = IDENT.with_events([event])
    renderer = Renderer(shipped("templates"), "ca", fallback=("ca", "es", "en"))
    r = build_reply(renderer, "inquiry_ack", msg=parse(message(OWN["fr"] + " WS26")), verdict=verdict("inquiry_ack", "fr"),
                    ident=ident, now=NOW, message_id="<t@crm.cat>", language="fr")
    text = " ".join(bodies(r.raw)["text/plain"].split())
    assert "Inscripción en línea. (Ce texte n'est disponible qu'en espagnol.)" in text  # the fallback order, said so
    assert "Hotel Example, Plaça 1" in text and "n'est disponible qu'en" in visible(bodies(r.raw)["text/html"])
    assert text.count("n'est disponible") == 1  # a plain string is the same in every language: no note


@pytest.mark.parametrize("lang", REPLY_LANGS)
def test_the_reply_follows_the_participants_own_words_not_the_forwarded_scam(lang):
    raw = message(OWN[lang], subject="Fwd: Hotel booking", inner=inner_scam())
    msg = parse(raw)
    choice = R.reply_language(msg, "report_verdict")
    assert choice == languages.LanguageChoice(lang, languages.WRITTEN_IN, lang)
    assert choice.code() == f"{lang}(written-in)"


def test_unsupported_or_unclear_language_uses_the_fallback_order():
    renderer = Renderer(shipped("templates"), "ca", fallback=("ca", "en"))
    dutch = parse(message("Goedemorgen, kunt u mij vertellen of ik een uitnodigingsbrief nodig heb voor mijn visum? "
                          "Hartelijk dank."))
    c = renderer.reply_language(dutch, "inquiry_ack")
    assert (c.language, c.reason, c.detected) == ("ca", languages.NOT_OFFERED, "nl")
    assert "no templates" in c.describe() and c.code() == "ca(not-offered:nl)"
    short = parse(message("?", subject="Fwd: Your room", inner=inner_scam()))  # the scam's English is not read
    c = renderer.reply_language(short, "report_verdict")
    assert (c.language, c.reason) == ("ca", languages.UNCLEAR)
    assert languages.choose("und", {"en", "fr"}, ("de", "fr")).language == "fr"


def test_settings_give_the_fallback_order_and_the_coordinators_language():
    s = load_settings(daemon={"language": "ca", "trusted_authserv_ids": ["mx.crm.cat"]})
    assert s.daemon.reply_fallback() == ("ca", "en") and s.daemon.coordinator_lang() == "ca"
    s = load_settings(daemon={"reply_fallback_languages": ["es", "en"], "coordinator_language": "es"})
    assert s.daemon.reply_fallback() == ("es", "en") and s.daemon.coordinator_lang() == "es"
    from guard.errors import ConfigError
    with pytest.raises(ConfigError, match="reply_fallback_languages"):
        load_settings(daemon={"reply_fallback_languages": ["english"]})


@pytest.mark.parametrize("lang,phrase", [("en", "A message for you"), ("ca", "Un missatge per a vós"),
                                         ("es", "Un mensaje para usted"), ("fr", "A message for you")])
def test_forwards_to_the_coordinator_are_in_the_coordinators_language(lang, phrase):
    renderer = Renderer(shipped("templates"), "en", coordinator_language=lang)
    raw = message(OWN["fr"])
    r = build_forward(renderer, "forward_summary", raw=raw, msg=parse(raw), verdict=verdict("inquiry_ack", "fr"),
                      ident=IDENT, now=NOW, message_id="<f@crm.cat>")
    assert bodies(r.raw)["text/plain"].startswith(phrase)  # fr: no coordinator set, English (the fallback)


@pytest.mark.parametrize("lang", REPLY_LANGS)
@pytest.mark.parametrize("template", REPLIES + COORDINATOR)
def test_preview_works_for_every_template_in_every_language(tmp_path, template, lang):
    out = tmp_path / "m.eml"
    assert main(["preview", template, "--lang", lang, "--event", "mfml-2026", "--out", str(out)]) == 0
    text = bodies(out.read_bytes())["text/plain"]
    if template in REPLIES:
        assert text.startswith(HELLO[lang])
