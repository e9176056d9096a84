"""The HTML report and its figures."""
from __future__ import annotations

import base64
import re

import numpy as np
import pandas as pd
import pytest

from robustscale.report import Section, write_report
from robustscale.report import plots
from robustscale.scaling import fit_groups


@pytest.fixture
def runs_df():
    """Two groups following saturating laws, with collapsed runs and cost columns."""
    rng = np.random.default_rng(0)
    frames = []
    for method, E in (("pgd", 45.0), ("trades", 40.0)):
        x = np.logspace(17.5, 19.8, 40) * np.exp(0.1 * rng.standard_normal(40))
        err = (E + 30 * (x / 3e17) ** -0.4) * np.exp(0.02 * rng.standard_normal(40))
        acc = 100 - err
        acc[:4] = rng.uniform(0, 8, 4)  # collapsed runs
        frames.append(pd.DataFrame({"name": [f"{method}{i}" for i in range(40)], "method": method,
                                    "train_flops": x, "aa_robust_acc": acc, "collapsed": acc < 10,
                                    "device_hours": x / 2e15 / 3600, "energy_kwh": x / 2e15 / 3600 * 0.3,
                                    "electricity_usd": x / 2e15 / 3600 * 0.3 * 0.19}))
    return pd.concat(frames, ignore_index=True)


def _images(text: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'src="data:image/png;base64,([^"]+)"', text)]


def test_write_report_is_self_contained_with_extra_sections(runs_df, tmp_path):
    extra_fig, (ax,) = plots.new_figure()
    ax.plot([1, 2], [3, 4])
    out = write_report(runs_df, tmp_path / "report.html", laws=("saturating",), group_by="method", bootstrap=50,
                       target=75, plots_dir=tmp_path / "plots", source="runs.csv",
                       sections=[Section("Study: training budget", text="What the study ran.\n\nSecond paragraph.",
                                         table=runs_df.head(3)[["name", "aa_robust_acc"]],
                                         figures=[("an extra figure", extra_fig, "extra")])])
    text = out.read_text()
    images = _images(text)
    assert len(images) >= 5 and all(img.startswith(b"\x89PNG") for img in images)
    assert not re.search(r'<img[^>]+src="(?!data:)', text)  # nothing fetched from elsewhere
    for needle in ("Fits: saturating law", "method=pgd", "method=trades", "Extrapolation to 75", "not reachable",
                   "Study: training budget", "<p>Second paragraph.</p>", "pgd0", "an extra figure"):
        assert needle in text, needle
    names = sorted(p.name for p in (tmp_path / "plots").iterdir())
    for stem in ("scaling-saturating", "extrapolation-saturating", "residuals-saturating", "cost", "extra"):
        assert f"{stem}.png" in names and f"{stem}.svg" in names, names
    assert not [n for n in names if n.endswith(".tmp")] and not list(tmp_path.glob(".*.tmp"))


def test_figures_label_axes_with_units_and_hollow_collapsed(runs_df):
    fits = fit_groups(runs_df, "method", law="saturating", exclude_below=10, bootstrap=30)
    fig = plots.plot_scaling(runs_df, fits)
    ax = fig.axes[0]
    assert ax.get_xlabel() == "total training compute [FLOPs]"
    assert ax.get_ylabel() == "AutoAttack robust accuracy [%]"
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    hollow = [c for c in ax.collections if len(c.get_facecolors()) == 0 and len(c.get_offsets())]
    assert sum(len(c.get_offsets()) for c in hollow) == int(runs_df.collapsed.sum())
    cost = plots.plot_cost(runs_df)
    assert [a.get_ylabel() for a in cost.axes] == ["energy [kWh]", "electricity cost [USD]"]
    ex = plots.plot_extrapolation(runs_df, fits, 50)  # reachable: a crossing star per group
    stars = [line for line in ex.axes[0].lines if line.get_marker() == "*"]
    assert len(stars) == 2 and all(line.get_ydata()[0] == 50 for line in stars)
    for f in (plots.plot_residuals(fits), plots.plot_exponents(fits)):
        assert f.axes[0].get_xlabel()


def test_report_cli(cli, runs_df, tmp_path):
    path = tmp_path / "runs.csv"
    runs_df.to_csv(path, index=False)
    code, out, err = cli("report", path, "-o", tmp_path / "r.html", "--law", "power", "--group-by", "method",
                         "--bootstrap", "50", "--target", "50")
    assert code == 0, err
    assert "wrote" in out and len(_images((tmp_path / "r.html").read_text())) >= 4
    code, _, err = cli("report", path, "-o", tmp_path / "r.pdf")
    assert code == 2 and err.strip().startswith("error: invalid -o") and len(err.strip().splitlines()) == 1
    code, _, err = cli("report", path, "-o", tmp_path / "r.html", "--law", "cubic")
    assert code == 2 and "unknown law 'cubic'" in err


def test_the_method_section_describes_the_laws_fitted_and_no_other(runs_df, tmp_path):
    """Only error-power fitted: the Method paragraph describes it, not the power or saturating law (#27)."""
    def method(laws):
        out = write_report(runs_df, tmp_path / "r.html", laws=laws, group_by="method", bootstrap=0, target=None)
        text = out.read_text()
        start = text.index("<h2>Method</h2>")
        return text[start:text.index("</p>", start)]

    only = method(("error-power",))
    assert "error-power: 100 - y = A x^-alpha" in only and "least squares of log(100 - y)" in only
    assert "saturating" not in only and "Huber" not in only and "chinchilla" not in only
    assert not re.search(r"(?<!error-)power:", only) and "bound (0 or 5)" not in only  # closed form: no bounds
    both = method(("power", "saturating"))
    assert "power: y = C x^alpha" in both and "saturating: error = 100 - y = E + A x^-alpha" in both
    assert "Huber" in both and "saturating fit whose exponent runs to its bound" in both and "error-power" not in both
