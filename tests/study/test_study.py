"""`robustscale study SPEC`: sweep + evaluations + fits + report, on tiny data; and --paper-runs via the CLI."""
import json

import pytest
import yaml

from robustscale.intervals import wilson_interval
from robustscale.scaling import fit_law
from robustscale.study import format_study_table, load_study


SUBSETS = [64, 96, 128, 192, 256]  # 5 runs per family: the power law's minimum (2 parameters + 3)


def _spec(tmp_path, data_dir, subsets=SUBSETS, **study_overrides):
    study = {
        "evaluations": [{"attack": "apgd-ce", "n_examples": 16}],
        "fits": {"standard": {"where": {"method": "standard"}, "y": "clean_acc"},
                 "adversarial": {"where": {"method": "pgd"}, "y": "pgd_robust_acc"}},
        "compare": ["adversarial", "standard"],
        "laws": ["power"],
        "targets": [90],
        "bootstrap": 50,
        "exclude_below": 0.01,
    }
    study.update(study_overrides)
    spec = {
        "name": "tiny-study",
        "base": {"dataset": "fashion_mnist", "data_dir": str(data_dir), "model": "wide_resnet16_1", "eps": 0.05,
                 "epochs": 2, "batch_size": 32, "lr_base": 0.4, "eval_subset": 32, "eval_attack_steps": 2, "workers": 0,
                 "progress": False, "energy": False},
        "grid": {"train_subset": list(subsets)},
        "zip": {"method": ["standard", "pgd"], "attack_steps": [1, 1]},
        "name_template": "{method}-n{train_subset}",
        "output_dir": str(tmp_path / "runs"),
        "evaluation": {"attack": "pgd", "n_examples": 64, "steps": 3},
        "cost": {"device_type": "cpu"},
        "study": study,
    }
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory, mnist_like_dir):
    """The 10-run tiny study, run once (extra evaluations in 2 worker processes)."""
    from robustscale.cli import main

    tmp_path = tmp_path_factory.mktemp("study")
    path = _spec(tmp_path, mnist_like_dir, eval_workers=2)
    import contextlib
    import io

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["study", str(path), "--executor", "inline", "--no-progress", "--json"])
    assert code == 0, err.getvalue()
    return tmp_path, path, json.loads(out.getvalue()), err.getvalue()


def test_study_end_to_end_and_rerun_reuses_runs(tiny_study, cli):
    tmp_path, path, result, err = tiny_study
    assert result["n_runs"] == 10 and result["sweep"]["submitted"] == 10
    report = tmp_path / "runs" / "report.html"
    assert report.is_file() and "Laws" in report.read_text()
    doc = json.loads((tmp_path / "runs" / "study.json").read_text())
    assert doc["runs"] == result["runs"] and doc["fits"] == result["fits"]
    assert doc["seed_sd"] == 1.0 and doc["seed_sd_assumed"] is True  # the lack-of-fit test's assumption, stated
    for run in doc["runs"]:
        # selected on held-out training images, by the metric of the method
        assert run["selection_split"] in ("val", "test") and run["selected_epoch"] in (1, 2)
        for metric, n in (("clean_acc", 64), ("pgd_robust_acc", 64), ("apgd_ce_robust_acc", 16)):
            assert run[f"{metric}_n_examples"] == n
            lo, hi = run[f"{metric}_ci"]
            assert lo <= run[metric] <= hi
            assert (lo, hi) == pytest.approx(wilson_interval(round(run[metric] * n / 100), n), abs=1e-9)

    # The study's fit equals a direct fit of the points study.json lists (same law, seed, bootstrap).
    import pandas as pd

    fit_rec = next(f for f in doc["fits"] if f["family"] == "standard" and f["law"] == "power")
    assert fit_rec["n"] == 5 and all(p["n_examples"] == 64 for p in fit_rec["points"])
    pts = pd.DataFrame(fit_rec["points"]).rename(columns={"x": "train_flops", "y": "clean_acc"})
    seed = [f.name for f in load_study(path)[1].fits].index("standard")  # the study seeds family i with seed + i
    direct = fit_law(pts, law="power", y="clean_acc", bootstrap=50, seed=seed, exclude_below=0.01)
    if fit_rec["status"] == "ok":
        assert fit_rec["params"]["alpha"] == pytest.approx(direct.exponent, rel=1e-9)
        assert fit_rec["ci"]["alpha"] == pytest.approx(list(direct.ci["alpha"]), rel=1e-9)
    else:  # not identified: the reason, and no number
        assert fit_rec["reason"] and fit_rec["params"] == {} and fit_rec["targets"] == []
    # "what to run next": the planner on each robust family, in study.json and the report
    nxt = doc["next"]
    assert [r["family"] for r in nxt] == [f.name for f in load_study(path)[1].fits if f.y.endswith("robust_acc")]
    for r in nxt:
        assert r["status"] in ("ok", "not identified")
        if r["status"] == "ok":
            assert all(b["train_flops"] == pytest.approx(b["budget_flops"], rel=1e-9)
                       for b in r["budgets"] if b["identified"])
        else:
            assert r["reason"]
    assert "What to run next" in report.read_text()
    # Every run got the extra evaluation, recorded in the store.
    from robustscale.store import open_store

    st = open_store(str(tmp_path / "runs" / "runs.db"))
    names = st.runs_frame()["name"]
    evals = st.evaluations_of(names)
    assert all(any(e["attack"] == "apgd-ce" for e in evals[n]) for n in names)

    # A second invocation trains and evaluates nothing again, and writes the same study.json.
    code, out, err2 = cli("study", str(path), "--executor", "inline", "--no-progress", "--json")
    assert code == 0, err2
    again = json.loads(out)
    assert again["sweep"]["submitted"] == 0 and again["sweep"]["done_before"] == 10
    assert "evaluated" not in err2
    assert json.loads((tmp_path / "runs" / "study.json").read_text())["fits"] == doc["fits"]


def test_parallel_evaluations_match_in_process_ones(tiny_study, tmp_path):
    """study.eval_workers: the extra evaluations ran in worker processes and give the same claims."""
    import shutil

    from robustscale.evaluation import evaluate_run

    study_dir, _, _, err = tiny_study
    assert "10 evaluations in 2 processes" in err and err.count("evaluated ") == 10
    for run_dir in sorted((study_dir / "runs").glob("*-n64")):
        claim = json.loads((run_dir / "eval" / "apgd-ce-0.05.json").read_text())
        copy = tmp_path / "copy" / run_dir.name
        shutil.copytree(run_dir, copy)
        shutil.rmtree(copy / "eval")
        direct = evaluate_run(copy, attack="apgd-ce", n_examples=16, store=str(tmp_path / "direct.db"))
        assert claim["robust_acc"] == direct["robust_acc"] and claim["n_examples"] == 16


def test_study_table_is_readable():
    ok = {"law": "power", "family": "adv", "n": 6, "status": "ok", "reason": None,
          "params": {"alpha": 0.05}, "ci": {"alpha": [0.01, 0.09]}, "asymptote": {"value": None, "ci": None},
          "targets": [{"target": 80, "reachable": True, "compute_flops": 1.5e15, "compute_flops_ci": [1e15, 4e15],
                       "factor_vs_largest_run": 31.0, "extrapolation": True},
                      {"target": 90, "reachable": False, "share_reachable": 0.2}]}
    sat = {"law": "saturating", "family": "std", "n": 6, "status": "ok", "reason": None,
           "params": {"alpha": 0.3}, "ci": {"alpha": [0.2, 0.5]}, "asymptote": {"value": 71.2, "ci": [65.0, 80.1]},
           "targets": [{"target": 70, "reachable": True, "compute_flops": 2e13, "compute_flops_ci": [1e13, "inf"],
                        "factor_vs_largest_run": 0.5, "extrapolation": False}]}
    bad = {"law": "saturating", "family": "adv", "n": 4, "status": "not identified",
           "reason": "4 runs for 3 parameters: the saturating law needs at least 6 " + "x" * 60}
    comp = [{"law": "power", "a": "adv", "b": "std", "diff": -0.1, "ci": [-0.2, -0.01], "p_value": 0.01}]
    table = format_study_table([ok, sat, bad], comp)
    header, first, second, third, failed, comparison = table.splitlines()
    assert "exponent [95% CI]" in header and "asymptote % [95% CI]" in header
    col = header.index("target")
    assert first.startswith("power") and "0.05 [0.01, 0.09]" in first and "none (unbounded)" in first
    assert first[col:].split() == ["80%", "1.50e+15", "[1.00e+15,", "4.00e+15]", "x31", "extrapolation"]
    assert second[:col].strip() == "" and "not reachable (20% of resampled laws reach it)" in second
    assert "71.2 [65, 80.1]" in third and third[col:].split()[-1] == "x0.5" and "[1.00e+13, inf]" in third
    assert failed.startswith("saturating  adv") and "not identified: 4 runs for 3 parameters" in failed
    assert "0.05" not in failed and len(header) < 130  # no numbers for it; long reasons do not widen columns
    assert "difference of exponents (adv - std): -0.1 [-0.2, -0.01]" in comparison


@pytest.mark.parametrize("study,message", [
    ({"fitz": {}}, "unknown key 'fitz' in study"),
    ({"compare": ["adversarial", "nope"]}, "study.compare"),
    ({"laws": ["cubic"]}, "unknown law 'cubic'"),
    ({"targets": [150]}, "invalid study target 150"),
    ({"bootstrap": -1}, "invalid study.bootstrap -1"),
    ({"eval_workers": 0}, "invalid study.eval_workers 0"),
    ({"seed_sd": -0.5}, "invalid study.seed_sd -0.5"),
    ({"laws": ["power", "saturating"]}, "has 5 run(s) in the grid of"),
    ({"evaluations": [{"attack": "aa-standard", "strongest": 0}]}, "invalid strongest 0"),
])
def test_study_spec_errors_exit_2_before_running(tmp_path, mnist_like_dir, cli, study, message):
    path = _spec(tmp_path, mnist_like_dir, **study)
    code, out, err = cli("study", str(path))
    assert code == 2 and message in err and err.count("\n") == 1
    assert not (tmp_path / "runs").exists()  # nothing written


def test_grid_too_small_or_at_one_compute_fails_before_training(tmp_path, mnist_like_dir, cli):
    code, _, err = cli("study", str(_spec(tmp_path, mnist_like_dir, subsets=[64, 128])))
    assert code == 2 and err.count("\n") == 1
    assert "has 2 run(s)" in err and "the power law needs at least 5 (2 parameters + 3)" in err
    path = _spec(tmp_path, mnist_like_dir, subsets=[64])
    data = yaml.safe_load(path.read_text())
    data["seeds"] = [0, 1, 2, 3, 4]  # five runs per family, all at one compute value
    data["name_template"] = "{method}-n{train_subset}-s{seed}"
    path.write_text(yaml.safe_dump(data))
    code, _, err = cli("study", str(path))
    assert code == 2 and "all at a single compute value" in err
    assert not (tmp_path / "runs").exists()


def test_study_needs_a_spec_or_paper_runs(cli):
    code, _, err = cli("study")
    assert code == 2 and "missing study spec" in err


def test_paper_runs_cli(tmp_path, paper_runs_csv, cli):
    code, out, err = cli("study", "--paper-runs", "--path", str(paper_runs_csv), "-o", str(tmp_path / "paper"),
                         "--bootstrap", "20", "--no-progress")
    assert code == 0, err
    assert (tmp_path / "paper" / "report.html").is_file()
    assert "report:" in out and "targets without a number" in out and "n/r" not in out


def test_eval_workers_flag_is_checked(tmp_path, mnist_like_dir, cli):
    code, _, err = cli("study", str(_spec(tmp_path, mnist_like_dir)), "--eval-workers", "0")
    assert code == 2 and "invalid --eval-workers 0" in err and not (tmp_path / "runs").exists()
