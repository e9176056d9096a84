"""The study's "what to run next": the planner on a family's own runs, numbers only where it identifies an
optimum, and the report / terminal tables."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from robustscale.study.next import NEXT_FACTORS, format_next_table, next_runs, next_table
from robustscale.study.run import StudyFit, StudyOptions

E, B, BETA = 20.0, 15 * 1e6 ** 0.3, 0.3  # planted: 100 - acc = E + B D^-beta (one model, k = 2)
EPOCH_IMAGES = 50_000
MODEL, N_PARAMS = "wide_resnet16_1", 175_066


def _family(epochs, seed=0):
    rng = np.random.default_rng(seed)
    D = EPOCH_IMAGES * np.asarray(epochs, float)
    err = (E + B * D ** -BETA) * np.exp(0.005 * rng.standard_normal(len(D)))
    return pd.DataFrame({"name": [f"pgd-e{e}" for e in epochs], "family": "adv", "model": MODEL, "method": "pgd",
                         "dataset": "cifar10", "model_parameters": N_PARAMS, "train_images_seen": D,
                         "attack_steps": 2, "epochs": list(epochs), "train_flops": D * 3.3e8,  # ~ the planner's own count
                         "apgd_ce_robust_acc": 100 - err, "apgd_ce_robust_acc_n_examples": 1000})


@pytest.fixture()
def opts(tmp_path, monkeypatch):
    monkeypatch.setenv("ROBUSTSCALE_FLOPS_CACHE", str(tmp_path / "flops.json"))
    fam = StudyFit("adversarial", {"method": ["pgd"]}, "apgd_ce_robust_acc", "adv")
    clean = StudyFit("standard", {"method": ["standard"]}, "clean_acc", "std")  # not a robust family: no plan
    return StudyOptions(fits=[fam, clean], bootstrap=200, seed=0, device_type="cpu")


def test_budgets_are_met_exactly_and_the_truth_is_inside_the_interval(opts):
    # One model and one attack step count: the runs identify no optimum along N (the rulebook says so), and the
    # planner's answer with N held is shown as the conditional plan it is.
    df = _family([2, 3, 5, 8, 13, 20])
    (rec,) = next_runs(df, opts)
    assert rec["status"] == "not identified" and "no optimum along N" in rec["reason"]
    largest = df["train_flops"].max()
    assert [b["factor_vs_largest_run"] for b in rec["budgets"]] == list(NEXT_FACTORS)
    for factor, b in zip(NEXT_FACTORS, rec["budgets"]):
        assert not b["identified"] and b["model_parameters"] is None
        c = b["conditional"]
        assert c["label"].startswith("conditional plan, N held") and "not the optimum" in c["label"]
        assert b["budget_flops"] == pytest.approx(factor * largest, rel=1e-12)
        assert c["train_flops"] == pytest.approx(b["budget_flops"], rel=1e-12)  # the plan spends the budget
        assert c["model_parameters"] == N_PARAMS and c["attack_steps"] == 2  # held: the runs do not vary them
        truth = 100 - (E + B * c["samples_seen"] ** -BETA)
        lo, hi = c["predicted_acc_ci"]
        assert lo <= truth <= hi and lo <= c["predicted_acc"] <= hi
    assert np.all(np.diff([b["conditional"]["samples_seen"] for b in rec["budgets"]]) > 0)
    headers, rows = next_table([rec])
    assert len(rows) == 3 and headers[7].startswith("predicted") and all("conditional plan" in r[3] for r in rows)
    text = format_next_table([rec])
    assert "what to run next" in text and MODEL not in text and "conditional plan" in text


def test_a_family_the_planner_cannot_fit_gets_its_reason_and_no_numbers(opts):
    df = _family([2, 5, 20])
    (rec,) = next_runs(df, opts)
    assert rec["status"] == "not identified" and rec["reason"] and rec["budgets"] == []
    headers, rows = next_table([rec])
    assert rows == [["adv", "-", "-", f"not identified: {rec['reason']}", "", "", "", "", ""]]
    assert f"adv: not identified: {rec['reason']}" in format_next_table([rec])
