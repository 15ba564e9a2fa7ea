"""The header lines guard.respond.render writes without the email package (a backlog renders a new
To, Subject, Message-ID and boundary line for every reply): byte for byte what the policy writes,
on generated values around every condition of the fast path, and the policy's own answer for
everything else."""

from __future__ import annotations

import random
import string
from email.headerregistry import Address

import pytest

from guard.respond import render

ALNUM = string.ascii_letters + string.digits
PRINTABLE = "".join(chr(c) for c in range(0x21, 0x7F))


def policy_line(name: str, value) -> bytes:
    stored, header = render._SMTP.header_store_parse(name, value)
    return render._SMTP.fold_binary(stored, header)


def _words(rnd: random.Random, length: int) -> str:
    words: list[str] = []
    while sum(map(len, words)) + len(words) < length:
        src = rnd.choice([ALNUM, PRINTABLE, "=?_ab", '()<>@,;:\\".[]', ALNUM + " "])
        words.append("".join(rnd.choice(src) for _ in range(rnd.randint(1, 12))))
    value = rnd.choice([" ", "  ", " "]).join(words)
    return " " + value if rnd.random() < 0.2 else value


def _address(rnd: random.Random) -> Address | None:
    name = " ".join("".join(rnd.choice(rnd.choice([ALNUM, ALNUM, ".'\"-_ é"])) for _ in range(rnd.randint(1, 10)))
                    for _ in range(rnd.randint(0, 4)))
    local = ".".join("".join(rnd.choice(ALNUM + "_+-") for _ in range(rnd.randint(1, 12)))
                     for _ in range(rnd.randint(1, 3)))
    domain = ".".join("".join(rnd.choice(ALNUM + "-") for _ in range(rnd.randint(1, 12)))
                      for _ in range(rnd.randint(1, 4)))
    try:
        return Address(name.strip() if rnd.random() < 0.9 else name, local, domain)
    except Exception:  # not a valid address for the email package: not a case
        return None


def generated(n: int, seed: int = 16):
    rnd = random.Random(seed)
    for _ in range(n):
        k = rnd.random()
        length = rnd.choice([1, 5, 20, 50, 60, 64, 65, 66, 67, 70, 80])
        if k < 0.35:
            yield "Subject", _words(rnd, length)
        elif k < 0.7:
            a = _address(rnd)
            if a is not None:
                yield rnd.choice(["To", "Reply-To", "From", "Cc"]), a
        elif k < 0.85:
            token = "".join(rnd.choice(ALNUM + "._-") for _ in range(rnd.randint(1, 40)))
            domain = ".".join("".join(rnd.choice(ALNUM + "-") for _ in range(rnd.randint(1, 15)))
                              for _ in range(rnd.randint(1, 4)))
            yield "Message-ID", f"<{token}@{domain}>"
        else:
            boundary = render._boundary(str(rnd.random()), rnd.randint(1, 9))
            yield "Content-Type", f'multipart/{rnd.choice(["alternative", "mixed"])}; boundary="{boundary}"'


def test_plain_lines_are_the_policys_on_generated_values():
    fast = 0
    for name, value in generated(20_000):
        line = render._plain_line(name, value)
        if line is not None:
            fast += 1
            assert line == policy_line(name, value), (name, value)
    assert fast > 5_000  # the fast path is taken for a good share of them


@pytest.mark.parametrize("name, value", [
    ("Subject", "x" * 69),  # "Subject: " + 69 = 78: fits
    ("Subject", "x" * 70),  # 79: folded (here: left long) by the policy
    ("Subject", "Re: Invitation letter (12)"),
    ("Subject", "two  spaces"),
    ("Subject", " leading"),
    ("Subject", "=?utf-8?q?encoded?="),
    ("Subject", "Caf\u00e9"),
    ("To", Address("Participant 0", "p0", "example.net")),
    ("To", Address("", "p0", "example.net")),
    ("To", Address("P. Q", "p0", "example.net")),
    ("To", Address("N\u00faria", "n", "crm.cat")),
    ("To", Address("A " * 30 + "B", "averylonglocalpart", "example.net")),
    ("Message-ID", "<guard.0123456789abcdef.1@crm.cat>"),
    ("Message-ID", "<a@b>"),
    ("Message-ID", "<" + "x" * 70 + "@example.org>"),
    ("Content-Type", 'multipart/alternative; boundary="' + render._boundary("<m@x>", 1) + '"'),
    ("Content-Type", 'text/plain; charset="utf-8"'),
])
def test_plain_lines_at_the_edges(name, value):
    line = render._plain_line(name, value)
    assert line is None or line == policy_line(name, value)
    assert render._header_line(name, value) == policy_line(name, value)


def test_a_value_the_policy_refuses_is_still_refused():
    with pytest.raises(Exception):
        render._header_line("Subject", "a\r\nBcc: x@example.org")
