"""Every printing path obeys the one rulebook (scaling/identified): a source the runs do not identify (an exponent
interval containing 0, E at its bound, two values of samples seen) prints its reason, never the number; --json
carries status and reason; targets beyond the refusal limit are refused; back-tests measure coverage."""
from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest

from robustscale.errors import UserError
from robustscale.scaling import extrapolate, fit_law
from robustscale.scaling.backtest import backtest, format_backtests
from robustscale.scaling.identified import BEYOND_REACH, MAX_EXTRAPOLATION, NOT_IDENTIFIED, OK, identify, reach

BOOT = 100


def _flat(n=12, seed=0):
    """Accuracy with no trend in compute (noise only): the power law's exponent interval contains 0."""
    rng = np.random.default_rng(seed)
    x = np.logspace(15, 17, n)
    return pd.DataFrame({"name": [f"r{i}" for i in range(n)], "train_flops": x,
                         "aa_robust_acc": 50 + rng.standard_normal(n), "device_hours": x / 1e12 / 3600})


def _no_floor(n=10):
    """error = 40 (x / 1e15)^-0.5 exactly: the saturating law's floor E runs to its bound."""
    x = np.logspace(15, 17, n)
    return pd.DataFrame({"name": [f"r{i}" for i in range(n)], "train_flops": x,
                         "aa_robust_acc": 100 - 40 * (x / 1e15) ** -0.5, "device_hours": x / 1e12 / 3600})


def _numbers(text: str) -> set[str]:
    return set(re.findall(r"\d+\.\d+(?:e[+-]\d+)?|\d+e[+-]\d+", text))


def test_exponent_interval_containing_zero_is_not_identified():
    fit = fit_law(_flat(), law="power", bootstrap=BOOT, seed=0)
    lo, hi = fit.ci["alpha"]
    assert lo < 0 < hi  # the premise, computed from the bootstrap itself
    ident = identify(fit)
    assert ident.status == NOT_IDENTIFIED and "contains 0" in ident.reason


def test_reach_labels_and_refusal():
    assert reach(0.5).label == "within the runs" and not reach(1.0).refused
    r = reach(2.0)
    assert not r.refused and r.label.startswith("extrapolation 2x") and "not back-tested" in r.label
    assert "within the back-tested reach (2.5x)" in reach(2.0, backtested=2.5).label
    assert "beyond the back-tested reach (1.5x)" in reach(2.0, backtested=1.5).label
    far = reach(MAX_EXTRAPOLATION * 1.01)
    assert far.refused and far.to_dict()["factor"] is None and str(MAX_EXTRAPOLATION * 1.01) not in far.label


@pytest.mark.parametrize("make, law, reason", [(_flat, "power", "contains 0"),
                                               (_no_floor, "saturating", "E at its lower bound")])
def test_fit_and_extrapolate_cli_print_the_reason_not_the_number(tmp_path, cli, make, law, reason):
    df = make()
    path = tmp_path / "runs.csv"
    df.to_csv(path, index=False)
    fit = fit_law(df, law=law, bootstrap=BOOT, seed=0)
    hidden = {f"{fit.params[k]:.3g}" for k in ("alpha",)}  # the values a table would print (3 digits)
    code, out, err = cli("fit", path, "--law", law, "--bootstrap", BOOT)
    assert code == 0, err
    assert reason in out and not (hidden & _numbers(out)), out
    code, out, err = cli("fit", path, "--law", law, "--bootstrap", BOOT, "--json")
    data = json.loads(out)
    rec = data["fits"][0] if "fits" in data else data[0]
    assert rec["status"] == NOT_IDENTIFIED and reason in rec["status_reason"]
    assert rec["params"] == {} and rec["ci"] == {}  # AIC / R2 describe the point fit and stay
    code, out, err = cli("extrapolate", path, "--law", law, "--bootstrap", BOOT, "--target", 60)
    assert code == 0, err
    assert reason in out and "FLOPs (" not in out
    code, out, err = cli("extrapolate", path, "--law", law, "--bootstrap", BOOT, "--target", 60, "--json")
    recs = json.loads(out)
    recs = recs.get("extrapolations", recs) if isinstance(recs, dict) else recs
    assert all(r["status"] == NOT_IDENTIFIED and r["values"] == {} for r in recs)


def test_report_draws_and_prints_no_rejected_law(tmp_path, cli):
    df = _flat()
    path = tmp_path / "runs.csv"
    df.to_csv(path, index=False)
    out_html = tmp_path / "report.html"
    code, out, err = cli("report", path, "-o", out_html, "--law", "power", "--bootstrap", BOOT, "--target", 60)
    assert code == 0, err
    html = out_html.read_text(encoding="utf-8")
    fit = fit_law(df, law="power", bootstrap=BOOT, seed=0)
    assert "contains 0" in html and f"{fit.params['alpha']:.3g}" not in html


def test_targets_beyond_the_refusal_limit_are_refused():
    x = np.logspace(15, 17, 10)
    noise = np.exp(0.02 * np.random.default_rng(0).standard_normal(10))  # an exact law has a zero-width bootstrap
    df = pd.DataFrame({"name": [f"r{i}" for i in range(10)], "train_flops": x,
                       "aa_robust_acc": 100 - (30 + 40 * (x / 1e15) ** -0.5) * noise, "device_hours": x / 1e12 / 3600})
    fit = fit_law(df, law="saturating", bootstrap=200, seed=0)
    assert identify(fit).status == OK, identify(fit).reason
    far = float(fit.predict([x[-1] * MAX_EXTRAPOLATION * 3])[0])
    (ex,) = extrapolate(fit, far, df, device_type="cpu")
    d = ex.to_dict()
    assert d["status"] == BEYOND_REACH and d["values"] == {} and "refusal limit" in d["status_reason"]


def test_leaderboard_text_and_drawing_follow_the_rulebook():
    from robustscale.leaderboard.report import drawable, extrapolation_line, law_summary

    df = _no_floor()
    fit = fit_law(df, law="saturating", bootstrap=BOOT, seed=0, frontier=True)
    assert identify(fit).status == NOT_IDENTIFIED
    line = law_summary(fit)
    assert line.startswith("not identified") and f"{fit.params['alpha']:.3g}" not in line and not drawable(fit)
    (ex,) = extrapolate(fit, 95, df, flops_per_second=1e14, device_type="cpu")
    assert "not extrapolated" in extrapolation_line(ex) and "FLOPs" not in extrapolation_line(ex)


def test_what_to_run_next_prints_the_reason():
    from robustscale.study.next import format_next_table

    rec = {"family": "f", "label": "fam", "y": "aa_robust_acc", "status": NOT_IDENTIFIED, "reason": "r",
           "budgets": [{"budget_flops": 1e15, "factor_vs_largest_run": 2.0, "identified": False,
                        "status": NOT_IDENTIFIED, "reason": "no optimum along D (only 2 distinct ...)"}]}
    text = format_next_table([rec])
    assert "not identified: no optimum along D" in text


# ---------------------------------------------------------------------- back-tests
def _known_law(n=24, seed=0):
    """Runs from a known saturating law with binomial noise on 10,000 test images and a 1-point seed SD."""
    rng = np.random.default_rng(seed)
    x = np.logspace(15, 17.5, n)
    acc = 100 - (30 + 40 * (x / 1e15) ** -0.5)
    obs = acc + rng.standard_normal(n) * np.sqrt(acc * (100 - acc) / 10_000 + 1.0)
    return pd.DataFrame({"name": [f"r{i}" for i in range(n)], "train_flops": x, "aa_robust_acc": obs,
                         "aa_n_examples": 10_000, "model_parameters": np.repeat([1e6, 2e6, 4e6, 8e6], n // 4)})


def test_backtest_covers_a_true_law_and_reports_reach():
    (bt,) = backtest(_known_law(), "compute", laws=["saturating"], bootstrap=200)
    assert bt.n_train == 16 and bt.n_test == 8 and bt.status == OK, bt.reason
    k, m = bt.coverage()
    assert m == 8 and k >= 6  # a true law's 95% intervals cover nearly all held-out runs (P(k < 6) < 1%)
    errs = bt.errors()
    assert np.all(np.abs(errs) < 5)
    assert 1 < bt.reach() <= max(r["factor"] for r in bt.rows)
    assert "8" in format_backtests([bt]) and "reach" in format_backtests([bt])


def test_backtest_of_an_unidentified_law_predicts_nothing():
    df = _flat(18)
    df["model_parameters"] = 1e6
    (bt,) = backtest(df, "compute", laws=["power"], bootstrap=BOOT)
    assert bt.status == NOT_IDENTIFIED and not bt.predicted and bt.to_dict()["coverage"] is None


@pytest.mark.parametrize("split, kwargs, message", [
    ("compute", {"fraction": 0.2}, "back-test split 'compute' leaves 4 runs to fit (the saturating law needs 6)"),
    ("year", {}, "no column"),
])
def test_backtest_bad_splits(split, kwargs, message):
    with pytest.raises(UserError, match=re.escape(message) if "leaves" in message else "year"):
        backtest(_known_law(), split, laws=["saturating"], bootstrap=0, **kwargs)


def test_backtest_cli_bad_split_is_one_line(tmp_path, cli):
    path = tmp_path / "runs.csv"
    _known_law(4).to_csv(path, index=False)  # 3 runs of the smaller models to fit: the saturating law needs 6
    code, out, err = cli("backtest", "--runs", path, "--split", "model-size", "--law", "saturating")
    assert code == 2 and out == "" and err.count("\n") == 1
    assert "back-test split 'model-size'" in err and "to fit" in err and "to predict" in err
