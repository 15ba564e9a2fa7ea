"""Rendering replies, forwards and alerts from Jinja2 templates into ready-to-send bytes. Pure.

Templates live in ``templates/<language>/``: ``NAME.txt.j2`` (plain text, not
escaped; its first line is ``Subject: ...``) and ``NAME.html.j2`` (HTML,
autoescaped). Blocks shared by several templates start with ``_``. Variables
are checked with ``StrictUndefined``: a template that uses something the
renderer does not give fails at start-up (:meth:`Renderer.check`), not while
answering a participant.

Everything that comes from a message is treated as hostile: header values are
stripped of CR, LF and other control characters (no header injection), non-ASCII
header text is RFC 2047-encoded by the email package, card numbers are masked
in every quoted or forwarded text (:func:`guard.mail.textutil.mask_card_numbers`),
also inside an attached original, and the HTML parts are autoescaped.

The functions take values (message, verdict, identity, clock reading, Message-ID)
and return values (:class:`Rendered`); two calls with the same inputs give the
same bytes.

Languages: a reply to a participant is rendered from ``templates/<xx>/`` where
``xx`` is the language of the participant's own words (:mod:`guard.respond.languages`:
chosen by :func:`guard.respond.prepare.prepare`, else ``Verdict.language``), falling
back along the configured order (``daemon.reply_fallback_languages``; default the
institute's language ``daemon.language``, then English) when that set does not
exist; forwards, alerts and the digest use the coordinator's language
(``daemon.coordinator_language``), with the same fallback. Each language is a
complete, hand-written set (no run-time translation). A fact sheet text given per
language is shown in the reply's language, else in the first fallback language it
has, and the reply then says which language that text is in (``text_language``). Event facts: the event a message is about
(:func:`guard.respond.facts.detect_event` over ``Identity.events``) fills ``event`` and
the event's coordinator; without one, ``event`` is none and the institute's
facts are used.
"""

from __future__ import annotations

import email
import email.charset
import email.encoders
import email.generator
import email.header
import email.headerregistry
import email.message
import email.policy
import email.quoprimime
import email.utils
import functools
import hashlib
import io
import re
import weakref
from dataclasses import dataclass, field
from dataclasses import replace as _replace
from datetime import datetime
from email.headerregistry import Address
from email.message import EmailMessage
from html import escape as html_escape
from pathlib import Path

import jinja2

from guard.respond import facts
from guard.respond import languages as reply_languages
from guard.mail.message import ParsedMessage
from guard.mail.textutil import find_card_numbers, mask_card_numbers
from guard.classification.verdict import Verdict

#: what every template may use (documented in each template's header comment)
TEMPLATE_NAMES = ("inquiry_ack", "report_verdict", "report_paid", "forward_summary", "coordinator_alert",
                  "breaker_alert")
EXCERPT_CHARS = 1500
_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029\u0085]+")


class _HeaderClasses(email.headerregistry.HeaderRegistry):
    """The email package's header registry, building each header class once: the stdlib's
    ``__getitem__`` makes a new class with ``type()`` for every header it parses or counts."""

    def __init__(self) -> None:
        super().__init__()
        self._made: dict[type, type] = {}

    def __getitem__(self, name):
        cls = self.registry.get(name.lower(), self.default_class)
        made = self._made.get(cls)
        if made is None:
            made = self._made[cls] = super().__getitem__(name)
        return made


_SMTP = email.policy.SMTP.clone(max_line_length=78, header_factory=_HeaderClasses())
#: RFC 2045 caps quoted-printable lines at 76 characters (headers fold at RFC 5322's 78)
QP_LINE = 76
#: the same, but a header stored with set_raw (MessageIds, already folded) is written as it is
_SMTP_RAW = _SMTP.clone(refold_source="none")
#: a message identifier guard repeats in In-Reply-To / References: printable ASCII, no spaces or
#: angle brackets inside, short enough for a header line (RFC 5322 section 3.6.4)
_MSG_ID = re.compile(r"<[\x21-\x3b\x3d\x3f-\x7e]{1,900}>")


class MessageIds(tuple):
    """The value of an In-Reply-To or References header: message identifiers, written as they are
    and folded only between them. The email package would turn a long identifier (Outlook's run
    past 78 characters) into an RFC 2047 encoded word, which no mail client threads on."""

    def folded(self, name: str) -> str:
        lines, line = [], f"{name}:"
        for mid in self:
            if len(line) + 1 + len(mid) > 78 and line != f"{name}:":
                lines.append(line)
                line = ""
            line += " " + mid
        lines.append(line)
        return "\r\n".join(lines)


def clean_header(value: str, limit: int = 300) -> str:
    """One line of header text: CR, LF and other control characters become single spaces."""
    return _CONTROL.sub(" ", value or "").strip()[:limit]


#: the subject of the participant's message as it appears in a reply: at most this many characters
REPLY_SUBJECT_CHARS = 80
_SCHEME = re.compile(r"(?i)\b(h)tt(ps?)(:)|\b(f)t(p)(:)")
#: a host name: labels ending in a dot, then a top-level label with a letter (linear: every
#: repetition ends at a dot)
_HOSTNAME = re.compile(r"(?<![\w.-])(?:[^\W_][\w-]{0,62}\.)+[^\W\d_][\w-]{0,62}(?![\w-])")


def defang(text: str, limit: int | None = None) -> str:
    """Sender-written text made inert for a reply: ``http:`` -> ``hxxp[:]``, dots of host names ->
    ``[.]`` (``www[.]evil[.]example``, ``desk@stays[.]example``), control characters removed, at
    most ``limit`` characters (cut with an ellipsis). No mail client makes a link of the result."""
    text = clean_header(text, 10_000)
    if limit is not None and len(text) > limit:
        text = text[: limit - 1].rstrip() + "\u2026"
    text = _SCHEME.sub(lambda m: f"{m[1]}xx{m[2]}[:]" if m[1] else f"{m[4]}x{m[5]}[:]", text)
    return _HOSTNAME.sub(lambda m: m.group().replace(".", "[.]"), text)


def _defang_for_reply(ctx: dict) -> dict:
    """The template values of a reply to a participant: everything the sender wrote, defanged."""
    orig = ctx["original"]
    ctx["original"] = {**orig, "subject": defang(orig["subject"], REPLY_SUBJECT_CHARS),
                       "excerpt": defang(orig["excerpt"], EXCERPT_CHARS),
                       "message_id": "", "attachments": [defang(a, 60) for a in orig["attachments"]]}
    ctx["participant"] = {k: defang(v, 100) for k, v in ctx["participant"].items()}
    fwd = ctx["forwarded"]
    if fwd is not None:
        ctx["forwarded"] = {**fwd, "subject": defang(fwd["subject"], REPLY_SUBJECT_CHARS),
                            "excerpt": defang(fwd["excerpt"], 600),
                            "sender": {k: defang(v, 100) for k, v in fwd["sender"].items()}}
    return ctx


def _first_sentence_lines(text: str, limit: int) -> str:
    text = text.strip()
    if len(text) <= limit:
        return text
    cut = text.rfind("\n", 0, limit)
    return (text[: cut if cut > limit // 2 else limit]).rstrip() + "\n[...]"


@dataclass(frozen=True)
class Identity:
    """Who guard writes as, and to whom it routes: from validated settings."""

    institute_name: str
    short_name: str
    events_address: str
    coordinator_name: str
    coordinator_address: str
    website: str | None = None
    scam_warning_url: str | None = None
    code_of_conduct_url: str | None = None
    loop_header: str = "X-Guard-Loop"
    #: the known events (config [[events]] and fact sheets), for :func:`guard.respond.facts.detect_event`
    events: tuple = field(default=(), compare=False)
    #: the institute's official sender domains (named in replies)
    official_domains: tuple = ()

    @property
    def domain(self) -> str:
        return self.events_address.rpartition("@")[2]

    @property
    def from_name(self) -> str:
        return f"{self.short_name} events office"

    @classmethod
    def from_settings(cls, settings) -> "Identity":
        inst = settings.institute
        return cls(
            institute_name=inst.name,
            short_name=inst.short_name,
            events_address=inst.events_address,
            coordinator_name=inst.coordinator.name,
            coordinator_address=inst.coordinator.address,
            website=inst.website,
            scam_warning_url=inst.scam_warning_url,
            code_of_conduct_url=inst.code_of_conduct_url,
            loop_header=settings.daemon.loop_header,
            events=tuple(settings.events),
            official_domains=tuple(inst.official_domains),
        )

    def with_events(self, events) -> "Identity":
        return _replace(self, events=tuple(events))


@dataclass(frozen=True)
class Rendered:
    """A message ready for the outbox."""

    kind: str  # reply, forward, alert
    template: str
    recipient: str
    envelope_from: str  # "" = the null sender
    message_id: str
    raw: bytes
    headers: dict = field(default_factory=dict, compare=False)


class _Loaded(jinja2.BaseLoader):
    """One language's template sources, read into memory when the :class:`Renderer` is built.

    Never re-read: a template edited on disk under a running daemon changes nothing until the
    next start or reload (SIGHUP), which builds and checks a new Renderer. (Read lazily, an
    edited template reached the daemon half-way: a new include beside an old caller, a variable
    the renderer does not give, i.e. UndefinedError while answering a participant.)"""

    def __init__(self, directory: Path, sources: dict[str, str]) -> None:
        self.directory = directory
        self.sources = sources

    def get_source(self, environment, template):
        source = self.sources.get(template)
        if source is None:
            raise jinja2.TemplateNotFound(template)
        return source, str(self.directory / template), lambda: True

    def list_templates(self) -> list[str]:
        return sorted(self.sources)


def _read_sources(directory: Path) -> dict[str, str]:
    """Every template file under ``directory`` by its loader name ("x.txt.j2", "sub/y.html.j2"),
    read as jinja2's FileSystemLoader reads it (UTF-8, universal newlines). A file that is not
    UTF-8 (an editor's swap file) is left out: asked for, it is a TemplateNotFound."""
    out: dict[str, str] = {}
    for path in sorted(directory.rglob("*")):
        if not path.is_file():
            continue
        try:
            out[path.relative_to(directory).as_posix()] = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
    return out


class Renderer:
    """The template environments (one per language), built once, from templates read into memory
    at construction (see :class:`_Loaded`): what :meth:`check` validated is what is rendered."""

    def __init__(self, templates_dir: Path, default_language: str = "en", *, fallback=None,
                 coordinator_language: str | None = None,
                 bytecode_cache: jinja2.BytecodeCache | None = None) -> None:
        self.root = Path(templates_dir)
        #: where compiled templates are kept between processes (see :class:`TemplateCodeCache`); None: not kept
        self.bytecode_cache = bytecode_cache
        self.default_language = default_language
        #: the fallback order of replies (a language without templates, or one that cannot be told)
        self.fallback = tuple(dict.fromkeys(fallback or (default_language, "en")))
        #: the language of forwards, alerts and the digest (falls back like a reply)
        self.coordinator_language = coordinator_language or default_language
        self._envs: dict[str, jinja2.Environment] = {}
        if not (self.root / default_language).is_dir():
            from guard.errors import ConfigError

            raise ConfigError(f"{self.root / default_language}: templates for language {default_language!r} not found")
        langs = {p.name for p in self.root.iterdir() if p.is_dir() and re.fullmatch(r"[a-z]{2}", p.name)}
        langs.add(default_language)
        self._sources = {lang: _read_sources(self.root / lang) for lang in sorted(langs)}
        self._languages = sorted(lang for lang in self._sources if re.fullmatch(r"[a-z]{2}", lang))
        self._templates = {
            lang: frozenset(n[: -len(".txt.j2")] for n in src if n.endswith(".txt.j2") and "/" not in n
                            and not n.startswith("_") and n[: -len(".txt.j2")] + ".html.j2" in src)
            for lang, src in self._sources.items()
        }
        self._compiled: dict[tuple[str, str], jinja2.Template] = {}

    def languages(self) -> list[str]:
        return list(self._languages)

    def env(self, language: str) -> jinja2.Environment:
        if language not in self._envs:
            self._envs[language] = jinja2.Environment(
                loader=_Loaded(self.root / language, self._sources.get(language, {})),
                undefined=jinja2.StrictUndefined,
                autoescape=jinja2.select_autoescape(enabled_extensions=("html.j2", "html"), default_for_string=False),
                keep_trailing_newline=True,
                trim_blocks=True,
                lstrip_blocks=True,
                auto_reload=False,
                bytecode_cache=self.bytecode_cache,
            )
            env = self._envs[language]
            env.filters["event_dates"] = lambda ev, _l=language: facts.format_dates(ev["start"], ev["end"], _l) if ev else ""
            env.filters["local"] = lambda value, _l=language: facts.localised(value, _l, self.fallback) or ""
            # the language of a fact's text when it is not the template's own (the sheet lacks it), else ""
            env.filters["text_language"] = lambda value, _l=language: (
                lambda lang: lang if lang and lang != _l else "")(facts.localised_in(value, _l, self.fallback)[1])
        return self._envs[language]

    def _template(self, lang: str, filename: str) -> jinja2.Template:
        key = (lang, filename)
        t = self._compiled.get(key)
        if t is None:
            t = self._compiled[key] = self.env(lang).get_template(filename)
        return t

    def templates(self, language: str | None = None) -> frozenset[str]:
        return self._templates.get(language or self.default_language, frozenset())

    def pick_language(self, language: str | None, name: str | None = None) -> str:
        """``language`` when it has templates (``name``, when given), else the first of the fallback
        order that has, else the default language."""
        for lang in (language, *self.fallback):
            if lang and lang in self._sources and (name is None or name in self.templates(lang)):
                return lang
        return self.default_language

    def reply_language(self, msg: ParsedMessage, template: str) -> "reply_languages.LanguageChoice":
        """The language of a reply to ``msg`` and why (the participant's own words; else the fallback)."""
        offered = [lang for lang in self._languages if template in self.templates(lang)]
        return reply_languages.choose_for(msg, offered, self.fallback)

    def render(self, name: str, context: dict, language: str | None = None) -> tuple[str, str, str]:
        """(subject, text, html) of a template. Raises jinja2 errors for broken templates."""
        lang = self.pick_language(language, name)
        text = self._template(lang, f"{name}.txt.j2").render(context)
        html = self._template(lang, f"{name}.html.j2").render(context)
        first, _, body = text.partition("\n")
        if not first.startswith("Subject:"):
            raise jinja2.TemplateError(f"{lang}/{name}.txt.j2 must start with a 'Subject: ...' line")
        subject = clean_header(first[len("Subject:"):])
        return subject, mask_card_numbers(body.lstrip("\n")), mask_card_numbers(html)

    def check(self, names: frozenset[str] | tuple[str, ...] = TEMPLATE_NAMES) -> None:
        """Render every template once with sample values (start-up check; raises ConfigError)."""
        from guard.errors import ConfigError

        samples = (_sample_context(True), _sample_context(False))
        for lang in self.languages():
            for name in names:
                if name not in self.templates(lang):
                    if lang == self.default_language:
                        raise ConfigError(f"{self.root / lang}: template {name} (.txt.j2 and .html.j2) missing")
                    continue
                try:
                    for sample in samples:
                        self.render(name, sample, lang)
                except jinja2.TemplateError as exc:
                    raise ConfigError(f"{self.root / lang / name}: {type(exc).__name__}: {exc}") from None


class TemplateCodeCache(jinja2.FileSystemBytecodeCache):
    """Compiled templates kept in ``directory`` (the daemon: in guard's cache, see guard/cache.py),
    so that a start loads them instead of compiling every template of every language again (about
    0.3 s of each ``guard run``). Jinja keys an entry by the template's name and file and checks it
    against a hash of the source, so an edited template is compiled afresh; the directory name
    carries what else the code depends on (Jinja's version and the options of :meth:`Renderer.env`).
    Entries are written whole (a temporary file renamed); one that cannot be read is compiled again,
    and one that cannot be written is not kept: the cache is never needed."""

    #: the Environment options of Renderer.env that change the compiled code (part of the directory name)
    OPTIONS = "strict|autoescape=html.j2,html|keep_trailing_newline|trim_blocks|lstrip_blocks"

    @classmethod
    def under(cls, base: Path | None) -> "TemplateCodeCache | None":
        """The cache in a directory under ``base`` (None without a base, or when it cannot be made)."""
        if base is None:
            return None
        key = hashlib.sha256(f"{jinja2.__version__}|{cls.OPTIONS}".encode()).hexdigest()[:16]
        directory = Path(base) / f"templates-{key}"
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError:
            return None
        return cls(str(directory))

    def load_bytecode(self, bucket) -> None:
        try:
            super().load_bytecode(bucket)
        except Exception:  # damaged: compiled again (and written anew)
            bucket.reset()

    def dump_bytecode(self, bucket) -> None:
        try:
            super().dump_bytecode(bucket)
        except OSError:  # not writable: not kept
            pass


# -- the values templates see ------------------------------------------------------------


def _verdict_view(v: Verdict | None) -> dict | None:
    if v is None:
        return None
    return {
        "category": v.category,
        "score": round(v.score, 1),
        "paid": v.paid,
        "reasons": [{"rule": r.rule, "description": r.description, "score": round(r.score, 1)}
                    for r in v.reasons if r.score > 0][:8],
        # the kinds of scam signal found, heaviest first ("payment", "housing", "sender", ...): the
        # templates say them in plain words in their own language
        "signals": list(dict.fromkeys(t for r in v.reasons if r.score > 0 for t in r.tags
                                      if t not in ("scam", "report", "paid", "inquiry", "automated")))[:6],
        "inner": _verdict_view(v.inner),
    }


def _event_view(event) -> dict | None:
    if event is None:
        return None
    return {
        "id": event.id, "name": event.name, "start": event.start, "end": event.end, "venue": event.venue,
        "url": event.url, "registration": event.registration, "lodging": event.lodging,
        "official_domains": list(event.official_domains),
    }


def _person(addr) -> dict:
    if addr is None:
        return {"name": "", "address": "", "display": "(unknown sender)"}
    return {"name": clean_header(addr.name, 100), "address": addr.addr,
            "display": clean_header(str(addr), 200)}


#: (events, weak reference to the message, event) of the last detection: the reply and the forward
#: (or alert) of one message ask for the same one. Both are immutable (frozen dataclasses, tuples);
#: the weak reference keeps no message alive, and a dead one matches nothing.
_last_event: tuple | None = None


def _detect_event(events: tuple, msg: ParsedMessage):
    global _last_event
    last = _last_event
    if last is not None and last[0] is events and last[1]() is msg:
        return last[2]
    event = facts.detect_event(events, msg)
    try:
        _last_event = (events, weakref.ref(msg), event)
    except TypeError:  # not weak-referenceable (a stand-in object): no memo
        _last_event = None
    return event


def context_for(msg: ParsedMessage, verdict: Verdict, ident: Identity, *, review: bool = False,
                breaker: dict | None = None, held: str | None = None) -> dict:
    inner = msg.forwarded[0] if msg.forwarded else None
    event = _detect_event(ident.events, msg)
    office = {"name": ident.coordinator_name, "address": ident.coordinator_address}
    contact = ({"name": event.coordinator.name, "address": event.coordinator.address}
               if event is not None and event.coordinator is not None else office)
    return {
        "institute": {
            "name": ident.institute_name, "short_name": ident.short_name, "website": ident.website,
            "scam_warning_url": ident.scam_warning_url, "code_of_conduct_url": ident.code_of_conduct_url,
            "events_address": ident.events_address,
        },
        # who to write to about this message: the event's coordinator, else the institute's
        "coordinator": contact,
        # who guard forwards to (the events office's coordinator)
        "office_coordinator": office,
        "event": _event_view(event),
        "official_domains": list(dict.fromkeys([*(event.official_domains if event else ()),
                                                *ident_domains(ident)])),
        "participant": _person(msg.from_),
        "original": {
            "subject": mask_card_numbers(clean_header(msg.subject, 200)) or "(no subject)",
            "date": email.utils.format_datetime(msg.date) if msg.date else "(no date)",
            "message_id": clean_header(msg.message_id or "", 200),
            "excerpt": mask_card_numbers(_first_sentence_lines(msg.text, EXCERPT_CHARS)),
            "attachments": [clean_header(a.filename or a.content_type, 100) for a in msg.attachments][:10],
        },
        "forwarded": None if inner is None else {
            "sender": _person(inner.from_),
            "subject": mask_card_numbers(clean_header(inner.subject, 200)) or "(no subject)",
            "excerpt": mask_card_numbers(_first_sentence_lines(inner.text, 600)),
        },
        "verdict": _verdict_view(verdict),
        "review": review,
        "breaker": breaker,
        # why guard did not answer the participant itself (unauthenticated, a loop, ...), for the coordinator
        "held": clean_header(held, 500) if held else None,
    }


def ident_domains(ident: Identity) -> list[str]:
    return list(ident.official_domains) or [ident.domain]


def _sample_context(with_event: bool = True) -> dict:
    import datetime as dt

    from guard.mail.message import parse
    from guard.settings import Event
    from guard.classification.verdict import Reason

    msg = parse(b"From: Pat Example <pat@example.org>\r\nTo: events@example.org\r\nSubject: Sample Workshop\r\n"
                b"Date: Mon, 05 Jan 2026 10:00:00 +0000\r\nMessage-ID: <s@example.org>\r\n\r\nHello.\r\n")
    inner = Verdict("scam", 7.0, reasons=(Reason("R", "Asks for card details", 5.0, ("scam", "payment")),))
    verdict = Verdict("report", 0.0, inner=inner, paid=True)
    event = Event(id="sample", name="Sample Workshop", start=dt.date(2026, 1, 7), end=dt.date(2026, 1, 9),
                  venue="Main hall", url="https://example.org/ws", official_domains=["example.org"],
                  registration="Register on the page.", lodging={"en": "See the page."})
    ident = Identity("Sample Institute", "SI", "events@example.org", "Coordinator", "coord@example.org",
                     "https://example.org", "https://example.org/scam", "https://example.org/coc",
                     events=(event,) if with_event else ())
    ctx = context_for(msg, verdict, ident, review=True, breaker={"count": 60, "max": 60},
                      held="unauthenticated: no Authentication-Results header" if with_event else None)
    ctx["forwarded"] = {"sender": _person(msg.from_), "subject": "Sample", "excerpt": "Text"}
    return ctx


# -- building the messages ---------------------------------------------------------------


def _boundary(seed: str, n: int) -> str:
    return f"=_guard_{hashlib.sha256(f'{seed}/{n}'.encode()).hexdigest()[:32]}"


def _base_headers(ident: Identity, *, to: Address, subject: str, now: datetime, message_id: str,
                  auto: str, reply_to: Address | None = None) -> list[tuple[str, object]]:
    """The headers every message guard writes starts with, in order, as (name, value) pairs."""
    h: list[tuple[str, object]] = [("From", _from_address(ident.from_name, ident.events_address)), ("To", to)]
    if reply_to is not None:
        h.append(("Reply-To", reply_to))
    h += [("Subject", clean_header(subject, 250)), ("Date", email.utils.format_datetime(now)),
          ("Message-ID", message_id), ("Auto-Submitted", auto), ("X-Auto-Response-Suppress", "All"),
          (ident.loop_header, ident.events_address)]
    return h


@functools.lru_cache(maxsize=8)
def _from_address(name: str, addr_spec: str) -> Address:
    """The From of every message guard writes (an Address is immutable; parsing its addr-spec is not free)."""
    return Address(name, addr_spec=addr_spec)


def _base(ident: Identity, *, to: Address, subject: str, now: datetime, message_id: str,
          auto: str, reply_to: Address | None = None) -> EmailMessage:
    m = EmailMessage(policy=_SMTP)
    for name, value in _base_headers(ident, to=to, subject=subject, now=now, message_id=message_id, auto=auto,
                                      reply_to=reply_to):
        m[name] = value
    return m


def _address(name: str, addr: str) -> Address:
    local, _, domain = addr.partition("@")
    return Address(clean_header(name, 100), local, domain)


def _alternative(m: EmailMessage, text: str, html: str, seed: str) -> None:
    headers_policy = m.policy
    m.policy = headers_policy.clone(max_line_length=QP_LINE)  # the policy's width is the QP line width
    try:
        m.set_content(text, subtype="plain", charset="utf-8", cte="quoted-printable")
        m.add_alternative(html, subtype="html", charset="utf-8", cte="quoted-printable")
    finally:
        m.policy = headers_policy
    m.set_boundary(_boundary(seed, 1))


# -- the same bytes, without the email package's object model -----------------------------
#
# Building an EmailMessage (header registry objects for every header, set_content, add_alternative,
# set_boundary re-parsing Content-Type, then the generator folding everything again) cost ~1.5 ms
# per reply. _alternative_bytes writes exactly what ``_base`` + extra headers + ``_alternative`` +
# ``as_bytes()`` give -- tests/unit/respond/test_render_fast.py compares the two byte for byte -- using
# the email package only where it decides something: every header line is still parsed and folded
# by the policy (header_store_parse + fold_binary: RFC 2047 encoded words, folding, the refusal of
# CR/LF), memoised by value, and the bodies are quoted-printable encoded by email.quoprimime as
# set_content does. What is written by hand is the fixed multipart/alternative skeleton.

#: folded header lines are memoised by value (functools.lru_cache, bounded): the From,
#: Auto-Submitted, loop and MIME headers are the same for every message, Date the same for a
#: second, To and Subject for a sender or a campaign
HEADER_MEMO_SIZE = 2048


def _header_line(name: str, value) -> bytes:
    """``name: value`` as EmailMessage(policy=_SMTP)[name] = value and BytesGenerator write it
    (:class:`MessageIds` as they are, folded between identifiers)."""
    if isinstance(value, MessageIds):
        return value.folded(name).encode("ascii") + b"\r\n"
    if isinstance(value, str):
        return _text_line(name, value)
    if type(value) is Address:
        return _address_line(name, value.display_name, value.username, value.domain)
    return _folded_line(name, value)


@functools.lru_cache(maxsize=HEADER_MEMO_SIZE)
def _text_line(name: str, value: str) -> bytes:
    return _folded_line(name, value)


@functools.lru_cache(maxsize=HEADER_MEMO_SIZE)
def _address_line(name: str, display_name: str, username: str, domain: str) -> bytes:
    return _folded_line(name, Address(display_name, username, domain))


def _folded_line(name: str, value) -> bytes:
    line = _plain_line(name, value)
    return _policy_line(name, value) if line is None else line


def clear_memos() -> None:
    """Forget every memoised header line and detected event (benchmarks of the cold path)."""
    global _last_event
    _text_line.cache_clear()
    _address_line.cache_clear()
    _from_address.cache_clear()
    _last_event = None


# -- header lines the policy would write unchanged ----------------------------------------
#
# Most lines of a reply are new for every message (its Message-ID, the multipart boundary, the
# participant's address and subject), so the memo above rarely has them, and parsing and folding
# each with the email package costs more than the rest of the message. Where the policy's output is
# known exactly -- a line of plain ASCII words that fits, which it writes as it is, and the
# boundary line whose shape never changes -- it is written here; anything else (non-ASCII, specials
# that need quoting, what looks like an encoded word, a line to fold) goes to the policy as before.
# tests/unit/daemon/test_backlog_render.py compares the two on generated values.

#: printable ASCII words separated by single spaces (no leading or trailing space)
_PLAIN_TEXT = re.compile(r"[\x21-\x7e]+(?: [\x21-\x7e]+)*")
#: a display name of letters and digits only: an RFC 5322 phrase of atoms, never quoted
_PLAIN_NAME = re.compile(r"[A-Za-z0-9]+(?: [A-Za-z0-9]+)*")
#: a local part and a domain the address header writes as they are (dot-atoms of common characters)
_PLAIN_LOCAL = re.compile(r"[A-Za-z0-9_+-]+(?:\.[A-Za-z0-9_+-]+)*")
_PLAIN_DOMAIN = re.compile(r"[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*")
#: guard's own Message-IDs: <guard.TOKEN.N@domain>
_PLAIN_MSG_ID = re.compile(r"<[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*>")
#: the multipart boundary header of _alternative_bytes, its boundary from _boundary()
_MULTIPART = re.compile(r'multipart/(alternative|mixed); boundary="=_guard_([0-9a-f]{32})"')
_BOUNDARY_SHAPE = "0" * 32
#: header lines fit in 78 characters (the policy's max_line_length) unfolded
_LINE_MAX = 78


def _plain_line(name: str, value) -> bytes | None:
    """The line the policy writes for ``name: value`` when it writes it unchanged (or, for the
    boundary line, folded the same way for every boundary); None: ask the policy."""
    lname = name.lower()
    if type(value) is Address and lname in ("to", "reply-to", "from", "cc"):
        local, domain, display = value.username, value.domain, value.display_name
        if not (_PLAIN_LOCAL.fullmatch(local) and _PLAIN_DOMAIN.fullmatch(domain)):
            return None
        if display:
            if not _PLAIN_NAME.fullmatch(display):
                return None
            text = f"{name}: {display} <{local}@{domain}>"
        else:
            text = f"{name}: {local}@{domain}"
        return (text + "\r\n").encode("ascii") if len(text) <= _LINE_MAX else None
    if not isinstance(value, str):
        return None
    if lname == "subject":
        if "=?" in value or not _PLAIN_TEXT.fullmatch(value):
            return None
    elif lname == "message-id":
        if not _PLAIN_MSG_ID.fullmatch(value):
            return None
    elif lname == "content-type":
        m = _MULTIPART.fullmatch(value)
        if m is None or name != "Content-Type":
            return None
        # the policy's line for a boundary of the same shape (every boundary folds alike)
        return _MULTIPART_LINES[m.group(1)].replace(_BOUNDARY_SHAPE.encode("ascii"), m.group(2).encode("ascii"))
    else:
        return None
    text = f"{name}: {value}"
    return (text + "\r\n").encode("ascii") if len(text) <= _LINE_MAX else None


def _policy_line(name: str, value) -> bytes:
    stored_name, header = _SMTP.header_store_parse(name, value)  # raises on CR/LF in a str value
    return _SMTP.fold_binary(stored_name, header)


#: the Content-Type lines of guard's multipart messages, folded by the policy, with a boundary of the shape
_MULTIPART_LINES = {subtype: _policy_line("Content-Type", f'multipart/{subtype}; boundary="=_guard_{_BOUNDARY_SHAPE}"')
                    for subtype in ("alternative", "mixed")}


def _header_block(headers: list[tuple[str, object]]) -> bytes:
    counts: dict[str, int] = {}
    out = []
    for name, value in headers:
        max_count = _SMTP.header_max_count(name)
        if max_count:  # as EmailMessage.__setitem__: at most one From, Subject, ...
            lname = name.lower()
            if counts.get(lname, 0) >= max_count:
                raise ValueError(f"There may be at most {max_count} {name} headers in a message")
            counts[lname] = counts.get(lname, 0) + 1
        out.append(_header_line(name, value))
    return b"".join(out)


def _qp_body(content: str) -> bytes:
    """A text part's body as contentmanager.set_text_content(cte="quoted-printable") encodes it and the
    generator writes it (CRLF line ends)."""
    lines = content.encode("utf-8").splitlines()
    # CRLF joins the lines at once: the body has no CR left, so this is the generator's normalisation
    data = email.quoprimime.body_encode((b"\n".join(lines) + b"\n").decode("latin-1"), QP_LINE, eol="\r\n")
    return data.encode("ascii", "surrogateescape")


_CTE_QP = _header_line("Content-Transfer-Encoding", "quoted-printable")
_TEXT_PART_HEAD = _header_line("Content-Type", 'text/plain; charset="utf-8"') + _CTE_QP + b"\r\n"
# add_alternative makes the HTML part an EmailMessage too, whose set_content adds MIME-Version
_HTML_PART_HEAD = (_header_line("Content-Type", 'text/html; charset="utf-8"') + _CTE_QP
                   + _header_line("MIME-Version", "1.0") + b"\r\n")


def _alternative_bytes(headers: list[tuple[str, object]], text: str, html: str, seed: str) -> bytes:
    """The message with ``headers`` and a text + HTML multipart/alternative body, ready to send:
    the bytes of EmailMessage(policy=_SMTP) with those headers, then _alternative(), then as_bytes()."""
    if any(name.lower().startswith("content-") or name.lower() == "mime-version" for name, _ in headers):
        # set_content and make_alternative move, replace or skip these (only a loop_header so named
        # can bring one): the email package itself, as before
        m = EmailMessage(policy=_SMTP_RAW)
        for name, value in headers:
            if isinstance(value, MessageIds):
                m.set_raw(name, value.folded(name)[len(name) + 2:])
            else:
                m[name] = value
        _alternative(m, text, html, seed)
        return m.as_bytes()
    boundary = _boundary(seed, 1).encode("ascii")
    head = _header_block([*headers, ("MIME-Version", "1.0"),
                          ("Content-Type", f'multipart/alternative; boundary="{boundary.decode()}"')])
    return b"".join((head, b"\r\n--", boundary, b"\r\n", _TEXT_PART_HEAD, _qp_body(text),
                     b"\r\n--", boundary, b"\r\n", _HTML_PART_HEAD, _qp_body(html),
                     b"\r\n--", boundary, b"--\r\n"))


def _shadow_note(shadow_for: str | None, text: str, html: str) -> tuple[str, str]:
    if not shadow_for:
        return text, html
    note = f"[guard shadow mode: this automatic reply would have gone to {shadow_for}]\n\n"
    return note + text, f"<p><em>{html_escape(note.strip())}</em></p>\n" + html


def build_reply(renderer: Renderer, template: str, *, msg: ParsedMessage, verdict: Verdict, ident: Identity,
                now: datetime, message_id: str, shadow_for_coordinator: bool = False,
                envelope_from: str = "", language: str | None = None) -> Rendered:
    """An automatic reply to the participant (the outer sender; never a forwarded message's sender).

    ``language``: the reply's language (:meth:`Renderer.reply_language`); None: the message's (``msg.language``).
    ``envelope_from`` "" is the null sender (RFC 3834 section 3.3), so a bounce of the reply goes nowhere."""
    to_addr = msg.from_.addr if msg.from_ else ""
    ctx = _defang_for_reply(context_for(msg, verdict, ident))
    lang = renderer.pick_language(language or msg.language, template)
    subject, text, html = renderer.render(template, ctx, lang)
    recipient, shadow_for = to_addr, None
    if shadow_for_coordinator:
        recipient, shadow_for = ident.coordinator_address, to_addr
        subject = f"[shadow: to {clean_header(to_addr, 100)}] {subject}"
    text, html = _shadow_note(shadow_for, text, html)
    to = (_address(ident.coordinator_name, recipient) if shadow_for
          else _address(defang(msg.from_.name, 60) if msg.from_ else "", recipient))
    headers = _base_headers(ident, to=to, subject=subject, now=now, message_id=message_id, auto="auto-replied")
    if msg.message_id and _MSG_ID.fullmatch(msg.message_id):
        refs = [r for r in msg.references if _MSG_ID.fullmatch(r)][-10:]
        headers += [("In-Reply-To", MessageIds([msg.message_id])), ("References", MessageIds([*refs, msg.message_id]))]
    raw = _alternative_bytes(headers, text, html, message_id)
    return Rendered("reply", template, recipient, envelope_from, message_id, raw,
                    {"shadow_for": shadow_for, "language": lang})


def _with_original(inner: bytes, raw: bytes, seed: str) -> bytes:
    """multipart/mixed: the rendered text+HTML, then the original as message/rfc822 (card numbers masked)."""
    original = mask_original(raw)
    original = re.sub(rb"\r?\n", b"\r\n", original)
    if not original.endswith(b"\r\n"):
        original += b"\r\n"
    boundary = _boundary(seed, 2)
    n = 3
    while boundary.encode() in original:
        boundary, n = _boundary(seed, n), n + 1
    head, _, body = inner.partition(b"\r\n\r\n")
    outer_headers, part_headers = [], []
    for line in _unfold(head):
        name = line.split(b":", 1)[0].strip().lower()
        (part_headers if name in (b"content-type", b"content-transfer-encoding") else outer_headers).append(line)
    outer_headers = [h for h in outer_headers if h.split(b":", 1)[0].strip().lower() != b"mime-version"]
    cte = b"7bit" if original.isascii() else b"8bit"  # isascii: C speed (a 50 MB original took 13 s)
    out = io.BytesIO()
    for h in outer_headers:
        out.write(h + b"\r\n")
    out.write(b"MIME-Version: 1.0\r\n")
    out.write(b'Content-Type: multipart/mixed; boundary="' + boundary.encode() + b'"\r\n\r\n')
    out.write(b"This is a multi-part message in MIME format.\r\n")
    out.write(b"--" + boundary.encode() + b"\r\n")
    for h in part_headers:
        out.write(h + b"\r\n")
    out.write(b"\r\n" + body.rstrip(b"\r\n") + b"\r\n")
    out.write(b"--" + boundary.encode() + b"\r\n")
    out.write(b"Content-Type: message/rfc822\r\n")
    out.write(b'Content-Disposition: attachment; filename="original.eml"\r\n')
    out.write(b"Content-Transfer-Encoding: " + cte + b"\r\n\r\n")
    out.write(original)
    out.write(b"--" + boundary.encode() + b"--\r\n")
    return out.getvalue()


def _unfold(head: bytes) -> list[bytes]:
    lines: list[bytes] = []
    for line in head.split(b"\r\n"):
        if line[:1] in (b" ", b"\t") and lines:
            lines[-1] += b"\r\n" + line
        elif line:
            lines.append(line)
    return lines


MAX_LINE = 998


def _qp_utf8() -> email.charset.Charset:
    cs = email.charset.Charset("utf-8")
    cs.body_encoding = email.charset.QP
    return cs


def _long_lines(data: bytes) -> bool:
    return any(len(line) > MAX_LINE for line in data.splitlines())


#: headers a person reads; identifiers (Message-ID, References, Received, DKIM...) hold long
#: digit runs that can pass the Luhn check and must stay intact for threading
_HUMAN_HEADERS = frozenset({"subject", "from", "to", "cc", "reply-to", "sender", "comments", "keywords", "thread-topic"})


def _mask_headers(part) -> bool:
    """Mask card numbers in the human-readable headers of one message or part (compat32); True when something changed."""
    changed = False
    for name in dict.fromkeys(k for k, _ in part.items() if k.lower() in _HUMAN_HEADERS):
        values = part.get_all(name) or []
        decoded = []
        for v in values:
            try:
                decoded.append(str(email.header.make_header(email.header.decode_header(str(v)))))
            except Exception:
                decoded.append(str(v))
        if not any(find_card_numbers(d) for d in decoded):
            continue
        del part[name]
        for v, d in zip(values, decoded):
            part[name] = email.header.Header(mask_card_numbers(d), "utf-8") if find_card_numbers(d) else v
        changed = True
    return changed


def mask_original(raw: bytes) -> bytes:
    """The original message, safe to attach: card numbers masked, no line longer than SMTP allows.

    Unchanged bytes when there is nothing to do (the common case). Otherwise the
    message is rebuilt: parts with card numbers are re-encoded masked (an
    ``X-Guard-Masked`` header says so), parts with over-long lines are
    re-encoded as quoted-printable or base64. The mailbox keeps the original.
    """
    try:
        msg = email.message_from_bytes(raw, policy=email.policy.compat32)
        masked = False
        rebuilt = False
        for part in msg.walk():
            # headers of the message and of every message inside it (a forwarded message/rfc822)
            masked = _mask_headers(part) or masked
            if part.is_multipart():
                continue
            payload = part.get_payload()
            if not isinstance(payload, str):
                continue
            is_text = part.get_content_maintype() == "text"
            data = part.get_payload(decode=True) or b""
            text = None
            if is_text:
                charset = part.get_content_charset() or "utf-8"
                try:
                    text = data.decode(charset, errors="replace")
                except LookupError:
                    text = data.decode("utf-8", errors="replace")
            if text is not None and find_card_numbers(text):
                del part["Content-Transfer-Encoding"]
                part.set_payload(mask_card_numbers(text), charset=_qp_utf8())
                masked = True
            elif _long_lines(payload.encode("utf-8", "surrogateescape")):
                del part["Content-Transfer-Encoding"]
                if text is not None:
                    part.set_payload(text, charset=_qp_utf8())
                else:
                    part.set_payload(data)
                    email.encoders.encode_base64(part)
                rebuilt = True
        if not masked and not rebuilt:
            return raw
        if masked:
            msg["X-Guard-Masked"] = "card numbers masked by guard"
        out = io.BytesIO()
        email.generator.BytesGenerator(out, mangle_from_=False, policy=email.policy.compat32.clone(linesep="\r\n")).flatten(msg)
        return out.getvalue()
    except Exception:
        # the message cannot be rebuilt: attach a text-only stand-in rather than unmasked data
        text = mask_card_numbers(raw.decode("utf-8", errors="replace"))
        text = "\n".join(line[:MAX_LINE] for line in text.splitlines())
        return ("Content-Type: text/plain; charset=utf-8\r\nX-Guard-Masked: original not parseable; masked text\r\n\r\n"
                + text).encode("utf-8")


def build_forward(renderer: Renderer, template: str, *, raw: bytes, msg: ParsedMessage, verdict: Verdict,
                  ident: Identity, now: datetime, message_id: str, review: bool = False,
                  kind: str = "forward", held: str | None = None) -> Rendered:
    """To the coordinator: summary + verdict on top, original attached, Reply-To the participant
    (left out for an address that is not ASCII: guard does not send SMTPUTF8)."""
    ctx = context_for(msg, verdict, ident, review=review, held=held)
    subject, text, html = renderer.render(template, ctx, renderer.coordinator_language)
    participant = (msg.from_.addr if msg.from_ and "@" in (msg.from_.addr or "") and msg.from_.addr.isascii()
                   else None)
    reply_to = _address(msg.from_.name, participant) if participant else None
    headers = _base_headers(ident, to=_address(ident.coordinator_name, ident.coordinator_address), subject=subject,
                            now=now, message_id=message_id, auto="auto-generated", reply_to=reply_to)
    if msg.message_id and _MSG_ID.fullmatch(msg.message_id):
        headers.append(("References", MessageIds([msg.message_id])))
    body = _with_original(_alternative_bytes(headers, text, html, message_id), raw, message_id)
    return Rendered(kind, template, ident.coordinator_address, ident.events_address, message_id, body)


def build_alert(renderer: Renderer, template: str, *, raw: bytes, msg: ParsedMessage, verdict: Verdict,
                ident: Identity, now: datetime, message_id: str, held: str | None = None) -> Rendered:
    """The coordinator alert (a participant says they already paid): like a forward, flagged urgent."""
    r = build_forward(renderer, template, raw=raw, msg=msg, verdict=verdict, ident=ident, now=now,
                      message_id=message_id, review=True, kind="alert", held=held)
    head, sep, rest = r.raw.partition(b"\r\n")
    raw_out = head + sep + b"Importance: high\r\nX-Priority: 1\r\n" + rest
    return Rendered("alert", template, r.recipient, r.envelope_from, message_id, raw_out)


def build_notice(renderer: Renderer, template: str, *, msg: ParsedMessage, verdict: Verdict, ident: Identity,
                 now: datetime, message_id: str, breaker: dict | None = None) -> Rendered:
    """A short notice to the coordinator with no original attached (the circuit-breaker alert)."""
    ctx = context_for(msg, verdict, ident, breaker=breaker)
    subject, text, html = renderer.render(template, ctx, renderer.coordinator_language)
    headers = _base_headers(ident, to=_address(ident.coordinator_name, ident.coordinator_address), subject=subject,
                            now=now, message_id=message_id, auto="auto-generated")
    return Rendered("alert", template, ident.coordinator_address, ident.events_address, message_id,
                    _alternative_bytes(headers, text, html, message_id))
