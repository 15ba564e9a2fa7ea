"""Hypothesis strategies for malformed and hostile mail (shared by the tests/unit/*/test_fuzz_*.py tests).

``messages()``          raw bytes built from random headers and parts: anything goes
``addressed_messages()`` the same hostile content, but From a plausible sender To the events address,
                        so the reply gate lets replies through and the templates really render it

Budgets: ``fuzz_examples(ci)`` is the number of examples of one fuzz test, CI size by default and
100,000 with GUARD_FULL=1 (the full size is run by hand and reported).
"""

from __future__ import annotations

import os

from hypothesis import strategies as st

HEADER_NAMES = st.sampled_from(
    ["From", "To", "Cc", "Reply-To", "Return-Path", "Subject", "Date", "Message-ID", "Content-Type", "Content-Transfer-Encoding",
     "Content-Disposition", "MIME-Version", "Authentication-Results", "List-Id", "Auto-Submitted", "Precedence", "X-Auto-Response-Suppress",
     "In-Reply-To", "References", "X-Weird"]
)
CTYPES = st.sampled_from(
    ["text/plain", "text/html", "multipart/mixed", "multipart/alternative", "multipart/report", "message/rfc822", "application/pdf",
     "message/delivery-status", "text/plain; charset=utf-16", "text/plain; charset=bogus", "text/html; charset=iso-2022-jp",
     "multipart/mixed; boundary=\"b\"", "multipart/alternative; boundary=b", "text/plain; charset=\"utf-8\"", "",
     "multipart/mixed; boundary=\"\"", "multipart/mixed; boundary=\"b\"; boundary=\"c\"", "text/plain; charset*=utf-8''%FF",
     "message/rfc822; name=\"=?utf-8?b?AAAA?=\"", "text/html; charset=\"utf-7\"", "multipart/digest; boundary=b"]
)
ENCODINGS = st.sampled_from(["7bit", "8bit", "base64", "quoted-printable", "x-uuencode", "binary", "garbage"])
HOSTILE = [
    b"=?utf-8?b?////?=", b"=?x-unknown?q?=E9=E8?=", b"<>", b"\"unterminated <a@b", b"a@b@c@d", b"=?utf-8?q?=FF=FE?=",
    b"---------- Forwarded message ---------\nFrom: x\nSubject: y", b"Begin forwarded message:\n", b"\r\n\r\n\r\n", b"\x00\x01\x02",
    b"From: <>\nSubject:", b"4111 1111 1111 1111", b"http://", b"https://xn--80ak6aa92e.com/", b"<a href='javascript:x'>",
    # template and markup injection: must come out as text, never be evaluated
    b"{{ 7*7 }}", b"{% for x in range(10**9) %}x{% endfor %}", b"{{ config.__class__.__init__.__globals__ }}", b"${jndi:ldap://x}",
    b"<script>alert(1)</script>", b"</body></html><img src=x onerror=alert(1)>", b"\xe2\x80\xae\xe2\x80\x8b", b"\xef\xbb\xbf",
    b"=?utf-8?B?" + b"QUFB" * 200 + b"?=", b"a" * 5000, b"\t \t", b"=\n=\n=", b"..\n.\n", b"From nobody Mon Jan  1 00:00:00 2026",
    b"Content-Type: multipart/mixed; boundary=b\n\n--b\n--b\n--b--", b"begin 644 x\nM\nend\n",
    b"IBAN ES91 2100 0418 4502 0005 1332", b"CVV 123 exp 12/29 card 5500 0000 0000 0004",
]
NASTY_TEXT = st.one_of(
    st.binary(max_size=300),
    st.text(max_size=300).map(lambda s: s.encode("utf-8", "surrogatepass")),
    st.sampled_from(HOSTILE),
)
SENDERS = st.sampled_from([
    b"Pat <pat@example.net>", b"\"Dr. =?utf-8?q?J=C3=B6rg?=\" <jorg@uni.example>", b"<x@y.example>", b"plain@example.org",
    b"\"{{ 7*7 }}\" <tpl@example.net>", b"\"<script>\" <s@example.net>", b"=?utf-8?b?8J+YgA==?= <emoji@example.net>",
    b"a\"b\"c <q@example.net>", b"x+tag@example.net", b"\"very long " + b"name " * 60 + b"\" <long@example.net>",
])
EVENTS_TO = st.sampled_from([b"events@crm.cat", b"Events <events@crm.cat>", b"events@crm.cat, x@y.example",
                             b"undisclosed-recipients:;, events@crm.cat"])


@st.composite
def headers(draw, max_headers: int = 12):
    out = b""
    for _ in range(draw(st.integers(0, max_headers))):
        name = draw(HEADER_NAMES).encode()
        if name == b"Content-Type":
            value = draw(CTYPES).encode()
        elif name == b"Content-Transfer-Encoding":
            value = draw(ENCODINGS).encode()
        else:
            value = draw(NASTY_TEXT)
        out += name + b": " + value.replace(b"\n", b"\n ") + draw(st.sampled_from([b"\n", b"\r\n", b"\r"]))
    return out


@st.composite
def bodies(draw):
    out = b""
    for _ in range(draw(st.integers(0, 4))):
        out += draw(st.sampled_from([b"--b\n", b"--b--\n", b"Content-Type: message/rfc822\n\n", b"Content-Type: text/html\n\n",
                                     b"--b\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: base64\n\n",
                                     b"--b\nContent-Type: message/rfc822\n\nFrom: scam@travellerpoint.example\nSubject: Room\n\n",
                                     b""]))
        out += draw(NASTY_TEXT) + b"\n"
    return out


@st.composite
def messages(draw):
    """Anything: random headers (some structural) and random parts."""
    out = draw(headers())
    out += draw(st.sampled_from([b"\n", b"\r\n", b""]))
    return out + draw(bodies())


@st.composite
def addressed_messages(draw):
    """Hostile content in a message that is addressed like real mail: From someone To the events address."""
    eol = draw(st.sampled_from([b"\n", b"\r\n"]))
    out = b"From: " + draw(SENDERS) + eol + b"To: " + draw(EVENTS_TO) + eol
    out += b"Subject: " + draw(NASTY_TEXT).replace(b"\n", b" ").replace(b"\r", b" ") + eol
    out += b"Message-ID: " + draw(st.sampled_from([b"<fz.1@example.net>", b"<>", b"no-brackets", b"<a b@c>", b""])) + eol
    out += draw(headers(max_headers=6))
    out += eol
    return out + draw(bodies())


def fuzz_examples(ci: int, full: int = 100_000) -> int:
    """Examples per fuzz test: ``ci`` by default, ``full`` with GUARD_FULL=1, or GUARD_FUZZ_EXAMPLES."""
    if os.environ.get("GUARD_FUZZ_EXAMPLES"):
        return int(os.environ["GUARD_FUZZ_EXAMPLES"])
    return full if os.environ.get("GUARD_FULL", "") not in ("", "0") else ci
