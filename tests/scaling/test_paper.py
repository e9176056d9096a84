"""The 2024 study's published runs (skipped when ../shared is absent)."""
from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest

from robustscale.compute import CostModel
from robustscale.errors import UserError
from robustscale.schema import RUN_COLUMNS
from robustscale.scaling import fit_groups, fit_law, load_paper_runs, load_runs


@pytest.fixture(scope="module")
def paper(paper_runs_csv):
    return load_paper_runs(paper_runs_csv)


def test_unit_conversion(paper, paper_runs_csv):
    raw = pd.read_csv(paper_runs_csv)
    assert len(paper) == len(raw) == 319
    assert set(RUN_COLUMNS) <= set(paper.columns)
    assert paper.train_flops.between(5e17, 7e19).all()
    np.testing.assert_allclose(paper.train_flops, raw.train_flops * 1e12 * raw.epochs * 4)
    np.testing.assert_allclose(paper.electricity_usd, raw.train_electricity_cost * raw.epochs)
    # $0.12/kWh x 300 W x GPU-hours x PUE 1.58 = cost  ->  energy (IT) and GPU-hours back-derived
    np.testing.assert_allclose(paper.energy_kwh * 0.12 * 1.58, paper.electricity_usd)
    np.testing.assert_allclose(paper.device_hours * 0.3, paper.energy_kwh)
    np.testing.assert_allclose(paper.train_images_seen, 50_000 * raw.epochs)
    np.testing.assert_array_equal(paper.collapsed, raw.aa_robust_acc < 10)
    np.testing.assert_array_equal(paper.method, raw["at"])
    np.testing.assert_array_equal(paper.clean_acc, raw.eval_acc)
    assert (paper.source == "debenedetti2024").all() and paper.name.is_unique
    assert (paper.eps == 8 / 255).all() and (paper.dataset == "cifar10").all() and (paper.norm == "linf").all()
    # the cumulative codecarbon figure is kept under a name that says what it is, never as emissions_kg
    assert paper.emissions_kg.isna().all()
    np.testing.assert_allclose(paper.emissions_kg_cumulative_unreliable, raw.train_emissions)


def test_cost_model_paper_preset_gives_back_the_study_dollars(paper):
    cm = CostModel.from_yaml(preset="paper-2024")
    for row in paper.sample(5, random_state=0).itertuples():
        assert cm.estimate_energy_kwh("gpu", row.device_hours) == pytest.approx(row.energy_kwh)
        assert cm.cost("gpu", row.device_hours, row.energy_kwh)["electricity_usd"] == pytest.approx(row.electricity_usd)


def test_electricity_grows_about_linearly_with_flops(paper):
    fit = fit_law(paper, "power", y="electricity_usd", bootstrap=300)
    assert 0.9 < fit.params["alpha"] < 1.05
    lo, hi = fit.ci["alpha"]
    assert lo < fit.params["alpha"] < hi and hi - lo < 0.1


def test_robust_accuracy_exponents_are_small(paper):
    fits = fit_groups(paper, "at,synthetic_data", law="power", exclude_below=10)
    assert len(fits) == 4 and sum(f.n for f in fits) == int((~paper.collapsed).sum())
    assert all(abs(f.params["alpha"]) < 0.1 for f in fits)  # accuracy barely moves with compute
    assert all(f.n_excluded == n for f, n in zip(fits, paper.groupby(["method", "synthetic_data"]).collapsed.sum()))


def test_load_runs_detects_the_paper_table(paper_runs_csv, paper):
    df = load_runs(paper_runs_csv)
    pd.testing.assert_frame_equal(df, paper)


def test_url_is_downloaded_only_when_given(paper_runs_csv, monkeypatch, tmp_path):
    import urllib.request

    calls = []

    class Resp(io.BytesIO):
        def __enter__(self):
            return self

        def __exit__(self, *a):
            return False

    def fake_urlopen(url, timeout=None):
        calls.append(url)
        return Resp(paper_runs_csv.read_bytes())

    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    df = load_paper_runs("https://example.org/results.csv")
    assert calls == ["https://example.org/results.csv"] and len(df) == 319
    load_paper_runs(paper_runs_csv)
    assert len(calls) == 1
    other = tmp_path / "other.csv"
    pd.DataFrame({"a": [1]}).to_csv(other, index=False)
    with pytest.raises(UserError, match="not the study's results.csv"):
        load_paper_runs(other)
