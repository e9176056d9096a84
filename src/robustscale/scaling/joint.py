"""A joint law of robust error in model size N, samples seen D and attack steps k, and the
compute-optimal allocation it implies::

    100 - acc = E + A N^-alpha + B D^-beta + G k^-gamma

Fitted the way the field does it (Hoffmann et al. 2022, approach 3; Bartoldson et al. 2024):
Huber loss (delta 1e-3) on log error in the LSE parametrisation, L-BFGS-B from the best points of
a grid of starts, polished by the batch solver (the machinery of :class:`laws.HuberLaw`), with
case-resampling bootstrap intervals on every parameter and on everything derived from them.

Identification (an exponent the data cannot pin down is reported with its reason, never as a number):

- A term ``c x^-p`` next to the shared E needs at least 3 distinct values of x: with 2, only the
  difference between them is seen and every p fits equally well (with a matching c and E). Such
  an input enters as *levels* (one E per observed value); an input with one value is held fixed.
- An exponent that hits 0 or its bound (:meth:`laws.HuberLaw.check`: the error does not
  decrease with the input, or a step rather than a law) is not identified either; the input is
  refitted as levels.
- The allocation exponents ``a`` (N_opt ~ C^a) = beta/(alpha+beta) and ``b`` (D_opt ~ C^b) =
  alpha/(alpha+beta) exist only when both N and D follow a power law.

Compute: ``C = (r0 + r1 k) c N D`` FLOPs (:class:`ComputeCoefficients`; ``r0 + r1 k`` forward
passes per image of a training step, ``c N`` forward FLOPs per image). ``robustscale.plan``
measures the coefficients; this module only uses them (it imports no training code).

Optimum under a budget C: for a given k the split of ``N D = C / (r(k) c)`` is closed-form (as in
Chinchilla), so every optimum meets its budget exactly; k is searched (golden section on log k)
within the fitted runs' range; inputs on levels are enumerated.

Approach 1, the cross-check, is :func:`robustscale.scaling.allocation.frontier_allocation`.
"""
from __future__ import annotations

import enum
import itertools
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import numpy as np

from ..errors import UserError
from ..schema import COLLAPSE_THRESHOLD_ACC
from ..schema import finite_float as _num
from ._threads import single_threaded_blas
from .bootstrap import bootstrap_fit
from .fit import DEFAULT_Y, group_label, numeric_column, percentile_interval
from .format import fmt
from .io import require_columns, resolve_columns
from .laws import ACC_MAX, EXPONENT_MAX, LOG_COEF_BOUND, FittedLaw, HuberLaw, Prepared, lse_terms

N_COL, D_COL, K_COL = "model_parameters", "train_images_seen", "attack_steps"
JOINT_INPUTS = (N_COL, D_COL, K_COL)
TERMS = {N_COL: ("N", "A", "alpha"), D_COL: ("D", "B", "beta"), K_COL: ("k", "G", "gamma")}  # symbol, coef, exponent
MIN_DISTINCT = 3  # distinct values an input needs for its own exponent (see the module docstring)


class Role(str, enum.Enum):
    POWER = "power"  # a term c x^-p
    LEVELS = "levels"  # one E per observed value
    FIXED = "fixed"  # a single value in the runs


@dataclass(frozen=True)
class ComputeCoefficients:
    """``C = (intercept + per_step k) flops_per_parameter N D``: training FLOPs of a recipe."""

    flops_per_parameter: float  # forward FLOPs per image per parameter
    intercept: float  # forward-equivalents per image of a step with 0 attack steps
    per_step: float  # forward-equivalents each attack step adds

    def flops(self, N, D, k):
        return (self.intercept + self.per_step * np.asarray(k, float)) * self.flops_per_parameter * \
            np.asarray(N, float) * np.asarray(D, float)


class JointLaw(HuberLaw):
    """The joint law over the inputs that follow a power law (``powers``), with E per level."""

    name = "joint"
    exponent = "alpha"

    def __init__(self, powers: Iterable[str], level_of: np.ndarray, level_names: list[str]):
        self.powers = tuple(powers)
        self.n_inputs = len(self.powers)
        self.level_of = np.asarray(level_of, int)
        self.n_levels = len(level_names)
        names = [n for col in self.powers for n in TERMS[col][1:]]
        self.param_names = tuple(names + (["E"] if self.n_levels == 1 else [f"E[{s}]" for s in level_names]))
        terms = " + ".join(f"{TERMS[c][1]}*{TERMS[c][0]}^-{TERMS[c][2]}" for c in self.powers)
        self.formula = f"100 - y = E{'[level]' if self.n_levels > 1 else ''}" + (f" + {terms}" if terms else "")

    def _exponent_slots(self):
        return [(2 * p + 1, TERMS[c][2]) for p, c in enumerate(self.powers)]

    def exponent_problems(self, theta: np.ndarray) -> dict[str, str]:
        """Input -> reason, for each exponent of ``theta (p,)`` that the shared rule
        (:meth:`HuberLaw.check`: exponent at 0 or at its bound) rejects; ``check`` reports only the first."""
        out = {}
        for (i, _), col in zip(self._exponent_slots(), self.powers):
            probe = np.ones_like(theta)
            probe[i] = theta[i]  # only this exponent can fail
            ok, why = HuberLaw.check(self, probe)
            if not ok:
                out[col] = why
        return out

    def lower(self, prep):
        return np.array([-LOG_COEF_BOUND, 0.0] * self.n_inputs + [self.e_floor(prep)] * self.n_levels)

    def upper(self, prep):
        return np.array([LOG_COEF_BOUND, EXPONENT_MAX] * self.n_inputs + [LOG_COEF_BOUND] * self.n_levels)

    def _grid(self, prep):
        err = float(np.exp(np.mean(prep.target)))
        err_l = np.array([np.exp(prep.target[self.level_of == i].mean()) for i in range(self.n_levels)])
        rows = []
        for f in (0.05, 0.3, 0.6, 0.9):  # share of the error in E
            for exps in itertools.product((0.05, 0.3, 1.0), repeat=self.n_inputs):
                rest = (1 - f) * err / max(self.n_inputs, 1)
                rows.append([v for e in exps for v in (np.log(rest), e)] + list(np.log(f * err_l)))
        return np.array(rows)

    def log_pred_jac(self, theta, Z):
        P, m = self.n_inputs, Z.shape[0]
        eidx = 2 * P + self.level_of
        T = np.stack([theta[:, 2 * p:2 * p + 1] - theta[:, 2 * p + 1:2 * p + 2] * Z[None, :, p] for p in range(P)]
                     + [theta[:, eidx]], axis=-1)
        lp, S = lse_terms(T)
        J = np.zeros((theta.shape[0], m, self.n_params))
        for p in range(P):
            J[..., 2 * p] = S[..., p]
            J[..., 2 * p + 1] = -S[..., p] * Z[None, :, p]
        J[:, np.arange(m), eidx] = S[..., P]
        return lp, J

    def log_err(self, theta: np.ndarray, x: Mapping[str, np.ndarray], level: int, prep: Prepared) -> np.ndarray:
        """``log error (B, q)`` at inputs ``x[col] (B, q)`` (original units) on level ``level``."""
        terms = [theta[:, 2 * p, None] - theta[:, 2 * p + 1, None] * np.log(np.asarray(x[c], float) / prep.scale[p])
                 for p, c in enumerate(self.powers)]
        shape = np.broadcast_shapes(*(t.shape for t in terms)) if terms else (theta.shape[0], 1)
        terms.append(np.broadcast_to(theta[:, 2 * self.n_inputs + level, None], shape))
        with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
            return np.logaddexp.reduce(np.stack(np.broadcast_arrays(*terms), axis=-1), axis=-1)

    def params(self, theta, prep, extra=None):
        out: dict[str, np.ndarray] = {}
        with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
            for p, c in enumerate(self.powers):
                _, coef, expo = TERMS[c]
                out[coef] = np.exp(theta[..., 2 * p] + theta[..., 2 * p + 1] * np.log(prep.scale[p]))
                out[expo] = theta[..., 2 * p + 1]
            for i in range(self.n_levels):
                out[self.param_names[2 * self.n_inputs + i]] = np.exp(theta[..., 2 * self.n_inputs + i])
            if N_COL in self.powers and D_COL in self.powers:
                alpha, beta = out["alpha"], out["beta"]
                out["a"] = beta / (alpha + beta)  # N_opt ~ C^a
                out["b"] = alpha / (alpha + beta)  # D_opt ~ C^b
        return out


# ---------------------------------------------------------------------- the fit
@dataclass
class JointFit(FittedLaw):
    """The joint law fitted to one group of runs (see the module docstring).

    ``roles[col]``: power / levels / fixed; ``values[col]``: distinct values of the fitted runs;
    ``not_identified[exponent]``: why that exponent has no number. ``params`` / ``ci`` hold the
    identified parameters (and ``a``, ``b`` when N and D both follow a law); ``share_at_bound``:
    share of bootstrap refits whose exponent sits on a bound.
    """

    group: dict[str, Any]
    y: str
    n: int
    n_excluded: int
    exclude_below: float | None
    roles: dict[str, Role]
    values: dict[str, list[float]]
    not_identified: dict[str, str]
    converged: bool
    message: str
    formula: str = ""
    params: dict[str, float] = field(default_factory=dict)
    ci: dict[str, tuple[float, float]] = field(default_factory=dict)
    share_at_bound: dict[str, float] = field(default_factory=dict)
    level: float = 0.95
    n_bootstrap: int = 0
    n_bootstrap_failed: int = 0
    levels: list[dict[str, float]] = field(default_factory=list)  # values of the non-power inputs per level
    fitted_index: np.ndarray = field(default_factory=lambda: np.zeros(0, int))
    _law: JointLaw | None = field(default=None, repr=False)
    _prep: Prepared | None = field(default=None, repr=False)
    _theta: np.ndarray | None = field(default=None, repr=False)
    _theta_boot: np.ndarray | None = field(default=None, repr=False)

    @property
    def label(self) -> str:
        return group_label(self.group)

    @property
    def usable(self) -> bool:
        """Converged with at least one input on a power law: predictions can be made."""
        return self.converged and self._law is not None

    def axes_off_law(self) -> dict[str, str]:
        """Model size and samples seen where they do not follow a power law: symbol -> why (an optimum along them
        is not identified, see ``identified.identify_optimum``)."""
        out = {}
        for col in (N_COL, D_COL):
            if self.roles[col] is Role.POWER:
                continue
            sym, _, expo = TERMS[col]
            why = self.not_identified.get(expo) or (f"a single value ({fmt(self.values[col][0])}) in the runs"
                                                    if self.roles[col] is Role.FIXED else "held at observed levels")
            out[sym] = why
        return out

    def range(self, col: str) -> tuple[float, float]:
        return float(min(self.values[col])), float(max(self.values[col]))

    def thetas(self, bootstrap: bool) -> np.ndarray:
        if not bootstrap:
            return self._theta[None]
        if self._theta_boot is None:
            return np.zeros((0, self._theta.size))
        return self._theta_boot[np.all(np.isfinite(self._theta_boot), axis=1)]

    # ------------------------------------------------------------------ predictions
    def level_index(self, x: Mapping[str, np.ndarray]) -> np.ndarray:
        """Level of each point ``x[col] (q,)`` (the non-power inputs must equal a level's values); -1: none."""
        q = len(np.atleast_1d(next(iter(x.values()))))
        out = np.full(q, -1)
        for i, lv in enumerate(self.levels):
            hit = np.ones(q, bool)
            for col, v in lv.items():
                hit &= np.isclose(np.asarray(x[col], float), v, rtol=1e-9, atol=0)
            out[hit & (out < 0)] = i
        return out

    def acc(self, x: Mapping[str, np.ndarray], bootstrap: bool = False) -> np.ndarray:
        """AutoAttack accuracy ``(B, q)`` at points ``x[col] (q,)``; NaN off the observed levels."""
        if not self.usable:
            raise UserError(f"the joint law of {self.label} cannot predict: {self.message}")
        theta = self.thetas(bootstrap)
        idx = self.level_index(x)
        q = idx.size
        out = np.full((theta.shape[0], q), np.nan)
        for i in np.unique(idx[idx >= 0]):
            sel = idx == i
            pts = {c: np.asarray(x[c], float)[sel][None, :] for c in self._law.powers}
            out[:, sel] = ACC_MAX - np.exp(self._law.log_err(theta, pts, int(i), self._prep))
        return out

    def predict(self, x: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(acc, low, high)`` each ``(q,)``: the point prediction and its bootstrap interval."""
        point = self.acc(x)[0]
        lo, hi = interval(self.acc(x, bootstrap=True), self.level) if self.n_bootstrap else (point * np.nan,) * 2
        return point, lo, hi

    # ------------------------------------------------------------------ allocation
    def optimum_reason(self) -> str | None:
        """Why there is no compute-optimal allocation (None: there is one)."""
        if not self.usable:
            return self.message
        if self.roles[N_COL] is not Role.POWER and self.roles[D_COL] is not Role.POWER:
            return ("neither model size nor samples seen follows a power law "
                    f"({self.not_identified.get('alpha', 'alpha: -')}; {self.not_identified.get('beta', 'beta: -')})")
        return None

    def optimum(self, budgets, coeffs: ComputeCoefficients, bootstrap: bool = False) -> dict[str, np.ndarray]:
        """Compute-optimal ``N, D, k, acc, level`` each ``(B, q)`` for budgets ``(q,)`` FLOPs.

        Inputs on levels take their observed values; k is searched within the fitted runs' range
        when it follows a law. ``coeffs.flops(N, D, k) == budget`` on every point (up to rounding).
        """
        reason = self.optimum_reason()
        if reason:
            raise UserError(f"no compute-optimal allocation for {self.label}: {reason}")
        theta = self.thetas(bootstrap)
        C = np.asarray(budgets, float).reshape(1, -1)
        shape = (theta.shape[0], C.shape[1])
        best = {k: np.full(shape, np.nan) for k in ("N", "D", "k", "err")}
        best["err"][:] = np.inf
        best["level"] = np.full(shape, -1)
        for i, lv in enumerate(self.levels):
            res = self._optimum_on_level(theta, C, coeffs, i, lv, shape)
            better = np.nan_to_num(res["err"], nan=np.inf) < best["err"]
            for key in ("N", "D", "k", "err"):
                best[key] = np.where(better, res[key], best[key])
            best["level"] = np.where(better, i, best["level"])
        best["err"][~np.isfinite(best["err"])] = np.nan
        best["acc"] = ACC_MAX - best.pop("err")
        return best

    def _optimum_on_level(self, theta, C, coeffs, i, lv, shape):
        law = self._law

        def at(k):
            u = C / (coeffs.intercept + coeffs.per_step * k) / coeffs.flops_per_parameter  # N * D
            with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
                if N_COL in law.powers and D_COL in law.powers:
                    N = self._split(theta, u)
                    D = u / N
                elif N_COL in law.powers:
                    D = np.full(shape, lv[D_COL])
                    N = u / D
                else:
                    N = np.full(shape, lv[N_COL])
                    D = u / N
                err = np.exp(law.log_err(theta, {N_COL: N, D_COL: D, K_COL: k}, i, self._prep))
            return np.where(np.isfinite(err), err, np.inf), N, D

        if K_COL in law.powers:
            k = golden_min(lambda kk: at(kk)[0], *self.range(K_COL), shape)
        else:
            k = np.full(shape, lv[K_COL])
        err, N, D = at(k)
        return {"N": N, "D": D, "k": k, "err": err}

    def _split(self, theta, u):
        """Compute-optimal N for ``N D = u (B, q)`` (closed form, scaled units as in ChinchillaLaw)."""
        pN, pD = self._law.powers.index(N_COL), self._law.powers.index(D_COL)
        a, alpha, b, beta = theta[:, 2 * pN], theta[:, 2 * pN + 1], theta[:, 2 * pD], theta[:, 2 * pD + 1]
        sN, sD = self._prep.scale[pN], self._prep.scale[pD]
        s = alpha + beta
        logG = ((np.log(alpha) + a - np.log(beta) - b) / s)[:, None]
        return sN * np.exp(logG + (beta / s)[:, None] * np.log(u / (sN * sD)))

    # ------------------------------------------------------------------ export
    def allocation(self) -> dict[str, Any]:
        """Approach 3's allocation exponents ``a``, ``b`` with intervals, or the reason there are none."""
        if "a" in self.params:
            return {"a": self.params["a"], "a_ci": self.ci.get("a"), "b": self.params["b"], "b_ci": self.ci.get("b"),
                    "reason": None}
        why = self.message if not self.converged else "; ".join(
            f"{k}: {v}" for k, v in self.not_identified.items() if k in ("alpha", "beta"))
        return {"a": None, "a_ci": None, "b": None, "b_ci": None, "reason": why or "not identified"}

    def to_dict(self) -> dict[str, Any]:
        alloc = self.allocation()
        return {
            "group": {k: (v.item() if hasattr(v, "item") else v) for k, v in self.group.items()},
            "label": self.label, "formula": self.formula, "y": self.y, "n": self.n, "n_excluded": self.n_excluded,
            "exclude_below": self.exclude_below, "converged": self.converged, "message": self.message,
            "roles": {k: v.value for k, v in self.roles.items()},
            "values": {k: [_num(v) for v in vs] for k, vs in self.values.items()},
            "not_identified": dict(self.not_identified),
            "params": {k: _num(v) for k, v in self.params.items()},
            "ci": {k: [_num(lo), _num(hi)] for k, (lo, hi) in self.ci.items()},
            "share_at_bound": {k: _num(v) for k, v in self.share_at_bound.items()},
            "allocation": {k: (list(map(_num, v)) if isinstance(v, tuple) else (_num(v) if k != "reason" else v))
                           for k, v in alloc.items()},
            "level": self.level, "n_bootstrap": self.n_bootstrap, "n_bootstrap_failed": self.n_bootstrap_failed,
        }


def interval(values: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Bootstrap percentile interval of ``values (B, q)`` per column; NaN where more than the tail
    share ``(1 - level) / 2`` of the draws are not finite (the interval would be open)."""
    values = np.asarray(values, float)
    lo = np.full(values.shape[1], np.nan)
    hi = lo.copy()
    for j in range(values.shape[1]):
        col = values[:, j]
        ok = np.isfinite(col)
        if col.size and ok.mean() >= 1 - (1 - level) / 2 and ok.any():
            lo[j], hi[j] = percentile_interval(col[ok], level)
    return lo, hi


def golden_min(f, lo: float, hi: float, shape, n_grid: int = 17, iters: int = 40) -> np.ndarray:
    """Per element, the x in ``[lo, hi]`` minimising ``f(x (shape)) -> (shape)``: a log grid, then
    golden-section search in the grid minimum's bracket (vectorised over elements)."""
    g = np.linspace(np.log(lo), np.log(hi), n_grid)
    vals = np.stack([np.nan_to_num(f(np.full(shape, np.exp(v))), nan=np.inf) for v in g])
    i = np.argmin(vals, axis=0)
    a, b = g[np.maximum(i - 1, 0)], g[np.minimum(i + 1, n_grid - 1)]
    phi = (np.sqrt(5) - 1) / 2
    for _ in range(iters):
        c, d = b - phi * (b - a), a + phi * (b - a)
        left = np.nan_to_num(f(np.exp(c)), nan=np.inf) <= np.nan_to_num(f(np.exp(d)), nan=np.inf)
        a, b = np.where(left, a, c), np.where(left, d, b)
    x = np.exp(0.5 * (a + b))
    grid_best = np.exp(g[i])
    keep = np.nan_to_num(f(x), nan=np.inf) <= vals.min(axis=0)
    return np.where(keep, x, grid_best)


def fit_joint(df, *, y: str = DEFAULT_Y, levels: Iterable[str] = (), bootstrap: int = 0, seed: int = 0,
              exclude_below: float | None = COLLAPSE_THRESHOLD_ACC, level: float = 0.95, n_jobs: int | None = None,
              progress: bool = False, group: dict[str, Any] | None = None) -> JointFit:
    """Fit the joint law to the runs in ``df`` (columns ``model_parameters``, ``train_images_seen``,
    ``attack_steps`` and ``y``, default AutoAttack accuracy in %).

    Args:
        levels: inputs to enter as levels even if they have enough distinct values.
        exclude_below: drop runs with ``y`` below this (default 10: collapsed runs); counted in ``n_excluded``.
        bootstrap: case resamples for the intervals (0: none); n_jobs / progress as in ``fit_law``.
    Raises UserError: missing columns, non-positive N or D, attack steps <= 0 where they vary, too few runs.
    """
    with single_threaded_blas():
        return _fit_joint(df, resolve_columns([y])[0], list(levels), int(bootstrap), seed, exclude_below, level,
                          n_jobs, progress, dict(group or {}))


def _initial_roles(values: dict[str, list[float]], forced: set[str]) -> tuple[dict[str, Role], dict[str, str]]:
    roles, why = {}, {}
    for col in JOINT_INPUTS:
        sym, _, expo = TERMS[col]
        vs = values[col]
        if len(vs) == 1:
            roles[col], why[expo] = Role.FIXED, f"{col} has one value ({fmt(vs[0])}) in the runs: held fixed"
        elif len(vs) < MIN_DISTINCT:
            roles[col] = Role.LEVELS
            why[expo] = (f"only {len(vs)} distinct {col} ({', '.join(fmt(v) for v in vs)}): a power law in {sym} "
                         f"needs at least {MIN_DISTINCT}; {sym} enters as levels")
        elif col in forced:
            roles[col], why[expo] = Role.LEVELS, f"{col} entered as levels (asked for)"
        else:
            roles[col] = Role.POWER
    return roles, why


def _levels(X: dict[str, np.ndarray], roles: dict[str, Role]) -> tuple[np.ndarray, list[dict], list[str]]:
    """Level of each run (combination of its non-power inputs), the levels' values and names."""
    cols = [c for c in JOINT_INPUTS if roles[c] is not Role.POWER]
    keys = np.column_stack([X[c] for c in cols]) if cols else np.zeros((len(X[N_COL]), 0))
    uniq, level_of = np.unique(keys, axis=0, return_inverse=True)
    levels = [{c: float(v) for c, v in zip(cols, row)} for row in uniq]
    names = [", ".join(f"{TERMS[c][0]}={fmt(lv[c])}" for c in cols if roles[c] is Role.LEVELS) for lv in levels]
    return np.asarray(level_of).reshape(-1), levels, names


def _fit_joint(df, y, levels, bootstrap, seed, exclude_below, level, n_jobs, progress, group) -> JointFit:
    where = f" in group {group_label(group)}" if group else ""
    require_columns(df, list(JOINT_INPUTS) + [y])
    forced = set(resolve_columns(levels))
    unknown = forced - set(JOINT_INPUTS)
    if unknown:
        raise UserError(f"unknown input(s) {', '.join(sorted(unknown))} for levels; valid: {', '.join(JOINT_INPUTS)}")
    Xall = {c: numeric_column(df, c) for c in JOINT_INPUTS}
    Y = numeric_column(df, y)
    keep = np.isfinite(Y) & np.all([np.isfinite(v) for v in Xall.values()], axis=0)
    n_excluded = 0
    if exclude_below is not None:
        n_excluded = int((keep & (Y < exclude_below)).sum())
        keep &= ~(Y < exclude_below)
    idx = np.flatnonzero(keep)
    X = {c: v[idx] for c, v in Xall.items()}
    for col in (N_COL, D_COL):
        if np.any(X[col] <= 0):
            raise UserError(f"{int((X[col] <= 0).sum())} run(s){where} have non-positive {col}")
    if np.any((Y[idx] < 0) | (Y[idx] >= ACC_MAX)):
        raise UserError(f"the joint law needs {y} in [0, 100) percent; some runs{where} are outside")
    values = {c: sorted(set(X[c].tolist())) for c in JOINT_INPUTS}
    if len(values[K_COL]) > 1 and values[K_COL][0] <= 0:
        raise UserError(f"{K_COL} must be > 0 where it varies{where} (got {fmt(values[K_COL][0])}); "
                        f"give runs without attacks their own group (--group-by method)")
    roles, not_identified = _initial_roles(values, forced)
    base = dict(group=group, y=y, n=int(idx.size), n_excluded=n_excluded, exclude_below=exclude_below,
                values=values, level=level, fitted_index=np.asarray(df.index[idx]))
    tail = (1 - level) / 2
    while True:
        law, prep, theta, converged, message, lvls = _point_fit(X, Y[idx], roles, not_identified, where)
        fit = JointFit(roles=dict(roles), not_identified=dict(not_identified), converged=converged, message=message,
                       formula=law.formula if law else "", levels=lvls, _law=law, _prep=prep, _theta=theta, **base)
        if not converged:
            fit._law = None
            return fit
        fit.params = {k: float(np.asarray(v).reshape(-1)[0]) for k, v in law.params(theta[None], prep).items()}
        if bootstrap <= 0:
            return fit
        _bootstrap(fit, bootstrap, seed, n_jobs, progress)
        # An exponent whose interval reaches a bound (0: the input may not matter; the cap: a step)
        # is not identified either: refit with that input on levels.
        wide = {c: fit.share_at_bound[TERMS[c][2]] for c in law.powers if fit.share_at_bound[TERMS[c][2]] > tail}
        if not wide:
            return fit
        for col, share in wide.items():
            sym, _, expo = TERMS[col]
            roles[col] = Role.LEVELS
            not_identified[expo] = (f"{100 * share:.1f}% of {bootstrap} bootstrap refits put {expo} on a bound "
                                    f"(0 or {EXPONENT_MAX:g}), so its {100 * level:g}% interval reaches it; "
                                    f"{sym} enters as levels")


def _point_fit(X, y, roles, not_identified, where):
    """Point fit of the law over the POWER inputs of ``roles``; exponents on a bound move their input
    to levels (``roles`` and ``not_identified`` updated in place) and the law is refitted."""
    m = y.size
    while True:
        powers = [c for c in JOINT_INPUTS if roles[c] is Role.POWER]
        level_of, lvls, names = _levels(X, roles)
        if not powers:
            return (None, None, None, False,
                    "no input follows a power law (" + "; ".join(not_identified.values()) + ")", lvls)
        law = JointLaw(powers, level_of, names)
        if m < law.n_params + 1:
            raise UserError(f"{m} run(s){where} but the joint law {law.formula} has {law.n_params} "
                            f"parameters: it needs at least {law.n_params + 1} runs")
        prep = law.prepare(np.column_stack([X[c] for c in powers]), y)
        theta, converged, message = law.fit_point(prep, np.ones(m))
        problems = law.exponent_problems(theta) if np.all(np.isfinite(theta)) and not converged else {}
        if converged or not problems:
            return law, prep, theta, converged, message, lvls
        for col, why in problems.items():
            roles[col] = Role.LEVELS
            not_identified[TERMS[col][2]] = f"{why}; {TERMS[col][0]} enters as levels"


def _bootstrap(fit: JointFit, n: int, seed: int, n_jobs, progress) -> None:
    law, prep = fit._law, fit._prep
    theta_b, _ = bootstrap_fit(law, prep, fit._theta, n, seed=seed, n_jobs=n_jobs, progress=progress,
                               desc=f"bootstrap {fit.label}")
    fit._theta_boot, fit.n_bootstrap = theta_b, n
    fit.n_bootstrap_failed = int((~np.all(np.isfinite(theta_b), axis=1)).sum())
    ok = theta_b[np.all(np.isfinite(theta_b), axis=1)]
    for name, vals in law.params(ok, prep).items():
        vals = np.asarray(vals, float)
        vals = vals[np.isfinite(vals)]
        if vals.size:
            lo, hi = percentile_interval(vals, fit.level)
            fit.ci[name] = (float(lo), float(hi))
    for i, name in law._exponent_slots():
        fit.share_at_bound[name] = float(np.mean((ok[:, i] <= 1e-6) | (ok[:, i] >= EXPONENT_MAX - 1e-6))) \
            if ok.size else float("nan")


def fit_joint_groups(df, group_by: str | Iterable[str] | None, **kwargs) -> list[JointFit]:
    """:func:`fit_joint` on every group of ``df`` by the ``group_by`` columns (sorted groups)."""
    cols = resolve_columns(group_by) if group_by else []
    if not cols:
        return [fit_joint(df, **kwargs)]
    require_columns(df, cols)
    out = []
    for key, part in df.groupby(cols, sort=True, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        out.append(fit_joint(part, group={c: (k.item() if hasattr(k, "item") else k) for c, k in zip(cols, key)},
                             **kwargs))
    return out
