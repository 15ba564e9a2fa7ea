"""The pure parts of corrections: which list entry a sender gets, and the labelled-mail store."""

from __future__ import annotations

from guard.learning.corrections import labelled_examples, list_entry, store_labelled


def test_list_entry_by_address_and_by_domain():
    never = frozenset({"gmail.com", "crm.cat"})
    assert list_entry(" Desk@Stays.Example ", "address", never_domains=never) == "desk@stays.example"
    assert list_entry("desk@mail.stays.example", "domain", never_domains=never) == "stays.example"
    # a free-mail or official domain is never listed as a whole: the address is
    assert list_entry("someone@gmail.com", "domain", never_domains=never) == "someone@gmail.com"
    assert list_entry("not an address", "address", never_domains=never) is None


def test_store_labelled_moves_a_message_between_labels(tmp_path):
    raw = b"From: a@b.example\r\nSubject: x\r\n\r\nbody\r\n"
    first = store_labelled(tmp_path, "scam", raw)
    assert first.parent.name == "scam" and first.read_bytes() == raw
    assert labelled_examples(tmp_path) == [(raw, "scam")]
    again = store_labelled(tmp_path, "genuine", raw)
    assert not first.exists() and again.parent.name == "genuine"
    assert labelled_examples(tmp_path) == [(raw, "ham")]
