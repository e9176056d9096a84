"""The closing experiment of a study's ``scaling:`` section (``study.scaling.close_the_loop``): the plan's
recipe really trained with 3 seeds and evaluated, and every number of its verdict recomputed from the store.

The grid is planted (a known joint law on zoo model sizes, rows as the store's frame holds them), so
``make_plan`` identifies the optimum without hours of training; only the planned recipe is trained: a
WRN-10-1/16-1 on 16 synthetic images for a few epochs, seconds a seed. The grid's own training and the page are
``robustscale study``'s (tests/study/test_study.py and the page generator's own test)."""
import json
import math

import numpy as np
import pandas as pd
import pytest
import yaml

from robustscale.intervals import wilson_interval
from robustscale.plan.compute import ComputeModel
from robustscale.store import open_store
from robustscale.study import load_study
from robustscale.study.run import run_extra_evaluations
from robustscale.scaling.format import fmt
from robustscale.study.scaling import close_the_loop, scaling_plan, study_trainer
from robustscale.study.scaling_page import render_page

Z95 = 1.959963984540054
EPOCH_IMAGES = 16  # the template run's train_subset (its validation images are held out besides)
LONGEST = 4  # epochs of the grid's most expensive run, WRN-10-1 at k 4: the budget is twice it
MODELS = ("wide_resnet10_1", "wide_resnet16_1", "wide_resnet10_2", "wide_resnet16_2")  # 78k-691k parameters
# 100 - apgd_ce_robust_acc = E + A N^-alpha + B D^-beta + G k^-gamma (N parameters, D images seen, k steps)
TRUTH = {"E": 20.0, "A": 15 * 1e5 ** 0.35, "alpha": 0.35, "B": 300.0, "beta": 0.7, "G": 8.0, "gamma": 0.8}


def _spec(tmp_path, data_dir):
    spec = {
        "name": "tiny-scaling",
        "base": {"dataset": "fashion_mnist", "data_dir": str(data_dir), "eps": 0.03, "train_subset": EPOCH_IMAGES,
                 "val_size": 16, "batch_size": 16, "lr_base": 3.2, "eval_subset": 0,
                 # the final weights, checked clean each epoch: PGD on the per-epoch check was half of the test's
                 # training time, and the verdict's accuracies are the study's APGD-CE evaluations
                 "select": "last", "eval_attack_steps": 0, "attack_steps": 1, "workers": 0, "progress": False, "energy": False},
        "blocks": [
            # 2 sizes x 3 lengths, standard and PGD-1
            {"grid": {"model": ["wide_resnet10_1", "wide_resnet16_1"], "epochs": [2, 4, 8]},
             "zip": {"method": ["standard", "pgd"]}},
            # a second seed of 3 adversarial configurations: 3 dof, the seed SD is measured
            {"base": {"method": "pgd"}, "zip": {"model": ["wide_resnet10_1"] * 3, "epochs": [2, 4, 8]},
             "seeds": [1]},
        ],
        "name_template": "{method}-{model}-k{attack_steps}-e{epochs}-s{seed}",
        "output_dir": str(tmp_path / "runs"),
        "evaluation": {"attack": "clean", "n_examples": 64},
        "cost": {"device_type": "cpu"},
        "study": {
            "evaluations": [{"attack": "apgd-ce", "n_examples": 32, "steps": 5, "where": {"method": "pgd"}}],
            "fits": {"standard": {"where": {"method": "standard"}, "y": "clean_acc"},
                     "adversarial": {"where": {"method": "pgd"}, "y": "apgd_ce_robust_acc"}},
            "compare": ["adversarial", "standard"], "laws": ["power"], "targets": [90], "bootstrap": 20,
            "exclude_below": 0.01,
            "scaling": {"where": {"method": "pgd"}, "y": "apgd_ce_robust_acc", "budget_factor": 2,
                        "models": ["wide_resnet10_1", "wide_resnet16_1"], "bootstrap": 50,
                        "verify_seeds": [0, 1, 2], "page": str(tmp_path / "page.md"),
                        "train_flop_rate": 1e10, "eval_flop_rate": 1e10, "max_hours": 1},
        },
    }
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def planted_grid(seed=0, noise=0.005) -> pd.DataFrame:
    """PGD runs of the four sizes at 1-8 epochs of 16 images and k 1/2/4 whose measured training FLOPs stay
    within those of the longest WRN-10-1 run (so the planned budget buys a small net seconds of training),
    accuracies from ``TRUTH`` with log-normal noise, each measured on 1,000 test images, as the study's frame
    holds them."""
    compute = ComputeModel.from_zoo(list(MODELS), "fashion_mnist")
    cap = compute.step_flops("wide_resnet10_1", "pgd", 4) * LONGEST * EPOCH_IMAGES
    rng = np.random.default_rng(seed)
    rows = []
    for model in MODELS:
        n = compute.resolve(model).parameters
        for k in (1, 2, 4):
            for epochs in (1, 2, 4, 8):
                flops = compute.step_flops(model, "pgd", k) * epochs * EPOCH_IMAGES
                if flops > cap * (1 + 1e-12):
                    continue
                d = epochs * EPOCH_IMAGES
                err = (TRUTH["E"] + TRUTH["A"] * n ** -TRUTH["alpha"] + TRUTH["B"] * d ** -TRUTH["beta"]
                       + TRUTH["G"] * k ** -TRUTH["gamma"]) * math.exp(noise * rng.standard_normal())
                rows.append({"name": f"pgd-{model}-k{k}-e{epochs}-s0", "method": "pgd", "model": model,
                             "dataset": "fashion_mnist", "model_parameters": n, "attack_steps": k, "epochs": epochs,
                             "train_images": EPOCH_IMAGES, "train_images_seen": d, "train_flops": flops,
                             "apgd_ce_robust_acc": 100 - err, "apgd_ce_robust_acc_n_examples": 1000, "seed": 0})
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def closing(tmp_path_factory, mnist_like_dir, flops_cache):
    """The plan on the planted grid, and its recipe trained (3 seeds) and evaluated by the study's trainer."""
    tmp_path = tmp_path_factory.mktemp("scaling")
    spec, opts = load_study(_spec(tmp_path, mnist_like_dir))
    sc = opts.scaling
    grid = planted_grid()
    plan = scaling_plan(grid, sc, bootstrap=sc.bootstrap, seed=0, device_type="cpu", exclude_below=None,
                        source="planted")
    db = str(tmp_path / "runs" / "runs.db")
    st = open_store(db)
    logs = []

    def trainer():
        return study_trainer(spec, opts, st, run_extra_evaluations, store=db, executor="inline", max_parallel=None,
                             progress=False, log=logs.append)

    seed_sd = 1.5  # points; the study passes its measured one (study.scaling.family_seed_sd), here any value
    verify = close_the_loop(grid, plan, sc, seed_sd, trainer(), log=logs.append)
    return tmp_path, spec, grid, plan, verify, st, seed_sd, trainer


def _accuracies(st, names, attack):
    """name -> (accuracy %, n) of the run's ``attack`` evaluation, read from the store."""
    out = {}
    for name, evals in st.evaluations_of(names).items():
        ev = [e for e in evals if e["attack"] == attack]
        if ev:
            e = max(ev, key=lambda e: e["n_examples"])
            out[name] = (float(e["robust_acc"] if attack != "clean" else e["clean_acc"]), int(e["n_examples"]))
    return out


def test_the_planted_grid_identifies_the_optimum_within_2x_the_largest_run(closing):
    tmp_path, spec, grid, plan, verify, st, seed_sd, _ = closing
    budget = plan["budgets"][0]
    assert budget["budget_flops"] == pytest.approx(2 * grid["train_flops"].max(), rel=1e-12)
    (law,) = plan["law"]["groups"]
    # N and D identified (power roles), and the law the rows were made from inside the bootstrap intervals
    assert set(law["roles"].values()) == {"power"} and not law["not_identified"]
    for key in ("alpha", "beta", "gamma", "E"):
        lo, hi = law["ci"][key]
        assert lo <= TRUTH[key] <= hi, (key, law["ci"][key])
    assert all(s["status"] == "ok" for s in plan["optimum_status"].values()), plan["optimum_status"]
    recipe = budget["recipes"][0]
    assert recipe == max(budget["recipes"], key=lambda r: r["predicted_acc"])
    assert recipe["model"] in ("wide_resnet10_1", "wide_resnet16_1")
    assert recipe["train_flops"] <= budget["budget_flops"] * (1 + 1e-12)
    assert verify["recipe"] == recipe


def test_the_recipe_is_trained_with_three_seeds_and_the_verdict_is_what_the_store_says(closing):
    tmp_path, spec, grid, plan, verify, st, seed_sd, _ = closing
    recipe = verify["recipe"]
    runs = st.runs_frame()
    planned = runs[runs["name"].str.startswith("plan-")]
    assert verify["runs_trained_now"] == 3 and verify["runs_reused"] == 0
    # seeds 0, 1, 2 of the recipe's model, steps and epochs, everything else as the grid's template run
    template = next(r for r in spec.runs if r.cfg.method.value == "pgd" and r.cfg.model == recipe["model"])
    seeds = []
    for name in planned["name"]:
        cfg = yaml.safe_load((tmp_path / "runs" / name / "config.yaml").read_text())
        seeds.append(cfg["seed"])
        assert (cfg["model"], cfg["attack_steps"], cfg["epochs"]) == (recipe["model"], recipe["attack_steps"],
                                                                    recipe["epochs"])
        for key in ("eps", "train_subset", "lr_base", "batch_size", "val_size", "method", "dataset"):
            assert cfg[key] == template.cfg.to_dict()[key], key
    assert sorted(seeds) == [0, 1, 2]
    # one epoch of the trained runs is the planner's epoch: its samples seen are what it priced
    assert set(planned["train_images_seen"]) == {recipe["samples_seen"]}
    # evaluated the study's way: APGD-CE on 32 images, clean on 64
    apgd = _accuracies(st, list(planned["name"]), "apgd-ce")
    assert len(apgd) == 3 and all(n == 32 for _, n in apgd.values())
    assert all(n == 64 for _, n in _accuracies(st, list(planned["name"]), "clean").values())

    # observed vs predicted, recomputed from the store's evaluations
    acc = np.array([a for a, _ in apgd.values()])
    n = np.array([m for _, m in apgd.values()], float)
    assert verify["mean"] == pytest.approx(acc.mean(), rel=1e-12)
    for r in verify["runs"]:
        a, m = apgd[r["name"]]
        assert r["ci"] == pytest.approx(list(wilson_interval(round(a * m / 100), m)), abs=1e-9)
    q = np.clip(acc / 100, 0.5 / n, 1 - 0.5 / n)
    se = math.sqrt(np.sum(1e4 * q * (1 - q) / n + seed_sd ** 2)) / 3
    lo, hi = recipe["predicted_acc_ci"]
    assert verify["prediction_interval"] == pytest.approx([lo - Z95 * se, hi + Z95 * se], rel=1e-12)
    assert verify["inside_prediction_interval"] == (lo - Z95 * se <= acc.mean() <= hi + Z95 * se)
    assert verify["error"] == pytest.approx(acc.mean() - recipe["predicted_acc"], rel=1e-12)
    # the grid's best run within 4x below the budget (similar_compute's default), and the difference's interval
    budget = verify["budget_flops"]
    near = grid[(grid["train_flops"] >= budget / 4) & (grid["train_flops"] <= budget)]
    best = near.loc[near["apgd_ce_robust_acc"].idxmax()]
    gb = verify["grid_best"]
    assert gb["name"] == best["name"] and gb["n_similar"] == len(near)
    assert gb["difference"] == pytest.approx(acc.mean() - best["apgd_ce_robust_acc"], rel=1e-12)
    qb = best["apgd_ce_robust_acc"] / 100
    se_diff = math.sqrt(se ** 2 + 1e4 * qb * (1 - qb) / 1000 + seed_sd ** 2)
    assert gb["difference_ci"] == pytest.approx([gb["difference"] - Z95 * se_diff, gb["difference"] + Z95 * se_diff],
                                                rel=1e-12)
    assert gb["beat"] == (gb["difference"] - Z95 * se_diff > 0)

    # the page prints those numbers
    page = render_page({"study": spec.name, "spec": None, "json": "scaling.json", "plan": plan, "y": "apgd_ce_robust_acc",
                        "study_wall_seconds": 60.0, "grid_trained_now": 0, "grid_reused": len(grid), "fits": [],
                        "comparisons": [], "seed_sd": {}, "backtest": {"status": "not available", "reason": "planted"},
                        "budget_factor": 2.0, "similar_compute": 4.0, "verify": verify})
    assert f"Observed mean over 3 seeds: {fmt(acc.mean())}%" in page
    assert f"[{fmt(lo - Z95 * se)}, {fmt(hi + Z95 * se)}]" in page
    assert f"`{best['name']}`" in page and f"`{recipe['model']}`" in page
    assert ("**inside**" if verify["inside_prediction_interval"] else "**OUTSIDE**") in page
    assert "| model size N | 4 | identified (power law) |" in page
    assert "| samples seen D | 4 | identified (power law) |" in page
    assert "Bartoldson et al. 2024 | 0.48 | 0.52" in page


def test_a_second_call_trains_nothing_and_reports_the_same(closing):
    tmp_path, spec, grid, plan, verify, st, seed_sd, trainer = closing
    sc = load_study(tmp_path / "study.yaml")[1].scaling
    again = close_the_loop(grid, plan, sc, seed_sd, trainer(), log=lambda *a: None)
    assert again["runs_trained_now"] == 0 and again["runs_reused"] == 3
    assert again["recipe"] == verify["recipe"] and again["mean"] == verify["mean"]
    assert json.dumps(again["runs"]) == json.dumps(verify["runs"])


def test_bill_and_bad_scaling_options(tmp_path, mnist_like_dir, cli):
    path = _spec(tmp_path, mnist_like_dir)
    code, out, err = cli("study", str(path), "--bill")
    assert code == 0, err
    assert "3 planned runs" in out and "limit: 1 h (within)" in out
    data = yaml.safe_load(path.read_text())
    for key, value, message in (("budget_factor", 8, "budget_factor 8"), ("verify_seeds", [0, 0], "verify_seeds"),
                                ("bogus", 1, "unknown key 'bogus'")):
        bad = json.loads(json.dumps(data))
        bad["study"]["scaling"][key] = value
        path.write_text(yaml.safe_dump(bad))
        code, out, err = cli("study", str(path), "--executor", "inline")
        assert code == 2 and message in err and "Traceback" not in err
        assert not (tmp_path / "runs").exists()  # nothing ran, nothing written
