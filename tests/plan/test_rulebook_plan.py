"""The planner obeys the rulebook: with two values of samples seen (the issue's case) the optimum is "not
identified" (never a zero-width headline), and the conditional plan is printed only when asked, labelled."""
from __future__ import annotations

import json

import pytest

from robustscale.scaling.identified import NOT_IDENTIFIED, identify_optimum
from robustscale.scaling.joint import fit_joint

from .conftest import grid_runs
from .test_plan import EPOCH_IMAGES, MODELS, SMALL, ZOO


@pytest.fixture(scope="module")
def two_levels_csv(tmp_path_factory):
    df = grid_runs(list(MODELS.values()), [EPOCH_IMAGES * e for e in (5, 40)], [2, 3, 5, 10], seed=5,
                   truth=SMALL, noise=0.005, method="pgd", dataset="cifar10")
    df["model"] = df.model_parameters.map({v: k for k, v in MODELS.items()})
    df["epochs"] = (df.train_images_seen // EPOCH_IMAGES).astype(int)
    path = tmp_path_factory.mktemp("two-levels") / "runs.csv"
    df.to_csv(path, index=False)
    return path, df


def test_two_levels_of_d_leave_the_optimum_not_identified(two_levels_csv):
    _, df = two_levels_csv
    ident = identify_optimum(fit_joint(df, bootstrap=40))
    assert ident.status == NOT_IDENTIFIED and "no optimum along D" in ident.reason and "2 distinct" in ident.reason


def test_plan_says_not_identified_and_labels_the_conditional_plan(two_levels_csv, flops_cache, cli):
    path, _ = two_levels_csv
    code, out, err = cli("plan", "--runs", path, "--budget-flops", "1e16", "--bootstrap", "40", *ZOO)
    assert code == 0, err
    assert "optimum: not identified: " in out and "no optimum along D" in out
    assert "N* =" not in out and "conditional plan" not in out
    code, out, err = cli("plan", "--runs", path, "--budget-flops", "1e16", "--bootstrap", "40", "--conditional", *ZOO)
    assert code == 0, err
    assert "N* =" not in out and "conditional plan, D held at the observed levels: not the optimum" in out
    code, out, err = cli("plan", "--runs", path, "--budget-flops", "1e16", "--bootstrap", "40", "--json", *ZOO)
    (b,) = json.loads(out)["budgets"]
    assert not b["identified"] and b["status"] == NOT_IDENTIFIED and "no optimum along D" in b["reason"]
    assert b["model_parameters"] is None and b["model_parameters_ci"] is None and b["predicted_acc"] is None


def test_conditional_plan_without_bootstrap_prints_without_an_interval(two_levels_csv, flops_cache, cli):
    # A study with `bootstrap: 0` once crashed in its report (KeyError 'predicted_acc_ci'): the conditional
    # plan lacked the interval keys. Every printer gets them, as None.
    from robustscale.study.next import next_table

    path, _ = two_levels_csv
    args = ("plan", "--runs", path, "--budget-flops", "1e16", "--bootstrap", "0", "--conditional")
    code, out, err = cli(*args, *ZOO)
    assert code == 0, err
    assert "conditional plan, D held at the observed levels: not the optimum" in out
    code, out, err = cli(*args, "--json", *ZOO)
    assert code == 0, err
    (b,) = json.loads(out)["budgets"]
    cond = b["by_group"][0]["conditional"]
    assert cond["predicted_acc"] is not None and cond["predicted_acc_ci"] is None
    b.update(conditional=cond, factor_vs_largest_run=2.0)
    _, rows = next_table([{"label": "adv", "status": b["status"], "reason": b["reason"], "budgets": [b],
                           "epoch_images": EPOCH_IMAGES}])
    (row,) = rows
    assert "conditional plan" in row[3] and row[7] == f"{cond['predicted_acc']:.3g}"


def test_approach_3_exponents_only_where_the_rulebook_accepts_the_law(tmp_path, flops_cache, cli):
    # No error floor (E = 0): alpha and beta are fitted, but E sits on its bound, so the rulebook rejects the
    # law's optimum; the allocation exponents that come from it are then withheld in the plan's data itself,
    # so that `plan` and the scaling study's page (two printers) cannot disagree.
    df = grid_runs(list(MODELS.values()), [EPOCH_IMAGES * e for e in (5, 10, 20, 40)], [2, 3, 5, 10], seed=5,
                   truth={**SMALL, "E": 0.0}, noise=0.005, method="pgd", dataset="cifar10")
    df["model"] = df.model_parameters.map({v: k for k, v in MODELS.items()})
    df["epochs"] = (df.train_images_seen // EPOCH_IMAGES).astype(int)
    path = tmp_path / "runs.csv"
    df.to_csv(path, index=False)
    fit = fit_joint(df, bootstrap=40)
    assert fit.allocation()["a"] is not None and not identify_optimum(fit).ok
    code, out, err = cli("plan", "--runs", path, "--budget-flops", "1e16", "--bootstrap", "40", "--json", *ZOO)
    assert code == 0, err
    plan = json.loads(out)
    (row,) = plan["allocation"]
    assert row["approach3"]["a"] is None and row["approach3"]["b"] is None
    assert row["approach3"]["reason"].startswith(NOT_IDENTIFIED)
    assert plan["optimum_status"][row["label"]]["status"] == NOT_IDENTIFIED
