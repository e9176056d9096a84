"""The joint law against planted truths and independent computations (no torch needed)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import optimize

from robustscale.errors import UserError
from robustscale.scaling.frontier import frontier_mask
from robustscale.scaling.allocation import frontier_allocation
from robustscale.scaling.joint import ComputeCoefficients, Role, fit_joint, golden_min, interval

from .conftest import TRUTH, grid_runs, true_error

CC = ComputeCoefficients(flops_per_parameter=300.0, intercept=3.0, per_step=2.0)  # PGD-like, measured
N_GRID, D_GRID, K_GRID = np.logspace(6, 9, 5), np.logspace(7, 10, 5), [2, 3, 5, 10]


def true_optimum(C: float, k_lo=2.0, k_hi=10.0):
    """Truth's best (N, D, k) at compute C by direct numerical minimisation (no closed form)."""
    def f(v):
        N, k = np.exp(v)
        return np.log(true_error(N, C / CC.flops(N, 1.0, k), k))

    starts = [(a, b) for a in np.log([1e5, 1e7, 1e9]) for b in np.log([2.5, 5, 9])]
    best = min((optimize.minimize(f, s, method="L-BFGS-B", bounds=[(np.log(1e3), np.log(1e13)),
                                                                    (np.log(k_lo), np.log(k_hi))]) for s in starts),
               key=lambda r: r.fun)
    N, k = np.exp(best.x)
    return N, C / CC.flops(N, 1.0, k), k, 100 - np.exp(best.fun)


@pytest.fixture(scope="module")
def planted():
    # 100 runs, 1% log-normal noise on the error; 300 resamples keep the test to a few seconds
    return fit_joint(grid_runs(N_GRID, D_GRID, K_GRID, noise=0.01, seed=0), bootstrap=300, seed=0)


def test_recovers_planted_law_with_intervals(planted):
    fit = planted
    assert fit.converged and all(r is Role.POWER for r in fit.roles.values())
    assert fit.not_identified == {}
    for name in ("A", "alpha", "B", "beta", "G", "gamma", "E"):
        lo, hi = fit.ci[name]
        assert lo <= TRUTH[name] <= hi, (name, lo, hi)
    a_true = TRUTH["beta"] / (TRUTH["alpha"] + TRUTH["beta"])
    assert fit.ci["a"][0] <= a_true <= fit.ci["a"][1]
    assert fit.params["a"] + fit.params["b"] == pytest.approx(1.0, abs=1e-12)
    assert fit.params["alpha"] == pytest.approx(TRUTH["alpha"], abs=0.02)


@pytest.mark.parametrize("budget", [1e18, 1e20])
def test_optimum_matches_truth_within_a_few_percent(planted, budget):
    N_t, D_t, k_t, acc_t = true_optimum(budget)
    point = planted.optimum([budget], CC)
    boot = planted.optimum([budget], CC, bootstrap=True)
    N, D = point["N"][0, 0], point["D"][0, 0]
    # 1% noise on 100 runs moves the exponents by ~0.01, which moves N*, D* by a few percent
    assert N == pytest.approx(N_t, rel=0.05)
    assert D == pytest.approx(D_t, rel=0.05)
    assert point["acc"][0, 0] == pytest.approx(acc_t, abs=0.5)
    for arr, truth in (("N", N_t), ("D", D_t)):
        lo, hi = interval(boot[arr], planted.level)
        assert lo[0] <= truth <= hi[0], (arr, lo, hi, truth)


def test_optimum_meets_its_budget_exactly(planted):
    budgets = np.array([3e17, 1e19, 7e21])
    for boot in (False, True):
        o = planted.optimum(budgets, CC, bootstrap=boot)
        used = CC.flops(o["N"], o["D"], o["k"])
        ok = np.isfinite(used)
        assert ok.mean() > 0.99
        np.testing.assert_allclose(used[ok], np.broadcast_to(budgets, used.shape)[ok], rtol=1e-12)
    k = planted.optimum(budgets, CC)["k"]
    assert np.all((k >= 2) & (k <= 10))  # searched within the runs' attack steps only


def test_golden_min_matches_brute_force():
    rng = np.random.default_rng(0)
    centre = rng.uniform(np.log(2), np.log(10), size=(3, 4))
    f = lambda k: (np.log(k) - centre) ** 2 + 0.1 * np.log(k)  # noqa: E731
    k = golden_min(f, 2.0, 10.0, centre.shape)
    grid = np.exp(np.linspace(np.log(2), np.log(10), 200001))
    brute = grid[np.argmin(f(grid[:, None, None]), axis=0)]
    np.testing.assert_allclose(k, brute, rtol=1e-4)


def test_two_epoch_counts_enter_as_levels_and_block_the_allocation():
    df = grid_runs(N_GRID, [5.5e6, 2e7], K_GRID, noise=0.01, seed=1)
    fit = fit_joint(df, bootstrap=50)
    assert fit.roles["train_images_seen"] is Role.LEVELS
    assert "only 2 distinct train_images_seen" in fit.not_identified["beta"]
    assert "beta" not in fit.params and "a" not in fit.params
    assert fit.allocation()["a"] is None and "needs at least 3" in fit.allocation()["reason"]
    # N is then the only way to spend compute at each observed D: N* = C / (r(k) c D) exactly
    o = fit.optimum([1e19], CC)
    assert o["D"][0, 0] in (5.5e6, 2e7)
    assert CC.flops(o["N"], o["D"], o["k"])[0, 0] == pytest.approx(1e19, rel=1e-12)
    # predictions exist on the observed levels only
    acc = fit.acc({"model_parameters": [1e7, 1e7], "train_images_seen": [2e7, 1e8], "attack_steps": [5, 5]})[0]
    assert np.isfinite(acc[0]) and np.isnan(acc[1])
    assert acc[0] == pytest.approx(100 - true_error(1e7, 2e7, 5), abs=0.5)


def test_input_without_effect_is_not_identified():
    df = grid_runs(N_GRID, D_GRID, K_GRID, noise=0.01, seed=2)
    err = 100 - df.aa_robust_acc - TRUTH["A"] * df.model_parameters ** -TRUTH["alpha"]
    rng = np.random.default_rng(3)
    df["aa_robust_acc"] = 100 - (err + 5.0) * np.exp(0.01 * rng.standard_normal(len(df)))  # N does nothing
    fit = fit_joint(df, bootstrap=100)
    assert fit.roles["model_parameters"] is Role.LEVELS
    assert "alpha" in fit.not_identified and "alpha" not in fit.params
    assert fit.allocation()["a"] is None


def test_collapsed_runs_excluded_and_counted():
    df = grid_runs(N_GRID, D_GRID, K_GRID, noise=0.01, seed=0)
    df.loc[:6, "aa_robust_acc"] = 3.0
    fit = fit_joint(df, bootstrap=0)
    assert fit.n_excluded == 7 and fit.n == len(df) - 7
    assert fit_joint(df, bootstrap=0, exclude_below=None).n == len(df)


def test_bad_input_is_one_user_error():
    df = grid_runs(N_GRID, D_GRID, K_GRID)
    with pytest.raises(UserError, match="lacks column"):
        fit_joint(df.drop(columns="attack_steps"))
    bad = df.copy()
    bad.loc[0, "attack_steps"] = 0
    with pytest.raises(UserError, match="attack_steps must be > 0"):
        fit_joint(bad)
    with pytest.raises(UserError, match="unknown input"):
        fit_joint(df, levels=["epochs"])
    few = df.iloc[[0, 1, 2]].copy()  # 3 distinct values per input: 7 parameters, 6 runs
    few = few.assign(model_parameters=[1e6, 1e7, 1e8], train_images_seen=[1e7, 1e8, 1e9], attack_steps=[2, 5, 10])
    with pytest.raises(UserError, match="needs at least 8 runs"):
        fit_joint(pd.concat([few, few.assign(attack_steps=[5, 10, 2])]))


def test_frontier_allocation_equals_brute_force_regression():
    rng = np.random.default_rng(4)
    C = np.logspace(17, 21, 40)
    N = 1e7 * (C / 1e17) ** 0.6 * np.exp(0.05 * rng.standard_normal(40))
    D = C / (300 * 5 * N)
    y = 30 + 5 * np.log10(C) + rng.normal(0, 1.0, 40)
    out = frontier_allocation(C, N, D, y, bootstrap=200, seed=0)
    on = frontier_mask(C, y)
    assert out["n_frontier"] == int(on.sum())
    assert out["a"] == pytest.approx(np.polyfit(np.log(C[on]), np.log(N[on]), 1)[0], rel=1e-10)
    assert out["b"] == pytest.approx(np.polyfit(np.log(C[on]), np.log(D[on]), 1)[0], rel=1e-10)
    assert out["a"] + out["b"] == pytest.approx(1.0, abs=1e-9)  # C = const N D
    assert out["a_ci"][0] <= out["a"] <= out["a_ci"][1]
    two = frontier_allocation(C, np.where(C < 1e19, 1e7, 1e8), D, y)
    assert two["a"] is None and "2 distinct model_parameters" in two["a_reason"]


def test_jacobian_matches_finite_differences():
    from robustscale.scaling.joint import JointLaw

    rng = np.random.default_rng(6)
    m = 12
    level_of = rng.integers(0, 3, m)
    law = JointLaw(["model_parameters", "attack_steps"], level_of, ["a", "b", "c"])
    Z = rng.normal(size=(m, 2))
    theta = rng.normal(size=(2, law.n_params))
    _, J = law.log_pred_jac(theta, Z)
    h = 1e-6  # central differences in float64: error ~h^2, far below the 1e-7 tolerance
    for j in range(law.n_params):
        e = np.zeros(law.n_params)
        e[j] = h
        num = (law.log_pred_jac(theta + e, Z)[0] - law.log_pred_jac(theta - e, Z)[0]) / (2 * h)
        np.testing.assert_allclose(J[..., j], num, atol=1e-7)
