"""``robustscale leaderboard``: the table, the report, the exports, and one clear line for bad input.

The FLOP measurement is replaced by the hand formula (checked against real measurements in
test_compute.py) so that these tests take seconds; the RobustBench files come from ../shared.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from robustscale.leaderboard import compute as lb_compute
from robustscale.leaderboard.compute import ArchFlops

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
MODEL_INFO = SHARED / "robustbench-cifar10-linf"
PAPER_RUNS = SHARED / "paper-runs" / "results.csv"  # optional: the 2024 runs figure is checked when present
# Small but varied: sourced, ranges, based_on, two phases, excluded, a 2018-2024 spread.
SUBSET = ("Madry2018Towards", "Zhang2019Theoretically", "Carmon2019Unlabeled", "Rice2020Overfitting",
          "Wong2020Fast", "Gowal2020Uncovering_70_16_extra", "Rebuffi2021Fixing_70_16_cutmix_ddpm",
          "Wang2023Better_WRN-70-16", "Bartoldson2024Adversarial_WRN-94-16", "Amini2024MeanSparse_S-WRN-94-16",
          "Hendrycks2019Using", "Zhang2020Towards", "Standard", "Huang2021Exploring")


_REAL_MEASURE = lb_compute.measure_architecture


def fake_measure(spec, input_size, num_classes):
    """F of a CIFAR WRN from its conv formula (other nets: 1 GFLOP), Bin = F, B = 2F."""
    if isinstance(spec, str) and (spec.startswith("wrn-") or spec.startswith("wide_resnet")):
        name = spec.removeprefix("wrn-").removeprefix("wide_resnet").removesuffix("_dm").replace("_", "-")
        depth, width = map(int, name.split("-"))
        n = (depth - 4) // 6
        f = lb_compute.wrn_stage_forward_flops(16, [16 * width, 32 * width, 64 * width], [n] * 3, num_classes,
                                               input_size)
    elif isinstance(spec, dict) and "wrn_stages" in spec:
        return _REAL_MEASURE(spec, input_size, num_classes)  # the conv formula already
    else:
        f = 1e9 * (input_size / 32) ** 2
    return ArchFlops(str(spec), f, f, 2 * f, 1e7, "fake")


@pytest.fixture
def model_info(tmp_path, monkeypatch):
    if not MODEL_INFO.is_dir():
        pytest.skip(f"RobustBench model_info files not available at {MODEL_INFO}")
    monkeypatch.setattr(lb_compute, "measure_architecture", fake_measure)
    folder = tmp_path / "model_info"
    folder.mkdir()
    for name in SUBSET:
        shutil.copy(MODEL_INFO / f"{name}.json", folder)
    # an entry the recipe table does not know: listed as "no recipe", not dropped
    data = json.loads((MODEL_INFO / "Wong2020Fast.json").read_text())
    (folder / "Someone2025New.json").write_text(json.dumps({**data, "autoattack_acc": "50.00"}))
    return folder


def test_table_report_and_exports(cli, model_info, tmp_path):
    report, table, infos = tmp_path / "report", tmp_path / "ledger.csv", tmp_path / "with_compute"
    paper = ("--paper-runs", PAPER_RUNS) if PAPER_RUNS.is_file() else ()
    code, out, err = cli("leaderboard", "--model-info", model_info, "--report", report, "--export", table,
                         "--export-model-info", infos, *paper, "--bootstrap", "40", "--jobs", "1")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["#", "entry", "year"]
    order = [line.split()[1] for line in lines[2:2 + len(SUBSET) + 1]]
    assert order[:2] == ["Amini2024MeanSparse_S-WRN-94-16", "Bartoldson2024Adversarial_WRN-94-16"]  # by AA
    assert "no recipe" in next(line for line in lines if "Someone2025New" in line)
    assert "excluded" in next(line for line in lines if "Zhang2020Towards" in line)
    assert "15 entries: " in out and "with sourced recipes" in out
    assert "saturating:" in out and "power:" in out
    assert (report / "leaderboard.html").is_file()
    for name in ("field-vs-compute", "frontier-over-time") + (("field-and-2024-runs",) if paper else ()):
        assert (report / f"{name}.png").stat().st_size > 1000 and (report / f"{name}.svg").is_file()
    df = pd.read_csv(table)
    assert len(df) == len(SUBSET) + 1 and df["aa_robust_acc"].is_monotonic_decreasing
    row = df.set_index("name").loc["Rice2020Overfitting"]
    assert row["recipe_status"] == "sourced" and row["train_flops_low"] == row["train_flops_high"]
    exported = json.loads((infos / "Rice2020Overfitting.json").read_text())
    original = json.loads((model_info / "Rice2020Overfitting.json").read_text())
    assert {k: exported[k] for k in original} == original  # RobustBench's fields unchanged
    assert exported["train_flops"] == pytest.approx(row["train_flops"], rel=1e-12)
    assert exported["flops_per_image"] > 0 and "robust_overfitting" in exported["recipe_source"]
    unknown = json.loads((infos / "Someone2025New.json").read_text())
    assert unknown["train_flops"] is None and unknown["recipe_status"] == "no recipe"


def test_json_counts_and_fits(cli, model_info, tmp_path):
    code, out, err = cli("leaderboard", "--model-info", model_info, "--json", "--bootstrap", "0")
    assert code == 0, err
    data = json.loads(out)
    assert data["counts"]["entries"] == len(SUBSET) + 1
    assert data["counts"]["excluded"] == 1 and data["counts"]["no recipe"] == 1
    status = {e["name"]: e["recipe_status"] for e in data["entries"]}
    assert status["Standard"] == "range" and status["Wong2020Fast"] == "sourced"
    assert set(data["fits"]) == {"saturating", "power"}
    for fit in data["fits"].values():
        assert "identified" in fit
    assert all(len(v) == 3 for v in data["extrapolations"].values())  # 75, 80, 85 %


def test_our_runs_join_the_table(cli, model_info, tmp_path):
    runs = tmp_path / "runs.csv"
    pd.DataFrame({"name": ["ours_wrn16"], "model": ["wide_resnet16_4"], "aa_robust_acc": [41.0],
                  "clean_acc": [70.0], "train_flops": [3e16], "aa_n_examples": [1000]}).to_csv(runs, index=False)
    code, out, err = cli("leaderboard", "--model-info", model_info, "--runs", runs, "--bootstrap", "0")
    assert code == 0, err
    assert "measured" in next(line for line in out.splitlines() if "ours_wrn16" in line)
    assert "1 of our runs" in out


@pytest.mark.parametrize("setup, message", [
    ("empty", "no model-info JSON files"),
    ("bad_json", "not valid JSON"),
    ("bad_number", "autoattack_acc"),
])
def test_bad_model_info_exits_2_names_the_file_and_writes_nothing(cli, model_info, tmp_path, setup, message):
    folder = tmp_path / "bad"
    folder.mkdir()
    bad = folder / "Broken2021Entry.json"
    if setup == "bad_json":
        shutil.copy(model_info / "Wong2020Fast.json", folder)
        bad.write_text('{"architecture": "WideResNet-28-10", ')
    elif setup == "bad_number":
        bad.write_text(json.dumps({"architecture": "WRN", "clean_acc": "80", "autoattack_acc": "high"}))
    report, table = tmp_path / "report", tmp_path / "out.csv"
    code, out, err = cli("leaderboard", "--model-info", folder, "--report", report, "--export", table)
    assert code == 2
    assert err.startswith("error: ") and message in err and len(err.strip().splitlines()) == 1
    if setup != "empty":
        assert str(bad) in err
    assert not report.exists() and not table.exists()


@pytest.mark.parametrize("args, message", [
    ((), "give --model-info DIR"),
    (("--export", "ledger.xlsx"), "invalid --export"),
    (("--bootstrap", "-1"), "invalid --bootstrap"),
    (("--device-type", "TPU"), "unknown device type 'TPU'"),
])
def test_bad_options_exit_2(cli, model_info, tmp_path, args, message):
    src = () if not args else ("--model-info", str(model_info))
    code, out, err = cli("leaderboard", *src, *args)
    assert code == 2 and message in err


def test_download_without_network_is_one_line(cli, monkeypatch, tmp_path):
    import urllib.error
    import urllib.request

    def offline(*a, **k):
        raise urllib.error.URLError("no network in tests")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    code, out, err = cli("leaderboard", "--download")
    assert code == 2 and "cannot download" in err and "--model-info" in err
    assert not (tmp_path / "cache" / "robustscale" / "robustbench-cifar10-linf").exists()


def test_json_gives_both_totals_and_linked_sources(cli, model_info):
    code, out, err = cli("leaderboard", "--model-info", model_info, "--json", "--bootstrap", "0")
    assert code == 0, err
    rows = {r["name"]: r for r in json.loads(out)["entries"]}
    rice = rows["Rice2020Overfitting"]  # loss.backward() in its attack: spent > needed
    assert rice["implementation_status"] == "code"
    assert rice["train_flops_needed"] < rice["train_flops"]
    assert rice["saving"] == pytest.approx(1 - rice["train_flops_needed"] / rice["train_flops"], rel=1e-12)
    attack = next(f for f in rice["fact_sources"] if f["fact"] == "attack_backward")
    assert attack["value"] == "full" and attack["urls"] == [
        "https://github.com/locuslab/robust_overfitting/blob/HEAD/train_cifar.py"]
    assert rows["Someone2025New"]["train_flops_needed"] is None  # no recipe, no total
