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
    return RuleContext(settings.official_domains(), settings.protected_names(), lists, settings.display_names())


def load_rules(settings: GuardSettings) -> Ruleset:
    return load_ruleset(settings.rules.shipped_dir or shipped("rules"), settings.rules.local_dir)


def build_classifier(settings: GuardSettings, *, model: ScamModel | None = None, ruleset: Ruleset | None = None) -> Classifier:
    ruleset = ruleset or load_rules(settings)
    return Classifier(
        ruleset=ruleset,
        context=rule_context(settings, ruleset),
        thresholds=settings.thresholds,
        model=model,
    )
