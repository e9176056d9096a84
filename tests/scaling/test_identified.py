"""The not-identified rules: too few runs, degenerate bootstraps, parameters at their bounds; asymptotes and
compute-to-target with intervals and how far they extrapolate."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from robustscale.scaling import extrapolate, fit_law
from robustscale.scaling.identified import NOT_CONVERGED, NOT_IDENTIFIED, OK, asymptote, identify, min_runs

BOOT = 200


def _sat(n, E=30.0, noise=0.02, seed=0, decades=2.0):
    """Saturating truth over ``decades`` of compute with log-normal noise on the error."""
    rng = np.random.default_rng(seed)
    x = np.logspace(15, 15 + decades, n)
    err = (E + 40 * (x / 1e15) ** -0.5) * np.exp(noise * rng.standard_normal(n))
    return pd.DataFrame({"name": [f"r{i}" for i in range(n)], "train_flops": x, "aa_robust_acc": 100 - err,
                         "device_hours": x / 1e12 / 3600})


def test_min_runs_is_parameters_plus_three():
    assert min_runs(2) == 5 and min_runs(3) == 6


def test_well_sampled_saturating_law_is_identified_with_its_asymptote():
    fit = fit_law(_sat(10), law="saturating", bootstrap=BOOT, seed=0)
    ident = identify(fit)
    assert ident.status == OK, ident.reason
    asym = asymptote(fit)
    lo, hi = asym["ci"]
    assert lo < asym["value"] < hi and lo < 70 < hi  # the truth (100 - E = 70) inside its interval


def test_four_runs_for_three_parameters_are_not_identified():
    # The case: a saturating law through 4 runs interpolates them.
    fit = fit_law(_sat(4), law="saturating", bootstrap=BOOT, seed=0)
    ident = identify(fit)
    assert ident.status == NOT_IDENTIFIED
    assert "4 runs for 3 parameters: the saturating law needs at least 6" in ident.reason
    power = identify(fit_law(_sat(5), law="power", bootstrap=BOOT, seed=0))
    assert power.status == OK, power.reason  # 5 runs are enough for 2 parameters


def test_no_saturation_puts_the_floor_at_its_bound():
    # error = A x^-alpha exactly (E = 0 in truth): the floor E runs to its lower bound.
    fit = fit_law(_sat(10, E=0.0, noise=0.0), law="saturating", bootstrap=BOOT, seed=0)
    ident = identify(fit)
    assert fit.converged and ident.status == NOT_IDENTIFIED
    assert "E at its lower bound" in ident.reason and "asymptote is not identified" in ident.reason


def test_exact_power_law_has_a_zero_width_bootstrap():
    x = np.logspace(15, 17, 8)
    df = pd.DataFrame({"name": [f"r{i}" for i in range(8)], "train_flops": x, "aa_robust_acc": 1e-3 * x ** 0.2})
    fit = fit_law(df, law="power", bootstrap=BOOT, seed=0)
    ident = identify(fit)
    assert ident.status == NOT_IDENTIFIED and "zero-width bootstrap interval of alpha" in ident.reason


def test_one_sided_interval_at_a_bound():
    # A weak saturation in noisy data (this sample): the point keeps a floor E > 0, but more than 2.5 % of
    # the resamples drop E to its bound, so the asymptote's interval reaches 100 %.
    fit = fit_law(_sat(8, E=5.0, noise=0.08, seed=1), law="saturating", bootstrap=BOOT, seed=0)
    ident = identify(fit)
    assert fit.converged and ident.status == NOT_IDENTIFIED
    assert "interval of E one-sided at its lower bound" in ident.reason
    assert fit.ci["E"][0] < 1e-3 * fit.params["E"]  # the interval really reaches down to (numerically) zero
    assert asymptote(fit)["ci"][1] > 99.99


def test_no_bootstrap_and_not_converged():
    fit = fit_law(_sat(10), law="saturating", bootstrap=0)
    assert identify(fit).status == NOT_IDENTIFIED and "no bootstrap" in identify(fit).reason
    flat = _sat(8)
    flat["aa_robust_acc"] = 50.0 + 0.01 * np.arange(8)[::-1]  # decreasing in compute: exponent hits 0
    bad = fit_law(flat, law="saturating", bootstrap=0)
    assert not bad.converged and identify(bad).status == NOT_CONVERGED


def test_extrapolation_factor_and_label():
    df = _sat(10)
    fit = fit_law(df, law="saturating", bootstrap=BOOT, seed=0)
    near, far = fit.predict([1e17 * 2])[0], fit.predict([1e17 * 50])[0]
    ex_near = extrapolate(fit, near, df, device_type="cpu")[0]
    ex_far = extrapolate(fit, far, df, device_type="cpu")[0]
    assert ex_near.factor == pytest.approx(2, rel=1e-6) and not ex_near.is_extrapolation
    assert ex_far.factor == pytest.approx(50, rel=1e-6) and ex_far.is_extrapolation
    lo, hi = ex_far.values["compute_flops"][1:]
    assert lo < ex_far.values["compute_flops"][0] < hi
    assert ex_far.to_dict()["extrapolation"] is True
