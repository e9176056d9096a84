"""The display tables of the paper reproduction: DataFrames of formatted strings."""
from __future__ import annotations

import math
from typing import Any

from ...scaling.identified import BEYOND_REACH, identify
from .result import METHOD_NAMES, PaperReproduction, _group_key, _interval, _num, _pct


def _display(df, columns: dict[str, tuple[str, Any]]):
    """Select and rename ``columns`` (``source -> (header, formatter)``) into display strings."""
    import pandas as pd

    out = pd.DataFrame()
    for src, (header, f) in columns.items():
        out[header] = [f(v) for v in df[src]] if src in df.columns else []
    return out


_P1 = lambda v: _pct(v, 1)  # noqa: E731
_P2 = lambda v: _pct(v, 2)  # noqa: E731
_INT = lambda v: "-" if v is None or (isinstance(v, float) and math.isnan(v)) else str(int(v))  # noqa: E731
_STR = str


def _gain_display(df):
    return _display(df, {"subset": ("comparison", _STR), "n_pairs": ("pairs", _INT),
                         "n_collapsed_pairs": ("pairs with a collapsed run (left out)", _INT),
                         "gain_mean": ("mean gain [pp]", _P2), "gain_median": ("median [pp]", _P2),
                         "gain_min": ("min [pp]", _P2), "gain_max": ("max [pp]", _P2),
                         "share_positive": ("share > 0 [%]", lambda v: _pct(100 * v, 0)),
                         "flops_ratio": ("FLOPs ratio (median)", lambda v: _num(v, 3))})


def _levels_display(df, level_header: str):
    cols = {"level": (level_header, _STR)}
    if "parameters" in df.columns:
        cols["parameters"] = ("parameters [M]", lambda v: f"{v / 1e6:.1f}")
    cols.update({"n_runs": ("runs", _INT), "n_collapsed": ("collapsed", _INT), "aa_mean": ("mean AA [%]", _P2),
                 "aa_median": ("median AA [%]", _P2), "aa_max": ("max AA [%]", _P2),
                 "clean_mean": ("mean clean [%]", _P2)})
    return _display(df, cols)


def _fit_table(result: PaperReproduction, law: str):
    import pandas as pd

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
        row["α [95% CI]"] = _interval(fit.params["alpha"], *fit.ci.get("alpha", (None, None)))
        if law == "power":
            row["C"] = _num(fit.params["C"])
        else:
            row["asymptote 100 − E [%]"] = _interval(fit.params["y_max"], *fit.ci.get("y_max", (None, None)))
        row["R²"] = f"{fit.r2:.3f}"
        row["FLOPs range"] = f"{_num(fit.x_range[0])} – {_num(fit.x_range[1])}"
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
    return _interval(point, low, high)


def _extrapolation_tables(result: PaperReproduction, law: str):
    """(FLOPs matrix group x target, detailed cost rows for the reachable cases)."""
    import pandas as pd

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
                    "FLOPs": _interval(*v["compute_flops"]),
                    "× largest run": _num(ex.factor),
                    "reach": ex.reach,
                    "GPU-hours": _interval(*v["device_hours"]),
                    "GPU-years": _num(v["device_hours"][0] / (24 * 365.25)),
                    "energy [kWh]": _interval(*v["energy_kwh"]),
                    "electricity [USD]": _interval(*v["electricity_usd"]),
                    "cloud [USD]": f"{_num(v['cloud_usd_low'][0])} – {_num(v['cloud_usd_high'][0])}",
                    "bootstrap share reaching": _pct(100 * ex.share_reachable, 0) + "%"
                    if not math.isnan(ex.share_reachable) else "-",
                })
        matrix.append(row)
    return pd.DataFrame(matrix), pd.DataFrame(detail)



def _exponent_comparison_table(result: PaperReproduction):
    """Generated data vs none: difference of power-law exponents per method and epochs."""
    import pandas as pd

    from ...scaling import compare_exponents

    rows = []
    for g in result.groups:
        if g.group.get("synthetic_data") is not True:
            continue
        b = result.group(_group_key({**g.group, "synthetic_data": False}))
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

