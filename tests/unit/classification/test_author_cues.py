"""Author cues: handing over money or details (negation in scope), aftermath, doubt, contact, quoted names."""

from __future__ import annotations

import pytest

from guard.classification import author_cues as pc
from guard.mail.textutil import fold


@pytest.mark.parametrize("text", [
    "I already paid 300 EUR by bank transfer.",
    "Yesterday I typed my university password on that page before I noticed the address was not crm.cat.",
    "Ja vaig pagar la reserva amb la targeta.",
    "Hice lo que me pedían (les mandé los datos de la tarjeta por WhatsApp) y ahora ya no contestan.",
    "J'ai déjà viré l'argent pour moi et deux collègues.",
    "Ich habe meine Kreditkartendaten angegeben.",
    "Il bonifico è già partito venerdì.",
    "Já paguei o sinal de 210 euros.",
    "Ik heb het bedrag al betaald.",
    "Wczoraj zapłaciłam kartą.",
    "Linkten 40 € ödedim.",
    "Πλήρωσα με τραπεζικό έμβασμα.",
    "我已经通过微信转账支付了1500元人民币定金。",
    "pagat!! es fals?",
])
def test_handing_over_is_found_in_many_languages(text):
    act, negated = pc.counts(text)[:2]
    assert (act, negated) == (1, 0), text


@pytest.mark.parametrize("text", [
    "I have not paid anything yet.",
    "No les he dado mi tarjeta.",
    "Ich habe noch nichts überwiesen.",
    "Ik heb niets betaald.",
    "Je n'ai jamais donné ma carte.",
])
def test_a_negation_before_the_verb_counts_apart(text):
    assert pc.counts(text)[:2] == (0, 1), text


@pytest.mark.parametrize("text", [
    "Is there a registration fee for the workshop?",
    "Could you send me an invitation letter for my visa?",
    "Thank you for the wonderful programme.",
])
def test_questions_without_handing_over_give_nothing(text):
    assert pc.counts(text)[:2] == (0, 0)


def test_aftermath_and_sentences_are_counted_separately():
    act, negated, after = pc.counts("I gave them my card number. Today my bank blocked the card. "
                                    "I also sent my passport scan.")[:3]
    assert (act, negated, after) == (2, 0, 1)


def test_features_are_scaled_and_capped():
    many = " ".join(["I paid them."] * 10)
    assert pc.features(many) == (pc.SCALE, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
    assert pc.features("") == (0.0,) * len(pc.NAMES)


def test_every_listed_word_is_in_folded_form():
    """A word that folding would change could never match the folded text."""
    for words in (pc.PAY, pc.ACT, pc.ASSET, pc.NEGATION, pc.AFTERMATH, pc.DOUBT, pc.CONTACT, pc.ABSENCE):
        for w in words:
            assert fold(w) == w, w


def test_fingerprint_follows_the_lists(monkeypatch):
    before = pc._fingerprint()
    monkeypatch.setattr(pc, "ASSET", pc.ASSET | {"bitcoin"})
    assert pc._fingerprint() != before


def test_work_is_linear_on_hostile_text():
    import time

    text = ("paid " * 20000) + ("." * 20000) + ("a" * 50000)
    t0 = time.process_time()
    pc.counts(text)
    assert time.process_time() - t0 < 2.0


@pytest.mark.parametrize("text, doubt, contact, quotes", [
    ('Someone called me from the "CRM Accommodation Desk". Is this a scam?', 1, 1, 1),
    ("Me llamó una persona de la «oficina de alojamiento». ¿Es real?", 1, 1, 1),
    ("昨天有人通过微信联系我，冒充会议工作人员。", 1, 1, 0),
    ("Could you send me an invitation letter for my visa?", 0, 0, 0),
])
def test_doubt_contact_and_quoted_names(text, doubt, contact, quotes):
    assert pc.counts(text)[3:6] == (doubt, contact, quotes)


@pytest.mark.parametrize("text, away", [
    ("I am travelling until 20 January and will reply when I am back.", 1),
    ("Uprzejmie informuję, że od 18 do 29 maja jestem na urlopie.", 1),
    ("Estoy de vacaciones. Regreso el lunes.", 1),
    ("Sóc fora del despatx fins al 7 de gener. Bones vacances!", 1),
    ("我正在休假，下周一回来。", 1),
    ("Could you send me an invitation letter for my visa?", 0),
])
def test_absence_sentences(text, away):
    """A sentence that says the writer is away counts once, in any of the languages."""
    assert pc.counts(text)[6] == away


def test_words_are_the_word_pattern_every_code_point():
    """_words finds _WORD's words: each code point alone, between letters, and beside "_" and "'"."""
    import sys

    for start in range(0, sys.maxunicode + 1, 4096):
        chars = [chr(c) for c in range(start, min(start + 4096, sys.maxunicode + 1)) if not 0xD800 <= c < 0xE000]
        for text in (" ".join(chars), "a".join(chars), "_".join(chars), "'".join(chars) + "_x'y"):
            assert pc._WORD_NO_UNDERSCORE.findall(text.replace("_", " ")) == pc._WORD.findall(text)
    for text in ("l'argent", "a_b'c", "__", "x·y_z", "d'_aquí", "it's_ok", "dell'_albergo l'hotel"):
        expected = []
        for w in pc._WORD.findall(text):  # the elision rule of _words, over _WORD's words
            expected.append(w)
            if "'" in w[1:-1] and len(w) > 3:
                expected.append(w.rsplit("'", 1)[1])
        assert pc._words(text) == expected


def test_sentences_split_where_the_marks_and_line_breaks_are():
    """_sentences is "each sentence end to a line break, split at line breaks, empty parts dropped"."""
    import random

    marks = "".join(sorted(pc._SENTENCE_ENDS))
    to_breaks = str.maketrans({c: "\n" for c in pc._SENTENCE_ENDS})
    rnd = random.Random(11)
    texts = ["", ".", "a. b! c? d; e。f！g？h", "..a..", "\n", "x\ny"]
    texts += ["".join(rnd.choice(marks + "\nab 中é") for _ in range(rnd.randint(0, 30))) for _ in range(5_000)]
    for text in texts:
        assert pc._sentences(text) == [s for s in text.translate(to_breaks).split("\n") if s], repr(text)
