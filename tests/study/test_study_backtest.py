"""The study's own back-test (no training: a family of runs drawn from a known law): it runs per law and family,
goes into study.json as JSON, into the report as a section, and labels the targets with the back-tested reach."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd

from robustscale.study.fits import backtest_records, fit_records, fit_study, study_backtests
from robustscale.study.report import _backtest_section
from robustscale.study.run import StudyFit, StudyOptions


def _family(n=18, seed=0):
    rng = np.random.default_rng(seed)
    x = np.logspace(12, 13.5, n)
    acc = 100 - (30 + 40 * (x / 1e12) ** -0.5)
    obs = acc + rng.standard_normal(n) * np.sqrt(acc * (100 - acc) / 1000 + 1.0)
    return pd.DataFrame({"name": [f"r{i}" for i in range(n)], "family": "adv", "method": "pgd", "train_flops": x,
                         "apgd_ce_robust_acc": obs, "apgd_ce_robust_acc_n_examples": 1000,
                         "device_hours": x / 1e12})


def test_study_backtest_is_recorded_reported_and_labels_the_targets():
    df = _family()
    opts = StudyOptions(fits=[StudyFit("adversarial", {"method": ["pgd"]}, "apgd_ce_robust_acc", "adv")],
                        laws=("power", "saturating"), bootstrap=200, seed=0, device_type="cpu", targets=(60.0,))
    bts = study_backtests(df, opts)
    sat = bts["saturating"]["adversarial"]
    assert sat.n_train == 12 and sat.n_test == 6  # the cheapest two thirds fitted, the rest predicted
    records = backtest_records(bts)
    json.dumps(records, allow_nan=False)  # study.json stays valid JSON
    assert {r["law"] for r in records} == {"power", "saturating"}
    section = _backtest_section(bts)
    assert section.title.startswith("Back-test") and section.table is not None
    fits, _, extrapolations = fit_study(df, opts, None, bts)
    recs = fit_records(df, opts, fits, extrapolations)
    labelled = [t for r in recs for t in (r.get("targets") or []) if t.get("reach")]
    for t in labelled:  # every solved target says where it lies against the back-tested reach
        assert "back-tested" in t["reach"] or t["reach"] == "within the runs"
