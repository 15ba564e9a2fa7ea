"""The decision table (``rules/policy.toml``): a verdict in, a :class:`Plan` of actions out. Pure.

The table is ordered and the first row whose conditions all hold decides::

    [[row]]
    id = "report-paid"
    when = { category = "report", paid = true }
    actions = [
      { do = "reply", template = "report_paid" },
      { do = "alert", template = "coordinator_alert" },
      { do = "move", folder = "review" },
      { do = "flag" },
    ]

Conditions (all optional; an absent one always holds): ``category`` (one or a
list), ``paid`` (the reporter says they already gave card or bank details) and
``inner`` (the category, or list, of the forwarded message of a report).

Actions, carried out by the executor in the order sends -> move -> done:

``reply``    an automatic reply to the participant who wrote (always the
             outer sender, never a forwarded message's sender); every reply
             passes the reply gate first (:mod:`guard.respond.reply_gate`)
``forward``  the message to the coordinator, original attached; ``review =
             true`` marks it for review
``alert``    an immediate alert to the coordinator
``move``     file into a folder named by its key in ``[daemon.folders]``
``flag``     set ``\\Flagged``

Loading checks the table: unknown keys, unknown templates or folder keys, a
reply that could ever answer scam or automated mail, a category no row
covers. Errors name the file, the row and the reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from guard.errors import ConfigError, read_toml
from guard.classification.verdict import CATEGORIES, Verdict

FOLDER_KEYS = ("quarantine", "review", "routed", "automated", "not_scam", "scam", "other")
#: categories that must never get an automatic reply, whatever the table says
NEVER_REPLY = frozenset({"scam", "automated"})
ActionKind = Literal["reply", "forward", "alert", "move", "flag"]


@dataclass(frozen=True, slots=True)
class Action:
    do: str
    template: str | None = None
    folder: str | None = None  # a key of FolderNames
    review: bool = False

    def describe(self) -> str:
        if self.do == "move":
            return f"move:{self.folder}"
        if self.do in ("reply", "forward", "alert"):
            return f"{self.do}:{self.template}" + (":review" if self.review else "")
        return self.do


@dataclass(frozen=True, slots=True)
class Plan:
    row: str
    actions: tuple[Action, ...]

    @property
    def sends(self) -> tuple[Action, ...]:
        return tuple(a for a in self.actions if a.do in ("reply", "forward", "alert"))

    @property
    def folder(self) -> str | None:
        """The folder key of the (last) move, or None to leave the message where it is."""
        moves = [a.folder for a in self.actions if a.do == "move"]
        return moves[-1] if moves else None

    @property
    def flag(self) -> bool:
        return any(a.do == "flag" for a in self.actions)

    def describe(self) -> list[str]:
        return [a.describe() for a in self.actions]


# -- the file format ---------------------------------------------------------------------

_STRICT = ConfigDict(extra="forbid", frozen=True)
Category = Literal["scam", "suspicious", "report", "inquiry", "automated", "other"]


def _as_list(v):
    return [v] if isinstance(v, str) else v


class When(BaseModel):
    model_config = _STRICT
    category: list[Category] | None = None
    paid: bool | None = None
    inner: list[Category] | None = None

    _lists = field_validator("category", "inner", mode="before")(classmethod(lambda cls, v: _as_list(v)))

    def holds(self, verdict: Verdict) -> bool:
        if self.category is not None and verdict.category not in self.category:
            return False
        if self.paid is not None and bool(verdict.paid) != self.paid:
            return False
        if self.inner is not None:
            if verdict.inner is None or verdict.inner.category not in self.inner:
                return False
        return True

    def may_match(self, category: str) -> bool:
        return self.category is None or category in self.category

    @property
    def unconditional(self) -> bool:
        return self.paid is None and self.inner is None


class ActionSpec(BaseModel):
    model_config = _STRICT
    do: ActionKind
    template: str | None = Field(default=None, pattern=r"^[a-z][a-z0-9_]*$")
    folder: Literal["quarantine", "review", "routed", "automated", "not_scam", "scam", "other"] | None = None
    review: bool = False

    @model_validator(mode="after")
    def _fields(self):
        sends = self.do in ("reply", "forward", "alert")
        if sends and self.template is None:
            raise ValueError(f"a {self.do} action needs a template")
        if not sends and self.template is not None:
            raise ValueError(f"a {self.do} action takes no template")
        if (self.do == "move") != (self.folder is not None):
            raise ValueError("folder goes with move, and move needs a folder")
        if self.review and self.do != "forward":
            raise ValueError("review applies to forward only")
        return self


class RowSpec(BaseModel):
    model_config = _STRICT
    id: str = Field(pattern=r"^[a-z][a-z0-9-]*$")
    description: str | None = None
    when: When = When()
    actions: list[ActionSpec] = []

    @model_validator(mode="after")
    def _safe(self):
        if any(a.do == "reply" for a in self.actions):
            bad = [c for c in sorted(NEVER_REPLY) if self.when.may_match(c)]
            if bad:
                raise ValueError(f"a reply here could answer {' and '.join(bad)} mail; "
                                 "restrict the row's category")
        if sum(1 for a in self.actions if a.do == "move") > 1:
            raise ValueError("at most one move per row")
        return self


class PolicyFile(BaseModel):
    model_config = _STRICT
    version: Literal[1] = 1
    row: list[RowSpec] = Field(min_length=1)


@dataclass(frozen=True)
class PolicyRow:
    id: str
    when: When
    plan: Plan


@dataclass(frozen=True)
class Policy:
    rows: tuple[PolicyRow, ...]
    source: str

    def templates(self) -> frozenset[str]:
        return frozenset(a.template for r in self.rows for a in r.plan.actions if a.template)


def decide(policy: Policy, verdict: Verdict) -> Plan:
    """The plan of the first row that holds for ``verdict``. Pure."""
    for row in policy.rows:
        if row.when.holds(verdict):
            return row.plan
    # load_policy() guarantees coverage; this is the safe answer if that ever breaks
    return Plan("(no row)", ())


def load_policy(path: Path, *, templates: frozenset[str] | None = None) -> Policy:
    """Read and validate a policy file; ``templates`` (if given) are the names that exist."""
    return parse_policy(read_toml(path), str(path), templates=templates)


def parse_policy(data: dict, source: str, *, templates: frozenset[str] | None = None) -> Policy:
    try:
        spec = PolicyFile.model_validate(data)
    except ValidationError as exc:
        raise ConfigError("\n".join(_explain(source, data, err) for err in exc.errors())) from None
    rows: list[PolicyRow] = []
    seen: set[str] = set()
    for n, r in enumerate(spec.row, 1):
        where = f"{source}: row {n} ({r.id})"
        if r.id in seen:
            raise ConfigError(f"{where}: duplicate row id")
        seen.add(r.id)
        for a in r.actions:
            if templates is not None and a.template is not None and a.template not in templates:
                raise ConfigError(f"{where}: unknown template {a.template!r} (have: {', '.join(sorted(templates))})")
        actions = tuple(Action(a.do, a.template, a.folder, a.review) for a in r.actions)
        rows.append(PolicyRow(r.id, r.when, Plan(r.id, actions)))
    for cat in CATEGORIES:
        if not any(row.when.may_match(cat) and row.when.unconditional for row in rows):
            raise ConfigError(f"{source}: no row decides category {cat!r} unconditionally (add one without paid/inner)")
    return Policy(tuple(rows), source)


def _explain(source: str, data: dict, err: dict) -> str:
    loc = list(err["loc"])
    msg = err["msg"].removeprefix("Value error, ")
    if len(loc) >= 2 and loc[0] == "row" and isinstance(loc[1], int):
        n = loc[1]
        rows = data.get("row") if isinstance(data, dict) else None
        rid = rows[n].get("id") if isinstance(rows, list) and n < len(rows) and isinstance(rows[n], dict) else None
        rest = ".".join(str(p) for p in loc[2:])
        return f"{source}: row {n + 1}{f' ({rid})' if rid else ''}: {rest + ': ' if rest else ''}{msg}"
    return f"{source}: {'.'.join(str(p) for p in loc) or '(top level)'}: {msg}"
