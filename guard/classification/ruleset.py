"""Loading and validating rule files (``rules/*.toml`` plus a site-local directory).

A rule file holds named domain lists and rules::

    [lists]
    freemail = ["gmail.com", "outlook.com"]

    [[rule]]
    id = "HOUSING_OFFICIAL_CLAIM"
    description = "Claims to be the event's official housing or hotel provider"
    score = 2.0
    tags = ["scam", "housing"]
    source = "where the pattern was seen"
    [rule.match]
    type = "phrases"
    field = "text"
    phrases = ["official housing", "official hotel"]
    [rule.examples]
    match = ["Subject: Official housing\\n\\nWe are the official housing bureau."]
    no_match = ["Subject: Hotels\\n\\nWhich hotels are near the venue?"]

Ids are UPPER_SNAKE; an id starting with ``__`` is a predicate for meta rules
only: it scores nothing and is never shown. Files load in name order.

The site-local directory (``/etc/guard/rules.d`` by default) is read after the
shipped rules. There a ``[[rule]]`` with an existing id replaces it,
``[scores]`` changes scores (``RULE_ID = 0.5``), ``disable = ["RULE_ID"]``
turns rules off, and ``[lists]`` entries extend the shipped lists. The
shipped files are never edited.

Any problem stops loading with :class:`~guard.errors.RuleError`, naming the
file, the rule id and the reason.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from guard.errors import RuleError, read_toml
from guard.classification.matchers import Check, Matcher, MetaMatcher

ID_PATTERN = r"^(__)?[A-Z][A-Z0-9_]*$"
CATEGORY_TAGS = ("scam", "automated", "report", "inquiry", "paid")


# the classes' validators are built the first time a rule file is validated (defer_build): a start
# whose rule files come validated from guard's cache (_cached_file) validates nothing
_RULE_CONFIG = ConfigDict(extra="forbid", defer_build=True)


class Examples(BaseModel):
    model_config = _RULE_CONFIG
    match: list[str] = Field(min_length=1)
    no_match: list[str] = Field(min_length=1)


class RuleSpec(BaseModel):
    model_config = _RULE_CONFIG
    id: str = Field(pattern=ID_PATTERN, max_length=64)
    description: str = Field(min_length=8, max_length=300)
    score: float = Field(ge=-100, le=100)
    tags: list[str] = []
    source: str | None = None
    match: Matcher
    examples: Examples

    @field_validator("tags")
    @classmethod
    def _tags(cls, v):
        for t in v:
            if not t or not t.replace("-", "").replace("_", "").isalnum() or t != t.lower():
                raise ValueError(f"tag {t!r} must be lower-case letters, digits, - or _")
        return v

    @property
    def internal(self) -> bool:
        return self.id.startswith("__")


class RuleFile(BaseModel):
    model_config = _RULE_CONFIG
    lists: dict[str, list[str]] = {}
    rule: list[dict] = []
    scores: dict[str, float] = {}
    disable: list[str] = []


@dataclass(frozen=True)
class CompiledRule:
    spec: RuleSpec
    check: Check | None  # None for meta rules
    meta: Callable[[dict[str, bool]], bool] | None
    origin: str  # the file it came from
    #: ``spec.id``, kept as a plain attribute: read for every rule of every message
    id: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "id", self.spec.id)

    @property
    def score(self) -> float:
        return self.spec.score


@dataclass(frozen=True)
class Ruleset:
    rules: tuple[CompiledRule, ...]  # in evaluation order: every meta after what it references
    lists: dict[str, frozenset[str]]
    files: tuple[str, ...]

    def by_id(self, rule_id: str) -> CompiledRule:
        for r in self.rules:
            if r.id == rule_id:
                return r
        raise KeyError(rule_id)


def _rule_error(path: Path, rule_id: str | None, reason: str) -> RuleError:
    where = f"{path}: rule {rule_id}" if rule_id else str(path)
    return RuleError(f"{where}: {reason}")


def _explain(exc: ValidationError) -> str:
    msgs = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"] if not isinstance(p, int) or True)
        msgs.append(f"{loc}: {err['msg']}" if loc else err["msg"])
    return "; ".join(msgs)


def _read(path: Path) -> RuleFile:
    from guard.cache import json_cached

    # parsed once per file version, then read as JSON from guard's cache (tomllib is pure Python)
    data = json_cached("rules", path, lambda: read_toml(path, RuleError), 1)
    try:
        return RuleFile.model_validate(data)
    except ValidationError as exc:
        raise _rule_error(path, None, _explain(exc)) from None


def _validated(path: Path) -> tuple[RuleFile, list]:
    """The file and each of its rules validated: a :class:`RuleSpec`, or the :class:`RuleError` that
    validating it gave (raised by load_ruleset in its turn, after what the rules before it raise)."""
    rf = _read(path)
    specs: list = []
    for raw in rf.rule:
        rid = raw.get("id") if isinstance(raw, dict) else None
        try:
            specs.append(RuleSpec.model_validate(raw))
        except ValidationError as exc:
            specs.append(_rule_error(path, rid or "(no id)", _explain(exc)))
    return rf, specs


#: bump when what _cached_file keeps changes
_SPEC_CACHE_VERSION = 1


def _spec_cache_entry(path: Path):
    """Where the validated form of this rule file version is kept: keyed by the file (name, size,
    time) and by the code that validates it (this module, the matchers, pydantic, Python)."""
    from guard import cache  # noqa: PLC0415

    return cache.entry("rulespecs", path, _SPEC_CACHE_VERSION, *_validating_code())


@functools.lru_cache(maxsize=1)
def _validating_code() -> tuple[str, ...]:
    """The code this process validates rules with (read once: it is the code that is running)."""
    import sys  # noqa: PLC0415

    import pydantic  # noqa: PLC0415
    import pydantic_core  # noqa: PLC0415

    from guard import cache  # noqa: PLC0415
    from guard.classification import matchers  # noqa: PLC0415

    return cache.code_key(__file__, matchers.__file__), pydantic.VERSION, pydantic_core.__version__, sys.version


@functools.lru_cache(maxsize=1)
def _model_classes() -> dict[str, type]:
    from guard.classification import matchers  # noqa: PLC0415

    classes = {c.__name__: c for c in vars(matchers).values()
               if isinstance(c, type) and issubclass(c, BaseModel) and c.__module__ == matchers.__name__}
    classes.update({"RuleSpec": RuleSpec, "Examples": Examples, "RuleFile": RuleFile})
    return classes


def _cached_file(path: Path) -> tuple[RuleFile, list]:
    """:func:`_validated`, kept in guard's cache once a file validates without an error: a later start
    rebuilds the very same validated values (guard.cache.freeze/thaw) without pydantic validating them.
    A file with an invalid rule is validated every time (its error comes from validation itself)."""
    from guard import cache  # noqa: PLC0415

    where = _spec_cache_entry(path)
    kept = cache.read_json(where)
    if kept is not None:
        try:
            rf = cache.thaw(kept["file"], _model_classes())
            specs = cache.thaw(kept["rules"], _model_classes())
            if type(rf) is RuleFile and all(type(s) is RuleSpec for s in specs):
                return rf, specs
        except (KeyError, TypeError, ValueError, AttributeError):
            pass
    rf, specs = _validated(path)
    if where is not None and all(isinstance(s, RuleSpec) for s in specs):
        try:
            kept = {"file": cache.freeze(rf.model_copy(update={"rule": []})), "rules": cache.freeze(specs)}
            text = json.dumps(kept, ensure_ascii=False)
            again = json.loads(text)
            classes = _model_classes()
            if cache.identical(cache.thaw(again["rules"], classes), specs) and \
                    cache.identical(cache.thaw(again["file"], classes), rf.model_copy(update={"rule": []})):
                cache.write_json(where, again)
        except (TypeError, ValueError):
            pass
    return rf, specs


def _rule_files(directory: Path) -> list[Path]:
    # policy.toml lives beside the rules but is not a rule file
    return sorted(p for p in directory.glob("*.toml") if p.name != "policy.toml")


def load_ruleset(shipped: Path, local: Path | None = None) -> Ruleset:
    """Load, validate and compile the shipped rules plus optional site-local ones."""
    if not shipped.is_dir():
        raise RuleError(f"{shipped}: rules directory not found")
    specs: dict[str, tuple[RuleSpec, Path]] = {}
    lists: dict[str, set[str]] = {}
    files: list[str] = []
    layers = [(shipped, False)]
    if local is not None and local.is_dir():
        layers.append((local, True))
    for directory, is_local in layers:
        for path in _rule_files(directory):
            files.append(str(path))
            rf, validated = _cached_file(path)
            for name, entries in rf.lists.items():
                lists.setdefault(name, set()).update(e.strip().lower() for e in entries if e.strip())
            for spec in validated:
                if isinstance(spec, RuleError):
                    raise spec from None
                if spec.id in specs and not is_local:
                    raise _rule_error(path, spec.id, f"duplicate id, already defined in {specs[spec.id][1]}")
                if spec.internal and spec.score != 0:
                    raise _rule_error(path, spec.id, "a __predicate rule must have score 0")
                specs[spec.id] = (spec, path)
            if rf.scores or rf.disable:
                if not is_local:
                    raise _rule_error(path, None, "[scores] and disable belong in the site-local directory")
                for rid, score in rf.scores.items():
                    if rid not in specs:
                        raise _rule_error(path, rid, "[scores] names an unknown rule")
                    spec, origin = specs[rid]
                    specs[rid] = (spec.model_copy(update={"score": score}), origin)
                for rid in rf.disable:
                    if rid not in specs:
                        raise _rule_error(path, rid, "disable names an unknown rule")
                    del specs[rid]
    ordered = _order(specs)
    compiled = []
    for spec, path in ordered:
        try:
            if isinstance(spec.match, MetaMatcher):
                compiled.append(CompiledRule(spec, None, spec.match.compile_meta(), str(path)))
            else:
                compiled.append(CompiledRule(spec, spec.match.compile(), None, str(path)))
        except ValueError as exc:
            raise _rule_error(path, spec.id, str(exc)) from None
    return Ruleset(tuple(compiled), {k: frozenset(v) for k, v in lists.items()}, tuple(files))


def _order(specs: dict[str, tuple[RuleSpec, Path]]) -> list[tuple[RuleSpec, Path]]:
    """Plain rules first (in file order), then meta rules so each follows what it references."""
    out: list[tuple[RuleSpec, Path]] = []
    done: set[str] = set()
    visiting: set[str] = set()

    def visit(rid: str, via: tuple[RuleSpec, Path]) -> None:
        if rid in done:
            return
        if rid not in specs:
            raise _rule_error(via[1], via[0].id, f"meta rule references unknown rule {rid}")
        if rid in visiting:
            raise _rule_error(via[1], via[0].id, f"meta rules form a cycle through {rid}")
        visiting.add(rid)
        spec, path = specs[rid]
        for ref in spec.match.references():
            visit(ref, (spec, path))
        visiting.discard(rid)
        done.add(rid)
        out.append((spec, path))

    for rid, item in specs.items():
        visit(rid, item)
    return out
