"""The not-identified rules: too few runs, degenerate bootstraps, parameters at their bounds; asymptotes and
compute-to-target with intervals and how far they extrapolate."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from robustscale.scaling import extrapolate, fit_law
from robustscale.scaling.identified import (BEYOND_REACH, MAX_EXTRAPOLATION, LACK_OF_FIT, NOT_CONVERGED, NOT_IDENTIFIED, OK, asymptote, identify,
                                            SEED_SD_POINTS, lack_of_fit, min_runs, seed_sd_of)

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
    # 2x the largest run is an extrapolation and says so; 50x is beyond the refusal limit: no number at all
    assert ex_near.factor == pytest.approx(2, rel=1e-6) and ex_near.is_extrapolation
    assert ex_near.reach.startswith("extrapolation 2x") and ex_near.to_dict()["extrapolation"] is True
    lo, hi = ex_near.values["compute_flops"][1:]
    assert lo < ex_near.values["compute_flops"][0] < hi
    assert ex_far.status == BEYOND_REACH and not ex_far.solved and not ex_far.values
    assert f"refusal limit of {MAX_EXTRAPOLATION:g}x" in ex_far.summary()
    assert not any(ch.isdigit() for ch in ex_far.summary().split("refused:")[1].replace(f"{MAX_EXTRAPOLATION:g}x", ""))


# ---------------------------------------------------------------------- lack of fit (known n per point)
def _binomial_runs(acc_true, n=1000, seed=0):
    """Accuracies measured on ``n`` test images each: k ~ Binomial(n, acc / 100)."""
    rng = np.random.default_rng(seed)
    k = rng.binomial(n, np.asarray(acc_true) / 100.0)
    x = np.logspace(11, 12.5, len(acc_true))
    return pd.DataFrame({"name": [f"r{i}" for i in range(len(k))], "train_flops": x,
                         "apgd_ce_robust_acc": 100.0 * k / n, "apgd_ce_robust_acc_n_examples": n})


def _chi2_reference(fit, n, seed_sd=SEED_SD_POINTS):
    """chi2 and p of the residuals under binomial noise plus the assumed seed SD, from the definition (float64)."""
    from scipy.stats import chi2

    q = (fit.y_values - fit.residuals) / 100.0
    stat = float(np.sum(fit.residuals ** 2 / (1e4 * q * (1 - q) / n + seed_sd ** 2)))
    return stat, float(chi2.sf(stat, fit.n - 2))


def test_a_law_that_bends_away_from_the_runs_is_rejected():
    # Truth: error falls as a power of compute (the error-power law); an accuracy power law through these
    # 6 runs misses the saturation by several binomial standard errors.
    x = np.logspace(11, 12.5, 6)
    truth = 100 - 80 * (x / 1e11) ** -0.35
    df = _binomial_runs(truth, seed=3)
    power = fit_law(df, law="power", y="apgd_ce_robust_acc", bootstrap=BOOT, seed=0)
    np.testing.assert_array_equal(power.n_examples, np.full(6, 1000.0))
    stat, p = _chi2_reference(power, 1000)
    assert p < 1e-3
    ident = identify(power)
    assert ident.status == LACK_OF_FIT and f"chi2 {stat:.3g} on 4 dof" in ident.reason
    good = fit_law(df, law="error-power", y="apgd_ce_robust_acc", bootstrap=BOOT, seed=0)
    assert identify(good).status == OK and _chi2_reference(good, 1000)[1] >= 1e-3
    assert good.ci["alpha"][0] < 0.35 < good.ci["alpha"][1]


def test_seed_noise_beside_a_large_test_set_does_not_reject_a_true_law():
    # 30 runs of a true error-power law, each with a seed effect of SD 0.8 points and 10,000 test images (binomial
    # SE 0.5): binomial noise alone would reject the law; with the assumed seed SD of 1 point it stands.
    rng = np.random.default_rng(11)
    x = np.logspace(17, 19.5, 30)
    truth = 100 - 60 * (x / 1e17) ** -0.05 + 0.8 * rng.standard_normal(30)
    df = _binomial_runs(truth, n=10_000, seed=12).assign(train_flops=x)
    fit = fit_law(df, law="error-power", y="apgd_ce_robust_acc", bootstrap=BOOT, seed=0)
    assert _chi2_reference(fit, 10_000, seed_sd=0.0)[1] < 1e-3  # binomial-only: rejected
    stat, p = _chi2_reference(fit, 10_000)
    assert p >= 1e-3 and lack_of_fit(fit) is None
    assert lack_of_fit(fit, seed_sd=0.0) is not None


def test_seed_sd_is_measured_from_runs_that_repeat_a_compute_value():
    # 6 compute values x 10 seeds of a true error-power law: seed effects of SD 2 points, 1,000 test images each.
    rng = np.random.default_rng(5)
    x = np.repeat(np.logspace(11, 12.5, 6), 10)
    truth = 100 - 80 * (x / 1e11) ** -0.35 + 2.0 * rng.standard_normal(60)
    df = _binomial_runs(truth, seed=6).assign(train_flops=x, seed=np.tile(np.arange(10), 6), method="pgd")
    fit = fit_law(df, law="error-power", y="apgd_ce_robust_acc", bootstrap=BOOT, seed=0)
    # Reference, from the definition: pooled within-x variance (54 dof) less the mean binomial variance.
    groups = df["apgd_ce_robust_acc"].to_numpy().reshape(6, 10)
    pooled = float(np.sum((groups - groups.mean(1, keepdims=True)) ** 2) / 54)
    q = np.repeat(groups.mean(1), 10) / 100
    expected = math.sqrt(max(pooled - float(np.mean(1e4 * q * (1 - q) / 1000)), 0.0))
    sd, source = seed_sd_of(fit)
    assert sd == pytest.approx(expected, rel=1e-12) and source == "measured from 6 configurations run with several seeds, 54 dof"
    # Near the true 2 points: the pooled variance (about 4 + 2 binomial) has a relative SE of sqrt(2/54) = 0.19,
    # so the SD estimate is 2 +- 0.3; the bounds sit beyond 2.5 of those.
    assert 1.2 < sd < 2.8
    assert seed_sd_of(fit, seed_sd=0.5) == (0.5, "given")
    # One seed per compute value: nothing to measure, the assumption stands.
    single = fit_law(df.iloc[::10], law="error-power", y="apgd_ce_robust_acc", bootstrap=BOOT, seed=0)
    assert seed_sd_of(single) == (SEED_SD_POINTS, "assumed")
    # Runs equal in compute but not in configuration (here: the method) are not seeds of one another.
    mixed = df.assign(method=np.where(np.arange(60) % 2, "pgd", "trades"))
    assert seed_sd_of(fit_law(mixed, law="error-power", y="apgd_ce_robust_acc", bootstrap=BOOT, seed=0))[1] == \
        "measured from 12 configurations run with several seeds, 48 dof"
    # Without a seed column nothing says the repeats are seeds: the assumption stands.
    no_seed = fit_law(df.drop(columns="seed"), law="error-power", y="apgd_ce_robust_acc", bootstrap=BOOT, seed=0)
    assert seed_sd_of(no_seed) == (SEED_SD_POINTS, "assumed")
    # With the measured SD the true law stands; with none but the binomial it is rejected.
    assert lack_of_fit(fit) is None and lack_of_fit(fit, seed_sd=0.0) is not None


def test_lack_of_fit_needs_the_sample_sizes():
    x = np.logspace(11, 12.5, 6)
    df = _binomial_runs(100 - 80 * (x / 1e11) ** -0.35, seed=3).drop(columns="apgd_ce_robust_acc_n_examples")
    power = fit_law(df, law="power", y="apgd_ce_robust_acc", bootstrap=BOOT, seed=0)
    assert power.n_examples is None and lack_of_fit(power) is None and identify(power).status == OK


def test_error_power_law_matches_a_numpy_regression_and_inverts():
    rng = np.random.default_rng(0)
    x = np.logspace(12, 14, 7)
    err = 60 * (x / 1e12) ** -0.3 * np.exp(0.01 * rng.standard_normal(7))
    df = pd.DataFrame({"name": [f"r{i}" for i in range(7)], "train_flops": x, "aa_robust_acc": 100 - err})
    fit = fit_law(df, law="error-power", bootstrap=BOOT, seed=0)
    slope, intercept = np.polyfit(np.log(x), np.log(err), 1)  # float64 reference
    # closed form in float64 on 7 points: agreement to a few ulps of the log values (|log x| ~ 30)
    assert fit.params["alpha"] == pytest.approx(-slope, rel=1e-12, abs=1e-12)
    assert fit.params["A"] == pytest.approx(np.exp(intercept), rel=1e-10)
    x_new = np.array([3e12, 5e14])
    np.testing.assert_allclose(fit.predict(x_new), 100 - np.exp(intercept) * x_new ** slope, rtol=1e-12)
    target = 85.0
    x_star = np.exp((np.log(100 - target) - intercept) / slope)
    assert fit.solve_for(target) == pytest.approx(x_star, rel=1e-10)
    assert asymptote(fit) == {"value": 100.0, "ci": None, "assumed": True}
