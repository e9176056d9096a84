"""The display tables of the paper reproduction: DataFrames of formatted strings."""
from __future__ import annotations

import math
from typing import Any

import pandas as pd

from ...scaling import compare_exponents
from ...scaling.identified import BEYOND_REACH, identify
from .result import METHOD_NAMES, PaperReproduction, group_key, interval_text, num_text, pct_text


def display_frame(df, columns: dict[str, tuple[str, Any]]):
    """Select and rename ``columns`` (``source -> (header, formatter)``) into display strings."""
    out = pd.DataFrame()
    for src, (header, f) in columns.items():
        out[header] = [f(v) for v in df[src]] if src in df.columns else []
    return out


PCT1 = lambda v: pct_text(v, 1)  # noqa: E731
PCT2 = lambda v: pct_text(v, 2)  # noqa: E731
INTEGER = lambda v: "-" if v is None or (isinstance(v, float) and math.isnan(v)) else str(int(v))  # noqa: E731
TEXT = str


def gain_display(df):
    return display_frame(df, {"subset": ("comparison", TEXT), "n_pairs": ("pairs", INTEGER),
                         "n_collapsed_pairs": ("pairs with a collapsed run (left out)", INTEGER),
                         "gain_mean": ("mean gain [pp]", PCT2), "gain_median": ("median [pp]", PCT2),
                         "gain_min": ("min [pp]", PCT2), "gain_max": ("max [pp]", PCT2),
                         "share_positive": ("share > 0 [%]", lambda v: pct_text(100 * v, 0)),
                         "flops_ratio": ("FLOPs ratio (median)", lambda v: num_text(v, 3))})


def levels_display(df, level_header: str):
    cols = {"level": (level_header, TEXT)}
    if "parameters" in df.columns:
        cols["parameters"] = ("parameters [M]", lambda v: f"{v / 1e6:.1f}")
    cols.update({"n_runs": ("runs", INTEGER), "n_collapsed": ("collapsed", INTEGER), "aa_mean": ("mean AA [%]", PCT2),
                 "aa_median": ("median AA [%]", PCT2), "aa_max": ("max AA [%]", PCT2),
                 "clean_mean": ("mean clean [%]", PCT2)})
    return display_frame(df, cols)


def fit_table(result: PaperReproduction, law: str):
    rows = []
    for g in result.groups:
        fit = g.fits[law]
        row = {"group": g.label, "fitted runs": str(fit.n), "collapsed (left out)": str(fit.n_excluded)}
        if not fit.converged:
            row.update({"α [95% CI]": "fit failed: " + fit.message})
            rows.append(row)
            continue
        ident = identify(fit)
        row["AIC"] = f"{fit.aic:.1f}"  # the point fit's, comparable between the two laws of a group
        if not ident.shows_parameters:  # a law the data do not pin down: why, never its numbers
            row.update({"α [95% CI]": f"{ident.status}: {ident.reason}"})
            rows.append(row)
            continue
        row["α [95% CI]"] = interval_text(fit.params["alpha"], *fit.ci.get("alpha", (None, None)))
        if law == "power":
            row["C"] = num_text(fit.params["C"])
        else:
            row["asymptote 100 − E [%]"] = interval_text(fit.params["y_max"], *fit.ci.get("y_max", (None, None)))
        row["R²"] = f"{fit.r2:.3f}"
        row["FLOPs range"] = f"{num_text(fit.x_range[0])} – {num_text(fit.x_range[1])}"
        row["status"] = "ok" if ident.ok else f"{ident.status}: {ident.reason}"
        rows.append(row)
    return pd.DataFrame(rows).fillna("")


def _reach_cell(ex, q: str = "compute_flops") -> str:
    if not ex.converged:
        return "fit failed"
    if ex.status == BEYOND_REACH:
        return f"refused: {ex.status_reason}"
    if not ex.solved:
        return f"not extrapolated ({ex.status})"
    if not ex.reachable:
        share = "" if math.isnan(ex.share_reachable) else \
            f"; reachable in {100 * ex.share_reachable:.0f}% of bootstrap fits"
        why = f"asymptote {ex.asymptote[0]:.1f}%" if math.isfinite(ex.asymptote[0]) else "exponent ≤ 0"
        return f"not reachable ({why}{share})"
    point, low, high = ex.values[q]
    return interval_text(point, low, high)


def extrapolation_tables(result: PaperReproduction, law: str):
    """(FLOPs matrix group x target, detailed cost rows for the reachable cases)."""
    matrix = []
    detail = []
    for g in result.groups:
        row = {"group": g.label}
        for t in result.targets:
            ex = g.extrapolations[law][t]
            row[f"FLOPs to {t:g}% [95% CI]"] = _reach_cell(ex)
            if ex.solved and ex.reachable:
                v = ex.values
                detail.append({
                    "group": g.label, "target AA [%]": f"{t:g}",
                    "FLOPs": interval_text(*v["compute_flops"]),
                    "× largest run": num_text(ex.factor),
                    "reach": ex.reach,
                    "GPU-hours": interval_text(*v["device_hours"]),
                    "GPU-years": num_text(v["device_hours"][0] / (24 * 365.25)),
                    "energy [kWh]": interval_text(*v["energy_kwh"]),
                    "electricity [USD]": interval_text(*v["electricity_usd"]),
                    "cloud [USD]": f"{num_text(v['cloud_usd_low'][0])} – {num_text(v['cloud_usd_high'][0])}",
                    "bootstrap share reaching": pct_text(100 * ex.share_reachable, 0) + "%"
                    if not math.isnan(ex.share_reachable) else "-",
                })
        matrix.append(row)
    return pd.DataFrame(matrix), pd.DataFrame(detail)



def exponent_comparison_table(result: PaperReproduction):
    """Generated data vs none: difference of power-law exponents per method and epochs."""
    rows = []
    for g in result.groups:
        if g.group.get("synthetic_data") is not True:
            continue
        b = result.group(group_key({**g.group, "synthetic_data": False}))
        fa, fb = g.fits["power"], b.fits["power"]
        if not all(f.converged and f.has_bootstrap and identify(f).shows_parameters for f in (fa, fb)):
            continue
        c = compare_exponents(fa, fb)
        rows.append({"method, epochs": f"{METHOD_NAMES.get(g.group['method'], g.group['method'])}, "
                                       f"{g.group['epochs']} ep",
                     "α with generated data": f"{c.a_value:.4f}", "α without": f"{c.b_value:.4f}",
                     "difference [95% CI]": f"{c.diff:+.4f} [{c.low:+.4f}, {c.high:+.4f}]",
                     "p (bootstrap)": f"{c.p_value:.3f}"})
    return pd.DataFrame(rows)

