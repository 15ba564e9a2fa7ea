"""Putting the pure parts together from validated settings (reads rule and model files once)."""

from __future__ import annotations

from guard.classification.classify import Classifier, ScamModel
from guard.classification.matchers import RuleContext
from guard.paths import shipped
from guard.classification.ruleset import Ruleset, load_ruleset
from guard.settings import GuardSettings


def rule_context(settings: GuardSettings, ruleset: Ruleset) -> RuleContext:
    lists = dict(ruleset.lists)
    lists["official"] = frozenset(settings.official_domains())
    lists["allowlist"] = lists.get("allowlist", frozenset()) | {x.lower() for x in settings.rules.allowlist}
    lists["denylist"] = lists.get("denylist", frozenset()) | {x.lower() for x in settings.rules.denylist}
    return RuleContext(settings.official_domains(), settings.protected_names(), lists, settings.display_names(),
                       tuple(settings.daemon.trusted_authserv_ids))


def load_rules(settings: GuardSettings) -> Ruleset:
    return load_ruleset(settings.rules.shipped_dir or shipped("rules"), settings.rules.local_dir)


#: ``build_classifier(intent=SHIPPED_WITH_MODEL)``: the shipped intent model whenever a scam model is given
SHIPPED_WITH_MODEL = "shipped-with-model"


def build_classifier(settings: GuardSettings, *, model: ScamModel | None = None, ruleset: Ruleset | None = None,
                     intent=SHIPPED_WITH_MODEL) -> Classifier:
    """The classifier of these settings. The learned stages come together: with a scam model, the
    shipped intent model too (``intent=None`` leaves it out, or pass another); without one, neither
    (``--no-model`` decides by the rule-score table alone)."""
    ruleset = ruleset or load_rules(settings)
    if intent == SHIPPED_WITH_MODEL:
        from guard.classification.model_loader import load_default_intent

        intent = load_default_intent(settings) if model is not None else None
    return Classifier(
        ruleset=ruleset,
        context=rule_context(settings, ruleset),
        thresholds=settings.thresholds,
        model=model,
        intent=intent,
    )
