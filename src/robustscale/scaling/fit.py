"""Fit a law to runs, with bootstrap intervals: :func:`fit_law`, :func:`fit_groups`, :func:`compare_exponents`.

Intervals are case-resampling bootstrap percentiles (runs are the cases), for every parameter,
for predictions and for the compute that reaches a target. Quantiles use the nearest order
statistic outward (``lower`` / ``higher``), so an interval is never narrower than the draws say,
and a target that a share of the resampled laws never reach gets an infinite upper bound.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

from ..errors import UserError
from ..schema import CONFIG_COLUMNS, n_examples_column
from ..schema import finite_float as _num
from ._threads import single_threaded_blas
from .bootstrap import bootstrap_fit
from .frontier import frontier_mask
from .identified import check_seed_sd, identify
from .io import require_columns, resolve_columns
from .laws import ACC_MAX, FittedLaw, Law, PowerLaw, Prepared, get_law

DEFAULT_X = "train_flops"
DEFAULT_Y = "aa_robust_acc"
CHINCHILLA_X = ("model_parameters", "train_images_seen")


class FitNotConverged(UserError):
    """Asked for a prediction from a fit that did not converge."""


def group_label(group: dict[str, Any] | None) -> str:
    """``{"method": "pgd", "synthetic_data": True}`` -> ``"method=pgd, synthetic_data=True"``."""
    if not group:
        return "all runs"
    return ", ".join(f"{k}={v}" for k, v in group.items())


def percentile_interval(values: np.ndarray, level: float, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    q = (1 - level) / 2
    return (np.quantile(values, q, axis=axis, method="lower"),
            np.quantile(values, 1 - q, axis=axis, method="higher"))


@dataclass
class FitResult(FittedLaw):
    """One law fitted to one group of runs.

    ``params`` are in original units (x in its column's units, y in percent or its units), with
    derived values (``y_max`` = asymptotic accuracy for error laws; chinchilla's ``gamma``, ``k``).
    ``ci[name] = (low, high)`` at ``level`` from the bootstrap (empty without bootstrap).
    ``r2`` and ``aic`` are computed on y-units residuals (comparable across laws, Gaussian AIC
    ``n log(RSS/n) + 2p``); ``r2_log`` on the scale the law was fitted on (log y, or log error).
    ``residuals`` = observed minus predicted y of the fitted runs (``fitted_index`` in the table;
    ``kept_index``: the runs left after exclusion, a superset for frontier fits).
    """

    law: str
    formula: str
    x: str | tuple[str, ...]
    y: str
    group: dict[str, Any]
    n: int
    params: dict[str, float]
    ci: dict[str, tuple[float, float]]
    r2: float
    r2_log: float
    aic: float
    residuals: np.ndarray
    converged: bool
    message: str
    frontier: bool = False
    n_excluded: int = 0
    n_bootstrap: int = 0
    n_bootstrap_failed: int = 0
    level: float = 0.95
    x_range: tuple[float, float] = (float("nan"), float("nan"))
    fitted_index: np.ndarray = field(default_factory=lambda: np.zeros(0, int))
    kept_index: np.ndarray = field(default_factory=lambda: np.zeros(0, int))  # rows left after exclusion
    x_values: np.ndarray = field(default_factory=lambda: np.zeros(0))
    y_values: np.ndarray = field(default_factory=lambda: np.zeros(0))
    # test images behind each fitted y (the table's ``<y>_n_examples``), None where the table has none
    n_examples: np.ndarray | None = None
    # seed-to-seed SD (points) the lack-of-fit test allows beside the binomial noise; None: identified.SEED_SD_POINTS
    seed_sd: float | None = None
    # per fitted run, the id of its group of seeds of one configuration (same x and schema.CONFIG_COLUMNS,
    # different seed); None when the table has no seed column
    replicate_group: np.ndarray | None = None
    # internals: the law, its scaled data and internal parameters (point and bootstrap)
    _law: Law | None = field(default=None, repr=False)
    _prep: Prepared | None = field(default=None, repr=False)
    _theta: np.ndarray | None = field(default=None, repr=False)
    _extra: np.ndarray | None = field(default=None, repr=False)
    _theta_boot: np.ndarray | None = field(default=None, repr=False)
    _extra_boot: np.ndarray | None = field(default=None, repr=False)

    # ------------------------------------------------------------------ labels
    @property
    def label(self) -> str:
        return group_label(self.group)

    @property
    def exponent_name(self) -> str:
        return self._law.exponent if self._law else "alpha"

    @property
    def exponent(self) -> float:
        return self.params.get(self.exponent_name, float("nan"))

    @property
    def has_bootstrap(self) -> bool:
        return self._theta_boot is not None and self.n_bootstrap - self.n_bootstrap_failed > 0

    def bootstrap_draws(self) -> tuple[np.ndarray, np.ndarray | None]:
        """Internal parameters (and extras) of the resamples that fitted."""
        return self._boot()

    def _require(self) -> None:
        if not self.converged:
            raise FitNotConverged(f"the {self.law} fit for {self.label} did not converge: {self.message}")

    def _boot(self) -> tuple[np.ndarray, np.ndarray | None]:
        ok = np.all(np.isfinite(self._theta_boot), axis=1)
        extra = None if self._extra_boot is None else self._extra_boot[ok]
        return self._theta_boot[ok], extra

    # ------------------------------------------------------------------ predictions
    def predict(self, x) -> np.ndarray:
        """y at ``x`` (array-like, original units). Chinchilla: ``x`` = compute (FLOPs) at the
        compute-optimal split, or an ``(q, 2)`` array of (parameters, images seen)."""
        self._require()
        return self._law.predict(self._theta[None], x, self._prep, self._extra)[0]

    def predict_interval(self, x, level: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Bootstrap ``(low, high)`` of the prediction at ``x``."""
        self._require()
        if not self.has_bootstrap:
            raise UserError("prediction intervals need a bootstrap; fit with bootstrap > 0")
        theta, extra = self._boot()
        Y = self._law.predict(theta, x, self._prep, extra)
        return percentile_interval(Y, level or self.level)

    def solve_for(self, target: float) -> float:
        """x (compute for chinchilla) at which the law reaches ``target`` y; ``inf`` if it never does."""
        self._require()
        return float(self._law.solve(self._theta[None], float(target), self._prep, self._extra)[0])

    def reachable(self, target: float) -> bool:
        return math.isfinite(self.solve_for(target))

    def solve_interval(self, target: float, level: float | None = None) -> dict[str, float]:
        """``{"x", "low", "high", "share_reachable"}``: the solved x with its bootstrap interval.

        Resamples whose law never reaches the target count as ``inf``, so when more than
        ``(1 - level) / 2`` of them miss it the upper bound is ``inf``.
        """
        self._require()
        out = {"x": self.solve_for(target), "low": float("nan"), "high": float("nan"),
               "share_reachable": float("nan")}
        if self.has_bootstrap:
            theta, extra = self._boot()
            xs = self._law.solve(theta, float(target), self._prep, extra)
            lo, hi = percentile_interval(xs, level or self.level)
            out.update(low=float(lo), high=float(hi), share_reachable=float(np.mean(np.isfinite(xs))))
        return out

    def bootstrap_params(self) -> dict[str, np.ndarray]:
        """Parameters (original units) of every successful resample: name -> ``(B_ok,)``."""
        if not self.has_bootstrap:
            return {}
        theta, extra = self._boot()
        return self._law.params(theta, self._prep, extra)

    def optimal_split(self, compute) -> tuple[np.ndarray, np.ndarray]:
        """Chinchilla only: compute-optimal ``(N*, D*)`` for compute ``C`` FLOPs."""
        self._require()
        if self.law != "chinchilla":
            raise UserError(f"optimal_split needs the chinchilla law, not {self.law}")
        N, D = self._law.optimal_split(self._theta[None], compute, self._prep, self._extra)
        return N[0], D[0]

    # ------------------------------------------------------------------ export
    def to_dict(self) -> dict[str, Any]:
        ident = identify(self)
        shown = self.converged and ident.shows_parameters
        return {
            "status": ident.status, "status_reason": ident.reason or None,
            "law": self.law, "formula": self.formula, "x": self.x if isinstance(self.x, str) else list(self.x),
            "y": self.y, "group": {k: (v.item() if hasattr(v, "item") else v) for k, v in self.group.items()},
            "label": self.label, "n": self.n, "n_excluded": self.n_excluded, "frontier": self.frontier,
            "converged": self.converged, "message": self.message,
            # the rulebook (identified) decides: a law it rejects carries its status and reason, not its numbers
            "params": {k: _num(v) for k, v in self.params.items()} if shown else {},
            "ci": {k: [_num(lo), _num(hi)] for k, (lo, hi) in self.ci.items()} if shown else {},
            # goodness of fit of the point fit (descriptive, comparable across laws): kept whatever the status
            "level": self.level, "r2": _num(self.r2), "r2_log": _num(self.r2_log), "aic": _num(self.aic),
            "n_bootstrap": self.n_bootstrap, "n_bootstrap_failed": self.n_bootstrap_failed,
            "x_range": [_num(self.x_range[0]), _num(self.x_range[1])],
            "exponent": self.exponent_name,
        }


# ---------------------------------------------------------------------- fitting
def numeric_column(df, col: str) -> np.ndarray:
    values = pd.to_numeric(df[col], errors="coerce")
    if values.isna().all() and df[col].notna().any():
        raise UserError(f"column {col!r} is not numeric (e.g. {df[col].dropna().iloc[0]!r})")
    return values.to_numpy(dtype=float)


def _x_columns(law: Law, x) -> list[str]:
    if x is None:
        return list(CHINCHILLA_X) if law.n_inputs == 2 else [DEFAULT_X]
    cols = resolve_columns(x) if isinstance(x, str) else [resolve_columns([c])[0] for c in x]
    if len(cols) != law.n_inputs:
        want = "two columns (parameters,images seen)" if law.n_inputs == 2 else "one column"
        raise UserError(f"law {law.name} needs x = {want}, got {','.join(cols)!r}")
    return cols


def fit_law(df, law: str | Law = "power", x: str | Sequence[str] | None = None, y: str = DEFAULT_Y,
            bootstrap: int = 0, seed: int = 0, frontier: bool = False, exclude_below: float | None = None,
            level: float = 0.95, n_jobs: int | None = None, progress: bool = False,
            group: dict[str, Any] | None = None, seed_sd: float | None = None) -> FitResult:
    """Fit ``law`` to the runs in ``df``: ``y`` (default AutoAttack accuracy, %) against ``x``
    (default total training FLOPs; chinchilla: ``model_parameters, train_images_seen``).

    Args:
        bootstrap: number of case resamples for intervals (0: none).
        frontier: fit only the Pareto frontier (best y at or below each x); the frontier is
            recomputed in every resample.
        exclude_below: drop runs with ``y`` below this (e.g. 10: collapsed runs).
        n_jobs: bootstrap worker processes (default: the idle cores); progress: a tqdm bar.
        group: labels of this group (only for display).
        seed_sd: the seed-to-seed SD of one run's accuracy (points) that the lack-of-fit test
            (``identified.lack_of_fit``) allows beside each point's binomial noise; None: the assumed
            ``identified.SEED_SD_POINTS``. Give a measured one (e.g. the SD over seeds of one recipe).
    Raises UserError: missing columns, non-positive x, y out of range for the law, too few
    points for the law's parameters, a single distinct x, all-NaN y.
    A fit that does not converge is returned with ``converged=False`` and a ``message``.
    """
    seed_sd = check_seed_sd(seed_sd)
    with single_threaded_blas():
        result = _fit_law(df, law, x, y, bootstrap, seed, frontier, exclude_below, level, n_jobs, progress, group)
    result.seed_sd = seed_sd
    return result


def _fit_law(df, law, x, y, bootstrap, seed, frontier, exclude_below, level, n_jobs, progress, group) -> FitResult:
    law = get_law(law)
    xcols = _x_columns(law, x)
    y = resolve_columns([y])[0]
    where = f" in group {group_label(group)}" if group else ""
    needed = xcols + [y] + (["train_flops"] if law.name == "chinchilla" else [])
    if frontier and law.n_inputs != 1:
        raise UserError(f"--frontier needs a law of one input (power or saturating), not {law.name}")
    require_columns(df, needed)
    X = np.column_stack([numeric_column(df, c) for c in xcols])
    Y = numeric_column(df, y)
    if np.isnan(Y).all():
        raise UserError(f"all {len(Y)} values of {y}{where} are missing (NaN); nothing to fit")
    keep = np.isfinite(Y) & np.all(np.isfinite(X), axis=1)
    n_missing = int((~keep).sum())
    n_excluded = 0
    if exclude_below is not None:
        below = keep & (Y < exclude_below)
        n_excluded = int(below.sum())
        keep &= ~below
    dropped = _dropped_text(len(Y), n_missing, n_excluded, xcols, y, exclude_below)
    names = df["name"].astype(str).to_numpy() if "name" in df.columns else np.arange(len(df)).astype(str)
    bad_x = keep & np.any(X <= 0, axis=1)
    if bad_x.any():
        raise UserError(f"{int(bad_x.sum())} run(s){where} have non-positive {'/'.join(xcols)} "
                        f"(e.g. {names[bad_x][0]}); a law in log x needs x > 0: drop or fix them")
    if law.error_law:
        bad_y = keep & ((Y < 0) | (Y >= ACC_MAX))
        if bad_y.any():
            raise UserError(f"law {law.name} needs {y} in [0, 100) percent; {int(bad_y.sum())} run(s){where} "
                            f"are outside (e.g. {names[bad_y][0]}: {Y[bad_y][0]:g})")
    else:
        bad_y = keep & (Y <= 0)
        if bad_y.any():
            raise UserError(f"law power needs {y} > 0; {int(bad_y.sum())} run(s){where} have {y} <= 0 "
                            f"(e.g. {names[bad_y][0]}); drop them with --exclude-below, e.g. 10 for collapsed runs")
    idx = np.flatnonzero(keep)
    Xk, Yk = X[idx], Y[idx]
    aux = {}
    if law.name == "chinchilla":
        flops = numeric_column(df, "train_flops")[idx]
        if not np.all(np.isfinite(flops) & (flops > 0)):
            raise UserError(f"law chinchilla needs positive train_flops for every run{where} "
                            f"(to measure k = FLOPs / (N D))")
        aux["flops_ratio"] = flops / (Xk[:, 0] * Xk[:, 1])
    w = frontier_mask(Xk[:, 0], Yk).astype(float) if frontier else np.ones(len(idx))
    used = w > 0
    n = int(used.sum())
    need = law.n_params + 1
    if n < need:
        raise UserError(f"{n} run(s){where}{' on the frontier' if frontier else ''}{dropped} but law {law.name} "
                        f"has {law.n_params} parameters: it needs at least {need} runs")
    if np.unique(Xk[used], axis=0).shape[0] < 2:
        raise UserError(f"all {n} runs{where}{dropped} have the same {'/'.join(xcols)}; a law needs at least "
                        f"2 distinct x")

    prep = law.prepare(Xk, Yk, aux)
    theta, converged, message = law.fit_point(prep, w)
    extra = law.extra(prep, w[None])
    # Statistics on the fitted runs, in y units (and on the fit scale for r2_log).
    lp = _log_pred(law, theta, prep)
    yhat = (ACC_MAX - np.exp(lp)) if law.error_law else np.exp(lp)
    resid = Yk[used] - yhat[used]
    rss = float(np.sum(resid ** 2))
    tss = float(np.sum((Yk[used] - Yk[used].mean()) ** 2))
    t = prep.target[used]
    rss_log = float(np.sum((t - lp[used]) ** 2))
    tss_log = float(np.sum((t - t.mean()) ** 2))
    r2 = 1 - rss / tss if tss > 0 else float("nan")
    r2_log = 1 - rss_log / tss_log if tss_log > 0 else float("nan")
    aic = n * math.log(max(rss, 1e-300) / n) + 2 * law.n_params
    params = {k: float(np.asarray(v).reshape(-1)[0]) for k, v in law.params(theta, prep, extra).items()}
    xr = Xk[used, 0] if law.n_inputs == 1 else (Xk[used, 0] * Xk[used, 1] * float(extra[0]))
    result = FitResult(
        law=law.name, formula=law.formula, x=xcols[0] if law.n_inputs == 1 else tuple(xcols), y=y,
        group=dict(group or {}), n=n, params=params, ci={}, r2=r2, r2_log=r2_log, aic=aic, residuals=resid,
        converged=converged, message=message, frontier=frontier, n_excluded=n_excluded, level=level,
        x_range=(float(xr.min()), float(xr.max())), fitted_index=np.asarray(df.index[idx[used]]),
        kept_index=np.asarray(df.index[idx]),
        x_values=Xk[used] if law.n_inputs == 2 else Xk[used, 0], y_values=Yk[used],
        n_examples=_point_examples(df, y, idx[used]), replicate_group=_replicate_groups(df, xcols, idx[used]),
        _law=law, _prep=prep, _theta=theta, _extra=extra)
    if converged and bootstrap > 0:
        theta_b, extra_b = bootstrap_fit(law, prep, theta, int(bootstrap), seed=seed,
                                         frontier_y=Yk if frontier else None,
                                         x_for_frontier=Xk[:, 0] if frontier else None, n_jobs=n_jobs,
                                         progress=progress, desc=f"bootstrap {group_label(group)}")
        result._theta_boot, result._extra_boot = theta_b, extra_b
        result.n_bootstrap = int(bootstrap)
        result.n_bootstrap_failed = int((~np.all(np.isfinite(theta_b), axis=1)).sum())
        if result.has_bootstrap:
            boot = result.bootstrap_params()
            for name, values in boot.items():
                values = np.asarray(values, float)
                values = values[~np.isnan(values)]
                if values.size:
                    lo, hi = percentile_interval(values, level)
                    result.ci[name] = (float(lo), float(hi))
    return result


def _replicate_groups(df, xcols: list[str], rows: np.ndarray) -> np.ndarray | None:
    """Group ids of the fitted rows: runs equal in x and in every ``schema.CONFIG_COLUMNS`` the table has, i.e.
    seeds of one configuration (runs equal in compute alone, e.g. with and without generated data, are not)."""
    if "seed" not in df.columns or not len(rows):
        return None
    cols = list(xcols) + [c for c in CONFIG_COLUMNS if c in df.columns and c not in xcols]
    keys = [repr(tuple(row)) for row in df.iloc[rows][cols].itertuples(index=False)]
    return np.unique(np.asarray(keys), return_inverse=True)[1].ravel()


def _point_examples(df, y: str, rows: np.ndarray) -> np.ndarray | None:
    """``<y>_n_examples`` (or its alias) of the fitted rows when the table has it for every one of them."""
    col = n_examples_column(y, df.columns)
    if col is None:
        return None
    n = numeric_column(df, col)[rows]
    return n if n.size and np.all(np.isfinite(n) & (n > 0)) else None


def _dropped_text(n_rows: int, n_missing: int, n_excluded: int, xcols: list[str], y: str,
                  exclude_below: float | None) -> str:
    """`` (of 4 rows, 2 dropped: ...)``: why fewer runs are fitted than the table has ('' when none are)."""
    parts = []
    if n_missing:
        parts.append(f"{n_missing} with a missing (NaN) {' or '.join([y] + list(xcols))}")
    if n_excluded:
        parts.append(f"{n_excluded} with {y} < {exclude_below:g} excluded as collapsed (--exclude-below 0 keeps "
                     f"them)")
    if not parts:
        return ""
    return f" left (of {n_rows} row{'s' if n_rows != 1 else ''}: {'; '.join(parts)})"


def _log_pred(law: Law, theta: np.ndarray, prep: Prepared) -> np.ndarray:
    if isinstance(law, PowerLaw):  # closed form, also error-power
        return law.log_pred(theta[None], prep.Z)[0]
    return law.log_pred_jac(theta[None], prep.Z)[0][0]


def fit_groups(df, group_by: str | Iterable[str] | None, **kwargs) -> list[FitResult]:
    """:func:`fit_law` on every group of ``df`` by the ``group_by`` columns (paper aliases allowed).

    Groups come in sorted order; every group must be fittable (else UserError naming the group;
    :func:`fit_groups_partial` fits those that can be and reports the others). ``kwargs`` go to
    :func:`fit_law`.
    """
    fits, not_fitted = fit_groups_partial(df, group_by, **kwargs)
    if not_fitted:
        raise UserError(not_fitted[0][1])
    return fits


def fit_groups_partial(df, group_by: str | Iterable[str] | None,
                       **kwargs) -> tuple[list[FitResult], list[tuple[dict[str, Any], str]]]:
    """Like :func:`fit_groups`, but a group the data cannot fit (too few runs, one distinct x...) is
    returned in the second list as ``(group, reason)`` instead of stopping the others.

    UserError when no group can be fitted (all the reasons), or for a mistake that is not about
    a group's data (a missing column, a bad law).
    """
    cols = resolve_columns(group_by)
    if not cols:
        return [fit_law(df, **kwargs)], []
    require_columns(df, cols)
    fits, not_fitted = [], []
    for key, part in df.groupby(cols, sort=True, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        group = {c: (k.item() if hasattr(k, "item") else k) for c, k in zip(cols, key)}
        try:
            fits.append(fit_law(part, group=group, **kwargs))
        except FitNotConverged:
            raise
        except UserError as exc:
            if "in group" not in str(exc):  # not about this group's data: the same for every group
                raise
            not_fitted.append((group, str(exc)))
    if not fits:
        raise UserError(f"no group could be fitted: {'; '.join(reason for _, reason in not_fitted)}")
    return fits, not_fitted


# ---------------------------------------------------------------------- comparisons
@dataclass
class ExponentComparison:
    """``a - b`` of one exponent between two fits, with a bootstrap interval.

    The resamples of the two groups are independent, so pairing draw i of one with draw i of the
    other samples the distribution of the difference. ``p_value``: two-sided bootstrap share of
    differences on the other side of zero.
    """

    a: str
    b: str
    name: str
    a_value: float
    b_value: float
    diff: float
    low: float
    high: float
    p_value: float
    n: int
    level: float

    @property
    def ratio(self) -> float:
        return self.a_value / self.b_value if self.b_value else float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {"a": self.a, "b": self.b, "exponent": self.name, "a_value": _num(self.a_value),
                "b_value": _num(self.b_value), "diff": _num(self.diff), "ci": [_num(self.low), _num(self.high)],
                "p_value": _num(self.p_value), "n_bootstrap": self.n, "level": self.level}


def compare_exponents(fit_a: FitResult, fit_b: FitResult, name: str | None = None,
                      level: float | None = None) -> ExponentComparison:
    """Difference of exponents ``fit_a - fit_b`` (default: each law's main exponent) with its interval.

    Both fits need a bootstrap and must have converged.
    """
    for f in (fit_a, fit_b):
        f._require()
        if not f.has_bootstrap:
            raise UserError(f"comparing exponents needs bootstrapped fits; {f.label} has none (bootstrap > 0)")
    name = name or fit_a.exponent_name
    if name not in fit_a.params or name not in fit_b.params:
        raise UserError(f"exponent {name!r} is not a parameter of both fits; valid: "
                        f"{', '.join(k for k in fit_a.params if k in fit_b.params)}")
    level = level or fit_a.level
    da = np.asarray(fit_a.bootstrap_params()[name], float)
    db = np.asarray(fit_b.bootstrap_params()[name], float)
    k = min(da.size, db.size)
    diff = da[:k] - db[:k]
    diff = diff[np.isfinite(diff)]
    lo, hi = percentile_interval(diff, level) if diff.size else (np.nan, np.nan)
    p = 2 * min(np.mean(diff <= 0), np.mean(diff >= 0)) if diff.size else float("nan")
    return ExponentComparison(a=fit_a.label, b=fit_b.label, name=name, a_value=fit_a.params[name],
                              b_value=fit_b.params[name], diff=fit_a.params[name] - fit_b.params[name],
                              low=float(lo), high=float(hi), p_value=float(min(p, 1.0)), n=int(diff.size),
                              level=level)


def pairwise_comparisons(fits: Sequence[FitResult]) -> list[ExponentComparison]:
    """Comparisons of every pair of bootstrapped fits whose groups differ in exactly one column; fits the data do not
    identify (``identified.identify``) are left out, so their exponents never enter a difference."""
    out = []
    ok = [f for f in fits if f.converged and f.has_bootstrap and identify(f).shows_parameters]
    for i, fa in enumerate(ok):
        for fb in ok[i + 1:]:
            diffs = [k for k in fa.group if fa.group.get(k) != fb.group.get(k)]
            if len(diffs) == 1 or (not fa.group and not fb.group):
                out.append(compare_exponents(fa, fb))
    return out
