"""Reply and forward markers of subjects, and what a forwarder added to a forwarded subject."""

from __future__ import annotations

import pytest

from guard.mail.textutil import own_subject_words, strip_subject_prefixes


@pytest.mark.parametrize("subject, bare", [
    ("RV: Fwd: Hotel", "Hotel"),
    ("Re[2]: dates", "dates"),
    ("AW: WG: Zimmer", "Zimmer"),
    ("TR : Hébergement", "Hébergement"),
    ("I: R: Iscrizione", "Iscrizione"),
    ("ENC: Pacote", "Pacote"),
    ("回复：会议", "会议"),
    ("ΣΧΕΤ: Εγγραφή", "Εγγραφή"),
])
def test_markers_are_stripped(subject, bare):
    assert strip_subject_prefixes(subject) == (bare, True)


@pytest.mark.parametrize("subject", ["Invitation: workshop", "Genuine?", "Note: room change", ""])
def test_other_words_before_a_colon_are_kept(subject):
    assert strip_subject_prefixes(subject) == (subject.strip(), False)


def test_a_hostile_chain_of_markers_ends():
    s, removed = strip_subject_prefixes("Re: " * 10000 + "x")
    assert removed and s.startswith("Re:")  # stops after a bounded number of steps


@pytest.mark.parametrize("outer, inner, own", [
    ("Fwd: Deposit required - I paid this, is it you??", "Deposit required", "i paid this, is it you??"),
    ("Fwd: Deposit required", "Deposit required", ""),
    ("RV: Reserva (¿es real?)", "Reserva", "¿es real?"),
    ("Genuine?", "Deposit required", "genuine?"),
    ("Fwd: something else", "Deposit required", ""),
    ("Fwd: x", None, ""),
])
def test_own_subject_words(outer, inner, own):
    assert own_subject_words(outer, inner) == own
