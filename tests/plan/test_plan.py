"""`robustscale plan` end to end on runs of tiny zoo models, the paper runs, and every user mistake."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from .conftest import grid_runs

# a planted law at the scale of wide_resnet16_{1,2,4} trained 5-40 epochs on 50,000 images
SMALL = {"E": 20.0, "A": 10 * 1e6 ** 0.35, "alpha": 0.35, "B": 15 * 1e6 ** 0.3, "beta": 0.3, "G": 8.0, "gamma": 0.8}
MODELS = {"wide_resnet16_1": 175_066, "wide_resnet16_2": 691_674, "wide_resnet16_4": 2_748_890}
EPOCH_IMAGES = 50_000
ZOO = ["--models", ",".join(MODELS)]  # recipes from these three only: measuring big models takes seconds each


@pytest.fixture(scope="module")
def runs_csv(tmp_path_factory):
    # errors measured to ~0.2 points (noise 0.5% of the error): with 1% the floor E's bootstrap interval reaches
    # its bound and the rulebook withholds the optimum (tests/scaling/test_rulebook.py checks that case)
    df = grid_runs(list(MODELS.values()), [EPOCH_IMAGES * e for e in (5, 10, 20, 40)], [2, 3, 5, 10], seed=5,
                   truth=SMALL, noise=0.005, method="pgd", dataset="cifar10")
    by_n = {v: k for k, v in MODELS.items()}
    df["model"] = df.model_parameters.map(by_n)
    df["epochs"] = (df.train_images_seen // EPOCH_IMAGES).astype(int)
    df["device_hours"] = df.model_parameters * df.train_images_seen * df.attack_steps * 1e-13
    path = tmp_path_factory.mktemp("runs") / "runs.csv"
    df.to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def plan(runs_csv, flops_cache):
    from robustscale.cli import main
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = main(["plan", "--runs", str(runs_csv), "--budget-flops", "1e15,1e16", "--budget-flops", "1e17",
                     "--budget-gpu-hours", "2", "--budget-usd", "1", "--bootstrap", "200", "--top", "60", "--json", *ZOO])
    assert code == 0
    return json.loads(buf.getvalue())


def test_json_schema_and_identified_law(plan):
    assert set(plan) >= {"law", "approach1", "budgets", "compute_model", "allocation"}
    (group,) = plan["law"]["groups"]
    assert group["converged"] and set(group["roles"].values()) == {"power"}
    for name in ("alpha", "beta", "gamma"):
        lo, hi = group["ci"][name]
        assert lo <= SMALL[name] <= hi, name
    keys = {"budget_flops", "model_parameters", "samples_seen", "attack_steps", "predicted_acc", "predicted_acc_ci",
            "model_parameters_ci", "samples_seen_ci", "extrapolation_factor", "recipes"}
    for b in plan["budgets"]:
        assert keys <= set(b) and b["identified"]
        assert b["predicted_acc_ci"][0] <= b["predicted_acc"] <= b["predicted_acc_ci"][1]
        accs = [r["predicted_acc"] for r in b["recipes"]]
        assert accs == sorted(accs, reverse=True) and accs
    assert plan["allocation"][0]["approach3"]["a"] is not None


def test_optimum_satisfies_budget_exactly(plan):
    cm = plan["compute_model"]
    r = cm["forward_equivalents"]["pgd"]
    for b in plan["budgets"]:
        used = (r["intercept"] + r["per_step"] * b["attack_steps"]) * cm["flops_per_parameter"] * \
            b["model_parameters"] * b["samples_seen"]
        assert used == pytest.approx(b["budget_flops"], rel=1e-12)
        assert b["train_flops"] == pytest.approx(b["budget_flops"], rel=1e-12)


def test_extrapolation_labels(plan):
    lo, hi = plan["data_compute_range_flops"]
    for b in plan["budgets"]:
        c = b["budget_flops"]
        if lo <= c <= hi:
            assert b["extrapolation_factor"] is None
        else:
            assert b["extrapolation_factor"] == pytest.approx(c / hi if c > hi else lo / c, rel=1e-12)
            assert "extrapolation" in b["extrapolation"]
    assert any(b["extrapolation_factor"] for b in plan["budgets"])  # 1e17 is above these runs


def test_recipe_flops_equal_flops_command_times_samples_seen(plan, cli):
    recipes = [r for b in plan["budgets"] for r in b["recipes"]]
    picked = {}
    for r in recipes:  # one recipe per model at a step count that was not measured directly (k = 1, 2)
        if r["attack_steps"] > 2:
            picked.setdefault(r["model"], r)
    assert picked
    for r in list(picked.values())[:2]:
        code, out, _ = cli("flops", "--model", r["model"], "--method", "pgd", "--attack-steps",
                           str(r["attack_steps"]), "--json")
        assert code == 0
        per_image = json.loads(out)["train_step_flops"]
        assert r["train_flops_per_image"] == pytest.approx(per_image, rel=1e-12)
        assert r["train_flops"] == pytest.approx(per_image * r["samples_seen"], rel=1e-12)
        assert r["samples_seen"] == r["epochs"] * EPOCH_IMAGES


def test_recipes_spend_at_most_the_budget_and_carry_costs(plan):
    hpf = plan["compute_model"]["hours_per_flop"]
    for b in plan["budgets"]:
        for r in b["recipes"]:
            assert r["train_flops"] <= b["budget_flops"] * (1 + 1e-12)
            # the most epochs the budget pays for: one more would not fit
            assert r["train_flops"] + r["train_flops_per_image"] * EPOCH_IMAGES > b["budget_flops"]
            assert r["device_hours"] == pytest.approx(r["train_flops"] * hpf, rel=1e-12)
            assert r["cloud_usd_low"] <= r["cloud_usd_high"]
    gpu = next(b for b in plan["budgets"] if b["budget_given"]["kind"] == "gpu_hours")
    assert gpu["budget_flops"] == pytest.approx(2 / hpf, rel=1e-12)
    usd = next(b for b in plan["budgets"] if b["budget_given"]["kind"] == "usd")
    assert plan["compute_model"]["device_type"] == "gpu"  # no device_name in the runs: the generic GPU, $0.43/h low
    assert usd["budget_flops"] == pytest.approx(1 / 0.43 / hpf, rel=1e-12)


def test_text_output(runs_csv, flops_cache, cli):
    code, out, err = cli("plan", "--runs", runs_csv, "--budget-flops", "1e16", "--bootstrap", "20", *ZOO)
    assert code == 0, err
    assert "optimum (all runs)" in out and "top recipes" in out and "Bartoldson" in out


@pytest.mark.parametrize("args,message", [
    (["--budget-flops", "-1"], "invalid --budget-flops '-1': must be a finite number > 0"),
    (["--budget-flops", "lots"], "invalid --budget-flops 'lots'"),
    ([], "give a budget"),
    (["--budget-flops", "1e30"], "beyond the refusal limit of 10x"),
    (["--budget-flops", "1e16", "--path", "x.csv"], "--path goes with --paper-runs"),
    (["--budget-flops", "1e16", "--models", "wide_resnet_nope"], "unknown model 'wide_resnet_nope'"),
    (["--budget-flops", "1e16", "--top", "0"], "invalid --top 0"),
    (["--budget-flops", "1e16", "--level", "2"], "invalid --level 2"),
])
def test_cli_errors_are_one_line_and_write_nothing(runs_csv, flops_cache, cli, tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    code, out, err = cli("plan", "--runs", runs_csv, "--bootstrap", "0", *ZOO, *args)
    assert code == 2 and out == ""
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err, err
    assert list(tmp_path.iterdir()) == []


def test_cli_errors_on_the_runs_table(runs_csv, flops_cache, cli, tmp_path, monkeypatch):
    import pandas as pd

    monkeypatch.chdir(tmp_path)
    df = pd.read_csv(runs_csv)
    df.drop(columns="attack_steps").to_csv(tmp_path / "no_steps.csv", index=False)
    df.drop(columns="device_hours").to_csv(tmp_path / "no_hours.csv", index=False)
    df.drop(columns="epochs").to_csv(tmp_path / "no_epochs.csv", index=False)
    df.assign(method=np.where(df.index % 2, "pgd", "trades")).to_csv(tmp_path / "mixed.csv", index=False)
    before = sorted(tmp_path.iterdir())
    for table, extra, message in (("no_steps.csv", ["--budget-flops", "1e16"], "lacks column(s) attack_steps"),
                                  ("no_hours.csv", ["--budget-gpu-hours", "3"], "needs device-hours per FLOP"),
                                  ("no_epochs.csv", ["--budget-flops", "1e16"], "give --epoch-images N"),
                                  ("mixed.csv", ["--budget-flops", "1e16", "--group-by", "none"], "mix methods"),
                                  ("missing.csv", ["--budget-flops", "1e16"], "runs table not found")):
        code, out, err = cli("plan", "--runs", tmp_path / table, "--bootstrap", "0", *ZOO, *extra)
        assert code == 2 and out == "" and message in err and err.count("\n") == 1, err
    assert sorted(tmp_path.iterdir()) == before


def test_paper_runs(paper_runs_csv, flops_cache):
    """The study's runs: collapsed runs counted, D never identified (2 epoch counts), and our 2024-convention
    compute of every run equal to the FLOPs the study recorded."""
    from robustscale.plan import make_plan, parse_budgets
    from robustscale.scaling import load_paper_runs

    df = load_paper_runs(paper_runs_csv)
    plan = make_plan(df, parse_budgets(["1e19"]), convention="paper-2024", bootstrap=0)
    assert plan["n_excluded"] == int((df.aa_robust_acc < 10).sum()) and plan["n_fitted"] + plan["n_excluded"] == 319
    assert len(plan["law"]["groups"]) == 4
    for g in plan["law"]["groups"]:
        assert "only 2 distinct train_images_seen" in g["not_identified"]["beta"]
        assert "beta" not in g["params"] and "a" not in g["params"]
    for row in plan["allocation"]:
        assert row["approach3"]["a"] is None and row["approach3"]["reason"]
        assert row["approach1"]["b"] is None and "distinct train_images_seen" in row["approach1"]["b_reason"]
    vs = plan["runs_flops_vs_recorded"]
    # DeepSpeed's forward count of the study vs torch's: within 1% for every run
    assert vs["n"] == 319 and 0.99 < vs["min"] <= vs["max"] < 1.01
    (b,) = plan["budgets"]
    assert b["extrapolation_factor"] is None and math.isfinite(b["budget_flops"])
    for r in b["recipes"]:
        assert r["epochs"] in (110, 400) and r["synthetic_data"] is not None
    json.dumps(plan, allow_nan=False)
    assert np.isfinite(plan["compute_model"]["flops_per_parameter"])
