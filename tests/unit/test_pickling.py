"""Frozen, slotted dataclasses pickle to equal objects through guard.pickling.fast_pickle (the
daemon's analyser sends every parsed message and verdict across a pipe)."""

from __future__ import annotations

import copy
import dataclasses
import pickle

import pytest

from guard.classification.verdict import Reason, Verdict
from guard.mail.message import parse
from guard.pickling import fast_pickle

RAW = (b"Authentication-Results: mx.crm.cat; dkim=pass header.d=example.org; spf=pass smtp.mailfrom=example.org\r\n"
       b"From: Pat <pat@example.org>\r\nTo: events@crm.cat\r\nSubject: Fwd: your room\r\n"
       b"Message-ID: <a@example.org>\r\nMIME-Version: 1.0\r\n"
       b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\n"
       b"Is this real? See https://travellerpoint.example/pay\r\n--b\r\n"
       b"Content-Type: message/rfc822\r\n\r\nFrom: Housing <h@travellerpoint.example>\r\nSubject: room\r\n\r\n"
       b"Pay by card at https://travellerpoint.example/x\r\n--b\r\n"
       b"Content-Type: application/pdf; name=a.pdf\r\nContent-Disposition: attachment; filename=a.pdf\r\n\r\n"
       b"JVBER\r\n--b--\r\n")


def _slotted(obj, seen=None):
    """Every frozen slotted dataclass instance reachable from ``obj``."""
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return []
    seen.add(id(obj))
    found = []
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        if hasattr(type(obj), "__slots__"):
            found.append(obj)
        for f in dataclasses.fields(obj):
            found += _slotted(getattr(obj, f.name), seen)
    elif isinstance(obj, (list, tuple, set, frozenset)):
        for x in obj:
            found += _slotted(x, seen)
    elif isinstance(obj, dict):
        for x in obj.values():
            found += _slotted(x, seen)
    return found


def test_a_parsed_message_and_its_verdict_pickle_to_equal_objects():
    msg = parse(RAW)
    verdict = Verdict("report", 1.5, {"scam": 1.5}, (Reason("r1", "a reason", 1.5, ("scam",)),), paid=True)
    kinds = {type(o).__name__ for o in _slotted(msg) + _slotted(verdict)}
    assert {"Address", "Url", "Attachment", "AuthResults", "AuthHeader", "AuthMethod", "Reason"} <= kinds
    for obj in (msg, verdict):
        for protocol in (2, pickle.DEFAULT_PROTOCOL, pickle.HIGHEST_PROTOCOL):
            assert pickle.loads(pickle.dumps(obj, protocol=protocol)) == obj
        assert copy.deepcopy(obj) == obj


@fast_pickle
@dataclasses.dataclass(frozen=True, slots=True)
class One:
    x: int


@fast_pickle
@dataclasses.dataclass(frozen=True, slots=True)
class Two:
    a: str
    b: tuple = ()


def test_the_state_is_the_field_values_in_order_and_the_objects_stay_frozen():
    for obj in (One(3), Two("a", (One(1),))):
        back = pickle.loads(pickle.dumps(obj))
        assert back == obj and type(back) is type(obj)
        with pytest.raises(dataclasses.FrozenInstanceError):
            back.__setattr__(dataclasses.fields(back)[0].name, None)
    assert One(3).__getstate__() == (3,) and Two("a").__getstate__() == ("a", ())
