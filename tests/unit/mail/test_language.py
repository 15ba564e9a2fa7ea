"""The streaming, restricted language-model loader gives the library's own answers."""

from __future__ import annotations

import pytest
import py3langid.langid as L

from guard.mail import language

TEXTS = [
    "Bon dia, voldria saber si hi ha allotjament al campus de Bellaterra per al taller",
    "Hola, quisiera saber si todavía es posible inscribirse en el taller de enero",
    "Dear organisers, I would like to know whether the registration is still open",
    "Bonjour, je voudrais une lettre d'invitation pour mon visa",
    "Ich möchte mich für den Workshop anmelden, bitte",
    "Vorrei iscrivermi al workshop di gennaio, grazie",
    "Gostaria de me inscrever no workshop de janeiro",
    "Beste organisatoren, ik wil me graag inschrijven",
]


def test_restricted_loader_matches_library():
    mine = language._load_restricted(L.LanguageIdentifier, L.MODEL_DIR / L.MODEL_FILE, language.LANGUAGES)
    ref = L.LanguageIdentifier.from_model_file(L.MODEL_FILE, norm_probs=True)
    ref.set_languages(list(language.LANGUAGES))
    assert sorted(mine.nb_classes) == sorted(language.LANGUAGES)
    for text in TEXTS:
        (a, pa), (b, pb) = mine.classify(text), ref.classify(text)
        assert a == b and pa == pytest.approx(pb, abs=1e-6), text


def test_detect_short_text_is_undetermined():
    assert language.detect("ok") == "und"


def test_raw_score_is_the_library_sparse_score():
    """The suffix identifier scores from visit_arrays exactly as py3langid's _sparse_score scores visits()."""
    import numpy as np

    ident = language._identifier()
    if not hasattr(ident, "_suffix"):
        # the first process on a machine keeps the library's DFA (it writes the tables to the
        # cache for the next ones): build the suffix identifier from that DFA here, as the cache does
        tables = language._SuffixTables.build(ident.tk_nextmove, ident.tk_row, ident.tk_output)
        assert tables is not None, "the model's tokenizer is not the longest-suffix automaton of its n-grams"
        ident = language._suffix_identifier(L.LanguageIdentifier, ident.nb_ptc, ident.nb_pc, ident.nb_classes, tables)
    texts = [t.encode() for t in TEXTS] + ["Zażółć gęślą jaźń 中文 邮件 Ελληνικά ÀÉÎÕÜ".encode(), b"a", b"\x00\xff" * 9, b"ab" * 700]
    for text in texts:
        visits = ident._suffix.visits(text)
        arrays = ident._suffix.visit_arrays(text)
        if visits is None:
            assert arrays is None
            continue
        assert list(visits) == arrays[0].tolist() and list(visits.values()) == arrays[1].tolist()
        assert np.array_equal(ident._raw_score(text), ident._sparse_score(visits, ident.nb_ptc))
