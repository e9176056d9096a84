"""Fits against independent computations and known truths."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import optimize, stats

from robustscale.errors import UserError
from robustscale.scaling import (FitNotConverged, compare_exponents, fit_groups, fit_law, frontier_mask,
                                 pareto_frontier)
from robustscale.scaling.bootstrap import resample_counts
from robustscale.scaling.laws import get_law
from robustscale.scaling.optim import HUBER_DELTA, huber, irls_batch


def test_power_equals_linregress_on_logs(runs):
    df = runs("power", n=40, noise=0.1, seed=1)
    fit = fit_law(df, "power")
    ref = stats.linregress(np.log(df.train_flops), np.log(df.aa_robust_acc))
    assert fit.params["alpha"] == pytest.approx(ref.slope, rel=1e-10)
    assert math.log(fit.params["C"]) == pytest.approx(ref.intercept, rel=1e-8)
    assert fit.r2_log == pytest.approx(ref.rvalue ** 2, rel=1e-10)
    assert fit.converged and fit.n == 40
    # residuals are observed - predicted in y units
    np.testing.assert_allclose(fit.residuals, df.aa_robust_acc - fit.predict(df.train_flops), rtol=1e-10)


def test_power_recovers_truth_with_interval(runs, truth):
    df = runs("power", n=80, noise=0.05, seed=2)
    fit = fit_law(df, "power", bootstrap=500, seed=0)
    for name in ("C", "alpha"):
        lo, hi = fit.ci[name]
        assert lo <= truth["power"][name] <= hi, (name, lo, hi)
    assert fit.params["alpha"] == pytest.approx(truth["power"]["alpha"], abs=0.01)
    # intervals of predictions bracket the point prediction
    lo, hi = fit.predict_interval([1e18, 1e21])
    yhat = fit.predict([1e18, 1e21])
    assert np.all(lo <= yhat) and np.all(yhat <= hi)


def test_saturating_matches_curve_fit_on_clean_data(runs, truth):
    df = runs("saturating", n=50, noise=0.0, seed=3)
    fit = fit_law(df, "saturating")
    x, y = df.train_flops.to_numpy(), df.aa_robust_acc.to_numpy()
    s = 1e18  # independent least-squares fit in accuracy units, x scaled for conditioning

    def model(x, logA, alpha, E):
        return 100 - (E + np.exp(logA) * (x / s) ** -alpha)

    popt, _ = optimize.curve_fit(model, x, y, p0=[1.0, 0.5, 20.0], maxfev=20000)
    A_ref = np.exp(popt[0]) * s ** popt[1]
    assert fit.converged
    assert fit.params["alpha"] == pytest.approx(popt[1], rel=1e-4)
    assert fit.params["E"] == pytest.approx(popt[2], rel=1e-4)
    assert fit.params["A"] == pytest.approx(A_ref, rel=1e-3)
    assert fit.params["alpha"] == pytest.approx(truth["saturating"]["alpha"], rel=1e-4)
    assert fit.params["y_max"] == pytest.approx(100 - truth["saturating"]["E"], rel=1e-5)


def test_saturating_recovers_truth_with_interval(runs, truth):
    df = runs("saturating", n=60, noise=0.03, seed=4)
    fit = fit_law(df, "saturating", bootstrap=200, seed=1)
    assert fit.converged and fit.n_bootstrap_failed == 0
    for name in ("A", "alpha", "E"):
        lo, hi = fit.ci[name]
        assert lo <= truth["saturating"][name] <= hi, (name, lo, hi)
    assert fit.params["alpha"] == pytest.approx(truth["saturating"]["alpha"], rel=0.2)
    assert fit.params["E"] == pytest.approx(truth["saturating"]["E"], rel=0.1)


def test_chinchilla_recovers_truth_and_optimal_split(runs, truth):
    df = runs("chinchilla", n=64, noise=0.02, seed=101)
    fit = fit_law(df, "chinchilla", bootstrap=150, seed=1)
    t = truth["chinchilla"]
    assert fit.converged, fit.message
    for name in ("alpha", "beta", "E"):
        lo, hi = fit.ci[name]
        assert lo <= t[name] <= hi, (name, lo, hi)
        assert fit.params[name] == pytest.approx(t[name], rel=0.15)
    assert fit.params["k"] == pytest.approx(6.0)
    assert fit.params["gamma"] == pytest.approx(fit.params["alpha"] * fit.params["beta"]
                                                / (fit.params["alpha"] + fit.params["beta"]))
    # the compute-optimal split spends exactly C and minimises the error among N*D = C/k
    C = 1e20
    N, D = fit.optimal_split([C])
    assert 6.0 * N[0] * D[0] == pytest.approx(C, rel=1e-9)
    p = fit.params
    Ns = np.logspace(5, 12, 20001)
    err = p["E"] + p["A"] * Ns ** -p["alpha"] + p["B"] * (C / 6 / Ns) ** -p["beta"]
    assert Ns[np.argmin(err)] == pytest.approx(N[0], rel=2e-3)
    assert fit.predict([C])[0] == pytest.approx(100 - err.min(), abs=1e-6)
    # a (N, D) prediction equals the formula
    np.testing.assert_allclose(fit.predict(np.array([[N[0], D[0]]])), [100 - err.min()], atol=1e-6)


@pytest.mark.parametrize("law", ["power", "saturating", "chinchilla"])
def test_solve_for_inverts_predict(runs, law):
    df = runs(law, n=49, noise=0.01, seed=6)
    fit = fit_law(df, law)
    assert fit.converged, fit.message
    for x in (3e17, 1e19, 1e23):
        assert fit.solve_for(fit.predict([x])[0]) == pytest.approx(x, rel=1e-8)


def test_unreachable_target_is_reported_not_extrapolated(runs):
    df = runs("saturating", n=60, noise=0.02, seed=7)  # asymptote 70%
    fit = fit_law(df, "saturating", bootstrap=200)
    assert fit.params["y_max"] < 75
    assert fit.solve_for(75) == math.inf and not fit.reachable(75)
    s = fit.solve_interval(75)
    assert s["x"] == math.inf and s["high"] == math.inf
    assert 0 <= s["share_reachable"] < 0.5
    # below the asymptote: finite, within the interval
    s = fit.solve_interval(65)
    assert math.isfinite(s["x"]) and s["low"] <= s["x"] <= s["high"] and s["share_reachable"] == 1.0
    # a decreasing power law never reaches a higher target
    dec = fit_law(runs("power", alpha=-0.1, seed=8), "power")
    assert dec.solve_for(80) == math.inf


def test_not_converged_is_reported(runs, cli, tmp_path):
    df = runs("saturating", n=40, seed=9)
    df["aa_robust_acc"] = 80 - 5 * np.log10(df.train_flops / 1e17)  # accuracy falls with compute
    fit = fit_law(df, "saturating", bootstrap=50)
    assert not fit.converged and "exponent alpha" in fit.message
    assert fit.n_bootstrap == 0 and fit.to_dict()["params"] == {}
    with pytest.raises(FitNotConverged):
        fit.predict([1e18])
    path = tmp_path / "runs.csv"
    df.to_csv(path, index=False)
    code, out, err = cli("fit", path, "--law", "saturating", "--bootstrap", "20")
    assert code == 0 and "did not converge" in out and "not shown" in err


def test_batch_solver_matches_lbfgs_on_resamples(runs):
    """The vectorised IRLS solver used by the bootstrap reaches scipy L-BFGS-B's optimum (or better)."""
    law = get_law("saturating")
    df = runs("saturating", n=40, noise=0.05, seed=10)
    fit = fit_law(df, "saturating")
    prep = fit._prep
    W = resample_counts(40, 8, seed=3)
    theta, loss, conv = irls_batch(lambda th: law.log_pred_jac(th, prep.Z), np.repeat(fit._theta[None], 8, 0),
                                   prep.target, W, law.lower(prep), law.upper(prep), max_iter=5000)

    for b in range(8):
        def f(th):
            lp, J = law.log_pred_jac(th[None], prep.Z)
            r = lp[0] - prep.target
            return float(W[b] @ huber(r)), J[0].T @ (W[b] * np.clip(r / HUBER_DELTA, -1, 1))

        res = optimize.minimize(f, fit._theta, jac=True, method="L-BFGS-B",
                                bounds=list(zip(law.lower(prep), law.upper(prep))),
                                options={"maxiter": 5000, "ftol": 1e-14, "gtol": 1e-10})
        assert loss[b] <= res.fun + 1e-6 * max(1.0, res.fun)
        np.testing.assert_allclose(theta[b], res.x, rtol=2e-2, atol=2e-3)


def test_bootstrap_is_seeded_and_independent_of_workers(runs):
    df = runs("saturating", n=30, noise=0.03, seed=11)
    a = fit_law(df, "saturating", bootstrap=200, seed=5, n_jobs=1)
    b = fit_law(df, "saturating", bootstrap=200, seed=5, n_jobs=2)
    c = fit_law(df, "saturating", bootstrap=200, seed=6, n_jobs=1)
    np.testing.assert_allclose(a.bootstrap_params()["alpha"], b.bootstrap_params()["alpha"], rtol=1e-12)
    assert a.ci == b.ci and a.ci != c.ci


def test_compare_exponents_interval_contains_true_difference(runs):
    slow = runs("power", n=60, noise=0.05, seed=12, alpha=0.05)
    fast = runs("power", n=60, noise=0.05, seed=13, alpha=0.25)
    slow["method"], fast["method"] = "pgd", "standard"
    fits = fit_groups(pd_concat(slow, fast), "method", law="power", bootstrap=400)
    assert [f.group["method"] for f in fits] == ["pgd", "standard"]
    cmp = compare_exponents(fits[0], fits[1])
    assert cmp.diff == pytest.approx(fits[0].params["alpha"] - fits[1].params["alpha"])
    assert cmp.low <= -0.2 <= cmp.high and cmp.high < 0 and cmp.p_value < 0.01
    with pytest.raises(UserError, match="bootstrap"):
        compare_exponents(fit_law(slow, "power"), fits[1])


def pd_concat(*frames):
    import pandas as pd

    return pd.concat(frames, ignore_index=True)


def test_pareto_frontier_brute_force():
    import pandas as pd

    rng = np.random.default_rng(0)
    x = rng.choice(np.logspace(17, 19, 12), 60)
    y = rng.uniform(20, 60, 60)
    df = pd.DataFrame({"train_flops": x, "aa_robust_acc": y})
    front = pareto_frontier(df)
    expected = [i for i in range(60)
                if not any((x[j] <= x[i]) and (y[j] >= y[i]) and (x[j] < x[i] or y[j] > y[i] or j < i)
                           for j in range(60) if j != i)]
    assert sorted(front.index) == expected
    assert np.all(np.diff(front.aa_robust_acc.to_numpy()) > 0)  # strictly improving with compute
    assert frontier_mask(x, y).sum() == len(expected)


def test_frontier_fit_uses_only_frontier_runs(runs):
    df = runs("saturating", n=80, noise=0.0, seed=14)
    worse = df.copy()
    worse["aa_robust_acc"] -= np.random.default_rng(1).uniform(2, 10, len(df))  # dominated runs
    worse["name"] = worse["name"] + "-worse"
    both = pd_concat(df, worse)
    fit = fit_law(both, "saturating", frontier=True, bootstrap=50)
    assert fit.frontier and fit.n == pareto_frontier(both).shape[0]
    assert set(both.loc[fit.fitted_index, "name"]) <= set(df.name)
    assert fit.params["alpha"] == pytest.approx(0.3, rel=0.02)


def test_library_user_errors(runs):
    df = runs("power", n=10)
    with pytest.raises(UserError, match="lacks column.*columns: name, train_flops"):
        fit_law(df, "power", y="clean_acc")
    bad = df.copy()
    bad.loc[3, "train_flops"] = 0
    with pytest.raises(UserError, match="non-positive train_flops"):
        fit_law(bad, "power")
    with pytest.raises(UserError, match="needs at least 4 runs"):
        fit_law(df.head(3), "saturating")
    nan = df.copy()
    nan["aa_robust_acc"] = np.nan
    with pytest.raises(UserError, match="all 10 values of aa_robust_acc are missing"):
        fit_law(nan, "power")
    with pytest.raises(UserError, match="unknown law 'cubic'; valid: power, error-power, saturating, chinchilla"):
        fit_law(df, "cubic")
    one = df.copy()
    one["method"] = ["pgd"] * 9 + ["trades"]
    with pytest.raises(UserError, match="1 run\\(s\\) in group method=trades"):
        fit_groups(one, "at", law="power")
    zero = df.copy()
    zero.loc[0, "aa_robust_acc"] = 0.0
    with pytest.raises(UserError, match="--exclude-below"):
        fit_law(zero, "power")
    assert fit_law(zero, "power", exclude_below=10).n_excluded == 1
