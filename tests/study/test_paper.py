"""The 2024 study reproduced from its published runs, checked against direct pandas/numpy computations
on the raw results.csv (skips when ../shared is absent)."""
from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
import pytest

from robustscale.scaling.identified import MAX_EXTRAPOLATION
from robustscale.errors import UserError
from robustscale.study.paper import format_summary_table, reproduce_paper

BOOTSTRAP = 100  # enough for intervals in a test; the committed page uses 1000
TARGETS = (60, 65, 70, 75)
SECTIONS = ("Overview", "Robust accuracy vs training compute", "Electricity cost vs compute",
            "Collapse of 1- and 2-step training", "Effect of generated data", "Effect of model size",
            "Effect of training length", "Extrapolation")


@pytest.fixture(scope="module")
def repro(paper_runs_csv, tmp_path_factory):
    root = tmp_path_factory.mktemp("paper")
    result = reproduce_paper(paper_runs_csv, root / "out", markdown=root / "docs" / "paper-reproduction.md",
                             bootstrap=BOOTSTRAP, seed=0, targets=TARGETS, progress=False,
                             command="robustscale study --paper-runs --path results.csv")
    return result, root


@pytest.fixture(scope="module")
def raw(paper_runs_csv):
    return pd.read_csv(paper_runs_csv)


def test_report_and_markdown_have_every_section(repro):
    result, root = repro
    assert result.report_path == root / "out" / "report.html"
    page = result.report_path.read_text(encoding="utf-8")
    for title in SECTIONS:
        assert title in page, title
    assert page.count("data:image/png;base64,") == 6  # figures are embedded: the file stands alone
    md = result.markdown_path.read_text(encoding="utf-8")
    for title in SECTIONS:
        assert re.search(rf"^## {re.escape(title)}", md, re.M), title
    assert f"**{BOOTSTRAP} resamples**" in md and "**seed 0**" in md
    assert "robustscale study --paper-runs --path results.csv" in md
    links = re.findall(r"!\[[^]]*\]\(([^)]+)\)", md)
    assert len(links) == 6
    for link in links:
        assert link.startswith("figures/paper/") and link.endswith(".png")
        png = result.markdown_path.parent / link
        assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in result.figure_paths) == sorted(link.split("/")[-1] for link in links)
    assert not list(root.rglob("*.tmp"))  # atomic writes leave nothing behind


def test_collapse_counts_match_pandas(repro, raw):
    result, _ = repro
    table = result.tables["collapse"]
    one_step = raw[(raw["at_steps"] == 1) & (raw["aa_robust_acc"] < 10)]
    assert int(table.loc[table["attack_steps"] == 1, "n_collapsed"].sum()) == len(one_step)
    expected = (raw.assign(c=raw["aa_robust_acc"] < 10).groupby(["at", "at_steps", "epochs"])
                .agg(n=("c", "size"), c=("c", "sum"), pgd=("pgd40_robust_acc", "mean")).reset_index())
    merged = table.merge(expected, left_on=["method", "attack_steps", "epochs"],
                         right_on=["at", "at_steps", "epochs"], validate="one_to_one")
    assert len(merged) == len(expected) == len(table)
    assert (merged["n_runs"] == merged["n"]).all()
    assert (merged["n_collapsed"] == merged["c"]).all()
    np.testing.assert_allclose(merged["pgd40_mean"], merged["pgd"])
    multi = raw[(raw["at_steps"] > 1) & (raw["aa_robust_acc"] < 10)]
    assert len(result.tables["collapsed_multistep"]) == len(multi)
    md = result.markdown_path.read_text(encoding="utf-8")
    assert f"{len(multi)} run(s) with more steps collapse too" in md
    # Every collapsed run is left out of the group fits and counted as excluded.
    all_fit = result.group("all").fits["power"]
    assert all_fit.n_excluded == int((raw["aa_robust_acc"] < 10).sum())
    assert all_fit.n == len(raw) - all_fit.n_excluded


def test_generated_data_pairs_match_independent_merge(repro, raw):
    result, _ = repro
    keys = ["model", "at", "at_steps", "epochs"]
    with_synth = raw[raw["synthetic_data"]][keys + ["aa_robust_acc"]]
    without = raw[~raw["synthetic_data"]][keys + ["aa_robust_acc"]]
    m = with_synth.merge(without, on=keys, suffixes=("_s", "_n"))
    ok = m[(m["aa_robust_acc_s"] >= 10) & (m["aa_robust_acc_n"] >= 10)]
    gain = ok["aa_robust_acc_s"] - ok["aa_robust_acc_n"]

    pairs = result.tables["generated_data_pairs"]
    assert len(pairs) == len(m)  # 159 synthetic runs, each with its CIFAR-10-only twin
    row = result.tables["generated_data_gain"].iloc[0]
    assert row["n_pairs"] == len(ok)
    assert row["n_collapsed_pairs"] == len(m) - len(ok)
    assert row["gain_mean"] == pytest.approx(gain.mean())
    assert row["gain_median"] == pytest.approx(gain.median())
    assert row["gain_min"] == pytest.approx(gain.min())
    assert row["gain_max"] == pytest.approx(gain.max())
    assert row["share_positive"] == pytest.approx((gain > 0).mean())
    # Per training length too.
    for ep in (110, 400):
        sub = result.tables["generated_data_gain"].set_index("subset").loc[f"{ep} epochs"]
        assert sub["gain_mean"] == pytest.approx(gain[ok["epochs"] == ep].mean())
    md = result.markdown_path.read_text(encoding="utf-8")
    assert f"gain **{gain.mean():+.2f} pp** AA on average" in md


def test_training_length_pairs_match_independent_merge(repro, raw):
    result, _ = repro
    keys = ["model", "at", "at_steps", "synthetic_data"]
    m = raw[raw["epochs"] == 400].merge(raw[raw["epochs"] == 110], on=keys, suffixes=("_l", "_s"))
    ok = m[(m["aa_robust_acc_l"] >= 10) & (m["aa_robust_acc_s"] >= 10)]
    row = result.tables["epochs_gain"].iloc[0]
    assert row["n_pairs"] == len(ok)
    assert row["gain_mean"] == pytest.approx((ok["aa_robust_acc_l"] - ok["aa_robust_acc_s"]).mean())


def test_model_size_pairs_match_independent_merge(repro, raw):
    result, _ = repro
    r = raw.assign(arch=raw["model"].str.replace("_dm", "", regex=False), dm=raw["model"].str.endswith("_dm"))
    keys = ["dm", "at", "at_steps", "epochs", "synthetic_data"]
    big = r[r["arch"] == "wide_resnet70_16"].merge(r[r["arch"] == "wide_resnet28_10"], on=keys, suffixes=("_b", "_s"))
    ok = big[(big["aa_robust_acc_b"] >= 10) & (big["aa_robust_acc_s"] >= 10)]
    row = result.tables["model_size_gain"].set_index("subset").loc["WRN-70-16 vs WRN-28-10"]
    assert row["n_pairs"] == len(ok)
    assert row["gain_mean"] == pytest.approx((ok["aa_robust_acc_b"] - ok["aa_robust_acc_s"]).mean())


def test_electricity_exponent_is_near_one(repro, raw):
    result, _ = repro
    fit = result.electricity
    # Independent least squares in log-log space on the raw table's units.
    flops = raw["train_flops"] * 1e12 * raw["epochs"] * 4
    usd = raw["train_electricity_cost"] * raw["epochs"]
    slope = np.polyfit(np.log(flops), np.log(usd), 1)[0]
    assert fit.params["alpha"] == pytest.approx(slope, rel=1e-9)
    assert abs(fit.params["alpha"] - 1) < 0.1
    lo, hi = fit.ci["alpha"]
    assert lo <= fit.params["alpha"] <= hi and hi - lo < 0.1


def test_only_identified_laws_carry_numbers_and_only_ok_laws_are_extrapolated(repro):
    result, _ = repro
    md = result.markdown_path.read_text(encoding="utf-8")
    rows = [r for r in result.summary_rows() if r["converged"]]
    statuses = {r["status"] for r in rows}
    # On the published runs no saturating law is identified (E or alpha at a bound), the frontier power law is.
    assert {"ok", "not identified"} <= statuses
    for r in rows:
        g = result.group(r["key"])
        fit = g.fits[r["law"]]
        if r["status"] == "not identified":
            assert r["exponent"] is None and r["asymptote_acc"] is None and r["r2"] is None, r["group"]
            assert f"not identified: {r['status_reason']}" in md
        else:
            assert r["exponent"] == pytest.approx(fit.params["alpha"])
        for t in TARGETS:
            if r["status"] != "ok":  # a law the runs reject or do not pin down is never solved for a target
                assert not r[f"reachable_{t}"] and r[f"compute_flops_{t}"] is None
            elif r[f"reachable_{t}"]:
                assert fit.predict([r[f"compute_flops_{t}"]])[0] == pytest.approx(t, abs=1e-6)
    front = next(r for r in result.summary_rows() if r["key"] == "frontier" and r["law"] == "power")
    # The power law with a positive exponent on the frontier is ok; targets within the refusal limit get a number,
    # those further out (the 6.75e24 FLOPs, 2.1e5x the largest run) are refused with no number.
    assert front["status"] == "ok" and front["exponent"] > 0
    fit = result.group("frontier").fits["power"]
    for t in TARGETS:
        factor = fit.solve_for(t) / fit.x_range[1]
        if factor <= MAX_EXTRAPOLATION:
            assert front[f"reachable_{t}"] and front[f"status_{t}"] == "ok"
        else:
            assert front[f"status_{t}"] == "beyond reach" and front[f"compute_flops_{t}"] is None
            assert "refusal limit" in front[f"reason_{t}"]
    assert front["status_75"] == "beyond reach"


def test_extrapolated_costs_use_the_runs_hours_per_flop_and_paper_prices(repro):
    result, _ = repro
    runs = result.runs
    g = result.group("frontier")
    fit = g.fits["power"]
    fitted = runs.loc[fit.fitted_index]
    hours_per_flop = float(np.median(fitted["device_hours"] / fitted["train_flops"]))
    row = next(r for r in result.summary_rows() if r["key"] == "frontier" and r["law"] == "power")
    # 75 % lies beyond the refusal limit (no number); 60 % is solved: its costs follow from the runs' hours per FLOP
    assert row["compute_flops_75"] is None and row["status_75"] == "beyond reach"
    flops = row["compute_flops_60"]
    assert flops == pytest.approx(fit.solve_for(60))
    assert row["device_hours_60"] == pytest.approx(flops * hours_per_flop)
    assert row["energy_kwh_60"] == pytest.approx(row["device_hours_60"] * 0.300)  # 300 W per GPU
    assert row["electricity_usd_60"] == pytest.approx(row["energy_kwh_60"] * 1.58 * 0.12)
    assert row["cloud_usd_low_60"] == pytest.approx(row["device_hours_60"] * 0.43)
    assert row["cloud_usd_high_60"] == pytest.approx(row["device_hours_60"] * 1.46)
    assert row["compute_flops_60_low"] <= flops
    # The runs' own cost per FLOP: the paper's electricity follows from the same chain.
    usd_per_flop = np.median(runs["electricity_usd"] / runs["train_flops"])
    assert usd_per_flop == pytest.approx(np.median(runs["device_hours"] / runs["train_flops"]) * 0.3 * 1.58 * 0.12)


def test_summary_rows_and_terminal_table(repro):
    result, _ = repro
    rows = result.summary_rows()
    assert len(rows) == 2 * len(result.groups) == 20  # all runs, frontier, 8 grid groups x 2 laws
    for r in rows:
        for key in ("group", "law", "exponent", "exponent_low", "exponent_high", "asymptote_acc", "n_runs"):
            assert key in r
        for t in TARGETS:
            assert f"compute_flops_{t}" in r and f"electricity_usd_{t}" in r and f"device_hours_{t}" in r
        for v in r.values():  # JSON-safe
            assert not (isinstance(v, float) and not math.isfinite(v))
    text = format_summary_table(rows)
    lines = text.splitlines()
    assert "FLOPs to 75% AA" in lines[0] and "asymptote AA [%]" in lines[0] and "[USD]" in lines[0]
    assert len(lines) == 2 + len(rows) + 1 and lines[-1].startswith("targets without a number")
    # Aligned: every column of the header starts where the dashes of its column start.
    starts = [m.start() for m in re.finditer(r"-+", lines[1])]
    assert lines[0].index("law") == starts[1]
    assert any("not reached" in line or "refused" in line or "not ident." in line for line in lines[2:-1])


@pytest.mark.parametrize("kwargs, message", [
    ({"targets": (60, 100)}, "invalid target 100"),
    ({"targets": ()}, "no targets"),
    ({"bootstrap": -1}, "invalid bootstrap -1"),
])
def test_bad_arguments_are_user_errors(paper_runs_csv, tmp_path, kwargs, message):
    with pytest.raises(UserError, match=message):
        reproduce_paper(paper_runs_csv, tmp_path / "out", progress=False, **kwargs)
    assert not (tmp_path / "out").exists()


def test_missing_or_foreign_file_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="not found"):
        reproduce_paper(tmp_path / "nope.csv", tmp_path / "out", bootstrap=0, progress=False)
    other = tmp_path / "other.csv"
    other.write_text("a,b\n1,2\n")
    with pytest.raises(UserError, match="not the study's results.csv"):
        reproduce_paper(other, tmp_path / "out", bootstrap=0, progress=False)
