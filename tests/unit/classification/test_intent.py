"""The intent model: fitted, saved, loaded and verified; a tampered artefact is refused."""

from __future__ import annotations

import numpy as np
import pytest

from guard.classification import intent
from guard.errors import ModelError
from guard.mail.message import parse

TEXTS = {
    "doubt": ["Is this real? I got this mail about a hotel", "Es esto oficial? Me escribieron de una agencia",
              "Could you confirm this booking agency is yours?", "Aquest correu és fals?"],
    "paid": ["I already paid them with my card yesterday", "Ya les pagué la reserva con la tarjeta",
             "I sent them my card number and now I worry", "He pagat per transferència, és una estafa?"],
    "ask": ["Could you send me an invitation letter for my visa?", "Hay cuota de inscripción?",
            "Where is the venue and how do I get there?", "Em podeu enviar el certificat d'assistència?"],
    "inform": ["Thanks for a wonderful workshop", "Gracias por todo, nos vemos", "Here are my slides", "Moltes gràcies"],
    "scam": ["Send your credit card details to secure your room now", "Pay the deposit by wire transfer today",
             "Final reminder: accommodation payment required", "Confirm your booking with card number and CVV"],
    "automated": ["I am out of the office until Monday", "Delivery Status Notification failure",
                  "Automatic reply: on leave", "Unsubscribe from this newsletter"],
}


def _fit():
    texts, labels = [], []
    for label, xs in TEXTS.items():
        texts += xs
        labels += [label] * len(xs)
    dense = np.zeros((len(texts), len(intent.DENSE_NAMES)))
    return intent.fit(texts, dense, labels)


def test_fit_predicts_its_training_classes():
    model = _fit()
    msg = parse(b"From: a@b.example\nSubject: visa\n\nCould you send me an invitation letter for my visa?\n")
    probs = model.probabilities(msg, {}, None, None)
    assert set(probs) == set(intent.INTENTS) and abs(sum(probs.values()) - 1.0) < 1e-9
    assert max(probs, key=probs.get) == "ask"


def test_save_load_round_trip_and_tampering_refused(tmp_path):
    model = _fit()
    artefact, _ = intent.save(model, tmp_path, {"examples": 24})
    loaded = intent.load(artefact)
    assert np.array_equal(loaded.coef, model.coef)
    data = bytearray(artefact.read_bytes())
    data[-10] ^= 0xFF
    artefact.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="SHA-256"):
        intent.load(artefact)


def test_author_text_leaves_a_forwards_subject_out():
    msg = parse(b"From: a@b.example\nSubject: Fwd: Pay your room now\n\nIs this real?\n\n"
                b"---------- Forwarded message ---------\nFrom: x <x@y.example>\nSubject: Pay your room now\n\nPay.\n")
    assert "Pay your room" not in intent.author_text(msg)
    assert "Is this real?" in intent.author_text(msg)


def test_intent_of_label():
    assert intent.intent_of_label("report", "yes") == "paid"
    assert intent.intent_of_label("report", "no") == "doubt"
    assert intent.intent_of_label("inquiry", "no") == "ask"


def test_author_text_keeps_what_the_forwarder_added_to_the_subject():
    msg = parse(b"From: a@b.example\nSubject: Fwd: Pay your room now - I paid this, is it you??\n\n\n\n"
                b"---------- Forwarded message ---------\nFrom: x <x@y.example>\nSubject: Pay your room now\n\nPay.\n")
    own = intent.author_text(msg)
    assert "i paid this, is it you??" in own and "pay your room" not in own


def test_author_text_keeps_an_own_subject_above_an_attached_message():
    inner = b"From: x <x@y.example>\r\nSubject: Deposit required\r\n\r\nPay now.\r\n"
    raw = (b"From: a@b.example\r\nSubject: Genuine?\r\nMIME-Version: 1.0\r\n"
           b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\n\r\n'
           b"--b\r\nContent-Type: message/rfc822\r\n\r\n" + inner + b"--b--\r\n")
    msg = parse(raw)
    assert msg.forwarded and "genuine?" in intent.author_text(msg).casefold()


def test_author_cues_are_dense_features_and_recorded_in_the_artefact(tmp_path):
    from guard.classification import author_cues

    assert intent.DENSE_NAMES[-len(author_cues.NAMES):] == author_cues.NAMES
    msg = parse(b"From: a@b.example\nSubject: help\n\nI already paid 300 EUR by bank transfer. Is this agency yours?\n")
    dense = intent.dense_features(msg, {}, None, None)
    assert dense[intent.DENSE_NAMES.index("paid_act")] > 0
    artefact, meta = intent.save(_fit(), tmp_path, {})
    assert '"author_cues": "%s"' % author_cues.FINGERPRINT in meta.read_text()


def test_an_artefact_trained_over_other_cue_lists_is_refused(tmp_path):
    import hashlib
    import json

    artefact, meta_path = intent.save(_fit(), tmp_path, {})
    meta = json.loads(meta_path.read_text())
    meta["author_cues"] = "0" * 16
    meta["sha256"] = hashlib.sha256(artefact.read_bytes()).hexdigest()
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="payment cue lists"):
        intent.load(artefact)


def test_conversation_facts_are_dense_features():
    """A reply quoting the institute's own mail and a forward of a third party's differ in the facts."""
    from guard.classification.assemble import build_classifier
    from guard.settings import load_settings

    classifier = build_classifier(load_settings(None), intent=None)
    reply = parse(b"From: a@uni.example\nSubject: RE: Your visa letter\nIn-Reply-To: <1@crm.cat>\n\nThank you, one more question.\n\n"
                  b"From: N\\xc3\\xbaria <nhernandez@crm.cat>\nSent: Monday, 5 January 2026 10:02\nTo: a@uni.example\n"
                  b"Subject: Your visa letter\n\nDear participant, the letter is attached.\n")
    forward = parse(b"From: a@uni.example\nSubject: WG: Hotel\n\nIst das echt?\n\n---------- Weitergeleitete Nachricht ---------\n"
                    b"Von: Desk <desk@stays.example>\nSubject: Hotel\n\nPay the deposit today.\n")
    facts = {}
    for name, msg in (("reply", reply), ("forward", forward)):
        v = classifier.classify(msg)
        dense = intent.dense_features(msg, v.scores, v.model_p, v.inner)
        facts[name] = {k: dense[intent.DENSE_NAMES.index(k)] for k in
                       ("reply_subject", "forward_subject", "in_thread", "inner_official", "inner_same_sender")}
    assert facts["reply"] == {"reply_subject": 1.0, "forward_subject": 0.0, "in_thread": 1.0, "inner_official": 1.0,
                              "inner_same_sender": 0.0}
    assert facts["forward"] == {"reply_subject": 0.0, "forward_subject": 1.0, "in_thread": 0.0, "inner_official": 0.0,
                                "inner_same_sender": 0.0}


def test_a_follow_up_quoting_the_senders_own_mail_is_a_fact():
    msg = parse(b"From: Giulia <g@lists-offer.example>\nSubject: Re: Participant list\n\nI write again, see below.\n\n"
                b"From: Giulia <g@lists-offer.example>\nSent: Monday\nTo: events@crm.cat\nSubject: Participant list\n\n"
                b"We sell the list.\n")
    assert msg.forwarded
    dense = intent.dense_features(msg, {}, None, None)
    assert dense[intent.DENSE_NAMES.index("inner_same_sender")] == 1.0


def test_who_the_embedded_message_was_from_and_to_are_facts():
    report = parse(b"From: ana@uni.example\nTo: events@crm.cat\nSubject: Fwd: Hotel\n\nReal?\n\n"
                   b"---------- Forwarded message ---------\nFrom: Desk <desk@stays.example>\nDate: Mon\n"
                   b"Subject: Hotel\nTo: <ana@uni.example>\n\nPay the deposit.\n")
    thread = parse(b"From: desk@stays.example\nTo: Ana <ana@uni.example>\nSubject: Re: Hotel\n\nPay by Thursday.\n\n"
                   b"On Mon, 5 Jan 2026 at 10:02, Ana <ana@uni.example> wrote:\n> Is the room still free?\n> Ana\n")
    facts = {name: intent.dense_features(m, {}, None, None) for name, m in (("report", report), ("thread", thread))}
    at = intent.DENSE_NAMES.index
    assert facts["report"][at("inner_to_sender")] == 1.0 and facts["report"][at("inner_from_recipient")] == 0.0
    assert facts["thread"][at("inner_to_sender")] == 0.0 and facts["thread"][at("inner_from_recipient")] == 1.0


def test_the_rule_behind_inner_official_exists():
    from guard.classification.assemble import load_rules
    from guard.settings import load_settings

    assert intent.INNER_OFFICIAL_RULE in {r.id for r in load_rules(load_settings(None)).rules}


def test_an_embedded_message_is_decided_as_in_training_without_the_intent_model():
    """The intent model's training rows carry embedded verdicts decided by rules and the scam model
    alone; at run time the embedded message is decided the same way, with or without an intent model."""
    from guard.classification.assemble import build_classifier
    from guard.settings import load_settings

    from guard.classification.model_loader import load_default_model

    settings = load_settings(None)
    full = build_classifier(settings, model=load_default_model(settings))
    assert full.intent is not None
    base = build_classifier(settings, model=full.model, intent=None)
    for raw in (b"From: a@uni.example\nSubject: Fwd: Hotel\n\nIs this real?\n\n---------- Forwarded message ---------\n"
                b"From: Desk <desk@stays.example>\nSubject: Hotel\n\nDear speaker, pay the deposit for your room by card "
                b"today or lose the reservation.\n",
                b"From: a@uni.example\nSubject: RE: Your visa letter\n\nThank you.\n\n"
                b"From: Office <events@crm.cat>\nSent: Monday, 5 January 2026 10:02\nTo: a@uni.example\n"
                b"Subject: Your visa letter\n\nDear participant, the letter is attached.\n"):
        got, want = full.classify(parse(raw)).inner, base.classify(parse(raw)).inner
        assert got is not None
        assert (got.category, got.score, got.reasons) == (want.category, want.score, want.reasons)
