"""The three law forms: how a metric ``y`` grows with compute ``x``.

- ``power``: ``y = C * x**alpha``; ordinary least squares of ``log y`` on ``log x`` (the 2024
  study's form, also for electricity or dollars vs FLOPs).
- ``saturating``: ``error = E + A * x**(-alpha)`` with ``error = 100 - y`` (``y`` a percent
  accuracy): the accuracy saturates at ``100 - E``. Fitted Chinchilla-style: Huber loss
  (delta 1e-3) on ``log pred - log error`` with ``pred = exp(LSE(a - alpha log x, e))``.
- ``chinchilla``: ``error = E + A / N**alpha + B / D**beta`` (N = model parameters, D = training
  images seen), plus the compute-optimal allocation ``N*(C), D*(C)`` under ``C = k N D``.

Every law works internally on scaled inputs ``x / s`` (``s`` = geometric mean of the data) so
that the optimiser sees numbers near 1; :meth:`Law.params` converts back to original units.
Internal parameters ``theta`` are log-coefficients and exponents, shaped ``(B, p)`` for ``B``
bootstrap resamples (or ``(1, p)``); inputs ``X`` are ``(m, k)`` with ``k`` = number of inputs.
"""
from __future__ import annotations

import enum
import itertools
from dataclasses import dataclass, field

import numpy as np

from ..errors import choice
from .optim import huber, irls_batch, lbfgs_multistart

ACC_MAX = 100.0  # accuracies are percentages
EXPONENT_MAX = 5.0  # an exponent this large (x^-5 over the data) means the law does not describe the data
LOG_COEF_BOUND = 40.0  # |log coefficient| in scaled units
# E below this share of the smallest observed error is zero for every purpose; bounding log E there
# saves the optimiser a long drift towards -inf when the data favour a pure power law (E = 0).
E_FLOOR_SHARE = 1e-6


class LawName(str, enum.Enum):
    POWER = "power"
    ERROR_POWER = "error-power"
    SATURATING = "saturating"
    CHINCHILLA = "chinchilla"


@dataclass
class Prepared:
    """A law's view of the data: ``Z (m, k) = log(X / scale)``, ``target (m,)`` on the fit scale."""

    Z: np.ndarray
    target: np.ndarray
    scale: np.ndarray  # (k,) reference values, original units
    aux: dict = field(default_factory=dict)


class Law:
    """Base class. Subclasses define the formula, the parameters and how to fit them."""

    name: str
    formula: str
    param_names: tuple[str, ...]  # internal order, original-unit names
    exponent: str  # the exponent compared across groups
    n_inputs: int = 1
    error_law: bool = False  # models error = 100 - y

    # ------------------------------------------------------------------ data
    def prepare(self, X: np.ndarray, y: np.ndarray, aux: dict | None = None) -> Prepared:
        X = np.asarray(X, dtype=float).reshape(len(y), self.n_inputs)
        scale = np.exp(np.log(X).mean(axis=0))
        target = np.log(ACC_MAX - y) if self.error_law else np.log(y)
        return Prepared(np.log(X / scale), target, scale, dict(aux or {}))

    @property
    def n_params(self) -> int:
        return len(self.param_names)

    # ------------------------------------------------------------------ fitting
    def fit_point(self, prep: Prepared, w: np.ndarray) -> tuple[np.ndarray, bool, str]:
        """Best ``theta (p,)`` for point weights ``w (m,)``; ``(theta, converged, message)``."""
        raise NotImplementedError

    def fit_batch(self, prep: Prepared, W: np.ndarray, theta0: np.ndarray, callback=None
                  ) -> tuple[np.ndarray, np.ndarray]:
        """Refit for every row of weights ``W (B, m)`` starting near ``theta0 (p,)``; ``(theta (B,p), ok (B,))``.

        ``callback(k)``: k more rows done (progress)."""
        raise NotImplementedError

    def extra(self, prep: Prepared, W: np.ndarray) -> np.ndarray | None:
        """Per-resample quantities other than theta (the chinchilla compute constant); ``(B,)`` or None."""
        return None

    def check(self, theta: np.ndarray) -> tuple[bool, str]:
        """Is a fitted ``theta (p,)`` a usable law (finite, exponents off their bounds)?"""
        if not np.all(np.isfinite(theta)):
            return False, "non-finite parameters"
        return True, "ok"

    # ------------------------------------------------------------------ outputs
    def params(self, theta: np.ndarray, prep: Prepared, extra=None) -> dict[str, np.ndarray]:
        """Parameters in original units (and derived quantities), each of shape ``theta.shape[:-1]``."""
        raise NotImplementedError

    def predict(self, theta: np.ndarray, x: np.ndarray, prep: Prepared, extra=None) -> np.ndarray:
        """``y (B, q)`` at inputs ``x`` (``(q,)`` or ``(q, k)``, original units)."""
        raise NotImplementedError

    def solve(self, theta: np.ndarray, target: float, prep: Prepared, extra=None) -> np.ndarray:
        """``x (B,)`` where the law reaches ``target`` (y units); ``inf`` where it never does."""
        raise NotImplementedError

    def asymptote(self, theta: np.ndarray) -> np.ndarray:
        """Limit of ``y`` as ``x -> inf``: ``(B,)``."""
        return np.full(theta.shape[0], np.inf)


class FittedLaw:
    """What a fitted law shows of its internals, the same for one law (``fit.FitResult``) and the joint law
    (``joint.JointFit``); both are dataclasses with the fields ``_law``, ``_prep`` and ``_theta``."""

    _law: Law | None
    _prep: Prepared | None
    _theta: np.ndarray | None

    @property
    def law_form(self) -> Law | None:
        """The law object (its parameter names, bounds and solver; a ``JointLaw`` for a joint fit); None for a fit
        built without one (a joint fit with no input on a power law)."""
        return self._law

    @property
    def prepared(self) -> Prepared | None:
        """The scaled data the law was fitted on."""
        return self._prep

    @property
    def theta(self) -> np.ndarray | None:
        """The point fit's internal parameters (``law_form.param_names`` order, internal units)."""
        return self._theta


# ---------------------------------------------------------------------- power
class PowerLaw(Law):
    name = "power"
    formula = "y = C * x^alpha"
    param_names = ("C", "alpha")
    exponent = "alpha"

    def fit_batch(self, prep, W, theta0=None, callback=None):
        z, t = prep.Z[:, 0], prep.target
        sw = W.sum(axis=1)
        zbar = (W @ z) / sw
        tbar = (W @ t) / sw
        dz = z[None, :] - zbar[:, None]
        sxx = np.einsum("bm,bm->b", W, dz * dz)
        sxy = np.einsum("bm,bm->b", W, dz * (t[None, :] - tbar[:, None]))
        ok = sxx > 1e-12 * np.maximum(sw, 1)  # needs two distinct x
        with np.errstate(invalid="ignore", divide="ignore"):
            slope = np.where(ok, sxy / np.where(ok, sxx, 1), np.nan)
        if callback is not None:
            callback(W.shape[0])
        return np.stack([tbar - slope * zbar, slope], axis=1), ok

    def fit_point(self, prep, w):
        theta, ok = self.fit_batch(prep, w[None, :])
        return theta[0], bool(ok[0]), "closed-form least squares" if ok[0] else "x has a single distinct value"

    def log_pred(self, theta, Z):
        return theta[:, :1] + theta[:, 1:2] * Z[None, :, 0]

    def params(self, theta, prep, extra=None):
        c, alpha = theta[..., 0], theta[..., 1]
        return {"C": np.exp(c - alpha * np.log(prep.scale[0])), "alpha": alpha}

    def predict(self, theta, x, prep, extra=None):
        z = np.log(np.asarray(x, float).reshape(-1) / prep.scale[0])
        return np.exp(self.log_pred(theta, z[:, None]))

    def solve(self, theta, target, prep, extra=None):
        c, alpha = theta[:, 0], theta[:, 1]
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            x = prep.scale[0] * np.exp((np.log(target) - c) / alpha)
        # Inverts an increasing law only: with alpha <= 0 more compute never gets there.
        return np.where(alpha > 0, x, np.inf)


class ErrorPowerLaw(PowerLaw):
    """``100 - y = A x^-alpha``: the error falls as a power of compute towards 0 (the saturating law with
    its floor E fixed at 0). Closed-form least squares on log error, like :class:`PowerLaw` on log y.
    Where the data show no error floor (the saturating law's E at its bound) this is the law they
    identify; its asymptote, 100 %, is assumed, not fitted."""

    name = "error-power"
    formula = "100 - y = A * x^(-alpha)"
    param_names = ("A", "alpha")
    exponent = "alpha"
    error_law = True

    # theta = (c, alpha) with log(error) = c - alpha * log(x / scale)
    def fit_batch(self, prep, W, theta0=None, callback=None):
        theta, ok = super().fit_batch(prep, W, theta0, callback)
        return theta * np.array([1.0, -1.0]), ok  # fit_point (PowerLaw's) goes through this

    def log_pred(self, theta, Z):
        return theta[:, :1] - theta[:, 1:2] * Z[None, :, 0]

    def params(self, theta, prep, extra=None):
        c, alpha = theta[..., 0], theta[..., 1]
        return {"A": np.exp(c + alpha * np.log(prep.scale[0])), "alpha": alpha}

    def predict(self, theta, x, prep, extra=None):
        z = np.log(np.asarray(x, float).reshape(-1) / prep.scale[0])
        return ACC_MAX - np.exp(self.log_pred(theta, z[:, None]))

    def solve(self, theta, target, prep, extra=None):
        c, alpha = theta[:, 0], theta[:, 1]
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            x = prep.scale[0] * np.exp((c - np.log(ACC_MAX - target)) / alpha)
        # The error falls only with alpha > 0; 100 % itself is never reached.
        return np.where((alpha > 0) & (target < ACC_MAX), x, np.inf)

    def asymptote(self, theta):
        return np.full(theta.shape[0], ACC_MAX)


# ---------------------------------------------------------------------- Huber/LSE laws
class HuberLaw(Law):
    """Laws fitted Chinchilla-style: Huber on log residuals, LSE parametrisation."""

    error_law = True
    n_grid_starts = 8  # L-BFGS-B runs from the best grid points
    # Iterations of the batch solver. Bootstrap refits start at the full-data optimum; by 1500
    # iterations the few still creeping along a flat valley have moved their parameters by less
    # than 1% of the interval widths (measured on the 2024 study's runs), so the cap trades no accuracy.
    polish_iter = 5000
    bootstrap_iter = 1500

    def lower(self, prep: Prepared) -> np.ndarray:
        raise NotImplementedError

    def upper(self, prep: Prepared) -> np.ndarray:
        raise NotImplementedError

    def e_floor(self, prep: Prepared) -> float:
        return float(np.min(prep.target)) + float(np.log(E_FLOOR_SHARE))

    def grid(self, prep: Prepared) -> np.ndarray:
        """Starting points ``(G, p)`` (within the bounds)."""
        return np.clip(self._grid(prep), self.lower(prep), self.upper(prep))

    def _grid(self, prep: Prepared) -> np.ndarray:
        raise NotImplementedError

    def log_pred_jac(self, theta: np.ndarray, Z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def fit_point(self, prep, w):
        fun = lambda th: self.log_pred_jac(th, prep.Z)  # noqa: E731
        theta, loss, success, message = lbfgs_multistart(fun, self.grid(prep), prep.target, w, self.lower(prep),
                                                         self.upper(prep), n_starts=self.n_grid_starts)
        if not np.all(np.isfinite(theta)):
            return theta, False, message
        # Polish with the batch solver: L-BFGS-B stops early on the nearly non-smooth Huber
        # surface; taking the lower of the two keeps point estimate and bootstrap consistent.
        polished, ploss, pconv = irls_batch(fun, theta[None], prep.target, w[None], self.lower(prep),
                                                  self.upper(prep), max_iter=self.polish_iter)
        if ploss[0] <= loss * (1 + 1e-12):  # not worse (up to rounding): the solvers agree on a minimum
            if ploss[0] < loss:
                theta, loss = polished[0], ploss[0]
            success = success or bool(pconv[0])
        ok, why = self.check(theta)
        if not ok:
            return theta, False, why
        if not success:
            return theta, False, f"optimiser did not converge ({message})"
        return theta, True, "converged"

    def fit_batch(self, prep, W, theta0, callback=None):
        fun = lambda th: self.log_pred_jac(th, prep.Z)  # noqa: E731
        B = W.shape[0]
        theta, loss, _ = irls_batch(fun, np.repeat(np.asarray(theta0, float)[None], B, axis=0), prep.target, W,
                                    self.lower(prep), self.upper(prep), max_iter=self.bootstrap_iter,
                                    callback=callback)
        # A second start for resamples whose best grid point already beats the warm start's optimum
        # (another basin): screen all grid points at once, W @ huber(grid residuals).
        grid = self.grid(prep)
        lp_grid, _ = self.log_pred_jac(grid, prep.Z)
        screen = W @ huber(lp_grid - prep.target).T  # (B, G)
        screen[~np.isfinite(screen)] = np.inf
        best = np.argmin(screen, axis=1)
        redo = np.flatnonzero(screen[np.arange(B), best] < loss)
        if redo.size:
            th2, loss2, _ = irls_batch(fun, grid[best[redo]], prep.target, W[redo], self.lower(prep),
                                          self.upper(prep), max_iter=self.bootstrap_iter)
            better = loss2 < loss[redo]
            theta[redo[better]] = th2[better]
        ok = np.all(np.isfinite(theta), axis=1)
        return theta, ok

    def check(self, theta):
        ok, why = super().check(theta)
        if not ok:
            return ok, why
        for i, name in self._exponent_slots():
            if theta[i] <= 1e-6:
                return False, f"exponent {name} hit 0 (the error does not decrease with this input)"
            if theta[i] >= EXPONENT_MAX - 1e-6:
                return False, f"exponent {name} hit its bound {EXPONENT_MAX:g} (a step, not a law: the data do not follow it)"
        return True, "ok"

    def _exponent_slots(self) -> list[tuple[int, str]]:
        return [(i, n) for i, n in enumerate(self.param_names) if n in ("alpha", "beta")]

    def asymptote(self, theta):
        return ACC_MAX - np.exp(theta[:, -1])


def lse_terms(T: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``log sum exp`` over the last axis of ``T (B, m, t)`` and the softmax weights."""
    mx = T.max(axis=-1, keepdims=True)
    e = np.exp(T - mx)
    s = e.sum(axis=-1, keepdims=True)
    return (mx + np.log(s))[..., 0], e / s


class SaturatingLaw(HuberLaw):
    name = "saturating"
    formula = "100 - y = E + A * x^(-alpha)"
    param_names = ("A", "alpha", "E")  # internal theta = (log A_scaled, alpha, log E)
    exponent = "alpha"

    def lower(self, prep):
        return np.array([-LOG_COEF_BOUND, 0.0, self.e_floor(prep)])

    def upper(self, prep):
        return np.array([LOG_COEF_BOUND, EXPONENT_MAX, LOG_COEF_BOUND])

    def _grid(self, prep):
        # Split the typical error at the centre of the data between E and A, for a range of exponents.
        err = float(np.exp(np.mean(prep.target)))
        rows = []
        for f, alpha, s in itertools.product((0.02, 0.2, 0.5, 0.8, 0.95, 0.99), (0.02, 0.1, 0.3, 0.7, 1.5, 3.0),
                                             (0.5, 1.0, 2.0)):
            rows.append((np.log((1 - f) * err * s), alpha, np.log(f * err)))
        return np.array(rows)

    def log_pred_jac(self, theta, Z):
        z = Z[:, 0]
        a, alpha, e = theta[:, 0:1], theta[:, 1:2], theta[:, 2:3]
        d = a - alpha * z[None, :] - e  # log(A x^-alpha / E)
        lp = e + np.logaddexp(0.0, d)
        w1 = 0.5 * (1.0 + np.tanh(0.5 * d))  # sigmoid(d): share of the A term
        J = np.stack([w1, -w1 * z[None, :], 1.0 - w1], axis=-1)
        return lp, J

    def params(self, theta, prep, extra=None):
        a, alpha, e = theta[..., 0], theta[..., 1], theta[..., 2]
        with np.errstate(over="ignore"):
            A = np.exp(a + alpha * np.log(prep.scale[0]))
        E = np.exp(e)
        return {"A": A, "alpha": alpha, "E": E, "y_max": ACC_MAX - E}

    def predict(self, theta, x, prep, extra=None):
        z = np.log(np.asarray(x, float).reshape(-1) / prep.scale[0])
        lp, _ = self.log_pred_jac(theta, z[:, None])
        return ACC_MAX - np.exp(lp)

    def solve(self, theta, target, prep, extra=None):
        a, alpha, e = theta[:, 0], theta[:, 1], theta[:, 2]
        gap = (ACC_MAX - target) - np.exp(e)  # error still to remove above the floor E
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            x = prep.scale[0] * np.exp((a - np.log(gap)) / alpha)
        return np.where((gap > 0) & (alpha > 0), x, np.inf)


class ChinchillaLaw(HuberLaw):
    name = "chinchilla"
    formula = "100 - y = E + A / N^alpha + B / D^beta"
    param_names = ("A", "alpha", "B", "beta", "E")  # theta = (log A_s, alpha, log B_s, beta, log E)
    exponent = "gamma"  # compute exponent of the compute-optimal frontier
    n_inputs = 2

    def lower(self, prep):
        return np.array([-LOG_COEF_BOUND, 0.0, -LOG_COEF_BOUND, 0.0, self.e_floor(prep)])

    def upper(self, prep):
        return np.array([LOG_COEF_BOUND, EXPONENT_MAX, LOG_COEF_BOUND, EXPONENT_MAX, LOG_COEF_BOUND])

    def _grid(self, prep):
        err = float(np.exp(np.mean(prep.target)))
        rows = []
        for f, g, alpha, beta in itertools.product((0.05, 0.3, 0.6, 0.9), (0.2, 0.5, 0.8), (0.05, 0.2, 0.6, 1.5),
                                                   (0.05, 0.2, 0.6, 1.5)):
            rest = (1 - f) * err
            rows.append((np.log(g * rest), alpha, np.log((1 - g) * rest), beta, np.log(f * err)))
        return np.array(rows)

    def log_pred_jac(self, theta, Z):
        zn, zd = Z[None, :, 0], Z[None, :, 1]
        a, alpha, b, beta, e = (theta[:, i:i + 1] for i in range(5))
        T = np.stack([a - alpha * zn, b - beta * zd, np.broadcast_to(e, (theta.shape[0], Z.shape[0]))], axis=-1)
        lp, S = lse_terms(T)
        J = np.stack([S[..., 0], -S[..., 0] * zn, S[..., 1], -S[..., 1] * zd, S[..., 2]], axis=-1)
        return lp, J

    # The compute model C = k N D with k in FLOPs per parameter per image seen, measured from the
    # runs as the (weighted) median of train_flops / (N D).
    def extra(self, prep, W):
        ratio = prep.aux.get("flops_ratio")
        if ratio is None:
            return None
        order = np.argsort(ratio)
        cw = np.cumsum(W[:, order], axis=1)
        idx = np.argmax(cw >= 0.5 * cw[:, -1:], axis=1)
        return ratio[order][idx]

    def _optimal(self, theta, k, prep):
        """Compute-optimal allocation in scaled units: returns (G, coef, gamma, pN, pD).

        With ``c = C / (k sN sD)``: ``N_s* = G c^pN``, ``D_s* = c^pD / G``, and
        ``error*(C) = E + coef * c^(-gamma)``.
        """
        a, alpha, b, beta = theta[:, 0], theta[:, 1], theta[:, 2], theta[:, 3]
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            s = alpha + beta
            logG = (np.log(alpha) + a - np.log(beta) - b) / s
            coef = np.exp(a - alpha * logG) + np.exp(b + beta * logG)
            return logG, coef, alpha * beta / s, beta / s, alpha / s

    def _c_scaled(self, C, k, prep):
        return np.asarray(C, float)[None, :] / (np.asarray(k, float).reshape(-1, 1) * prep.scale[0] * prep.scale[1])

    def params(self, theta, prep, extra=None):
        a, alpha, b, beta, e = (theta[..., i] for i in range(5))
        with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
            out = {"A": np.exp(a + alpha * np.log(prep.scale[0])), "alpha": alpha,
                   "B": np.exp(b + beta * np.log(prep.scale[1])), "beta": beta, "E": np.exp(e),
                   "y_max": ACC_MAX - np.exp(e), "gamma": alpha * beta / (alpha + beta),
                   "n_opt_exponent": beta / (alpha + beta), "d_opt_exponent": alpha / (alpha + beta)}
        if extra is not None:
            out["k"] = np.asarray(extra, float).reshape(np.shape(alpha))
        return out

    def predict(self, theta, x, prep, extra=None):
        x = np.asarray(x, float)
        if x.ndim == 2 and x.shape[1] == 2:  # (N, D) pairs
            Z = np.log(x / prep.scale)
            lp, _ = self.log_pred_jac(theta, Z)
            return ACC_MAX - np.exp(lp)
        # 1-D: compute C, at the compute-optimal split
        logG, coef, gamma, _, _ = self._optimal(theta, extra, prep)
        c = self._c_scaled(x.reshape(-1), extra, prep)
        err = np.exp(theta[:, 4:5]) + coef[:, None] * c ** (-gamma[:, None])
        return ACC_MAX - err

    def optimal_split(self, theta, C, prep, extra) -> tuple[np.ndarray, np.ndarray]:
        """``(N* (B, q), D* (B, q))`` in original units for compute ``C (q,)`` FLOPs."""
        logG, _, _, pN, pD = self._optimal(theta, extra, prep)
        c = self._c_scaled(np.asarray(C, float).reshape(-1), extra, prep)
        N = prep.scale[0] * np.exp(logG[:, None]) * c ** pN[:, None]
        D = prep.scale[1] * np.exp(-logG[:, None]) * c ** pD[:, None]
        return N, D

    def solve(self, theta, target, prep, extra=None):
        logG, coef, gamma, _, _ = self._optimal(theta, extra, prep)
        gap = (ACC_MAX - target) - np.exp(theta[:, 4])
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            c = np.exp((np.log(coef) - np.log(gap)) / gamma)
            C = c * np.asarray(extra, float).reshape(-1) * prep.scale[0] * prep.scale[1]
        return np.where((gap > 0) & (gamma > 0) & np.isfinite(C), C, np.inf)


LAWS: dict[str, Law] = {law.name: law for law in (PowerLaw(), ErrorPowerLaw(), SaturatingLaw(), ChinchillaLaw())}


def get_law(name: str | LawName | Law) -> Law:
    """The law object for ``name`` (UserError listing the valid names)."""
    if isinstance(name, Law):
        return name
    return LAWS[choice(LawName, name, what="law").value]
