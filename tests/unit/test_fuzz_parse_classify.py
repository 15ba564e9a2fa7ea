"""Property test: generated malformed and hostile messages never make parse + classify raise."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from guard.message import parse

HEADER_NAMES = st.sampled_from(
    ["From", "To", "Cc", "Reply-To", "Return-Path", "Subject", "Date", "Message-ID", "Content-Type", "Content-Transfer-Encoding",
     "Content-Disposition", "MIME-Version", "Authentication-Results", "List-Id", "Auto-Submitted", "Precedence", "X-Auto-Response-Suppress",
     "In-Reply-To", "References", "X-Weird"]
)
CTYPES = st.sampled_from(
    ["text/plain", "text/html", "multipart/mixed", "multipart/alternative", "multipart/report", "message/rfc822", "application/pdf",
     "message/delivery-status", "text/plain; charset=utf-16", "text/plain; charset=bogus", "text/html; charset=iso-2022-jp",
     "multipart/mixed; boundary=\"b\"", "multipart/alternative; boundary=b", "text/plain; charset=\"utf-8\"", ""]
)
ENCODINGS = st.sampled_from(["7bit", "8bit", "base64", "quoted-printable", "x-uuencode", "binary", "garbage"])
NASTY_TEXT = st.one_of(
    st.binary(max_size=300),
    st.text(max_size=300).map(lambda s: s.encode("utf-8", "surrogatepass")),
    st.sampled_from([
        b"=?utf-8?b?////?=", b"=?x-unknown?q?=E9=E8?=", b"<>", b"\"unterminated <a@b", b"a@b@c@d", b"=?utf-8?q?=FF=FE?=",
        b"---------- Forwarded message ---------\nFrom: x\nSubject: y", b"Begin forwarded message:\n", b"\r\n\r\n\r\n", b"\x00\x01\x02",
        b"From: <>\nSubject:", b"4111 1111 1111 1111", b"http://", b"https://xn--80ak6aa92e.com/", b"<a href='javascript:x'>",
    ]),
)


@st.composite
def messages(draw):
    out = b""
    for _ in range(draw(st.integers(0, 12))):
        name = draw(HEADER_NAMES).encode()
        if name == b"Content-Type":
            value = draw(CTYPES).encode()
        elif name == b"Content-Transfer-Encoding":
            value = draw(ENCODINGS).encode()
        else:
            value = draw(NASTY_TEXT)
        out += name + b": " + value.replace(b"\n", b"\n ") + draw(st.sampled_from([b"\n", b"\r\n", b"\r"]))
    out += draw(st.sampled_from([b"\n", b"\r\n", b""]))
    for _ in range(draw(st.integers(0, 4))):
        out += draw(st.sampled_from([b"--b\n", b"--b--\n", b"Content-Type: message/rfc822\n\n", b"Content-Type: text/html\n\n", b""]))
        out += draw(NASTY_TEXT) + b"\n"
    return out


@settings(max_examples=10_000, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(raw=messages())
def test_parse_and_classify_never_raise(classifier, raw):
    msg = parse(raw)
    verdict = classifier.classify(msg)
    assert verdict.category in ("scam", "suspicious", "report", "inquiry", "automated", "other")
    assert isinstance(verdict.to_dict(), dict)
