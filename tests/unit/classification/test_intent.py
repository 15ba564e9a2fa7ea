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
