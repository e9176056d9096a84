"""The CLI answers fast and consistently: --help / --version without torch, one-line argparse errors, one flag
name per concept, train --help lists the config keys."""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from robustscale import cli
from robustscale.commands.parsers import fit as fit_parser
from robustscale.config import TrainConfig

SRC = Path(__file__).resolve().parents[1] / "src"
HEAVY = ("torch", "timm", "pandas", "scipy", "matplotlib", "sqlalchemy")


def _subcommands(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out.append(prefix + (name,))
                out += _subcommands(sub, prefix + (name,))
    return out


COMMAND_LINES = _subcommands(cli.build_parser())


def _imported(args: list[str], python_args: tuple[str, ...] = ("-m", "robustscale")) -> set[str]:
    """Top-level modules ``python -X importtime -m robustscale ARGS`` imports (read from its stderr)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-X", "importtime", *python_args, *args], capture_output=True,
                          text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    names = set()
    for line in proc.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            names.add(line.rsplit("|", 1)[1].strip().split(".")[0])
    assert "robustscale" in names  # the importtime lines were read
    return names


def test_help_and_version_import_no_heavy_library():
    for args in (["--help"], ["--version"]):
        heavy = _imported(args) & set(HEAVY)
        assert not heavy, f"robustscale {' '.join(args)} imports {sorted(heavy)}"


def test_every_subcommand_help_imports_no_heavy_library():
    # One interpreter for all of them (each start costs ~0.1 s; torch would cost seconds and fail the check).
    script = ("import sys, contextlib, io\nfrom robustscale import cli\n"
              f"for line in {[list(c) for c in COMMAND_LINES]!r}:\n"
              "    with contextlib.redirect_stdout(io.StringIO()):\n"
              "        try:\n            cli.main(line + ['--help'])\n"
              "        except SystemExit as exc:\n            assert exc.code == 0, (line, exc.code)\n"
              f"print(sorted(m for m in {list(HEAVY)!r} if m in sys.modules))\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "[]", f"sub-command --help imported {proc.stdout.strip()}"
    assert len(COMMAND_LINES) >= len(cli.COMMANDS) + 6  # runs and sweep actions were walked too


def test_fitting_and_pricing_import_no_training_code():
    # `fit` and `extrapolate` price compute with the cost model but train nothing: running them (their command
    # modules, the fitting package, the price table) imports neither torch nor timm (docs/architecture.md).
    script = ("import robustscale.scaling, robustscale.cost, robustscale.commands.fit, "
              "robustscale.commands.extrapolate; robustscale.cost.CostModel.from_yaml(preset='paper-2024')")
    heavy = _imported([], ("-c", script)) & {"torch", "timm"}
    assert not heavy, f"the fitting code imports {sorted(heavy)}"


def test_every_subcommand_has_a_description():
    parser = cli.build_parser()
    for line in COMMAND_LINES:
        sub = parser
        for name in line:
            sub = next(a for a in sub._actions if isinstance(a, argparse._SubParsersAction)).choices[name]
        assert sub.description, f"robustscale {' '.join(line)} has no description"
        assert "%%" not in sub.format_help(), f"robustscale {' '.join(line)} --help prints a literal %%"


def test_argparse_errors_are_one_line_naming_the_subcommand(capsys):
    cases = [(["fit", "runs.csv", "--law", "nope"], "robustscale fit: error: argument --law: invalid choice"),
             (["fit", "runs.csv", "--nope"], "robustscale fit: error: unrecognized arguments: --nope"),
             (["runs", "show"], "robustscale runs show: error: the following arguments are required: name"),
             (["nope"], "robustscale: error: argument <command>: invalid choice")]
    for argv, start in cases:
        with pytest.raises(SystemExit) as exc:
            cli.main(argv)
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith(start), err
        prog = start.split(": error")[0]
        assert err.rstrip().endswith(f"(see `{prog} --help`)")


def test_train_help_lists_every_config_key_with_its_default(capsys):
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    text = capsys.readouterr().out
    defaults = TrainConfig()
    for f in dataclasses.fields(TrainConfig):
        assert f"--{f.name.replace('_', '-')} " in text, f.name
    assert "--attack-steps 10;" in text and defaults.attack_steps == 10
    assert "--method pgd (standard|pgd|trades|fgsm_rs|n_fgsm|grad_align)" in text


def test_one_flag_name_per_concept():
    """--flops-per-second everywhere (sweep plan's --flop-rate an alias); --paper-runs [PATH] everywhere."""
    parser = cli.build_parser()
    for line in COMMAND_LINES:
        sub = parser
        for name in line:
            sub = next(a for a in sub._actions if isinstance(a, argparse._SubParsersAction)).choices[name]
        flags = {s for a in sub._actions for s in a.option_strings}
        if "--flop-rate" in flags:
            assert "--flops-per-second" in flags
        usage = sub.format_usage()
        assert "--flop-rate" not in usage and "--path" not in usage or line == ("runs", "import-paper")
    args = parser.parse_args(["sweep", "plan", "spec.yaml", "--flop-rate", "1e12"])
    assert args.flop_rate == 1e12  # the old name still works
    for argv in (["plan", "--paper-runs", "results.csv"], ["study", "--paper-runs", "results.csv"],
                 ["leaderboard", "--paper-runs", "results.csv"], ["plan", "--paper-runs", "--path", "results.csv"]):
        args = parser.parse_args(argv)
        assert args.paper_runs is True and args.path == "results.csv", argv
    args = parser.parse_args(["leaderboard", "--paper-runs"])
    assert args.paper_runs is True and args.path is None


def test_bench_peak_switch_reads_true_by_default(capsys):
    with pytest.raises(SystemExit):
        cli.main(["bench", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--peak, --no-peak" in text and "--no-peak (default: True)" not in text
    assert "--json print JSON instead of a table (default" not in text


def test_seed_sd_help_states_the_fit_s_assumption():
    from robustscale.scaling.identified import SEED_SD_POINTS

    assert fit_parser.SEED_SD_POINTS_HELP == SEED_SD_POINTS


def _study_store(output_dir: Path) -> str:
    """A results store as a study leaves it: standard runs with clean accuracy; PGD runs with APGD-CE on all six
    and AutoAttack on the two largest; two TRADES runs (too few for a law)."""
    from robustscale.store import open_store

    st = open_store(None, output_dir=str(output_dir))
    for method, sizes in (("standard", (1024, 2048, 4096, 8192, 16384, 32768)),
                          ("pgd", (1024, 2048, 4096, 8192, 16384, 32768)), ("trades", (1024, 2048))):
        for i, n in enumerate(sizes):
            cfg = TrainConfig(name=f"{method}-n{n}", method=method, train_subset=n, epochs=2, dataset="fashion_mnist",
                              model="wide_resnet16_1", eps=0.1, output_dir=str(output_dir))
            st.start_run(cfg, None)
            x = 1e10 * n / 1024
            wiggle = (-1) ** i * 0.4
            rec = {"train_images_seen": 2 * n, "wall_seconds": n / 100, "device_hours": n / 3.6e5, "train_flops": x,
                   "clean_acc": 100 - 30 * (x / 1e10) ** -0.2 + wiggle, "clean_acc_n_examples": 1000}
            st.finish_run(cfg.name, rec)
            # robust headlines come from the run's evaluations (schema.headline), as a study records them
            if method != "standard":
                st.record_evaluation(cfg.name, {"attack": "apgd-ce", "eps": 0.1, "n_examples": 1000,
                                                "robust_acc": 100 - 70 * (x / 1e10) ** -0.1 + wiggle,
                                                "claim_path": "eval/apgd-ce-0.1.json"})
            if method == "pgd" and i >= 4:
                st.record_evaluation(cfg.name, {"attack": "aa-standard", "eps": 0.1, "n_examples": 50,
                                                "robust_acc": 100 - 72 * (x / 1e10) ** -0.1,
                                                "claim_path": "eval/aa-standard-0.1.json"})
    return str(output_dir / "runs.db")


def test_defaults_on_a_study_store_fit_each_family_with_its_own_metric(tmp_path, capsys):
    """`fit runs.db` with no flags: clean accuracy for standard training, APGD-CE (on 6 runs, not AutoAttack on 2)
    for PGD, the error-power law; TRADES (2 runs) is named as not fitted; `report` draws the same and writes."""
    db = _study_store(tmp_path / "runs")
    assert cli.main(["fit", db, "--bootstrap", "0", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["law"] == "error-power"
    assert out["y_per_group"] == {"method=pgd": "apgd_ce_robust_acc", "method=standard": "clean_acc"}
    assert [n["group"] for n in out["not_fitted"]] == ["method=trades"]
    alpha = {f["label"]: f["params"]["alpha"] for f in out["fits"]}
    assert alpha["method=standard"] == pytest.approx(0.2, abs=0.02)  # the law the runs were made from
    assert alpha["method=pgd"] == pytest.approx(0.1, abs=0.02)
    assert cli.main(["report", db, "-o", str(tmp_path / "r.html"), "--bootstrap", "0", "--group-by", "method"]) == 0
    assert capsys.readouterr().out.startswith("wrote ")
    html = (tmp_path / "r.html").read_text()
    assert "Groups not fitted" in html and "method=trades" in html
    assert "error-power law" in html and "each group its own" in html
    # --y still means one metric for every group, and a plain table keeps the old defaults
    assert cli.main(["fit", db, "--bootstrap", "0", "--y", "clean_acc", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["y"] == "clean_acc"


def test_backtest_on_a_study_store_judges_each_family_by_its_own_metric(tmp_path, capsys):
    """`backtest --runs runs.db` with no --y: as `fit`, clean accuracy for standard training and APGD-CE for PGD
    (AutoAttack is on 2 runs only), and the error-power law among the defaults."""
    db = _study_store(tmp_path / "runs")
    assert cli.main(["backtest", "--runs", db, "--bootstrap", "50", "--fraction", "0.84", "--law", "error-power",
                     "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    by_method = {r["group"]["method"]: r for r in out["results"]}
    assert {m: r["y"] for m, r in by_method.items()} == {"pgd": "apgd_ce_robust_acc", "standard": "clean_acc"}
    assert all(r["n_train"] == 5 and r["n_test"] == 1 for r in by_method.values())
    # TRADES (2 runs) cannot be split: named, and the other families are back-tested all the same
    assert [s["group"] for s in out["not_backtested"]] == ["method=trades (apgd_ce_robust_acc), error-power"]


def test_plan_on_a_study_store_is_the_studys_what_to_run_next(tmp_path, capsys, monkeypatch):
    """`plan --runs runs.db` with no --y plans each method as the study's "what to run next" does (one computation,
    plan.plan_family): the same recipes and predictions on the same runs; labels follow the metric planned."""
    from robustscale.plan import FAMILY_BOOTSTRAP
    from robustscale.scaling import load_runs
    from robustscale.store import open_store
    from robustscale.study.next import NEXT_FACTORS, next_runs
    from robustscale.study.run import StudyFit, StudyOptions

    monkeypatch.setenv("ROBUSTSCALE_FLOPS_CACHE", str(tmp_path / "flops.json"))
    assert StudyOptions().bootstrap == FAMILY_BOOTSTRAP  # the same default resamples in both
    st = open_store(None, output_dir=str(tmp_path / "runs"))
    for i, epochs in enumerate((2, 3, 5, 8, 13, 20)):  # one model, k = 10: D varies, from 1024-image epochs
        cfg = TrainConfig(name=f"pgd-e{epochs}", method="pgd", train_subset=1024, epochs=epochs,
                          dataset="fashion_mnist", model="wide_resnet16_1", eps=0.1, output_dir=str(tmp_path / "runs"))
        st.start_run(cfg, None)
        seen = 1024 * epochs
        st.finish_run(cfg.name, {"train_images_seen": seen, "train_images": 1024, "model_parameters": 175_066,
                                 "train_flops": 3.3e8 * seen, "wall_seconds": seen / 100, "clean_acc": 80.0,
                                 "clean_acc_n_examples": 1000})
        st.record_evaluation(cfg.name, {"attack": "apgd-ce", "eps": 0.1, "n_examples": 1000,
                                        "robust_acc": 100 - (20 + 60 * (seen / 1024) ** -0.3) + (-1) ** i * 0.2,
                                        "claim_path": "eval/apgd-ce-0.1.json"})
    db = str(tmp_path / "runs" / "runs.db")
    df = load_runs(db)
    opts = StudyOptions(fits=[StudyFit("adversarial", {"method": ["pgd"]}, "apgd_ce_robust_acc", "pgd")],
                        bootstrap=40, seed=0)
    (rec,) = next_runs(df, opts)
    largest = float(df["train_flops"].max())
    budgets = ",".join(repr(f * largest) for f in NEXT_FACTORS)
    assert cli.main(["plan", "--runs", db, "--budget-flops", budgets, "--bootstrap", "40", "--top", "3",
                     "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["y_per_method"] == {"pgd": "apgd_ce_robust_acc"}
    (fam,) = out["families"]
    assert fam["status"] == "ok" and fam["plan"]["y"] == "apgd_ce_robust_acc"
    assert fam["plan"]["compute_model"]["epoch_images"] == rec["epoch_images"] == 1024  # the family's training set
    keys = ("identified", "status", "model_parameters", "samples_seen", "epochs", "attack_steps", "predicted_acc",
            "predicted_acc_ci", "recipes")
    assert len(fam["plan"]["budgets"]) == len(rec["budgets"]) == len(NEXT_FACTORS)
    for ours, theirs in zip(fam["plan"]["budgets"], rec["budgets"]):
        assert {k: ours.get(k) for k in keys} == {k: theirs.get(k) for k in keys}
        assert ours["by_group"][0].get("conditional") == theirs["by_group"][0].get("conditional")
    assert any(b["recipes"] or b["by_group"][0].get("conditional") for b in rec["budgets"])  # numbers compared
    # the text names the metric planned, never AutoAttack
    assert cli.main(["plan", "--runs", db, "--budget-flops", budgets, "--bootstrap", "40"]) == 0
    text = capsys.readouterr().out
    assert "method=pgd, judged on APGD-CE robust accuracy" in text and "AutoAttack" not in text
    assert cli.main(["plan", "--runs", db, "--budget-flops", budgets, "--bootstrap", "40",
                     "--y", "apgd_ce_robust_acc", "--conditional"]) == 0
    text = capsys.readouterr().out
    assert "AutoAttack" not in text and "APGD-CE robust accuracy" in text
    assert cli.main(["plan", "--runs", db, "--budget-flops", budgets, "--group-by", "model"]) == 2
    assert "--group-by model on a results store goes with --y" in capsys.readouterr().err
