"""Nested cross-validation: no learned stage sees a held-out example's scenario group."""

from __future__ import annotations

from guard.classification import model as scam_model
from guard.classification.evaluation import Labelled
from guard.learning import intent_training as it
from guard.settings import load_settings

TEXTS = {
    "scam": "Dear speaker, our housing bureau holds your room. Send your credit card number and CVV today "
            "or the reservation for workshop {n} is cancelled.",
    "report": "Is this real? I got the message below about workshop {n}.\n\n---------- Forwarded message ---------\n"
              "From: Housing Desk <desk@housing-bureau.example>\nSubject: Your room\n\n"
              "Pay the deposit by card today to keep your room.",
    "inquiry": "Hello, could you tell me whether there is a registration fee for workshop {n}? Thank you.",
    "automated": "I am out of the office until Monday {n} with limited access to mail.",
    "other": "Thanks to everyone for a lovely workshop {n}; the slides are on the shared drive.",
}


def _corpus(root):
    lines = ["path\tcategory\tinner\tpaid\tlang\tgroup"]
    for category, text in TEXTS.items():
        (root / "train" / category).mkdir(parents=True)
        for g in range(2):
            for k in range(3):
                n = 10 * g + k
                rel = f"train/{category}/{g}{k}.eml"
                headers = "Auto-Submitted: auto-replied\n" if category == "automated" else ""
                (root / rel).write_text(f"From: Person {n} <p{n}@uni{g}.example>\nTo: events@crm.cat\n"
                                        f"Subject: workshop {n}\n{headers}\n{text.format(n=n)}\n", encoding="utf-8")
                inner = "scam" if category == "report" else "-"
                lines.append(f"{rel}\t{category}\t{inner}\tno\ten\t{category}-{g}")
    (root / "labels.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_every_fold_trains_the_scam_model_without_its_held_out_groups(tmp_path, monkeypatch):
    _corpus(tmp_path)
    examples = it.read_labels(tmp_path, "train")
    trained_on: list[set[str]] = []
    fit = scam_model.fit_model

    def recording_fit(terms, y, weights, groups, **kw):
        trained_on.append(set(groups))
        return fit(terms, y, weights, groups, **kw)

    monkeypatch.setattr(scam_model, "fit_model", recording_fit)
    predicted = it.nested_cross_validate(load_settings(None), tmp_path, [], examples, folds=2, jobs=1)

    assert len(trained_on) == 2
    assert all(isinstance(p, Labelled) for p in predicted) and len(predicted) == len(examples)
    all_groups = {f"own:{e.group}" for e in examples}
    # each fold leaves out some groups, and the two folds leave out disjoint sets that cover all
    held = [all_groups - seen for seen in trained_on]
    assert all(held) and held[0].isdisjoint(held[1]) and held[0] | held[1] == all_groups
