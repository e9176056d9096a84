"""`robustscale study SPEC`: sweep + evaluations + fits + report, on tiny data; and --paper-runs via the CLI."""
import json

import pytest
import yaml

from robustscale.scaling import fit_law
from robustscale.study import format_study_table, load_study


def _spec(tmp_path, data_dir, **study_overrides):
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
                 "epochs": 2, "batch_size": 32, "lr_base": 0.4, "eval_subset": 32, "eval_attack_steps": 2,
                 "workers": 0, "progress": False, "energy": False},
        "grid": {"train_subset": [128, 256, 512]},
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


def test_study_end_to_end_and_rerun_reuses_runs(tmp_path, mnist_like_dir, cli):
    path = _spec(tmp_path, mnist_like_dir)
    code, out, err = cli("study", str(path), "--executor", "inline", "--no-progress", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["n_runs"] == 6 and result["sweep"]["submitted"] == 6
    report = tmp_path / "runs" / "report.html"
    assert report.is_file() and "power law" in report.read_text()

    # The study's fit equals a direct fit of the same rows (same law, same seed, same bootstrap).
    from robustscale.store import open_store

    df = open_store(str(tmp_path / "runs" / "runs.db")).runs_frame()
    std = df[df["method"] == "standard"]
    direct = fit_law(std, law="power", y="clean_acc", bootstrap=50, seed=0, exclude_below=0.01)
    row = next(r for r in result["rows"] if r["family"] == "standard")
    assert row["n"] == direct.n == 3
    assert row["exponent"] == pytest.approx(direct.exponent, rel=1e-9)
    assert [row["exponent_low"], row["exponent_high"]] == pytest.approx(list(direct.ci["alpha"]), rel=1e-9)
    # Every run got the extra evaluation, recorded in the store.
    evals = open_store(str(tmp_path / "runs" / "runs.db")).evaluations_of(df["name"])
    assert all(any(e["attack"] == "apgd-ce" for e in evals[n]) for n in df["name"])

    # A second invocation trains and evaluates nothing again.
    code, out, err = cli("study", str(path), "--executor", "inline", "--no-progress", "--json")
    assert code == 0, err
    again = json.loads(out)
    assert again["sweep"]["submitted"] == 0 and again["sweep"]["done_before"] == 6
    assert "evaluated" not in err


def test_study_table_is_readable():
    rows = [{"law": "power", "family": "adv", "status": "ok", "n": 4, "exponent": 0.05, "exponent_low": 0.01,
             "exponent_high": 0.09, "asymptote_acc": float("nan"), "reachable_90": False, "share_reachable_90": 0.2,
             "reachable_80": True, "compute_flops_80": 1.5e15, "device_hours_80": 3.25, "energy_kwh_80": 1.0,
             "cloud_usd_high_80": 5.0},
            {"law": "saturating", "family": "std", "status": "did not converge: " + "x" * 80},
            {"law": "power", "family": "adv - std", "status": "comparison", "exponent": -0.1, "exponent_low": -0.2,
             "exponent_high": -0.01, "p_value": 0.01}]
    table = format_study_table(rows, [80, 90])
    header, first, second, failed, comparison = table.splitlines()
    assert "exponent [95% CI]" in header
    # one line per target, the cost figures under their headers
    col = header.index("target")
    assert first[col:].split()[:4] == ["80%", "1.50e+15", "3.25", "1"] and first.startswith("power")
    assert second[:col].strip() == "" and second[col:].startswith("90%     not reachable (20% of fits)")
    assert failed.endswith("x" * 80) and len(header) < 120  # long messages do not widen the columns
    assert comparison.split()[:2] == ["power", "adv"] and "difference of exponents -0.1 [-0.2, -0.01]" in comparison


@pytest.mark.parametrize("study,message", [
    ({"fitz": {}}, "unknown key 'fitz' in study"),
    ({"compare": ["adversarial", "nope"]}, "study.compare"),
    ({"laws": ["cubic"]}, "unknown law 'cubic'"),
    ({"targets": [150]}, "invalid study target 150"),
    ({"bootstrap": -1}, "invalid study.bootstrap -1"),
    ({"eval_workers": 0}, "invalid study.eval_workers 0"),
])
def test_study_spec_errors_exit_2_before_running(tmp_path, mnist_like_dir, cli, study, message):
    path = _spec(tmp_path, mnist_like_dir, **study)
    code, out, err = cli("study", str(path))
    assert code == 2 and message in err and err.count("\n") == 1
    assert not (tmp_path / "runs").exists()  # nothing written


def test_study_needs_a_spec_or_paper_runs(cli):
    code, _, err = cli("study")
    assert code == 2 and "missing study spec" in err


def test_paper_runs_cli(tmp_path, paper_runs_csv, cli):
    code, out, err = cli("study", "--paper-runs", "--path", str(paper_runs_csv), "-o", str(tmp_path / "paper"),
                         "--bootstrap", "20", "--no-progress")
    assert code == 0, err
    assert (tmp_path / "paper" / "report.html").is_file()
    assert "report:" in out and "not reachable" in out.lower() or "n/r" in out


def test_parallel_evaluations_match_in_process_ones(tmp_path, mnist_like_dir, cli):
    """study.eval_workers: the extra evaluations run in worker processes and give the same claims."""
    import shutil

    from robustscale.evaluation import evaluate_run

    path = _spec(tmp_path, mnist_like_dir, eval_workers=2)
    data = yaml.safe_load(path.read_text())
    data["grid"]["train_subset"] = [128, 256]
    path.write_text(yaml.safe_dump(data))
    code, out, err = cli("study", str(path), "--executor", "inline", "--no-progress", "--json")
    assert code == 0, err
    assert "4 evaluations in 2 processes" in err and err.count("evaluated ") == 4
    for run_dir in sorted((tmp_path / "runs").glob("*-n*")):
        claim = json.loads((run_dir / "eval" / "apgd-ce-0.05.json").read_text())
        copy = tmp_path / "copy" / run_dir.name
        shutil.copytree(run_dir, copy)
        shutil.rmtree(copy / "eval")
        direct = evaluate_run(copy, attack="apgd-ce", n_examples=16, store=str(tmp_path / "direct.db"))
        assert claim["robust_acc"] == direct["robust_acc"] and claim["n_examples"] == 16


def test_eval_workers_flag_is_checked(tmp_path, mnist_like_dir, cli):
    code, _, err = cli("study", str(_spec(tmp_path, mnist_like_dir)), "--eval-workers", "0")
    assert code == 2 and "invalid --eval-workers 0" in err and not (tmp_path / "runs").exists()
