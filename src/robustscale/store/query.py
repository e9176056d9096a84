"""``--where`` filters over run rows: ``method=pgd``, ``epochs>=100``, ``model=wide_resnet28_10,wide_resnet34_10``.

A filter is ``KEY OP VALUE`` with OP one of ``= != >= <= > < ~`` (``~``: substring; ``==`` is
read as ``=``). KEY is a
column of the store's ``runs`` table (``schema.RUN_COLUMNS`` and ``name``, ``source``,
``sweep``, ``seed``, ``host``...), a paper alias (``at``, ``at_steps``, ``eval_acc``), or any
``TrainConfig`` key (matched against the run's stored config). ``=`` and ``!=`` take a comma
list of alternatives; ``none`` matches a missing value (an empty value is an error). Filters are
AND-ed. ``status=stale`` selects running runs whose process is gone; a status must be one a run
can have.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, fields
from fractions import Fraction
from typing import Any, Iterable

from ..config import TrainConfig
from ..errors import UserError
from ..schema import resolve_column
from .tables import runs, status_choices

_OPS = ("!=", ">=", "<=", "=", ">", "<", "~")
_PATTERN = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_\-]*)\s*(!=|>=|<=|==|=|>|<|~)\s*(.*?)\s*$")
_JSON_COLUMNS = ("config", "summary", "extra")


@dataclass(frozen=True)
class Filter:
    key: str
    op: str
    values: tuple[str, ...]
    from_config: bool

    def matches(self, row: dict[str, Any]) -> bool:
        if self.key == "status":
            actual = row.get("effective_status") or row.get("status")
            if self.op in ("=", "!=") and actual == "stale" and "running" in self.values and "stale" not in self.values:
                actual = "running"  # `status=running` includes stale runs; `status=stale` narrows
        elif self.from_config:
            actual = (row.get("config") or {}).get(self.key)
        else:
            actual = row.get(self.key)
        if self.op == "=":
            return any(_equal(actual, v) for v in self.values)
        if self.op == "!=":
            return not any(_equal(actual, v) for v in self.values)
        if self.op == "~":
            return actual is not None and self.values[0].lower() in str(actual).lower()
        a, b = _number(actual), _number(self.values[0])
        if a is None or b is None:
            if actual is None:
                return False
            a, b = str(actual), self.values[0]
        return {">": a > b, "<": a < b, ">=": a >= b, "<=": a <= b}[self.op]


def valid_keys() -> list[str]:
    return [c for c in runs.c.keys() if c not in _JSON_COLUMNS and c != "id"]


def parse_where(exprs: Iterable[str]) -> list[Filter]:
    """Parse ``--where`` expressions; UserError naming a bad one and the valid keys/operators."""
    columns = valid_keys()
    config_keys = [f.name for f in fields(TrainConfig)]
    out = []
    for expr in exprs:
        m = _PATTERN.match(str(expr))
        if not m:
            raise UserError(f"invalid filter {expr!r}; expected KEY OP VALUE with OP one of {' '.join(_OPS)} "
                            f"(e.g. method=pgd, epochs>=100)")
        key, op, value = m.groups()
        op = "=" if op == "==" else op
        key = resolve_column(key.replace("-", "_"))
        if key not in columns and key not in config_keys:
            raise UserError(f"unknown filter key {key!r} in {expr!r}; valid: {', '.join(columns)} "
                            f"or any TrainConfig key")
        values = tuple(v.strip() for v in value.split(",")) if op in ("=", "!=") else (value,)
        if not all(values) or any(v[0] in "=!<>~" for v in values):
            raise UserError(f"invalid filter {expr!r}: no value after {op!r} (e.g. {key}{op}VALUE; "
                            f"{key}{op}none for a missing value)")
        if op not in ("=", "!=", "~") and _number(value) is None:
            raise UserError(f"invalid filter {expr!r}: {op} needs a number")
        if key == "status" and op in ("=", "!="):
            for v in values:
                if v.lower() not in status_choices():
                    raise UserError(f"invalid filter {expr!r}: unknown status {v!r}; valid: "
                                    f"{', '.join(status_choices())}")
        out.append(Filter(key, op, values, from_config=key not in columns))
    return out


def apply_where(rows: list[dict[str, Any]], exprs: Iterable[str]) -> list[dict[str, Any]]:
    filters = parse_where(exprs)
    return [r for r in rows if all(f.matches(r) for f in filters)]


def _number(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    try:
        return float(Fraction(str(value).strip()))  # "8/255" works as an eps filter
    except (ValueError, ZeroDivisionError):
        return None


def _equal(actual: Any, text: str) -> bool:
    low = text.lower()
    if low in ("none", "null", ""):
        return actual is None
    if actual is None:
        return False
    if isinstance(actual, bool):
        return low in (("true", "1", "yes") if actual else ("false", "0", "no"))
    a, b = _number(actual), _number(text)
    if a is not None and b is not None:
        return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)
    return str(actual).lower() == low
