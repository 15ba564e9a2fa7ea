"""Structured logs: text (``time level logger: message``) or JSON (one object per line).

Every record carries its logger name; the per-message decision log (logger
``guard.decision``) holds identifiers only: UID, UIDVALIDITY, Message-ID, category, score,
rule row, what was sent and held back, the folder. Never bodies, subjects, card numbers or
secrets. As a second line of defence a filter masks anything that looks like a payment card
number (13-19 digits passing the Luhn check) or a ``password=``/``token=``/``Bearer`` secret
in every record, whatever logger it comes from. Protocol loggers that echo LOGIN or AUTH lines
(imapclient, imaplib, aiosmtplib) are kept at WARNING.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import datetime, timezone

QUIET = ("imapclient", "imaplib", "aiosmtplib", "msal", "urllib3")

# 13-19 digits, optionally grouped by spaces or dashes, standing alone: not part of an identifier
# (a Message-ID's timestamp, a UID list, a path), which is bounded by letters, dots, @ or <>
_CARD = re.compile(r"(?<![\w.@<>/=+-])(?:\d[ -]?){12,18}\d(?![\w@<>/-]|\.[\w@])")
_SECRET = re.compile(r"(?i)\b(password|passwd|pwd|secret|token|access_token|refresh_token|client_secret)"
                     r"(\s*[=:]\s*)([^\s,;&]+)")
_BEARER = re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9._~+/=-]{8,}")
_XOAUTH = re.compile(r"\buser=[^\x01\s]*\x01auth=[^\x01]*\x01\x01")


def _luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def redact(text: str) -> str:
    def card(m: re.Match) -> str:
        digits = re.sub(r"\D", "", m.group(0))
        return "[card number]" if 13 <= len(digits) <= 19 and _luhn(digits) else m.group(0)

    text = _CARD.sub(card, text)
    text = _SECRET.sub(lambda m: f"{m.group(1)}{m.group(2)}[redacted]", text)
    text = _BEARER.sub(lambda m: f"{m.group(1)}[redacted]", text)
    return _XOAUTH.sub("[xoauth2 redacted]", text)


class RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        try:
            msg = record.getMessage()
        except Exception:  # a broken format string: let the handler report it
            return True
        clean = redact(msg)
        if clean != msg:
            record.msg, record.args = clean, None
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in ("account", "uid", "message_id"):
            if hasattr(record, key):
                out[key] = getattr(record, key)
        if record.exc_info:
            out["exception"] = redact(self.formatException(record.exc_info))
        return json.dumps(out, ensure_ascii=False)


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup_logging(level: str = "INFO", fmt: str = "text", stream=None) -> logging.Handler:
    """Configure the root logger once (replacing earlier guard handlers); returns the handler."""
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "_guard", False):
            root.removeHandler(h)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler._guard = True  # type: ignore[attr-defined]
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    handler.addFilter(RedactingFilter())
    root.addHandler(handler)
    root.setLevel(getattr(logging, level))
    for name in QUIET:
        logging.getLogger(name).setLevel(logging.WARNING)
    return handler
