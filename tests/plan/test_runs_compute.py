"""`robustscale plan` prices compute as the runs recorded it when they carry ``train_flops``.

The runs follow the planted law of test_plan.py, but their recorded FLOPs follow another constant
(``train_flops = 46 N D``, about 1/150 of what the zoo's wide ResNets cost at these k): the plan's data range,
its constant and the optimum's budget identity must all be in the runs' own compute, with one warning line.
"""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from .conftest import grid_runs
from .test_plan import EPOCH_IMAGES, MODELS, SMALL, ZOO

OWN = 46.0  # FLOPs per parameter per image seen, whatever k


@pytest.fixture(scope="module")
def own_runs(tmp_path_factory):
    df = grid_runs(list(MODELS.values()), [EPOCH_IMAGES * e for e in (5, 10, 20, 40)], [2, 3, 5, 10], seed=5,
                   truth=SMALL, method="pgd", dataset="cifar10")
    df["model"] = df.model_parameters.map({v: k for k, v in MODELS.items()})
    df["epochs"] = (df.train_images_seen // EPOCH_IMAGES).astype(int)
    df["train_flops"] = OWN * df.model_parameters * df.train_images_seen
    path = tmp_path_factory.mktemp("own") / "runs.csv"
    df.to_csv(path, index=False)
    return path, df


def test_runs_with_their_own_constant_are_planned_in_their_own_compute(own_runs, flops_cache, cli):
    path, df = own_runs
    code, out, err = cli("plan", "--runs", path, "--budget-flops", "1e14", "--bootstrap", "50", "--json", *ZOO)
    assert code == 0
    plan = json.loads(out)
    nd = (df.model_parameters * df.train_images_seen).to_numpy(float)
    assert plan["data_compute_range_flops"] == pytest.approx([OWN * nd.min(), OWN * nd.max()], rel=1e-12)
    cm = plan["compute_model"]
    fe = cm["forward_equivalents"]["pgd"]
    per_run = OWN / (fe["intercept"] + fe["per_step"] * df.attack_steps.to_numpy(float))  # c_i of each run
    assert cm["flops_per_parameter_source"] == "runs' train_flops"
    assert cm["flops_per_parameter"] == pytest.approx(float(np.exp(np.log(per_run).mean())), rel=1e-9)
    assert cm["runs_calibration"]["range"] == pytest.approx([per_run.min(), per_run.max()], rel=1e-9)
    (b,) = plan["budgets"]
    assert b["identified"]
    used = (fe["intercept"] + fe["per_step"] * b["attack_steps"]) * cm["flops_per_parameter"] * \
        b["model_parameters"] * b["samples_seen"]
    assert used == pytest.approx(1e14, rel=1e-12)
    ratio = cm["flops_per_parameter"] / cm["runs_calibration"]["zoo_flops_per_parameter"]
    assert ratio < 0.8  # the zoo's wide ResNets cost far more per parameter: one warning line
    (line,) = [x for x in err.splitlines() if x.startswith("warning:")]
    assert "train_flops" in line and plan["warnings"] == [line]


def test_runs_that_agree_with_the_zoo_give_no_warning(own_runs, flops_cache, cli, tmp_path):
    _, df = own_runs
    code, out, _ = cli("plan", "--runs", own_runs[0], "--budget-flops", "1e14", "--bootstrap", "0", "--json", *ZOO)
    cm = json.loads(out)["compute_model"]
    fe = cm["forward_equivalents"]["pgd"]
    zoo = cm["runs_calibration"]["zoo_flops_per_parameter"]
    agreeing = df.assign(train_flops=1.1 * zoo * (fe["intercept"] + fe["per_step"] * df.attack_steps) *
                         df.model_parameters * df.train_images_seen)  # 10 % off: within the 20 % tolerance
    path = tmp_path / "agree.csv"
    agreeing.to_csv(path, index=False)
    code, out, err = cli("plan", "--runs", path, "--budget-flops", "1e16", "--bootstrap", "0", "--json", *ZOO)
    assert code == 0
    plan = json.loads(out)
    assert plan["warnings"] == [] and "warning:" not in err
    assert plan["compute_model"]["flops_per_parameter"] == pytest.approx(1.1 * zoo, rel=1e-9)


def test_runs_without_train_flops_keep_the_zoo_constant(own_runs, flops_cache, cli, tmp_path):
    path = tmp_path / "none.csv"
    pd.read_csv(own_runs[0]).drop(columns=["train_flops"]).to_csv(path, index=False)
    code, out, _ = cli("plan", "--runs", path, "--budget-flops", "1e16", "--bootstrap", "0", "--json", *ZOO)
    cm = json.loads(out)["compute_model"]
    assert code == 0 and cm["flops_per_parameter_source"] == "zoo" and cm["runs_calibration"] is None
