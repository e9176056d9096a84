"""`robustscale fit` / `extrapolate` from the command line, including every user mistake."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from robustscale.compute import CostModel
from robustscale.scaling import extrapolate, fit_law, load_runs
from robustscale.scaling import io as scaling_io


@pytest.fixture
def grouped_csv(runs, tmp_path):
    a = runs("power", n=30, noise=0.05, seed=1, alpha=0.1, C=0.6)  # 25-50% over the compute range
    b = runs("power", n=30, noise=0.05, seed=2, alpha=0.3, C=1.6e-4)
    a["method"], b["method"] = "pgd", "standard"
    df = pd.concat([a, b], ignore_index=True)
    df["name"] = [f"r{i}" for i in range(len(df))]
    path = tmp_path / "runs.csv"
    df.to_csv(path, index=False)
    return path


def assert_user_error(result, *fragments):
    code, out, err = result
    assert code == 2, (code, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    for f in fragments:
        assert f in lines[0], (f, lines[0])


def test_fit_table_and_json(cli, grouped_csv):
    code, out, err = cli("fit", grouped_csv, "--group-by", "at", "--bootstrap", "200")
    assert code == 0, err
    assert "y = aa_robust_acc [%], x = train_flops [FLOPs]" in out
    assert "method=pgd" in out and "method=standard" in out
    assert "exponent differences" in out  # pgd vs standard
    code, out, _ = cli("fit", grouped_csv, "--group-by", "at", "--bootstrap", "200", "--json")
    data = json.loads(out)
    fits = {f["group"]["method"]: f for f in data["fits"]}
    ref = fit_law(pd.read_csv(grouped_csv).query("method == 'pgd'"), "power", bootstrap=200)
    assert fits["pgd"]["params"]["alpha"] == pytest.approx(ref.params["alpha"])
    assert fits["pgd"]["ci"]["alpha"] == pytest.approx(list(ref.ci["alpha"]))
    (cmp,) = data["comparisons"]
    assert cmp["ci"][1] < 0 < 0.3 - 0.1 and cmp["exponent"] == "alpha"


def test_fit_reads_parquet_mapping_and_store(cli, runs, tmp_path, monkeypatch):
    df = runs("saturating", n=30, seed=3).rename(columns={"train_flops": "flops", "aa_robust_acc": "robust"})
    path = tmp_path / "runs.parquet"
    df.to_parquet(path)
    code, out, err = cli("fit", path, "--map", "flops=train_flops,robust=aa_robust_acc", "--law", "saturating",
                         "--bootstrap", "0", "--json")
    assert code == 0, err
    assert json.loads(out)["fits"][0]["params"]["alpha"] == pytest.approx(0.3, rel=0.1)

    class FakeStore:
        def runs_frame(self):
            return runs("power", n=12, seed=4)

    opened = []
    monkeypatch.setattr(scaling_io, "open_store", lambda url, **kw: opened.append(url) or FakeStore())
    for url in ("sqlite:///tmp/x.db", "postgresql://u@h/db", str(tmp_path / "r.db")):
        assert len(load_runs(url)) == 12
    assert opened == ["sqlite:///tmp/x.db", "postgresql://u@h/db", str(tmp_path / "r.db")]


def test_fit_user_errors(cli, runs, tmp_path):
    df = runs("power", n=10, seed=5)
    path = tmp_path / "r.csv"
    df.to_csv(path, index=False)
    assert_user_error(cli("fit", path, "--y", "clean_acc"), "lacks column(s) clean_acc",
                      "columns: name, train_flops, aa_robust_acc")
    bad = df.copy()
    bad.loc[2, "train_flops"] = -1
    bad.to_csv(tmp_path / "neg.csv", index=False)
    assert_user_error(cli("fit", tmp_path / "neg.csv"), "non-positive train_flops", "run2")
    df.head(3).to_csv(tmp_path / "few.csv", index=False)
    assert_user_error(cli("fit", tmp_path / "few.csv", "--law", "saturating"), "3 run(s)", "at least 4 runs")
    one = df.assign(method=["pgd"] * 9 + ["trades"])
    one.to_csv(tmp_path / "one.csv", index=False)
    # A group too small to fit is reported as not fitted, with its reason; the other groups are fitted.
    code, out, err = cli("fit", tmp_path / "one.csv", "--group-by", "at", "--bootstrap", "0")
    assert code == 0 and "method=pgd" in out and "not fitted: method=trades: 1 run(s)" in out, (out, err)
    one.assign(method=["pgd"] * 2 + ["trades"] * 8).head(3).to_csv(tmp_path / "none.csv", index=False)
    assert_user_error(cli("fit", tmp_path / "none.csv", "--group-by", "at"), "no group could be fitted",
                      "group method=pgd", "group method=trades")
    df.assign(aa_robust_acc=np.nan).to_csv(tmp_path / "nan.csv", index=False)
    assert_user_error(cli("fit", tmp_path / "nan.csv"), "all 10 values of aa_robust_acc are missing")
    assert_user_error(cli("fit", path, "--map", "flops"), "invalid --map 'flops'")
    assert_user_error(cli("fit", path, "--map", "nope=x"), "--map names column(s) nope")
    assert_user_error(cli("fit", tmp_path / "missing.csv"), "runs table not found")
    (tmp_path / "r.xlsx").write_text("x")
    assert_user_error(cli("fit", tmp_path / "r.xlsx"), "unsupported runs table", "valid: .csv")
    assert_user_error(cli("fit", path, "--bootstrap", "-1"), "invalid --bootstrap -1")
    assert_user_error(cli("fit", path, "--law", "chinchilla"), "lacks column(s) model_parameters")
    assert_user_error(cli("fit", path, "--frontier", "--law", "chinchilla", "--x", "a,b"), "--frontier needs a law of one input")


def test_extrapolate_converts_compute_with_the_cost_model(cli, runs, tmp_path):
    df = runs("saturating", n=60, noise=0.02, seed=6)  # device_hours = FLOPs / 1e15 / 3600
    path = tmp_path / "r.csv"
    df.to_csv(path, index=False)
    code, out, err = cli("extrapolate", path, "--target", "65", "--bootstrap", "100", "--device-type", "H100",
                         "--json")
    assert code == 0, err
    (ex,) = json.loads(out)["extrapolations"]
    fit = fit_law(df, "saturating", exclude_below=10, bootstrap=100)
    C = fit.solve_for(65)
    cm = CostModel.from_yaml()
    hours = C / 1e15 / 3600
    energy = cm.price("H100").power_w * hours / 1000
    v = ex["values"]
    assert v["compute_flops"]["point"] == pytest.approx(C)
    assert v["device_hours"]["point"] == pytest.approx(hours)
    assert v["energy_kwh"]["point"] == pytest.approx(energy)
    assert v["emissions_kg"]["point"] == pytest.approx(energy * cm.carbon_intensity_kg_per_kwh)
    assert v["electricity_usd"]["point"] == pytest.approx(energy * cm.pue * cm.electricity_usd_per_kwh)
    assert v["cloud_usd_high"]["point"] == pytest.approx(hours * cm.price("H100").usd_per_hour_high)
    lo, hi = fit.solve_interval(65)["low"], fit.solve_interval(65)["high"]
    assert v["compute_flops"]["low"] == pytest.approx(lo) and v["device_hours"]["high"] == pytest.approx(hi / 3.6e18)
    assert ex["reachable"] and ex["share_reachable"] == 1.0
    # user-given throughput: images/s x median FLOPs per image (1e12 in these runs)
    (r,) = extrapolate(fit, 65, df, throughput=50.0, device_type="H100")
    assert r.values["device_hours"][0] == pytest.approx(C / (50.0 * 1e12) / 3600)
    (r,) = extrapolate(fit, 65, df, flops_per_second=2e14, device_type="A100-80GB")
    assert r.values["device_hours"][0] == pytest.approx(C / 2e14 / 3600)
    # above the asymptote (70%): reported, not extrapolated
    code, out, err = cli("extrapolate", path, "--target", "75", "--bootstrap", "100")
    assert code == 0, err
    assert "not reachable under this law: asymptote 69.8 [68.4, 71.5] < 75" in out and "of bootstrap fits" in out
    assert "compute [FLOPs]" not in out


def test_extrapolate_user_errors(cli, runs, tmp_path):
    df = runs("saturating", n=20, seed=7).drop(columns=["device_hours"])
    path = tmp_path / "r.csv"
    df.to_csv(path, index=False)
    base = ("extrapolate", path, "--bootstrap", "0")
    assert_user_error(cli(*base, "--target", "60"), "no device_hours", "--throughput")
    assert_user_error(cli(*base, "--target", "60", "--throughput", "10", "--flops-per-second", "1e14"),
                      "either --throughput or --flops-per-second")
    assert_user_error(cli(*base, "--target", "150", "--throughput", "10"), "invalid --target 150")
    assert_user_error(cli(*base, "--target", "60", "--throughput", "10", "--device-type", "TPU"),
                      "unknown device type 'TPU'", "H100")
    assert_user_error(cli(*base, "--target", "60", "--throughput", "10", "--price-preset", "cheap"),
                      "unknown price preset 'cheap'")


def test_fit_and_extrapolate_show_no_numbers_for_a_law_the_runs_do_not_identify(cli, runs, tmp_path):
    # 4 runs for the saturating law's 3 parameters (the law interpolates them): not identified, whatever it prints.
    path = tmp_path / "few.csv"
    runs("saturating", n=4, seed=5).to_csv(path, index=False)
    code, out, err = cli("fit", path, "--law", "saturating", "--bootstrap", "100")
    assert code == 0, err
    (row,) = [line for line in out.splitlines() if line.startswith("all runs") or line.startswith("(all)")
              or "not identified:" in line]
    assert "not identified: 4 runs for 3 parameters" in row
    ref = fit_law(pd.read_csv(path), "saturating", bootstrap=100)
    assert f"{ref.params['alpha']:.3g}" not in row  # the point fit exists, but is not printed
    code, out, _ = cli("fit", path, "--law", "saturating", "--bootstrap", "100", "--json")
    (fit,) = json.loads(out)["fits"]
    assert fit["status"] == "not identified" and "4 runs for 3 parameters" in fit["status_reason"]
    code, out, err = cli("extrapolate", path, "--target", "60", "--bootstrap", "100")
    assert code == 0, err
    assert "not extrapolated: the law's status is not identified" in out and "compute [FLOPs]" not in out
    code, out, _ = cli("extrapolate", path, "--target", "60", "--bootstrap", "100", "--json")
    (ex,) = json.loads(out)["extrapolations"]
    assert ex["status"] == "not identified" and ex["values"] == {} and ex["reachable"] is False


def test_fit_flags_a_lack_of_fit_and_extrapolate_refuses_it(cli, tmp_path):
    # Accuracies on 1,000 test images each that saturate (error-power truth); the accuracy power law cannot follow.
    x = np.logspace(12, 14, 8)
    acc = np.random.default_rng(0).binomial(1000, 1 - 0.7 * (x / 1e12) ** -0.4) / 10.0
    path = tmp_path / "bend.csv"
    pd.DataFrame({"name": [f"r{i}" for i in range(8)], "train_flops": x, "aa_robust_acc": acc,
                  "aa_n_examples": 1000, "device_hours": x / 1e15}).to_csv(path, index=False)
    code, out, err = cli("fit", path, "--bootstrap", "100")
    assert code == 0, err
    assert "lack of fit, a trend not to extrapolate: residuals up to" in out
    code, out, err = cli("extrapolate", path, "--law", "power", "--target", "80", "--bootstrap", "100")
    assert code == 0, err
    assert "not extrapolated: the law's status is lack of fit" in out
    code, out, err = cli("extrapolate", path, "--law", "error-power", "--target", "80", "--bootstrap", "100")
    assert code == 0, err
    assert "not extrapolated" not in out and "compute [FLOPs]" in out  # the law the runs follow is solved


def test_seed_sd_sets_the_noise_the_lack_of_fit_test_allows(cli, tmp_path):
    # A true error-power law, each run off it by a seed effect of SD 0.8 points, on 10,000 test images each.
    rng = np.random.default_rng(11)
    x = np.logspace(17, 19.5, 30)
    acc = 100 - 60 * (x / 1e17) ** -0.05 + 0.8 * rng.standard_normal(30)
    measured = np.random.default_rng(12).binomial(10_000, acc / 100) / 100.0
    path = tmp_path / "seeds.csv"
    pd.DataFrame({"name": [f"r{i}" for i in range(30)], "train_flops": x, "aa_robust_acc": measured,
                  "aa_n_examples": 10_000}).to_csv(path, index=False)
    code, out, err = cli("fit", path, "--law", "error-power", "--bootstrap", "100")
    assert code == 0, err
    assert "else 1 points (assumed)" in out and "lack of fit" not in out
    code, out, err = cli("fit", path, "--law", "error-power", "--bootstrap", "100", "--seed-sd", "0")
    assert code == 0, err
    assert "a seed SD of 0 points (given)" in out and "lack of fit, a trend not to extrapolate" in out
    assert "a seed SD of 0, given" in out
    code, out, _ = cli("fit", path, "--law", "error-power", "--bootstrap", "100", "--seed-sd", "0", "--json")
    data = json.loads(out)
    assert data["seed_sd"] == 0 and data["fits"][0]["status"] == "lack of fit"
    assert_user_error(cli("fit", path, "--seed-sd", "-1"), "invalid --seed-sd -1")
