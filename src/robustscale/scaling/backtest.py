"""Back-tests: fit a law on the cheaper runs, predict the held-out expensive ones, and measure whether the
printed prediction intervals hold.

Splits (:data:`SPLITS`):

- ``compute``: fit on the cheapest ``fraction`` of the runs (by ``x``, default two thirds), predict the rest;
- ``model-size``: hold out the runs of the largest model (``model_parameters``), fit on the others;
- ``year``: fit on the entries up to year ``Y`` (``cutoff``, default the median year), predict the later ones
  (for the leaderboard: the later entries of the field's compute frontier).

Per law and group: each held-out run's prediction error (observed - predicted, points), the share of held-out
runs whose 95 % *prediction* interval covers the observed accuracy, with its exact binomial (Clopper-Pearson)
interval, and the *reach*: the compute factor beyond the largest fitted run up to which every held-out run was
covered. The prediction interval of run i is the percentile interval of ``law_b(x_i) + e_b`` over the bootstrap
laws b, ``e_b ~ Normal(0, se_i)`` with ``se_i^2`` the binomial variance of its test images at the predicted
accuracy plus the seed SD squared (``identified.seed_sd_of``: measured from replicate seeds where the runs have
them, else the assumed 1 point) -- the same noise the lack-of-fit test allows.

The rulebook decides what is predicted: a law the training part does not identify (``identified.identify``),
or that the runs reject (lack of fit), predicts nothing and the row says why; a held-out run beyond the
refusal limit (``identified.MAX_EXTRAPOLATION`` x the largest fitted run) is counted as refused, not predicted.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import pandas as pd
from scipy.stats import beta

from ..errors import UserError
from ..schema import finite_float, n_examples_column
from .fit import fit_law, group_label
from .format import fmt, render_table
from .frontier import frontier_mask
from .identified import MAX_EXTRAPOLATION, OK, identify, min_runs, reach, seed_sd_of
from .io import require_columns, resolve_columns
from .laws import get_law

SPLITS = ("compute", "model-size", "year")
DEFAULT_FRACTION = 2 / 3
NOISE_DRAWS_SEED = 12345  # fixed: the noise added to each bootstrap law is part of the method, not the data


@dataclass
class Backtest:
    """One (group, law) back-test. ``rows``: per held-out run ``name, x, factor, observed, predicted, low, high,
    covered, status``; ``status``/``reason``: the law's identification on the training part."""

    group: dict[str, Any]
    law: str
    split: str
    split_text: str
    n_train: int
    n_test: int
    status: str
    reason: str = ""
    level: float = 0.95
    rows: list[dict[str, Any]] = field(default_factory=list)

    @property
    def label(self) -> str:
        return group_label(self.group)

    @property
    def predicted(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if r["status"] == OK]

    def coverage(self) -> tuple[int, int]:
        p = self.predicted
        return sum(bool(r["covered"]) for r in p), len(p)

    def coverage_ci(self) -> tuple[float, float] | None:
        """Clopper-Pearson 95 % interval of the coverage share (None without predictions)."""
        k, m = self.coverage()
        if not m:
            return None
        lo = 0.0 if k == 0 else float(beta.ppf(0.025, k, m - k + 1))
        hi = 1.0 if k == m else float(beta.ppf(0.975, k + 1, m - k))
        return lo, hi

    def reach(self) -> float | None:
        """Largest compute factor (beyond the largest fitted run) up to which every predicted run was covered;
        1.0 when the nearest one already missed; None without predictions."""
        p = sorted(self.predicted, key=lambda r: r["factor"])
        if not p:
            return None
        held = 1.0
        for r in p:
            if not r["covered"]:
                break
            held = max(held, r["factor"])
        return held

    def errors(self) -> np.ndarray:
        return np.array([r["observed"] - r["predicted"] for r in self.predicted], float)

    def to_dict(self) -> dict[str, Any]:
        k, m = self.coverage()
        err = self.errors()
        ci = self.coverage_ci()
        return {"group": {a: (v.item() if hasattr(v, "item") else v) for a, v in self.group.items()},
                "label": self.label, "law": self.law, "split": self.split, "split_text": self.split_text,
                "n_train": self.n_train, "n_test": self.n_test, "status": self.status, "reason": self.reason or None,
                "level": self.level, "n_predicted": m, "n_covered": k,
                "coverage": finite_float(k / m) if m else None,
                "coverage_ci": [finite_float(ci[0]), finite_float(ci[1])] if ci else None,
                "mean_abs_error": finite_float(np.mean(np.abs(err))) if m else None,
                "max_abs_error": finite_float(np.max(np.abs(err))) if m else None,
                "mean_error": finite_float(np.mean(err)) if m else None,
                "reach": finite_float(self.reach()),
                "runs": [{k2: (finite_float(v) if isinstance(v, float) else v) for k2, v in r.items()}
                         for r in self.rows]}


def split_runs(df, split: str, x: str, fraction: float = DEFAULT_FRACTION, cutoff: float | None = None):
    """``(train, test, text)`` of ``df`` for ``split`` (see the module docstring); UserError for a bad split."""
    if split not in SPLITS:
        raise UserError(f"invalid --split {split!r}; valid: {', '.join(SPLITS)}")
    if split == "compute":
        if not 0 < fraction < 1:
            raise UserError(f"invalid --fraction {fraction!r}: must be in (0, 1), e.g. 0.67")
        xs = pd.to_numeric(df[x], errors="coerce")
        order = xs.rank(method="first")
        n_train = int(math.floor(fraction * xs.notna().sum()))
        train = df[order <= n_train]
        limit = float(xs[order <= n_train].max()) if n_train else float("nan")
        test = df[(order > n_train) & (xs > limit)]  # ties with the largest fitted run are not held out
        return train, test, f"compute: fit the cheapest {100 * fraction:.0f}% by {x}, predict the rest"
    if split == "model-size":
        require_columns(df, ["model_parameters"])
        n = pd.to_numeric(df["model_parameters"], errors="coerce")
        top = n.max()
        return df[n < top], df[n == top], f"model size: hold out the largest model ({fmt(top)} parameters)"
    require_columns(df, ["year"])
    years = pd.to_numeric(df["year"], errors="coerce")
    if cutoff is None:
        cutoff = float(np.floor(years.median()))
    return df[years <= cutoff], df[years > cutoff], f"year: fit the entries up to {cutoff:g}, predict the later ones"


def backtest(df, split: str, laws: Sequence[str] = ("power", "saturating"), group_by: Sequence[str] | None = None,
             x: str = "train_flops", y: str = "aa_robust_acc", frontier: bool = False,
             fraction: float = DEFAULT_FRACTION, cutoff: float | None = None, bootstrap: int = 1000, seed: int = 0,
             exclude_below: float | None = 10.0, level: float = 0.95, seed_sd: float | None = None,
             n_jobs: int | None = None, progress: bool = False) -> list[Backtest]:
    """Back-test every law on every group (see the module docstring). UserError, before any fit, when a split
    leaves a group fewer fitted runs than a law needs to be identified (``identified.min_runs``) or nothing to
    predict, naming the split, the group and the counts."""
    x = resolve_columns([x])[0]
    y = resolve_columns([y])[0]
    require_columns(df, [x, y])
    laws = [get_law(law).name for law in laws]
    cols = resolve_columns(group_by) if group_by else []
    require_columns(df, cols)
    parts = [({}, df)] if not cols else [
        ({c: (k.item() if hasattr(k, "item") else k) for c, k in zip(cols, key if isinstance(key, tuple) else (key,))},
         part) for key, part in df.groupby(cols, sort=True, dropna=False)]
    plans = []
    for group, part in parts:
        acc = pd.to_numeric(part[y], errors="coerce")
        part = part[acc.notna() & ~(acc < exclude_below)] if exclude_below is not None else part[acc.notna()]
        train, test, text = split_runs(part, split, x, fraction, cutoff)
        if frontier:
            test = _later_frontier(part, train, test, x, y)
        n_fit = _n_fitted(train, x, y, frontier)
        for law in laws:
            need = min_runs(get_law(law).n_params)
            if n_fit < need or len(test) == 0:
                where = f" in group {group_label(group)}" if group else ""
                what = f"{n_fit} {'frontier ' if frontier else ''}runs to fit (the {law} law needs {need})"
                raise UserError(f"back-test split {split!r}{where} leaves {what} and {len(test)} to predict; "
                                f"{text}: choose another --fraction/--cutoff or fewer groups")
        plans.append((group, train, test, text))
    out = []
    for group, train, test, text in plans:
        for j, law in enumerate(laws):
            fit = fit_law(train, law=law, x=x, y=y, bootstrap=bootstrap, seed=seed + j, frontier=frontier,
                          exclude_below=None, level=level, n_jobs=n_jobs, progress=progress, group=group,
                          seed_sd=seed_sd)
            out.append(_predict_held_out(fit, test, split, text, x, y, level))
    return out


def _n_fitted(train, x: str, y: str, frontier: bool) -> int:
    xs = pd.to_numeric(train[x], errors="coerce").to_numpy(float)
    ys = pd.to_numeric(train[y], errors="coerce").to_numpy(float)
    ok = np.isfinite(xs) & np.isfinite(ys) & (xs > 0)
    return int(frontier_mask(xs[ok], ys[ok]).sum()) if frontier else int(ok.sum())


def _later_frontier(part, train, test, x: str, y: str):
    """The held-out entries that advanced the frontier: better than every entry (fitted or held out) at or below
    their compute. A frontier law predicts the best accuracy at a compute, not every entry's."""
    xs = pd.to_numeric(part[x], errors="coerce")
    ys = pd.to_numeric(part[y], errors="coerce")
    keep = []
    for idx in test.index:
        below = (xs <= xs[idx]) & (part.index != idx)
        if not (ys[below] >= ys[idx]).any():
            keep.append(idx)
    return test.loc[keep]


def _predict_held_out(fit, test, split: str, text: str, x: str, y: str, level: float) -> Backtest:
    ident = identify(fit) if fit.converged else None
    status = ident.status if ident else "did not converge"
    reason = (ident.reason if ident else fit.message) or ""
    bt = Backtest(group=fit.group, law=fit.law, split=split, split_text=text, n_train=fit.n, n_test=len(test),
                  status=status, reason=reason, level=level)
    xs = pd.to_numeric(test[x], errors="coerce").to_numpy(float)
    obs = pd.to_numeric(test[y], errors="coerce").to_numpy(float)
    names = test["name"].astype(str).tolist() if "name" in test.columns else [str(i) for i in test.index]
    ncol = n_examples_column(y, test.columns)
    n_ex = pd.to_numeric(test[ncol], errors="coerce").to_numpy(float) if ncol else np.full(len(test), np.nan)
    factors = xs / fit.x_range[1]
    if status != OK or not fit.has_bootstrap:
        bt.rows = [{"name": n, "x": float(v), "factor": float(f), "observed": float(o), "status": status}
                   for n, v, f, o in zip(names, xs, factors, obs)]
        return bt
    theta, extra = fit.bootstrap_draws()
    draws = fit.law_form.predict(theta, xs, fit.prepared, extra)  # (B, m)
    point = fit.predict(xs)
    sd, _ = seed_sd_of(fit)
    q = np.clip(point / 100.0, 0.0, 1.0)
    binom = np.where(np.isfinite(n_ex) & (n_ex > 0), 1e4 * q * (1 - q) / np.where(n_ex > 0, n_ex, 1), 0.0)
    se = np.sqrt(binom + sd ** 2)
    rng = np.random.default_rng(NOISE_DRAWS_SEED)
    noisy = draws + rng.standard_normal(draws.shape) * se[None, :]
    tail = (1 - level) / 2
    lo = np.quantile(noisy, tail, axis=0, method="lower")
    hi = np.quantile(noisy, 1 - tail, axis=0, method="higher")
    for i, name in enumerate(names):
        where = reach(factors[i], "the largest fitted run's compute")
        row = {"name": name, "x": float(xs[i]), "factor": float(factors[i]), "observed": float(obs[i]),
               "status": OK if not where.refused else "beyond reach"}
        if not where.refused:
            row.update(predicted=float(point[i]), low=float(lo[i]), high=float(hi[i]),
                       covered=bool(lo[i] <= obs[i] <= hi[i]))
        bt.rows.append(row)
    return bt


def backtest_table(results: Sequence[Backtest]) -> tuple[list[str], list[list[str]]]:
    """One row per (group, law): counts, status, errors, coverage with its binomial interval, reach."""
    headers = ["group", "law", "fitted", "held out", "status", "mean |error| [pts]", "max |error| [pts]",
               "mean error [pts]", "95% PI coverage [CI]", "reach [x largest fitted]", "largest tested"]
    rows = []
    for b in results:
        d = b.to_dict()
        lead = [b.label, b.law, str(b.n_train), str(b.n_test)]
        tested = max((r["factor"] for r in b.rows), default=float("nan"))
        if b.status != OK:  # the reason is printed under the table (format_backtests)
            rows.append(lead + [b.status, "-", "-", "-", "-", "-", fmt(tested)])
            continue
        k, m = b.coverage()
        refused = len(b.rows) - m
        cov = "-" if not m else (f"{k}/{m} [{fmt(100 * d['coverage_ci'][0])}, {fmt(100 * d['coverage_ci'][1])}]%"
                                 + (f" ({refused} refused)" if refused else ""))
        rows.append(lead + ["ok", fmt(d["mean_abs_error"]), fmt(d["max_abs_error"]), fmt(d["mean_error"]), cov,
                            fmt(d["reach"]), fmt(tested)])
    return headers, rows


def format_backtests(results: Sequence[Backtest]) -> str:
    if not results:
        return "(no back-tests)"
    headers, rows = backtest_table(results)
    right = [False, False, True, True, False] + [True] * 6
    return (f"{results[0].split_text}; {100 * results[0].level:g}% prediction intervals (bootstrap law + binomial "
            f"+ seed noise); reach: factor beyond the largest fitted run up to which every held-out run was covered; "
            f"held-out runs beyond the refusal limit ({MAX_EXTRAPOLATION:g}x) are refused, not predicted\n"
            + render_table(headers, rows, right)
            + "".join(f"\n  {b.label}, {b.law}: {b.status}: {b.reason}" for b in results if b.status != OK))


def backtested_reach(results: Sequence[Backtest]) -> float | None:
    """The smallest reach over the identified back-tests of a source (the conservative figure labels quote)."""
    reaches = [b.reach() for b in results if b.status == OK and b.reach() is not None]
    return min(reaches) if reaches else None


__all__ = ["Backtest", "backtest", "split_runs", "backtest_table", "format_backtests", "backtested_reach", "SPLITS"]
