"""Which language a reply to a participant is written in, and why. Pure.

The participant's **own words** decide (:attr:`ParsedMessage.text`: the author's text without any
forwarded or quoted message), read by :func:`guard.mail.language.detect`: an English scam forwarded
with a Spanish question is answered in Spanish. The subject counts only when nothing is forwarded
(a forward's subject is the scam's). When the language is one guard has templates for, the reply is
in it; otherwise (a language without templates, or too little text to tell) it is in the first
language of the configured fallback order that has templates (``daemon.reply_fallback_languages``;
default: the institute's language, then English).

The choice and its reason go to the decision log and the journal, and from there to the digest:
``reason`` is a code the digest templates put in words in the coordinator's language.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Collection, Sequence

from guard.mail import language as _language

#: the reason codes of a choice
WRITTEN_IN = "written-in"  # the participant wrote in this language and guard has templates for it
NOT_OFFERED = "not-offered"  # the participant wrote in a language guard has no templates for
UNCLEAR = "unclear"  # too little of the participant's own text to tell

#: English names, for the decision log (the templates have their own, in their language)
NAMES = {"en": "English", "es": "Spanish", "ca": "Catalan", "fr": "French", "de": "German", "it": "Italian",
         "pt": "Portuguese", "nl": "Dutch", "pl": "Polish", "ru": "Russian", "zh": "Chinese", "ja": "Japanese",
         "ar": "Arabic", "el": "Greek", "tr": "Turkish", "sv": "Swedish", "da": "Danish", "ro": "Romanian",
         "cs": "Czech"}


@dataclass(frozen=True)
class LanguageChoice:
    language: str  # the template set the reply is written from
    reason: str  # WRITTEN_IN, NOT_OFFERED or UNCLEAR
    detected: str  # what the participant's own text reads as ("und": too little to tell)

    def describe(self) -> str:
        """In plain English, for the decision log: "fr (the participant wrote in French)"."""
        name = NAMES.get(self.detected, self.detected)
        if self.reason == WRITTEN_IN:
            why = f"the participant wrote in {name}"
        elif self.reason == NOT_OFFERED:
            why = f"the participant wrote in {name}, which has no templates: fallback"
        else:
            why = "too little of the participant's own text to tell the language: fallback"
        return f"{self.language} ({why})"

    def code(self) -> str:
        """Compact, for the decision log: "fr(written-in)", "en(not-offered:nl)", "ca(unclear)"."""
        return f"{self.language}({self.reason}{':' + self.detected if self.reason == NOT_OFFERED else ''})"

    def to_dict(self) -> dict:
        return {"language": self.language, "reason": self.reason, "detected": self.detected}


def own_language(msg) -> str:
    """The language of the author's own words ("und" when there is too little to tell)."""
    lang = _language.detect(msg.text or "")
    if lang == "und" and not getattr(msg, "forwarded", ()) and not getattr(msg, "forward_style", None):
        lang = msg.language or "und"  # subject and own text, read when the message was parsed
    return lang


def choose(detected: str, offered: Collection[str], fallback: Sequence[str]) -> LanguageChoice:
    """The reply's language from the detected one, the languages with templates and the fallback order."""
    detected = detected or "und"
    if detected in offered:
        return LanguageChoice(detected, WRITTEN_IN, detected)
    lang = next((x for x in fallback if x in offered), None) or next(iter(sorted(offered)), "en")
    return LanguageChoice(lang, UNCLEAR if detected == "und" else NOT_OFFERED, detected)


def choose_for(msg, offered: Collection[str], fallback: Sequence[str]) -> LanguageChoice:
    return choose(own_language(msg), offered, fallback)
