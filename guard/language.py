"""Language detection with the model bundled in ``py3langid`` (no download)."""

from __future__ import annotations

import functools
import re

#: Languages guard expects in an events inbox; restricting the model to them
#: makes short messages far less likely to be read as an unrelated language.
LANGUAGES = ("en", "es", "ca", "fr", "de", "it", "pt", "nl", "pl", "ru", "zh", "ja", "ar", "el", "tr", "sv", "da", "ro", "cs")

_URLS = re.compile(r"\S+@\S+|https?://\S+|www\.\S+")


@functools.lru_cache(maxsize=1)
def _identifier():
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    ident = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    ident.set_languages(list(LANGUAGES))
    # set_languages keeps the unrestricted model to allow a later reset; guard never resets,
    # and dropping it frees about 28 MB (RSS budget: 150 MB with the scam model loaded)
    if hasattr(ident, "_full_model"):
        ident._full_model = None
    return ident


def preload() -> None:
    """Load the language model now: unpacking it briefly needs ~26 MB more, best done
    before the rules and the scam model are in memory."""
    _identifier()


def detect(text: str, *, max_chars: int = 3000) -> str:
    """ISO 639-1 code of the text's language, or "und" when there is too little to tell."""
    sample = _URLS.sub(" ", text[:max_chars])
    if sum(ch.isalpha() for ch in sample) < 12:
        return "und"
    try:
        lang, prob = _identifier().classify(sample)
    except Exception:
        return "und"
    return lang if prob >= 0.5 else "und"
