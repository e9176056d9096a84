"""Is a fitted law a result, or only a curve through the points? :func:`identify` says which, and why.

A law is *not identified* (its numbers must not be printed as results) when

- it has too few runs: ``n <= parameters + 2`` (with ``parameters + 1`` runs a law interpolates,
  with two more its residuals still say almost nothing about the spread; bootstrap resamples of so
  few runs mostly repeat points);
- its bootstrap is degenerate: a parameter's interval has zero width (narrower than the 3
  significant digits of a table: every resample gives the same answer, which happens when the law
  interpolates the points), or runs to one of the optimiser's bounds (one-sided at a bound: a
  share of resamples put the parameter where the data no longer constrain it, e.g. the error
  floor ``E`` at 0, so the asymptote could be 100 %);
- a parameter of the point fit sits at its bound (e.g. ``E`` at its floor: the data show no
  saturation, so the asymptote is not identified);
- it has no bootstrap at all (its intervals, and so its identification, are unknown).

A law the data *reject* has the status ``lack of fit``: when the fit knows how many test images
each accuracy was measured on (``FitResult.n_examples``), its residuals are compared with the noise
one run's accuracy carries: the binomial sampling of its test images, ``100 sqrt(q (1 - q) / n)`` at the
fitted accuracy q, and the seed-to-seed variation of training, which a one-seed grid cannot measure and
which is taken as :data:`SEED_SD_POINTS` (1 point: three seeds of configs/cpu/fashion-mnist.yaml gave an SD of
0.97 points of PGD-10 accuracy; seeds of CIFAR-10 WRNs are usually reported within a point of AutoAttack
accuracy). So ``se = sqrt(binomial^2 + SEED_SD_POINTS^2)``, ``chi2 = sum (residual / se)^2`` on
``runs - parameters`` degrees of freedom, and a p-value below :data:`LACK_OF_FIT_P` means the residuals
are far larger than the test images and the seeds explain, so the curve does not describe the runs
(e.g. a power law in accuracy through runs that bend towards saturation, or one law through runs that
differ in more than compute). Without the seed term, 10,000 test images (a binomial SE of 0.5 points)
would reject true laws whose runs scatter by an ordinary seed SD. Where the fitted runs include
several seeds of one configuration (same compute and ``schema.CONFIG_COLUMNS``, a ``seed`` column) with
at least :data:`MIN_REPLICATE_DOF` degrees of freedom, the seed SD is measured from them instead (their pooled spread less its binomial part, the classic pure
error); a seed SD given to ``fit_law`` (``--seed-sd``, ``study.seed_sd``) overrides both. The reason says
which was used.

A law that did not converge keeps the status ``did not converge``. Everything here reads a
:class:`~robustscale.scaling.fit.FitResult`; nothing is refitted.

What each status lets a table print (``fit``, ``extrapolate``, ``report``, the paper reproduction and the study):

- ``ok``: the parameters with their intervals, and compute-to-target solved from the law;
- ``lack of fit``: the parameters, flagged, as a trend's summary (case resampling keeps their intervals
  honest whatever the scatter), but no extrapolation: the curve does not describe the runs, so a target
  read off it is not a prediction (the study, which picks one law per family, passes over such laws);
- ``not identified`` / ``did not converge``: the status and its reasons, no numbers. A fit without a
  bootstrap whose only reason is the missing bootstrap prints its point values, marked unchecked.

Two more rules close the gaps the commands used to leave open:

- an *exponent whose interval contains 0* (a power law in accuracy whose bootstrap exponent straddles 0)
  is not identified: the runs show no trend in compute, so no target can be read off it;
- the joint law of ``plan`` (:func:`identify_optimum`) identifies a compute-optimal allocation only when
  both model size and samples seen follow a power law (3 or more distinct values each, exponents off
  their bounds) and none of its parameters, E included, sits at a bound: along an axis held at its
  observed levels, the budget alone fixes the other input, which is an answer by construction (a
  zero-width interval), not an optimum. ``plan --conditional`` prints that answer, labelled as such.

**One extrapolation scale** (:func:`reach`), the same in every command: the factor by which a target's
compute exceeds the largest fitted run's (and for the planner, by which N* and D* leave the runs' ranges).

- factor <= 1: ``within the runs``;
- 1 < factor <= :data:`MAX_EXTRAPOLATION`: ``extrapolation <f>x``, and where a back-test of the source
  exists (``robustscale backtest``), whether the factor lies within the reach over which its prediction
  intervals held;
- beyond :data:`MAX_EXTRAPOLATION`: refused (status :data:`BEYOND_REACH`): the reason is printed, never the
  number. 10x: a law fitted over a decade or two of compute says little a decade further out, and the
  back-tests in docs/backtests.md measured coverage only over smaller reaches.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.stats import chi2

from ..errors import UserError
from ..schema import finite_float

OK = "ok"
NOT_IDENTIFIED = "not identified"
NOT_CONVERGED = "did not converge"
LACK_OF_FIT = "lack of fit"
BEYOND_REACH = "beyond reach"  # a target or optimum further out than MAX_EXTRAPOLATION: refused
MAX_EXTRAPOLATION = 10.0  # the one refusal limit (factor beyond the largest run; see the module docstring)
LACK_OF_FIT_P = 1e-3  # chi-square p-value under the runs' noise below which a law is rejected
SEED_SD_POINTS = 1.0  # assumed seed-to-seed SD of one run's accuracy (percentage points), beside the binomial
MIN_REPLICATE_DOF = 3  # seeds of one configuration with this many dof measure the seed SD instead
EXTRA_RUNS = 2  # a law needs more than parameters + EXTRA_RUNS runs
ZERO_WIDTH_REL = 1e-3  # an interval narrower than this share of its point shows as a point at 3 digits
NO_BOOTSTRAP = "no bootstrap: its intervals (and so whether the data pin it down) are unknown"
BOUND_TOL = 1e-6  # distance (internal units: log coefficients, exponents) at which a value sits on a bound


@dataclass
class Identification:
    """``status`` (:data:`OK`, :data:`NOT_IDENTIFIED`, :data:`LACK_OF_FIT`, :data:`NOT_CONVERGED`) and the reasons."""

    status: str
    reasons: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == OK

    @property
    def shows_parameters(self) -> bool:
        """May a table print the fitted parameters (see the module docstring)?"""
        return self.status in (OK, LACK_OF_FIT) or self.unchecked

    @property
    def unchecked(self) -> bool:
        """Not identified only because there is no bootstrap (the point fit alone passes the other rules)."""
        return self.status == NOT_IDENTIFIED and self.reasons == [NO_BOOTSTRAP]

    @property
    def reason(self) -> str:
        return "; ".join(self.reasons)

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "reason": self.reason or None}


def min_runs(n_params: int) -> int:
    """Runs a law of ``n_params`` parameters needs to be identified: ``n_params + EXTRA_RUNS + 1``."""
    return n_params + EXTRA_RUNS + 1


def identify(fit) -> Identification:
    """Apply the rules of the module docstring to ``fit`` (a FitResult)."""
    if not fit.converged:
        return Identification(NOT_CONVERGED, [fit.message])
    law = fit.law_form
    p = law.n_params
    reasons = []
    if fit.n < min_runs(p):
        reasons.append(f"{fit.n} runs for {p} parameters: the {fit.law} law needs at least {min_runs(p)} "
                       f"(more than parameters + {EXTRA_RUNS})")
    reasons += _at_bounds(law, fit.prepared, fit.theta)
    if not fit.has_bootstrap:
        reasons.append(NO_BOOTSTRAP)
    else:
        reasons += _degenerate_bootstrap(law, fit.prepared, fit.theta, fit.bootstrap_draws()[0], fit.level)
        reasons += _exponent_spans_zero(fit.exponent_name, fit.ci)
    if reasons:
        return Identification(NOT_IDENTIFIED, reasons)
    rejected = lack_of_fit(fit)
    return Identification(LACK_OF_FIT, [rejected]) if rejected else Identification(OK)


def check_seed_sd(value, what: str = "seed SD", where: str = "") -> float | None:
    """``value`` as a seed SD in points (None stays None); UserError naming ``what`` unless finite and >= 0."""
    if value is None:
        return None
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0
    if not ok:
        shown = f"{value:g}" if isinstance(value, float) else repr(value)
        raise UserError(f"invalid {what} {shown}{where}: must be a finite number of accuracy points >= 0, e.g. 1")
    return float(value)


def seed_sd_of(fit, seed_sd: float | None = None) -> tuple[float, str]:
    """The seed SD (points) the lack-of-fit test of ``fit`` allows, and where it comes from: ``seed_sd`` or the
    fit's own (``fit_law(seed_sd=...)``), "given"; else measured from the configurations run with several seeds
    (at least :data:`MIN_REPLICATE_DOF` degrees of freedom: the pooled spread within those groups, less
    their binomial part); else :data:`SEED_SD_POINTS`, "assumed"."""
    if seed_sd is None:
        seed_sd = getattr(fit, "seed_sd", None)
    if seed_sd is not None:
        return float(seed_sd), "given"
    measured = _replicate_seed_sd(fit)
    if measured is not None:
        return measured
    return SEED_SD_POINTS, "assumed"


def _replicate_seed_sd(fit) -> tuple[float, str] | None:
    n = fit.n_examples
    y = np.asarray(fit.y_values, float)
    group = getattr(fit, "replicate_group", None)
    if n is None or group is None or len(n) != len(y) or len(group) != len(y) or len(y) < 2:
        return None
    group = np.asarray(group, int).ravel()
    sizes = np.bincount(group)
    dof = int(np.sum(sizes[sizes > 1] - 1))
    if dof < MIN_REPLICATE_DOF:
        return None
    means = np.bincount(group, weights=y) / sizes
    rep = sizes[group] > 1
    spread = float(np.sum((y[rep] - means[group][rep]) ** 2) / dof)
    q = np.clip(means[group][rep] / 100.0, 0.5 / n[rep], 1 - 0.5 / n[rep])
    binomial = float(np.mean(1e4 * q * (1 - q) / n[rep]))
    groups = int(np.sum(sizes > 1))
    return math.sqrt(max(spread - binomial, 0.0)), f"measured from {groups} configurations run with several seeds, {dof} dof"


def lack_of_fit(fit, p_threshold: float = LACK_OF_FIT_P, seed_sd: float | None = None) -> str | None:
    """The reason the runs reject ``fit`` (see the module docstring), or None (also when n is unknown).
    ``seed_sd``: see :func:`seed_sd_of`."""
    n = fit.n_examples
    dof = fit.n - fit.law_form.n_params
    if n is None or dof < 1 or len(n) != len(fit.residuals):
        return None
    seed_sd, source = seed_sd_of(fit, seed_sd)
    resid = np.asarray(fit.residuals, float)
    q = np.clip((np.asarray(fit.y_values, float) - resid) / 100.0, 0.5 / n, 1 - 0.5 / n)
    se = np.sqrt(1e4 * q * (1 - q) / n + seed_sd ** 2)
    stat = float(np.sum((resid / se) ** 2))
    p = float(chi2.sf(stat, dof))
    if p >= p_threshold:
        return None
    worst = int(np.argmax(np.abs(resid) / se))
    p_text = f"p = {p:.1g}" if p > 0 else "p < 1e-300"  # chi2.sf underflows to 0 below ~1e-308
    return (f"residuals up to {abs(resid[worst]):.3g} points against a noise SD of {se[worst]:.2g} (test images "
            f"and a seed SD of {seed_sd:.2g}, {source}; chi2 {stat:.3g} on {dof} dof, {p_text})")


def _bounds(law, prep) -> tuple[np.ndarray, np.ndarray] | None:
    if not hasattr(law, "lower") or prep is None:
        return None  # closed-form laws (power) have no bounds
    return np.asarray(law.lower(prep), float), np.asarray(law.upper(prep), float)


def _near(a, b) -> np.ndarray:
    return np.abs(np.asarray(a, float) - np.asarray(b, float)) <= BOUND_TOL * np.maximum(1.0, np.abs(b))


def _at_bounds(law, prep, theta) -> list[str]:
    """A parameter of the point fit ``theta`` (internal units) on one of ``law``'s bounds."""
    bounds = _bounds(law, prep)
    if bounds is None or theta is None:
        return []
    lo, hi = bounds
    out = []
    for i, name in enumerate(law.param_names):
        if _near(theta[i], lo[i]):
            out.append(f"{name} at its lower bound{_meaning(name, 'low')}")
        elif _near(theta[i], hi[i]):
            out.append(f"{name} at its upper bound{_meaning(name, 'high')}")
    return out


def _meaning(name: str, side: str) -> str:
    if name.startswith("E") and side == "low":
        return " (no error floor in the data: the asymptote is not identified)"
    if name in ("alpha", "beta", "gamma"):
        return " (the error does not follow a power of this input here)"
    if side == "high":
        return " (the coefficient runs off: the data do not pin the term down)"
    return ""


def _degenerate_bootstrap(law, prep, theta, draws, level: float) -> list[str]:
    """Zero-width or one-sided-at-a-bound intervals of the bootstrap ``draws (B, p)`` (internal units)."""
    out = []
    if draws is None or not len(draws):
        return out
    q = (1 - level) / 2
    t_lo = np.quantile(draws, q, axis=0, method="lower")
    t_hi = np.quantile(draws, 1 - q, axis=0, method="higher")
    bounds = _bounds(law, prep)
    for i, name in enumerate(law.param_names):
        point = float(theta[i])
        if t_hi[i] - t_lo[i] <= max(ZERO_WIDTH_REL * abs(point), 1e-12):
            # (no values: the reason is printed where the law's numbers are withheld)
            out.append(f"zero-width bootstrap interval of {name}: every resample gives the same law")
            continue
        if bounds is not None:
            lo, hi = bounds
            if _near(t_lo[i], lo[i]) and not _near(point, lo[i]):
                out.append(f"interval of {name} one-sided at its lower bound{_meaning(name, 'low')}")
            elif _near(t_hi[i], hi[i]) and not _near(point, hi[i]):
                out.append(f"interval of {name} one-sided at its upper bound{_meaning(name, 'high')}")
    return out


def _exponent_spans_zero(name: str, ci: dict) -> list[str]:
    lo_hi = ci.get(name)
    if lo_hi is None:
        return []
    lo, hi = lo_hi
    if lo <= 0 <= hi:
        return [f"the interval of the exponent {name} contains 0: the runs show no trend in compute"]
    return []


def identify_optimum(fit) -> Identification:
    """May ``plan`` print the compute-optimal allocation of ``fit`` (a ``joint.JointFit``)? The rules of the module
    docstring: converged; N and D both on a power law; enough runs; no parameter (E included) at a bound in the
    point fit or one-sided at a bound in the bootstrap; a bootstrap."""
    if not fit.converged or fit.law_form is None:
        return Identification(NOT_CONVERGED if not fit.converged else NOT_IDENTIFIED, [fit.message])
    reasons = []
    off_law = [f"{sym} ({why})" for sym, why in fit.axes_off_law().items()]
    if off_law:
        reasons.append("no optimum along " + "; ".join(off_law))
    law = fit.law_form
    if fit.n < min_runs(law.n_params):
        reasons.append(f"{fit.n} runs for {law.n_params} parameters: the joint law needs at least "
                       f"{min_runs(law.n_params)} (more than parameters + {EXTRA_RUNS})")
    reasons += _at_bounds(law, fit.prepared, fit.theta)
    draws = fit.thetas(bootstrap=True)
    if not fit.n_bootstrap or not len(draws):
        reasons.append(NO_BOOTSTRAP)
    else:
        reasons += _degenerate_bootstrap(law, fit.prepared, fit.theta, draws, fit.level)
    return Identification(NOT_IDENTIFIED, reasons) if reasons else Identification(OK)


@dataclass(frozen=True)
class Reach:
    """Where a target or an optimum lies on the extrapolation scale (see the module docstring)."""

    factor: float  # beyond the largest run (1 or less: within the runs)
    refused: bool
    label: str

    def to_dict(self) -> dict[str, Any]:
        return {"factor": None if self.refused else finite_float(self.factor), "refused": self.refused,
                "label": self.label}


def reach(factor: float, what: str = "the largest run's compute", backtested: float | None = None,
          limit: float = MAX_EXTRAPOLATION) -> Reach:
    """Label ``factor`` (a target's compute / the largest fitted run's, or an input's factor outside the runs'
    range) on the one extrapolation scale; ``backtested``: the compute factor over which the source's back-test
    coverage held (None: no back-test). Beyond ``limit`` it is refused and the label names no number."""
    f = float(factor)
    if not math.isfinite(f) or f > limit:
        return Reach(f, True, f"beyond the refusal limit of {limit:g}x {what}")
    if f <= 1:
        return Reach(f, False, "within the runs")
    label = f"extrapolation {f:.3g}x {what}"
    if backtested is None:
        label += ", not back-tested"
    elif f <= backtested:
        label += f", within the back-tested reach ({backtested:.3g}x)"
    else:
        label += f", beyond the back-tested reach ({backtested:.3g}x)"
    return Reach(f, False, label)


def asymptote(fit) -> dict[str, Any]:
    """``{"value", "ci"}`` of the fit's asymptotic y (percent) for error laws; ``value`` None (unbounded) otherwise."""
    if fit.converged and fit.law == "error-power":  # its asymptote is the law's assumption, not a fit
        return {"value": 100.0, "ci": None, "assumed": True}
    if not fit.converged or "y_max" not in fit.params:
        return {"value": None, "ci": None}
    ci = fit.ci.get("y_max")
    return {"value": finite_float(fit.params["y_max"]), "ci": [finite_float(ci[0]), finite_float(ci[1])] if ci else None}


__all__ = ["Identification", "identify", "identify_optimum", "Reach", "reach", "MAX_EXTRAPOLATION", "BEYOND_REACH",
           "lack_of_fit", "asymptote", "min_runs", "OK", "NOT_IDENTIFIED",
           "NOT_CONVERGED", "LACK_OF_FIT", "LACK_OF_FIT_P", "SEED_SD_POINTS", "MIN_REPLICATE_DOF", "EXTRA_RUNS",
           "NO_BOOTSTRAP", "check_seed_sd", "seed_sd_of"]
