"""`robustscale study` with a `scaling:` section, end to end on tiny synthetic data: the grid, the joint law,
the planned recipe trained with 3 seeds, and the page; every number checked against the store."""
import json
import math

import numpy as np
import pytest
import yaml

from robustscale.intervals import wilson_interval
from robustscale.scaling.format import fmt
from robustscale.store import open_store

Z95 = 1.959963984540054


def _spec(tmp_path, data_dir):
    spec = {
        "name": "tiny-scaling",
        "base": {"dataset": "fashion_mnist", "data_dir": str(data_dir), "eps": 0.03, "train_subset": 128,
                 "val_size": 32, "batch_size": 16, "lr_base": 3.2, "eval_subset": 0, "eval_attack_steps": 2,
                 "attack_steps": 1, "workers": 0, "progress": False, "energy": False},
        "blocks": [
            # 2 sizes x 3 lengths, standard and PGD-1
            {"grid": {"model": ["wide_resnet10_1", "wide_resnet16_1"], "epochs": [2, 4, 8]},
             "zip": {"method": ["standard", "pgd"], "eval_attack_steps": [0, 2]}},
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
                        "verify_seeds": [0, 1, 2], "page": str(tmp_path / "page.md"),
                        "train_flop_rate": 1e10, "eval_flop_rate": 1e10, "max_hours": 1},
        },
    }
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def scaling_study(tmp_path_factory, mnist_like_dir):
    import contextlib
    import io

    from robustscale.cli import main

    tmp_path = tmp_path_factory.mktemp("scaling")
    path = _spec(tmp_path, mnist_like_dir)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["study", str(path), "--executor", "inline", "--no-progress", "--json"])
    assert code == 0, err.getvalue()
    doc = json.loads((tmp_path / "runs" / "scaling.json").read_text())
    return tmp_path, path, json.loads(out.getvalue()), doc


def _accuracies(st, names, attack):
    """name -> (accuracy %, n) of the run's ``attack`` evaluation, read from the store."""
    out = {}
    for name, evals in st.evaluations_of(names).items():
        ev = [e for e in evals if e["attack"] == attack]
        if ev:
            e = max(ev, key=lambda e: e["n_examples"])
            out[name] = (float(e["robust_acc"] if attack != "clean" else e["clean_acc"]), int(e["n_examples"]))
    return out


def test_planned_recipe_is_trained_with_three_seeds_and_the_page_states_what_the_runs_say(scaling_study):
    tmp_path, path, result, doc = scaling_study
    page = (tmp_path / "page.md").read_text()
    assert result["scaling"]["page"] == str(tmp_path / "page.md")
    st = open_store(str(tmp_path / "runs" / "runs.db"))
    runs = st.runs_frame()
    grid = runs[~runs["name"].str.startswith("plan-") & (runs["method"] == "pgd")]
    planned = runs[runs["name"].str.startswith("plan-")]

    # the budget: 2x the largest adversarial grid run's measured training FLOPs
    assert doc["plan"]["budgets"][0]["budget_flops"] == pytest.approx(2 * grid["train_flops"].max(), rel=1e-12)
    recipe = doc["plan"]["budgets"][0]["recipes"][0]
    assert recipe == max(doc["plan"]["budgets"][0]["recipes"], key=lambda r: r["predicted_acc"])
    assert recipe["train_flops"] <= doc["plan"]["budgets"][0]["budget_flops"] * (1 + 1e-12)
    # ... trained with seeds 0, 1, 2: the recipe's model, steps and epochs, all else as the grid's runs
    template = next(r for r in load_runs_cfgs(path) if r.cfg.method.value == "pgd" and r.cfg.model == recipe["model"])
    seeds = []
    for name in planned["name"]:
        cfg = yaml.safe_load((tmp_path / "runs" / name / "config.yaml").read_text())
        seeds.append(cfg["seed"])
        assert (cfg["model"], cfg["attack_steps"], cfg["epochs"]) == (recipe["model"], recipe["attack_steps"],
                                                                    recipe["epochs"])
        for key in ("eps", "train_subset", "lr_base", "batch_size", "val_size", "method"):
            want = template.cfg.to_dict()[key]
            assert cfg[key] == want, key
    assert sorted(seeds) == [0, 1, 2]
    # ... and evaluated the same way: APGD-CE on the study's 32 images, clean on 64
    apgd = _accuracies(st, list(planned["name"]), "apgd-ce")
    assert len(apgd) == 3 and all(n == 32 for _, n in apgd.values())
    assert all(n == 64 for _, n in _accuracies(st, list(planned["name"]), "clean").values())

    # observed vs predicted, recomputed from the store
    v = doc["verify"]
    acc = np.array([a for a, _ in apgd.values()])
    n = np.array([m for _, m in apgd.values()], float)
    assert v["mean"] == pytest.approx(acc.mean(), rel=1e-12)
    for r in v["runs"]:
        a, m = apgd[r["name"]]
        assert r["ci"] == pytest.approx(list(wilson_interval(round(a * m / 100), m)), abs=1e-9)
    sd = doc["seed_sd"]["adversarial"]
    assert v["seed_sd"] == sd["seed_sd"]
    q = np.clip(acc / 100, 0.5 / n, 1 - 0.5 / n)
    se = math.sqrt(np.sum(1e4 * q * (1 - q) / n + sd["seed_sd"] ** 2)) / 3
    lo, hi = recipe["predicted_acc_ci"]
    assert v["prediction_interval"] == pytest.approx([lo - Z95 * se, hi + Z95 * se], rel=1e-12)
    assert v["inside_prediction_interval"] == (lo - Z95 * se <= acc.mean() <= hi + Z95 * se)
    # the grid's best adversarial run within 4x below the budget (default similar_compute)
    budget = v["budget_flops"]
    grid_acc = _accuracies(st, list(grid["name"]), "apgd-ce")
    near = [(grid_acc[nm][0], nm) for nm, f in zip(grid["name"], grid["train_flops"]) if budget / 4 <= f <= budget]
    best_acc, best_name = max(near)
    assert v["grid_best"]["name"] == best_name and v["grid_best"]["difference"] == pytest.approx(acc.mean() - best_acc)

    # the page prints those numbers
    assert f"Observed mean over 3 seeds: {fmt(acc.mean())}%" in page
    assert f"[{fmt(lo - Z95 * se)}, {fmt(hi + Z95 * se)}]" in page
    assert f"`{best_name}`" in page
    assert ("**inside**" if v["inside_prediction_interval"] else "**OUTSIDE**") in page
    assert "Bartoldson et al. 2024 | 0.48 | 0.52" in page
    assert "## How long it took" in page and "## Back-test" in page and "not available" in doc["backtest"]["status"]


def load_runs_cfgs(path):
    from robustscale.study import load_study

    return load_study(path)[0].runs


def test_seed_sd_is_measured_from_the_seed_pairs(scaling_study):
    tmp_path, path, result, doc = scaling_study
    st = open_store(str(tmp_path / "runs" / "runs.db"))
    names = [r.name for r in load_runs_cfgs(path) if r.cfg.method.value == "pgd" and r.cfg.model == "wide_resnet10_1"
             and r.cfg.attack_steps == 1]
    acc = _accuracies(st, names, "apgd-ce")
    pairs = [(acc[f"pgd-wide_resnet10_1-k1-e{e}-s0"], acc[f"pgd-wide_resnet10_1-k1-e{e}-s1"]) for e in (2, 4, 8)]
    # pooled within-pair variance (1 dof each) less the binomial variance at each pair's mean
    spread = sum((a - b) ** 2 / 2 for (a, _), (b, _) in pairs) / 3
    binom = []
    for (a, na), (b, _) in pairs:
        q = min(max((a + b) / 200, 0.5 / na), 1 - 0.5 / na)
        binom += [1e4 * q * (1 - q) / na] * 2
    want = math.sqrt(max(spread - sum(binom) / len(binom), 0.0))
    sd = doc["seed_sd"]["adversarial"]
    assert sd["assumed"] is False and "3 dof" in sd["source"]
    assert sd["seed_sd"] == pytest.approx(want, rel=1e-9, abs=1e-12)


def test_a_second_invocation_trains_nothing_and_plans_the_same_run(scaling_study, cli):
    tmp_path, path, result, doc = scaling_study
    code, out, err = cli("study", str(path), "--executor", "inline", "--no-progress", "--json")
    assert code == 0, err
    again = json.loads((tmp_path / "runs" / "scaling.json").read_text())
    assert again["verify"]["runs_trained_now"] == 0 and again["verify"]["runs_reused"] == 3
    assert again["verify"]["recipe"] == doc["verify"]["recipe"] and again["verify"]["mean"] == doc["verify"]["mean"]


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
