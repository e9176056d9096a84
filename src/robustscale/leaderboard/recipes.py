"""The curated recipe table (``recipes.yaml``): facts that decide each leaderboard entry's training compute.

Every fact carries its ``source`` (or, when nobody could source it, ``value: null`` and a plausible
``low``/``high`` with the ``reason``). :func:`load_recipes` resolves the shared recipes into one
:class:`Entry` per leaderboard name, with its phases; :attr:`Entry.sourced` tells whether every
compute-deciding fact of every phase has a source.

Implementation facts (:data:`IMPLEMENTATION`) say what the authors' code spends beyond the recipe: whether
the attack's backward computes weight gradients (``attack_backward``: ``input`` / ``full``), model calls
per attack step (``attack_forwards``), and forwards / training passes an efficient step would not run
(``redundant_forwards``, ``redundant_train_passes``). An entry that does not state one gets
:func:`implementation_default`: an unsourced range with its reason, so an unread code widens the total.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

import yaml

TABLE = "recipes.yaml"
IMPLEMENTATION = ("attack_backward", "attack_forwards", "redundant_forwards", "redundant_train_passes")
PHASE_FACTS = ("model", "input_size", "num_classes", "method", "attack_steps", "epochs", "images_per_epoch",
               "train_steps", "batch_size", "data", "extra_forwards", "extra_train_passes") + IMPLEMENTATION
TEXT_KEYS = ("method_name", "notes")
ENTRY_KEYS = PHASE_FACTS + TEXT_KEYS + ("recipe", "phases", "based_on", "members", "excluded", "unbounded_extra")
FACT_KEYS = ("value", "low", "high", "source", "verified", "reason", "kind")
METHODS = ("standard", "fgsm_rs", "pgd", "trades")  # cheapest to dearest at equal attack steps
# Facts an entry needs sourced to count as "sourced" (epochs may be given as train_steps).
REQUIRED = ("model", "method", "attack_steps", "batch_size", "data")
DEFAULTS = {"input_size": 32, "num_classes": 10, "extra_forwards": 0, "extra_train_passes": 0}
ATTACK_BACKWARDS = ("input", "full")  # input-only gradients (the efficient step) / weight gradients too
# What an unread code may do, per fact: (low, high, reason) for attack methods; (value, reason) otherwise.
NOT_READ = "the authors' training code was not read here"
UNREAD = {
    "attack_backward": ("input", "full", f"{NOT_READ}: input-only gradients (torch.autograd.grad w.r.t. the "
                        "input) and a full loss.backward() inside the attack are both common in this literature"),
    "attack_forwards": {"trades": (1, 2, f"{NOT_READ}: TRADES' reference code (yaodongyu/TRADES trades.py) and "
                                   "several descendants recompute model(x_natural) at every attack step"),
                        "default": (1, 1, f"{NOT_READ}: a PGD step needs one forward; no PGD code read here "
                                    "ran more")},
    "redundant_forwards": (0, 1, f"{NOT_READ}: a separate clean forward (TRADES' p_natural, a clean forward "
                           "for the training accuracy) is common"),
    "redundant_train_passes": {"trades": (0, 1, f"{NOT_READ}: TRADES' reference code back-propagates a second "
                                          "forward of the clean batch"),
                               "default": (0, 0, f"{NOT_READ}; no PGD code read here back-propagated more "
                                           "than one pass")},
}
EFFICIENT = {"attack_backward": "input", "attack_forwards": 1, "redundant_forwards": 0, "redundant_train_passes": 0}


class RecipeTableError(ValueError):
    """The packaged (or a given) recipe table breaks its own rules: a bug in the table, not a user mistake."""


@dataclass(frozen=True)
class Fact:
    """One fact: ``value`` (None when unsourced), its range ``low``..``high`` and where it is stated."""

    name: str
    value: Any
    low: Any
    high: Any
    source: str | None = None
    verified: bool = False
    reason: str | None = None
    kind: str | None = None  # "forward_flops" for a model given as explicit FLOPs

    @property
    def sourced(self) -> bool:
        return bool(self.source)

    @property
    def is_range(self) -> bool:
        return self.low != self.high

    def describe(self) -> str:
        shown = self.value if not self.is_range else f"{self.low}..{self.high}"
        why = self.source or f"unsourced: {self.reason}"
        return f"{self.name} = {shown} ({why})"

    def to_dict(self) -> dict[str, Any]:
        return {"value": self.value, "low": self.low, "high": self.high, "source": self.source,
                "verified": self.verified, "reason": self.reason}


def default_fact(name: str) -> Fact:
    v = DEFAULTS[name]
    return Fact(name, v, v, v, source="default (not a recipe fact)", verified=True)


def implementation_default(name: str, method: str) -> Fact:
    """An implementation fact nobody read: the range an unread code may spend, with the reason.

    Standard training has no attack: its attack facts are the efficient values (nothing to spend)."""
    if method == "standard":
        v = EFFICIENT[name]
        return Fact(name, v, v, v, source="standard training has no attack", verified=True)
    spec = UNREAD[name]
    if isinstance(spec, dict):
        spec = spec.get(method, spec["default"])
    low, high, reason = spec
    return Fact(name, None, low, high, reason=reason)


@dataclass
class Phase:
    """One training stage (e.g. ImageNet pre-training, then CIFAR-10 fine-tuning)."""

    facts: dict[str, Fact]
    method_name: str | None = None

    def get(self, name: str) -> Fact:
        if name in self.facts:
            return self.facts[name]
        if name in DEFAULTS:
            return default_fact(name)
        if name in IMPLEMENTATION:
            return implementation_default(name, self.facts["method"].high)
        raise KeyError(name)

    def implementation_missing(self) -> list[str]:
        """Implementation facts without a source (stated as a range, or not stated at all)."""
        return [name for name in IMPLEMENTATION if not self.get(name).sourced]

    def missing_sources(self) -> list[str]:
        """Names of compute-deciding facts without a source (or absent)."""
        needed = list(REQUIRED) + (["train_steps"] if "train_steps" in self.facts else ["epochs", "images_per_epoch"])
        out = []
        for name in needed:
            f = self.facts.get(name)
            if f is None or not f.sourced:
                out.append(name)
        for name in ("extra_forwards", "extra_train_passes"):
            f = self.facts.get(name)
            if f is not None and not f.sourced:
                out.append(name)
        return out


@dataclass
class Entry:
    """A leaderboard entry's recipe: its phases, or why it is excluded."""

    name: str
    phases: list[Phase] = field(default_factory=list)
    based_on: Fact | None = None
    members: Fact | None = None
    excluded: str | None = None
    unbounded_extra: str | None = None
    method_name: str | None = None
    notes: str | None = None

    def missing_sources(self) -> list[str]:
        out = []
        for i, p in enumerate(self.phases):
            prefix = f"phase {i + 1} " if len(self.phases) > 1 else ""
            out += [prefix + m for m in p.missing_sources()]
        if self.members is not None and not self.members.sourced:
            out.append("members")
        if self.unbounded_extra:
            out.append("unbounded extra component")
        return out

    def implementation_missing(self) -> list[str]:
        """Implementation facts of any phase that no source states (see :data:`IMPLEMENTATION`)."""
        out = []
        for i, p in enumerate(self.phases):
            prefix = f"phase {i + 1} " if len(self.phases) > 1 else ""
            out += [prefix + m for m in p.implementation_missing()]
        return out

    def facts(self) -> list[Fact]:
        """Every fact the entry states itself (its phases', its base's and its members'), in table order."""
        out = [f for p in self.phases for f in p.facts.values()]
        return out + [f for f in (self.based_on, self.members) if f is not None]

    @property
    def own_sourced(self) -> bool:
        """Sourced apart from the entry it is based on."""
        return self.excluded is None and not self.missing_sources()

    def sources(self) -> list[str]:
        """Every distinct source cited by this entry (for the exported ``recipe_source``)."""
        seen: list[str] = []
        for f in self.facts():
            if f.source and f.source not in seen:
                seen.append(f.source)
        return seen


# ---------------------------------------------------------------------- loading
def load_table(path: str | Path | None = None) -> dict[str, Any]:
    if path is None:
        text = resources.files("robustscale.leaderboard").joinpath(TABLE).read_text(encoding="utf-8")
    else:
        text = Path(path).read_text(encoding="utf-8")
    data = yaml.safe_load(text) or {}
    for key in data:
        if key not in ("recipes", "entries"):
            raise RecipeTableError(f"unknown top-level key {key!r} in the recipe table; valid: recipes, entries")
    return data


def load_recipes(path: str | Path | None = None) -> dict[str, Entry]:
    """Entries of the recipe table by RobustBench name (the packaged table unless ``path``)."""
    data = load_table(path)
    recipes = data.get("recipes") or {}
    entries = {}
    for name, raw in (data.get("entries") or {}).items():
        entries[str(name)] = _entry(str(name), raw or {}, recipes)
    for e in entries.values():
        if e.based_on is not None and e.based_on.value not in entries:
            raise RecipeTableError(f"entry {e.name}: based_on {e.based_on.value!r} is not an entry of the table")
    return entries


def _entry(name: str, raw: Mapping[str, Any], recipes: Mapping[str, Any]) -> Entry:
    for key in raw:
        if key not in ENTRY_KEYS:
            raise RecipeTableError(f"entry {name}: unknown key {key!r}; valid: {', '.join(ENTRY_KEYS)}")
    if raw.get("excluded"):
        return Entry(name, excluded=str(raw["excluded"]))
    merged = _with_recipe(name, raw, recipes)
    entry = Entry(name, method_name=merged.get("method_name"), notes=merged.get("notes"),
                  unbounded_extra=merged.get("unbounded_extra"))
    if "based_on" in merged:
        entry.based_on = _fact(name, "based_on", merged["based_on"])
    if "members" in merged:
        entry.members = _fact(name, "members", merged["members"])
    if "phases" in merged:
        for i, praw in enumerate(merged["phases"] or []):
            praw = _with_recipe(f"{name} phase {i + 1}", praw or {}, recipes)
            entry.phases.append(_phase(f"{name} phase {i + 1}", praw))
    elif any(k in merged for k in PHASE_FACTS):
        entry.phases.append(_phase(name, merged))
    if not entry.phases and entry.based_on is None:
        raise RecipeTableError(f"entry {name}: no facts, no phases, no based_on and not excluded")
    return entry


def _with_recipe(where: str, raw: Mapping[str, Any], recipes: Mapping[str, Any]) -> dict[str, Any]:
    name = raw.get("recipe")
    if name is None:
        return dict(raw)
    if name not in recipes:
        raise RecipeTableError(f"{where}: unknown recipe {name!r}; valid: {', '.join(recipes)}")
    out = copy.deepcopy(dict(recipes[name]))
    out.update({k: v for k, v in raw.items() if k != "recipe"})
    return out


def _phase(where: str, raw: Mapping[str, Any]) -> Phase:
    facts = {k: _fact(where, k, raw[k]) for k in PHASE_FACTS if k in raw}
    if "train_steps" in facts and "epochs" in facts:
        raise RecipeTableError(f"{where}: give epochs (+ images_per_epoch) or train_steps, not both")
    for k in ("model", "method", "batch_size"):
        if k not in facts:
            raise RecipeTableError(f"{where}: lacks the fact {k!r}")
    if "train_steps" not in facts and not ("epochs" in facts and "images_per_epoch" in facts):
        raise RecipeTableError(f"{where}: needs epochs and images_per_epoch, or train_steps")
    m = facts["method"]
    for v in {m.low, m.high}:
        if v not in METHODS:
            raise RecipeTableError(f"{where}: method {v!r}; valid: {', '.join(METHODS)}")
    if "attack_backward" in facts:
        for v in {facts["attack_backward"].low, facts["attack_backward"].high}:
            if v not in ATTACK_BACKWARDS:
                raise RecipeTableError(f"{where}: attack_backward {v!r}; valid: {', '.join(ATTACK_BACKWARDS)}")
    if "attack_steps" not in facts and m.high != "standard":
        raise RecipeTableError(f"{where}: method {m.high} needs attack_steps")
    return Phase(facts, method_name=raw.get("method_name"))


def _fact(where: str, name: str, raw: Any) -> Fact:
    if not isinstance(raw, Mapping):
        raise RecipeTableError(f"{where}: fact {name} must be a mapping with value and source (got {raw!r})")
    for key in raw:
        if key not in FACT_KEYS:
            raise RecipeTableError(f"{where}: fact {name} has unknown key {key!r}; valid: {', '.join(FACT_KEYS)}")
    value = raw.get("value")
    source = raw.get("source")
    source = str(source).strip() if source else None
    low, high = raw.get("low", value), raw.get("high", value)
    if value is None and (low is None or high is None):
        raise RecipeTableError(f"{where}: fact {name} has no value and no plausible range (low, high)")
    if value is None and not source and not raw.get("reason"):
        raise RecipeTableError(f"{where}: unsourced fact {name} needs a reason for its range")
    if value is not None and not source:
        raise RecipeTableError(f"{where}: fact {name} = {value!r} has no source")
    if isinstance(low, (int, float)) and isinstance(high, (int, float)) and low > high:
        raise RecipeTableError(f"{where}: fact {name} has low {low} > high {high}")
    return Fact(name, value, low, high, source=source, verified=bool(raw.get("verified", False)),
                reason=raw.get("reason"), kind=raw.get("kind"))
