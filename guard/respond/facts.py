"""Event fact sheets: ``events/*.toml`` (one event per file), and which event a message is about.

A fact sheet is a TOML file with the keys of an ``[[events]]`` entry in the
configuration (:class:`guard.settings.Event`), at the top level::

    id = "mfml-2026"
    name = "Mathematical Foundations of Machine Learning: PDEs, Probability, and Dynamics"
    aliases = ["MFML 2026", "mfml2026"]
    start = 2026-01-07
    end = 2026-01-09
    venue = "Centre de Recerca Matemàtica, Auditorium, Bellaterra"
    url = "https://www.crm.cat/..."
    official_domains = ["crm.cat"]
    protected_names = ["mfml2026"]     # must not appear inside a foreign domain
    registration = "..."               # or a table per language: { en = "...", es = "...", ca = "..." }
    lodging = "..."
    [coordinator]
    name = "..."
    address = "..."

Loading and validation of the sheets lives with the configuration
(:func:`guard.settings.load_fact_sheets`). The configuration names the directories with ``events_dirs`` (``"shipped"`` is
guard's own ``events/``; relative paths are relative to the configuration
file). Sheets are validated when the configuration is loaded; a bad sheet is a
:class:`~guard.errors.ConfigError` naming the file, the key and the reason.
Events in the configuration win over a sheet with the same id.

:func:`detect_event` is pure: which of the known events a message is about,
from the names, aliases and dates it mentions (its own text, its subject and
any forwarded message), or None.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from typing import Sequence

from guard.mail.textutil import fold

# -- which event a message is about ------------------------------------------------------

_MONTHS = {
    1: "january jan enero ene gener gen janvier janv gennaio januar janeiro",
    2: "february feb febrero febr febrer fevrier fevr febbraio februar fevereiro",
    3: "march mar marzo marc mars marz maerz marco",
    4: "april apr abril avril aprile",
    5: "may mayo maig mai maggio maio",
    6: "june jun junio juny juin giugno juni junho",
    7: "july jul julio juliol juillet luglio juli julho",
    8: "august aug agosto agost aout",
    9: "september sep sept septiembre setiembre setembre septembre settembre setembro",
    10: "october oct octubre octobre ottobre oktober outubro",
    11: "november nov noviembre novembre novembro",
    12: "december dec diciembre desembre decembre dicembre dezember dezembro",
}
_MONTH_OF = {w: n for n, words in _MONTHS.items() for w in words.split()}
_MONTH_RE = "|".join(sorted(_MONTH_OF, key=len, reverse=True))
_YEAR = r"((?:19|20)\d\d)"
_DATE_PATTERNS = (
    # 2026-01-07
    (re.compile(r"(?<!\d)" + _YEAR + r"-(\d{1,2})-(\d{1,2})(?!\d)"), ("y", "m", "d")),
    # June 29, 2025 / june 29th
    (re.compile(r"\b(" + _MONTH_RE + r")\.?\s+(\d{1,2})(?:st|nd|rd|th)?\b(?:,?\s+" + _YEAR + r")?"), ("M", "d", "y")),
    # 29 June 2025 / 22 de enero de 2026 / 4 d'agost / 15th of June / 7. Januar 2026
    (re.compile(r"(?<!\d)(\d{1,2})(?:st|nd|rd|th|er|o|º|\.)?\s+(?:of\s+|de\s+|d')?(" + _MONTH_RE + r")\b\.?"
                r"(?:,?\s+(?:de\s+|del\s+)?" + _YEAR + r")?"), ("d", "M", "y")),
    # 07/01/2026 or 7.1.2026 (day first; month first tried as well)
    (re.compile(r"(?<![\d/.])(\d{1,2})[/.](\d{1,2})[/.]" + _YEAR + r"(?![\d/.])"), ("d", "m", "y")),
)


def mentioned_dates(text: str) -> list[tuple[int | None, int, int]]:
    """(year or None, month, day) of every date written in the text (several languages)."""
    return _dates_in(fold(text))


def _dates_in(folded: str) -> list[tuple[int | None, int, int]]:
    """:func:`mentioned_dates` of a text already folded (:func:`guard.mail.textutil.fold`)."""
    out: list[tuple[int | None, int, int]] = []
    for pattern, roles in _DATE_PATTERNS:
        for m in pattern.finditer(folded):
            v = dict(zip(roles, m.groups()))
            year = int(v["y"]) if v.get("y") else None
            month = _MONTH_OF[v["M"]] if "M" in v else int(v["m"])
            day = int(v["d"])
            candidates = [(month, day)]
            if roles == ("d", "m", "y"):
                candidates.append((day, month))  # 01/07/2026 could be month first
            for mo, d in candidates:
                if 1 <= mo <= 12 and 1 <= d <= 31:
                    out.append((year, mo, d))
    return out


def _in_event(event, date: tuple[int | None, int, int]) -> bool:
    if event.start is None:
        return False
    end = event.end or event.start
    year, month, day = date
    years = [year] if year is not None else list(range(event.start.year, end.year + 1))
    for y in years:
        try:
            d = dt.date(y, month, day)
        except ValueError:
            continue
        if event.start <= d <= end:
            return True
    return False


@functools.lru_cache(maxsize=4096)
def _phrase_pattern(phrase: str) -> tuple[str, re.Pattern] | None:
    """The folded phrase and its whole-word pattern; None for a phrase too short to match (< 3)."""
    p = fold(phrase)
    if len(p) < 3:
        return None
    return p, re.compile(r"(?<![a-z0-9])" + re.escape(p) + r"(?![a-z0-9])")


def _phrase(folded: str, phrase: str) -> bool:
    """Whether the phrase stands as whole words in a folded text."""
    pat = _phrase_pattern(phrase)
    # the substring test is only a fast way out: a match is always a substring
    return pat is not None and pat[0] in folded and pat[1].search(folded) is not None


def event_score(event, text: str, dates: Sequence[tuple[int | None, int, int]]) -> int:
    """3 for the full name, 2 for an alias (or the id), 1 for a date inside the event's dates."""
    return _score(event, fold(text), dates)


def _score(event, folded: str, dates: Sequence[tuple[int | None, int, int]]) -> int:
    """:func:`event_score` of a text already folded."""
    score = 0
    if _phrase(folded, event.name):
        score += 3
    elif any(_phrase(folded, a) for a in (*event.aliases, event.id)):
        score += 2
    if any(_in_event(event, d) for d in dates):
        score += 1
    return score


def message_text(msg) -> str:
    """What detection reads: the subject and own text, and the same of any forwarded message."""
    parts = [msg.subject or "", msg.text or ""]
    for inner in getattr(msg, "forwarded", ()) or ():
        parts += [inner.subject or "", inner.text or ""]
    return "\n".join(parts)


def detect_event(events: Sequence, msg=None, *, text: str | None = None):
    """The event a message (or a text) is about, or None when none or several fit equally. Pure."""
    if not events:
        return None
    if text is None:
        text = message_text(msg) if msg is not None else ""
    folded = fold(text)  # once for the dates and every event
    dates = _dates_in(folded)
    scored = sorted(((_score(e, folded, dates), i) for i, e in enumerate(events)), reverse=True)
    best, i = scored[0]
    if best <= 0 or (len(scored) > 1 and scored[1][0] == best):
        return None
    return events[i]


def find_event(events: Sequence, event_id: str):
    for e in events:
        if e.id == event_id:
            return e
    return None


# -- presenting an event in a language ---------------------------------------------------

MONTH_NAMES = {
    "en": "January February March April May June July August September October November December".split(),
    "es": "enero febrero marzo abril mayo junio julio agosto septiembre octubre noviembre diciembre".split(),
    "ca": "gener febrer març abril maig juny juliol agost setembre octubre novembre desembre".split(),
    "fr": "janvier février mars avril mai juin juillet août septembre octobre novembre décembre".split(),
    "de": "Januar Februar März April Mai Juni Juli August September Oktober November Dezember".split(),
    "it": "gennaio febbraio marzo aprile maggio giugno luglio agosto settembre ottobre novembre dicembre".split(),
    "pt": "janeiro fevereiro março abril maio junho julho agosto setembro outubro novembro dezembro".split(),
}


#: How en, es and ca write a date or a span of dates. The pairs are the plain form and the elided
#: one (Catalan: "l'" before the day 1 or 11, "d'" before a month that starts with a vowel).
_DATE_STYLE = {
    #     before the month  before the year  a span starts      span in a month    span across months
    "en": (("", ""),        " ",             ("", ""),          ("–", "–"),        (" – ", " – ")),
    "es": (("de ", "de "),  " de ",          ("del ", "del "),  (" al ", " al "),  (" al ", " al ")),
    "ca": (("de ", "d'"),   " de ",          ("del ", "de l'"), (" al ", " a l'"), (" al ", " a l'")),
}


def _format_fr_de_it_pt(start: dt.date, end: dt.date, lang: str) -> str:
    """French "du 1er au 3 avril 2026", German "7.–9. Januar 2026", Italian "dall'8 all'11 giugno 2026",
    Portuguese "de 7 a 9 de janeiro de 2026"; across months and years in the same way."""
    months = MONTH_NAMES[lang]

    def day(d: dt.date) -> str:
        return {"fr": "1er" if d.day == 1 else str(d.day), "de": f"{d.day}.",
                "it": "1°" if d.day == 1 else str(d.day)}.get(lang, str(d.day))

    def one(d: dt.date, year: bool = True) -> str:
        of = " de " if lang == "pt" else " "
        return f"{day(d)}{of}{months[d.month - 1]}" + (f"{of}{d.year}" if year else "")

    def it_prep(base: str, d: dt.date) -> str:  # dal 7 / dall'8 / dall'11; al 9 / all'11
        return base[:-1] + "ll'" if d.day in (8, 11) else base + " "

    if start == end:
        return one(start)
    same_month = (start.year, start.month) == (end.year, end.month)
    first = day(start) if same_month else one(start, start.year != end.year)
    last = one(end)
    if lang == "fr":
        return f"du {first} au {last}"
    if lang == "de":
        return f"{first}–{last}" if same_month else f"{first} – {last}"
    if lang == "it":
        return f"{it_prep('dal', start)}{first} {it_prep('al', end)}{last}"
    return f"de {first} a {last}"  # pt


def format_dates(start: dt.date | None, end: dt.date | None, language: str = "en") -> str:
    """"7–9 January 2026" / "del 7 al 9 de enero de 2026" / "del 7 al 9 de gener de 2026" /
    "du 7 au 9 janvier 2026" / "7.–9. Januar 2026" / "dal 7 al 9 gennaio 2026" / "de 7 a 9 de janeiro
    de 2026"; "" without dates. A language without month names here is written in English.

    Catalan: "de l'1 a l'11 d'abril de 2026" (the day 1 or 11, a month that starts with a vowel)."""
    if start is None:
        return ""
    end = end or start
    lang = language if language in MONTH_NAMES else "en"
    if lang not in _DATE_STYLE:
        return _format_fr_de_it_pt(start, end, lang)
    before_month, before_year, opening, within, across = _DATE_STYLE[lang]

    def month(d: dt.date) -> str:
        name = MONTH_NAMES[lang][d.month - 1]
        return before_month[name[0] in "aeiou"] + name

    def one(d: dt.date, year: bool = True) -> str:
        return f"{d.day} {month(d)}" + (f"{before_year}{d.year}" if year else "")

    def elided(pair: tuple[str, str], d: dt.date) -> str:
        return pair[d.day in (1, 11)]

    if start == end:
        return one(start)
    if (start.year, start.month) == (end.year, end.month):
        return f"{elided(opening, start)}{start.day}{elided(within, end)}{end.day} {month(end)}{before_year}{end.year}"
    return f"{elided(opening, start)}{one(start, start.year != end.year)}{elided(across, end)}{one(end)}"


def localised_in(value, language: str, fallback: Sequence[str] = ("en",)) -> tuple[str | None, str | None]:
    """(text, its language) of a fact: a string is the same in every language (its language: None);
    a table per language gives the language's text, else the first of ``fallback`` it has, else its
    first entry. The reply says so when the text is not in its own language (templates/*/_event_facts)."""
    if value is None or isinstance(value, str):
        return value, None
    for lang in (language, *fallback):
        if value.get(lang):
            return value[lang], lang
    for lang, text in value.items():
        if text:
            return text, lang
    return None, None


def localised(value, language: str, fallback: Sequence[str] = ("en",)) -> str | None:
    """A fact that is a string, or a table per language: the language's, else the fallback's (English), else the first."""
    return localised_in(value, language, fallback)[0]
