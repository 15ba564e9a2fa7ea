"""The closed set of matcher kinds a rule can use, as validated data plus a compiled check.

Each matcher kind is a pydantic model (its fields are what a rule file may
write under ``[rule.match]``) with a ``compile()`` that returns a pure
function ``check(view, ctx) -> bool``. Nothing here does IO.

Kinds (``type = ...``):

``header``            a header is present, or one of its values matches ``pattern``
``regex``             a regular expression over a text field
``phrases``           phrase lists, insensitive to case and diacritics
``domain``            sender / Reply-To / Return-Path / URL domain in a list
``lookalike``         a domain imitating an official domain or name
``impersonation``     the display name uses an official name from an outside address
``reply_to_differs``  Reply-To points to another domain (or address) than From
``auth``              SPF / DKIM / DMARC failed
``card_number``       a Luhn-valid payment-card number appears (never reported back)
``forwarded``         the message embeds a forwarded message
``attachment``        an attachment name or type matches
``defects``           the parser recorded defects
``inner``             the forwarded message was classified as one of ``categories``
``model``             the model's scam probability lies in [min, max)
``meta``              all / any / none of other rules
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from typing import Annotated, Callable, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from guard.mail import domains
from guard.mail.message import ParsedMessage
from guard.mail.textutil import find_card_numbers, fold

TextField = Literal["subject", "body", "text", "full_text", "from_name", "from_addr", "signature", "attachment_names"]
Where = Literal["from", "sender", "reply_to", "return_path", "urls", "to"]


@dataclass(frozen=True)
class RuleContext:
    """Facts rules depend on that come from configuration, not from rule files."""

    official_domains: tuple[str, ...] = ()
    official_names: tuple[str, ...] = ()
    lists: dict[str, frozenset[str]] = field(default_factory=dict)
    #: folded names a sender could hide behind: institute, coordinator, events
    display_names: tuple[str, ...] = ()
    #: authserv-ids of the institute's own receiving servers ([daemon] trusted_authserv_ids)
    trusted_authserv_ids: tuple[str, ...] = ()


#: Rules read at most this much of a long text field: its first RULE_HEAD_CHARS and its last
#: RULE_TAIL_CHARS characters (cut at whitespace, joined by a line holding ".", so that no phrase
#: and no negation reaches across the cut). The scam model reads its first 5,000 characters;
#: the start is where a scam says what it is, the end where it signs and asks for payment. Own
#: events-office mail is far shorter (under 2,500 characters), so only long newsletters and
#: spam are cut; without the bound three 200,000-character messages cost 0.55 s each.
RULE_HEAD_CHARS = 20_000
RULE_TAIL_CHARS = 5_000
_WORD = re.compile(r"\w+")


def bounded(text: str, head: int = RULE_HEAD_CHARS, tail: int = RULE_TAIL_CHARS) -> str:
    """``text`` itself when short, else its start and its end (see RULE_HEAD_CHARS)."""
    if len(text) <= head + tail:
        return text
    start = text[:head]
    cut = max(start.rfind(" "), start.rfind("\n"))
    if cut > head // 2:
        start = start[:cut]
    end = text[-tail:]
    cut = min((i for i in (end.find(" "), end.find("\n")) if i >= 0), default=-1)
    if 0 <= cut < tail // 2:
        end = end[cut + 1:]
    return start + "\n.\n" + end


class MessageView:
    """Lazily computed, cached forms of a message's fields for matching (bounded, see RULE_HEAD_CHARS)."""

    def __init__(self, msg: ParsedMessage, inner_category: str | None = None, model_p: float | None = None):
        self.msg = msg
        self.inner_category = inner_category
        self.model_p = model_p
        self._cache: dict[tuple[str, bool], str] = {}
        self._words: dict[str, frozenset[str]] = {}
        self._folded: dict[str, str] = {}  # raw field text -> its fold
        self._words_of: dict[str, frozenset[str]] = {}  # folded field text -> its tokens

    def field(self, name: str, folded: bool) -> str:
        key = (name, folded)
        if key not in self._cache:
            raw = self._cache.get((name, False))
            if raw is None:
                raw = bounded(self._raw(name))
                self._cache[(name, False)] = raw
            if folded:
                self._cache[key] = self._fold(name, raw)
        return self._cache[key]

    def _fold(self, name: str, raw: str) -> str:
        """``fold(raw)``, computed once per distinct text: ``full_text`` is usually the same text as
        ``text`` (up to white space at its ends), and ``text`` is ``subject + "\\n" + body``. ``fold`` maps character by character
        (translate, casefold, NFKD with combining marks dropped: a line break is a starter that no
        reordering crosses), then collapses white space and strips, so the fold of ``a + "\\n" + b``
        is the folds of ``a`` and ``b`` joined by one space (either alone when the other is empty)."""
        found = self._folded.get(raw)
        if found is not None:
            return found
        m = self.msg
        if name == "text" and self._text_whole():
            a, b = self.field("subject", True), self.field("body", True)
            found = f"{a} {b}" if a and b else a or b
        elif (name == "full_text" and self._text_whole()
              and len(m.subject) + 1 + len(m.full_text) <= RULE_HEAD_CHARS + RULE_TAIL_CHARS
              and m.full_text.strip() == m.text):
            # the author's text is all of the text (nothing forwarded or quoted): ``fold`` strips,
            # so the fold of ``full_text`` is the fold of ``text``
            found = self.field("text", True)
        else:
            found = fold(raw)
        self._folded[raw] = found
        return found

    def _text_whole(self) -> bool:
        """``text`` (and so its subject and its body) is not cut by :func:`bounded`."""
        m = self.msg
        return len(m.subject) + 1 + len(m.text) <= RULE_HEAD_CHARS + RULE_TAIL_CHARS

    def words(self, name: str) -> frozenset[str]:
        """The ``\\w+`` tokens of the folded field: one pass per message and field, shared by
        every phrase rule of the rule set (each phrase runs its pattern only when all its own
        tokens are here). Fields with the same folded text share one set; ``text``'s are its
        subject's and its body's (its folded form joins theirs with a space, see :meth:`_fold`)."""
        found = self._words.get(name)
        if found is None:
            text = self.field(name, True)
            found = self._words_of.get(text)
            if found is None:
                if name == "text" and self._text_whole():
                    found = self.words("subject") | self.words("body")
                else:
                    found = frozenset(_WORD.findall(text))
                self._words_of[text] = found
            self._words[name] = found
        return found

    def caseless_plain(self, name: str) -> bool:
        """The folded field holds no character a case-insensitive pattern's ASCII letter matches
        other than that letter itself (no upper-case ASCII; no İ, ı, ſ or Kelvin sign), so that
        :func:`literal_prefilter` may compare literally."""
        key = (name, "plain")
        found = self._cache.get(key)
        if found is None:
            found = self._cache[key] = _NOT_PLAIN.search(self.field(name, True)) is None
        return found

    def _raw(self, name: str) -> str:
        m = self.msg
        if name == "subject":
            return m.subject
        if name == "body":
            return m.text
        if name == "text":
            return m.subject + "\n" + m.text
        if name == "full_text":
            return m.subject + "\n" + m.full_text
        if name == "from_name":
            return m.from_.name if m.from_ else ""
        if name == "from_addr":
            return m.from_.addr if m.from_ else ""
        if name == "signature":
            lines = [ln for ln in m.text.split("\n") if ln.strip()]
            name_part = m.from_.name if m.from_ else ""
            return name_part + "\n" + "\n".join(lines[-8:])
        if name == "attachment_names":
            return "\n".join(a.filename for a in m.attachments)
        raise KeyError(name)

    def domains_at(self, where: str) -> list[str]:
        """Host names found at a place in the message (lower-case)."""
        m = self.msg
        if where == "from":
            return [m.from_.domain] if m.from_ and m.from_.domain else []
        if where == "sender":
            return [m.sender.domain] if m.sender and m.sender.domain else []
        if where == "reply_to":
            return [a.domain for a in m.reply_to if a.domain]
        if where == "to":
            return [a.domain for a in m.to + m.cc if a.domain]
        if where == "return_path":
            rp = m.return_path or ""
            return [rp.rpartition("@")[2]] if "@" in rp else []
        if where == "urls":
            return [u.host for u in m.urls]
        raise KeyError(where)


Check = Callable[[MessageView, RuleContext], bool]


class _Matcher(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def compile(self) -> Check:  # pragma: no cover - every kind overrides it
        raise NotImplementedError

    def references(self) -> tuple[str, ...]:
        return ()


def _compile_regex(pattern: str, ignore_case: bool) -> re.Pattern:
    try:
        return re.compile(pattern, (re.I if ignore_case else 0) | re.M)
    except re.error as exc:
        raise ValueError(f"bad regular expression {pattern!r}: {exc}") from None


class HeaderMatcher(_Matcher):
    type: Literal["header"]
    name: str
    pattern: str | None = None
    ignore_case: bool = True

    @field_validator("pattern")
    @classmethod
    def _valid(cls, v):
        if v is not None:
            _compile_regex(v, True)
        return v

    def compile(self) -> Check:
        name = self.name
        if self.pattern is None:
            return lambda view, ctx: bool(view.msg.header_all(name))
        rx = _compile_regex(self.pattern, self.ignore_case)
        return lambda view, ctx: any(rx.search(v) for v in view.msg.header_all(name))


class RegexMatcher(_Matcher):
    type: Literal["regex"]
    field: TextField = "text"
    pattern: str
    ignore_case: bool = True
    fold: bool = False

    @field_validator("pattern")
    @classmethod
    def _valid(cls, v):
        _compile_regex(v, True)
        return v

    def compile(self) -> Check:
        rx = _compile_regex(self.pattern, self.ignore_case)
        fld, folded = self.field, self.fold
        pre = literal_prefilter(rx) if folded else None
        if pre is None:
            return lambda view, ctx: rx.search(view.field(fld, folded)) is not None
        caseless = bool(rx.flags & re.I)

        def check(view, ctx):
            # a pattern that cannot match unless some of its literal words are in the text:
            # those are looked up first (see literal_prefilter), the scan runs only when they are
            text = view.field(fld, True)
            if (not caseless or view.caseless_plain(fld)) and not pre(text, view.words(fld)):
                return False
            return rx.search(text) is not None

        return check


class PhrasesMatcher(_Matcher):
    """Phrases are matched on whole words after folding case and diacritics.

    ``*`` inside a phrase stands for up to three words ("confirm * dates"
    matches "confirm your arrival dates"). ``min`` is how many different
    phrases must appear.
    """

    type: Literal["phrases"]
    field: TextField = "text"
    phrases: list[str] = Field(min_length=1)
    min: int = Field(default=1, ge=1)
    #: an occurrence does not count when a negation ("no", "nicht", "sans", "sem"...) stands in
    #: the three words before it, in the same sentence, or inside its ``*`` span ("no prepayment
    #: is required", "ich habe nichts gegeben")
    unless_negated: bool = False

    def compile(self) -> Check:
        """One token index for the whole rule set (:meth:`MessageView.words`): a phrase is tried
        only when every ``\\w+`` token of its words occurs in the folded text. That is exact, not a
        guess: the phrase's words are matched literally between non-word characters, so their
        tokens are whole tokens of the text. Usually no phrase of a rule passes, and the rule
        costs a few set look-ups instead of a scan per phrase."""
        words = [fold(p).split(" ") for p in self.phrases]
        needs = [frozenset(_WORD.findall(" ".join(w))) for w in words]
        rxs = _LazyPatterns([_phrase_pattern(w) for w in words])
        need, fld = self.min, self.field
        # each phrase filed under its longest token: one set intersection finds the few to look at
        by_key: dict[str, list[int]] = {}
        always = []
        for i, n in enumerate(needs):
            if n:
                by_key.setdefault(max(sorted(n), key=len), []).append(i)
            else:
                always.append(i)
        keys = frozenset(by_key)

        def candidates(tokens: frozenset[str]) -> list[int]:
            found = [i for k in keys & tokens for i in by_key[k] if needs[i] <= tokens]
            return sorted(found + always) if always else sorted(found)

        if self.unless_negated:
            owns = [frozenset(x for x in w if x != "*") for w in words]

            def hit(text: str, i: int) -> bool:
                return _counts(text, rxs[i], owns[i])
        else:
            def hit(text: str, i: int) -> bool:
                return rxs[i].search(text) is not None

        def check(view, ctx):
            tokens = view.words(fld)
            cand = candidates(tokens)
            if len(cand) < need:
                return False
            text = view.field(fld, True)
            n = 0
            for i in cand:
                if hit(text, i):
                    n += 1
                    if n >= need:
                        return True
            return False

        return check


#: characters an ASCII letter of a case-insensitive pattern matches besides itself: the upper-case
#: letters, and what Python's ``re`` adds (U+0130 and U+212A lower-case to i and k; U+0131 and
#: U+017F are i's and s's case equivalents). ``tests/unit/classification`` checks the list.
_NOT_PLAIN = re.compile("[A-Z\u0130\u0131\u017f\u212a]")
#: a literal segment of a pattern with more alternatives than this is not used by the prefilter
_MAX_STRINGS = 256


def literal_prefilter(rx: re.Pattern) -> Callable[[str, frozenset[str]], bool] | None:
    """A necessary condition for ``rx.search(text)``, from the pattern's literal parts, or None.

    ``pre(text, words)`` is False only when ``rx`` cannot match ``text``; ``words`` are the ``\\w+``
    tokens of ``text`` (:meth:`MessageView.words`). It reads the parsed pattern: every item of a
    sequence must match, one alternative of a branch must, a repeat with a minimum of one must
    match its body. Runs of literal characters (with small groups and optional parts of literals
    expanded into their alternatives) must appear in the text as written, and a word of such a
    run that a ``\\b`` or a non-word character closes on both sides must be one of ``words``.
    Anything else (character classes, wildcards, optional repeats, look-arounds) asks nothing.
    For a case-insensitive pattern the literals are lower-cased and only ASCII ones are used: the
    caller checks the text first with :meth:`MessageView.caseless_plain`. Inline flags, or
    anything the analysis does not know: None (no prefilter, the pattern alone decides)."""
    try:
        import re._constants as C  # noqa: PLC0415 - the parser of the running Python's re (3.11+)
        import re._parser as P  # noqa: PLC0415

        parsed = P.parse(rx.pattern, rx.flags)
    except Exception:
        return None
    caseless = bool(parsed.state.flags & re.I)
    if parsed.state.flags & (re.X | re.L | re.A) or (parsed.state.flags & re.I) != (rx.flags & re.I):
        return None

    class _Bail(Exception):
        pass

    def char(code: int) -> str | None:
        ch = chr(code)
        if caseless:
            return ch.lower() if ch.isascii() else None
        return ch

    def strings(item) -> set[str] | None:
        """The strings an item matches when they are few and plain literals, else None."""
        op, av = item
        if op is C.LITERAL:
            ch = char(av)
            return None if ch is None else {ch}
        if op is C.IN:
            out = set()
            for iop, iav in av:
                if iop is not C.LITERAL:
                    return None
                ch = char(iav)
                if ch is None:
                    return None
                out.add(ch)
            return out
        if op is C.SUBPATTERN:
            if av[1] or av[2]:
                raise _Bail
            return seq_strings(av[3])
        if op is C.BRANCH:
            out = set()
            for alt in av[1]:
                sub = seq_strings(alt)
                if sub is None:
                    return None
                out |= sub
                if len(out) > _MAX_STRINGS:
                    return None
            return out
        if op in (C.MAX_REPEAT, C.MIN_REPEAT) and av[0] == 0 and av[1] == 1:
            sub = seq_strings(av[2])
            return None if sub is None else sub | {""}
        return None

    def seq_strings(seq) -> set[str] | None:
        out = {""}
        for item in seq:
            sub = strings(item)
            if sub is None:
                return None
            out = {a + b for a in out for b in sub}
            if len(out) > _MAX_STRINGS:
                return None
        return out

    def tokens(s: str, left: bool, right: bool) -> tuple[str, ...]:
        """The words of a literal that are whole tokens of any text it is found in."""
        out = []
        for m in _WORD.finditer(s):
            if (m.start() > 0 or left) and (m.end() < len(s) or right):
                out.append(m.group())
        return tuple(out)

    def is_boundary(item) -> bool:
        return item[0] is C.AT and item[1] is C.AT_BOUNDARY

    def seq_formula(seq, left: bool, right: bool):
        """("and", parts) of a sequence: its literal segments and its other items' own formulas."""
        items = list(seq)
        parts = []
        i, n = 0, len(items)
        while i < n:
            j, segment = i, {""}
            while j < n:
                sub = strings(items[j])
                if sub is None:
                    break
                grown = {a + b for a in segment for b in sub}
                if len(grown) > _MAX_STRINGS:
                    break
                segment, j = grown, j + 1
            lb = (i == 0 and left) or (i > 0 and is_boundary(items[i - 1]))
            if j > i:
                rb = (j == n and right) or (j < n and is_boundary(items[j]))
                if "" not in segment:
                    parts.append(("seg", tuple(sorted((tokens(s, lb, rb), s) for s in segment))))
                i = j
                continue
            rb = (i == n - 1 and right) or (i < n - 1 and is_boundary(items[i + 1]))
            f = item_formula(items[i], lb, rb)
            if f is not None:
                parts.append(f)
            i += 1
        return ("and", tuple(parts)) if parts else None

    def item_formula(item, left: bool, right: bool):
        op, av = item
        if op is C.SUBPATTERN:
            if av[1] or av[2]:
                raise _Bail
            return seq_formula(av[3], left, right)
        if op is C.ATOMIC_GROUP:
            return seq_formula(av, left, right)
        if op is C.BRANCH:
            alts = []
            for alt in av[1]:
                f = seq_formula(alt, left, right)
                if f is None:
                    return None  # an alternative that asks nothing: nor does the branch
                alts.append(f)
            return ("or", tuple(alts))
        if op in (C.MAX_REPEAT, C.MIN_REPEAT, C.POSSESSIVE_REPEAT):
            return seq_formula(av[2], False, False) if av[0] >= 1 else None
        if op in (C.ASSERT, C.ASSERT_NOT, C.GROUPREF_EXISTS):
            return None
        if op in (C.AT, C.ANY, C.IN, C.LITERAL, C.NOT_LITERAL, C.CATEGORY, C.GROUPREF, C.GROUPREF_IGNORE,
                  C.RANGE, C.NEGATE):
            return None
        raise _Bail

    try:
        formula = seq_formula(parsed, False, False)
    except (_Bail, RecursionError):
        return None
    if formula is None:
        return None

    def build(f):
        """The formula as one function (text, words) -> bool."""
        kind, parts = f
        if kind == "and":
            subs = [build(p) for p in parts]
            return lambda text, words: all(g(text, words) for g in subs)
        if kind == "or":
            subs = [build(p) for p in parts]
            return lambda text, words: any(g(text, words) for g in subs)
        # a literal segment: the strings filed under their longest whole word, one set
        # intersection finds the few to look for; strings without such words are looked for as they are
        by_key: dict[str, list[tuple[frozenset[str], str]]] = {}
        bare = []
        for toks, lit in parts:
            if toks:
                by_key.setdefault(max(sorted(toks), key=len), []).append((frozenset(toks), lit))
            else:
                bare.append(lit)
        keys = frozenset(by_key)

        def seg(text: str, words: frozenset[str]) -> bool:
            for k in keys & words:
                for toks, lit in by_key[k]:
                    if toks <= words and lit in text:
                        return True
            return any(lit in text for lit in bare)

        return seg

    return build(formula)


class _LazyPatterns:
    """Each phrase's pattern, compiled the first time the token index lets it through: a
    one-shot ``guard classify`` compiles a handful instead of some 1,800."""

    __slots__ = ("sources", "compiled")

    def __init__(self, sources: list[str]) -> None:
        self.sources = sources
        self.compiled: list[re.Pattern | None] = [None] * len(sources)

    def __getitem__(self, i: int) -> re.Pattern:
        rx = self.compiled[i]
        if rx is None:
            rx = self.compiled[i] = re.compile(self.sources[i])
        return rx


def _counts(text: str, rx: re.Pattern, own: frozenset[str]) -> bool:
    """An occurrence of the phrase with no negation in the three words before it (same sentence)
    or inside its ``*`` span."""
    for m in rx.finditer(text):
        before = _SENTENCE_END.split(text[max(0, m.start() - 80):m.start()])[-1].split()[-3:]
        inside = [w for w in m.group(0).split() if w not in own]
        if not any(_bare(w) in NEGATIONS for w in (*before, *inside)):
            return True
    return False


def _phrase_pattern(words: list[str]) -> str:
    """A folded phrase as a pattern matching it between non-word characters.

    ``(?<!\\w)first rest(?!\\w)``, written with the look-behind after the first word
    (``first(?<!\\wfirst) rest(?!\\w)``: the same matches at the same places) so that the
    pattern starts with a literal, which ``re`` searches for quickly instead of trying the
    look-behind at every position of the text."""
    body = _phrase_body(words)
    if words and words[0] != "*" and words[0]:
        first = re.escape(words[0])
        return first + r"(?<!\w" + first + ")" + body[len(first):] + r"(?!\w)"
    return r"(?<!\w)" + body + r"(?!\w)"


def _phrase_body(words: list[str]) -> str:
    """A folded phrase as a regex body: words separated by one whitespace, ``*`` up to three words."""
    body = ""
    for i, w in enumerate(words):
        if w == "*":
            body += r"(?:\S+\s){0,3}?"
        else:
            body += re.escape(w) + (r"\s" if i < len(words) - 1 else "")
    return body


#: negation words after folding, in guard's languages (not "mai": it is also May in French and German)
NEGATIONS = frozenset(
    "no not nothing never without nor none non ne pas aucun aucune jamais sans rien nicht kein keine keinen "
    "keiner keines nichts nie niemals ohne sin ningun ninguna nada nunca sense res senza nessun nessuna niente "
    "sem nao nenhum nenhuma".split())
_SENTENCE_END = re.compile(r"[.!?;:\n]")


def _bare(word: str) -> str:
    return word.strip(".,;:!?()[]\"'«»")


def _in_domains(host: str, names: frozenset[str]) -> bool:
    host = host.lower().strip(".")
    if host in names:
        return True
    reg = domains.registrable(host)
    return reg in names


class DomainMatcher(_Matcher):
    """Domains match themselves and their subdomains. ``lists`` name lists from rule files or config."""

    type: Literal["domain"]
    where: list[Where] = Field(min_length=1)
    domains: list[str] = []
    lists: list[str] = []
    addresses: list[str] = []

    @model_validator(mode="after")
    def _something(self):
        if not (self.domains or self.lists or self.addresses):
            raise ValueError("give at least one of domains, lists or addresses")
        return self

    def compile(self) -> Check:
        fixed = frozenset(d.lower().strip(".") for d in self.domains)
        addrs = frozenset(a.lower() for a in self.addresses)
        where, lists = tuple(self.where), tuple(self.lists)

        def check(view, ctx):
            names = fixed.union(*(ctx.lists.get(n, frozenset()) for n in lists)) if lists else fixed
            for w in where:
                # list entries holding an "@" name one sender address
                if w == "from" and view.msg.from_ and (view.msg.from_.addr in addrs or view.msg.from_.addr in names):
                    return True
                for host in view.domains_at(w):
                    if _in_domains(host, names):
                        return True
            return False

        return check

    def references_lists(self) -> tuple[str, ...]:
        return tuple(self.lists)


class LookalikeMatcher(_Matcher):
    type: Literal["lookalike"]
    where: list[Where] = Field(min_length=1)
    how: list[Literal["homoglyph", "edit-distance", "name-inside"]] = ["homoglyph", "edit-distance", "name-inside"]

    def compile(self) -> Check:
        where, how = tuple(self.where), frozenset(self.how)

        def check(view, ctx):
            for w in where:
                for host in view.domains_at(w):
                    found = _lookalike(host, ctx.official_domains, ctx.official_names)
                    if found is not None and found.how in how:
                        return True
            return False

        return check


@functools.lru_cache(maxsize=16384)
def _lookalike(host, official_domains, official_names):
    return domains.find_lookalike(host, official_domains, official_names)


class ImpersonationMatcher(_Matcher):
    """The From display name uses the institute's, the coordinator's or an event's name
    while the address is outside the official domains."""

    type: Literal["impersonation"]

    def compile(self) -> Check:
        def check(view, ctx):
            m = view.msg
            if not m.from_ or not m.from_.name or not ctx.display_names:
                return False
            if _in_domains(m.from_.domain, frozenset(ctx.official_domains)):
                return False
            name = " " + view.field("from_name", True) + " "
            return any(_word_in(n, name) for n in ctx.display_names)

        return check


def _word_in(needle: str, haystack: str) -> bool:
    i = haystack.find(needle)
    while i >= 0:
        before = haystack[i - 1] if i > 0 else " "
        after = haystack[i + len(needle)] if i + len(needle) < len(haystack) else " "
        if not before.isalnum() and not after.isalnum():
            return True
        i = haystack.find(needle, i + 1)
    return False


class ReplyToDiffersMatcher(_Matcher):
    type: Literal["reply_to_differs"]
    compare: Literal["domain", "address"] = "domain"

    def compile(self) -> Check:
        by_domain = self.compare == "domain"

        def check(view, ctx):
            m = view.msg
            if not m.from_ or not m.reply_to:
                return False
            if by_domain:
                mine = m.from_.registrable
                return any(r.registrable and r.registrable != mine for r in m.reply_to)
            return any(r.addr and r.addr != m.from_.addr for r in m.reply_to)

        return check


class AuthMatcher(_Matcher):
    """Authentication results: any listed method whose result is in ``results``.

    Only the institute's own receiving servers are believed (``RuleContext.trusted_authserv_ids``,
    the topmost run of their headers, RFC 8601 section 5); a header any other server or the
    sender wrote is ignored. A ``pass`` counts only when it is aligned with the From domain (the
    same registrable domain in ``header.from``, ``header.d`` or ``smtp.mailfrom``), so a sender's
    own ``dkim=pass header.d=elsewhere`` never vouches for the From address (the same alignment the
    reply gate uses, :meth:`guard.mail.message.AuthMethod.vouches_for`). With no trusted
    server configured no header is believed."""

    type: Literal["auth"]
    methods: list[Literal["spf", "dkim", "dmarc"]] = ["spf", "dkim", "dmarc"]
    results: list[str] = ["fail", "softfail", "permerror"]

    def compile(self) -> Check:
        methods, results = frozenset(self.methods), frozenset(r.lower() for r in self.results)

        def check(view, ctx) -> bool:
            msg = view.msg
            from_domain = msg.from_.domain if msg.from_ else ""
            for header in msg.auth.trusted(ctx.trusted_authserv_ids) if ctx.trusted_authserv_ids else ():
                for m in header.methods:
                    if m.method in methods and m.result in results and (m.result != "pass" or m.vouches_for(from_domain)):
                        return True
            return False

        return check


class CardNumberMatcher(_Matcher):
    type: Literal["card_number"]
    field: TextField = "body"

    def compile(self) -> Check:
        fld = self.field
        return lambda view, ctx: bool(find_card_numbers(view.field(fld, False)))


class ForwardedMatcher(_Matcher):
    type: Literal["forwarded"]
    styles: list[Literal["rfc822", "gmail", "thunderbird", "outlook", "apple", "bare"]] = []

    def compile(self) -> Check:
        styles = frozenset(self.styles)
        return lambda view, ctx: bool(view.msg.forwarded) and (not styles or view.msg.forward_style in styles)


class AttachmentMatcher(_Matcher):
    type: Literal["attachment"]
    filename: str | None = None
    content_type: str | None = None

    @model_validator(mode="after")
    def _something(self):
        if self.filename is None and self.content_type is None:
            raise ValueError("give filename and/or content_type")
        for p in (self.filename, self.content_type):
            if p is not None:
                _compile_regex(p, True)
        return self

    def compile(self) -> Check:
        fn = _compile_regex(self.filename, True) if self.filename else None
        ct = _compile_regex(self.content_type, True) if self.content_type else None

        def check(view, ctx):
            for a in view.msg.attachments:
                if (fn is None or fn.search(a.filename)) and (ct is None or ct.search(a.content_type)):
                    return True
            return False

        return check


class DefectsMatcher(_Matcher):
    type: Literal["defects"]
    min: int = Field(default=1, ge=1)
    pattern: str | None = None

    def compile(self) -> Check:
        rx = _compile_regex(self.pattern, True) if self.pattern else None
        need = self.min
        return lambda view, ctx: sum(1 for d in view.msg.defects if rx is None or rx.search(d)) >= need


class InnerMatcher(_Matcher):
    type: Literal["inner"]
    categories: list[str] = Field(min_length=1)

    def compile(self) -> Check:
        cats = frozenset(self.categories)
        return lambda view, ctx: view.inner_category in cats


class ModelMatcher(_Matcher):
    type: Literal["model"]
    min: float = Field(ge=0.0, le=1.0)
    max: float = Field(default=1.0000001, ge=0.0, le=1.0000001)

    def compile(self) -> Check:
        lo, hi = self.min, self.max
        return lambda view, ctx: view.model_p is not None and lo <= view.model_p < hi


class MetaMatcher(_Matcher):
    type: Literal["meta"]
    all: list[str] = []
    any: list[str] = []
    none: list[str] = []

    @model_validator(mode="after")
    def _something(self):
        if not (self.all or self.any or self.none):
            raise ValueError("a meta rule needs at least one of all, any, none")
        return self

    def references(self) -> tuple[str, ...]:
        return tuple(self.all) + tuple(self.any) + tuple(self.none)

    def compile_meta(self) -> Callable[[dict[str, bool]], bool]:
        all_, any_, none_ = tuple(self.all), tuple(self.any), tuple(self.none)

        def check(hits: dict[str, bool]) -> bool:
            return (
                all(hits[r] for r in all_)
                and (not any_ or builtins_any(hits[r] for r in any_))
                and not builtins_any(hits[r] for r in none_)
            )

        return check


builtins_any = any

Matcher = Annotated[
    Union[
        HeaderMatcher, RegexMatcher, PhrasesMatcher, DomainMatcher, LookalikeMatcher, ImpersonationMatcher, ReplyToDiffersMatcher,
        AuthMatcher, CardNumberMatcher, ForwardedMatcher, AttachmentMatcher, DefectsMatcher, InnerMatcher,
        ModelMatcher, MetaMatcher,
    ],
    Field(discriminator="type"),
]
