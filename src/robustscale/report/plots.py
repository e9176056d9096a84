"""Figures of scaling fits (matplotlib, no display: ``matplotlib.figure.Figure`` objects, Agg canvas).

- :func:`plot_scaling`: runs by group on log-log axes (collapsed runs hollow), fitted laws with
  bootstrap bands, and each group's Pareto frontier.
- :func:`plot_extrapolation`: the laws carried out to a target, the crossing marked (or the
  asymptote when the target is out of reach).
- :func:`plot_residuals`: observed minus fitted y of every fitted run.
- :func:`plot_cost`: energy and electricity vs compute with power-law fits.
- :func:`plot_exponents`: each group's exponent with its interval.
- :func:`plot_families`: several families, each with its own accuracy, on one compute axis (a study's
  central picture: standard training's clean accuracy vs adversarial training's robust accuracy).

Every function returns a Figure; :func:`save_figure` writes PNG and SVG, :func:`figure_png_base64`
gives the PNG for embedding in HTML.
"""
from __future__ import annotations

import base64
import io
import math
from pathlib import Path
from typing import Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FixedLocator, NullFormatter, ScalarFormatter

from ..rundir import write_bytes
from ..scaling import fit_law
from ..scaling.format import fmt, unit_of
from ..scaling.frontier import pareto_frontier
from ..scaling.identified import LACK_OF_FIT, MAX_EXTRAPOLATION, OK, identify

LABELS = {
    "train_flops": "total training compute",
    "aa_robust_acc": "AutoAttack robust accuracy",
    "pgd_robust_acc": "PGD robust accuracy",
    "apgd_ce_robust_acc": "APGD-CE robust accuracy",
    "fgsm_robust_acc": "FGSM robust accuracy",
    "clean_acc": "clean accuracy",
    "electricity_usd": "electricity cost",
    "energy_kwh": "energy",
    "device_hours": "device-hours",
    "emissions_kg": "emissions",
    "cloud_usd_low": "cloud cost (low)",
    "cloud_usd_high": "cloud cost (high)",
    "model_parameters": "model parameters",
    "train_images_seen": "training images seen",
}
COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#7f7f7f",
          "#bcbd22")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "h")


def axis_label(column: str) -> str:
    """``"train_flops"`` -> ``"total training compute [FLOPs]"``."""
    name = LABELS.get(column, column.replace("_", " "))
    unit = unit_of(column)
    return f"{name} [{unit}]" if unit else name


def metric_label(fits) -> str:
    """The y axis in words: the fits' one metric, or "accuracy [%] (each group its own metric)" (the legend
    then names each group's, :func:`group_label`)."""
    metrics = list(dict.fromkeys(f.y for f in fits))
    return axis_label(metrics[0]) if len(metrics) == 1 else "accuracy [%] (each group its own metric)"


def metric_name(fits) -> str:
    """The fits' metric in words, for captions: "APGD-CE robust accuracy", or "each group's own metric"."""
    metrics = list(dict.fromkeys(f.y for f in fits))
    return LABELS.get(metrics[0], metrics[0].replace("_", " ")) if len(metrics) == 1 else "each group's own metric"


def group_label(fit, fits) -> str:
    """A group's legend label; with its metric where the groups' metrics differ."""
    if len({f.y for f in fits}) == 1:
        return fit.label
    return f"{fit.label} ({LABELS.get(fit.y, fit.y.replace('_', ' '))})"


def new_figure(width: float = 7.5, height: float = 5.0, ncols: int = 1):
    fig = Figure(figsize=(width, height), dpi=110, layout="constrained")
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, list(axes)


def _x_column(fit) -> str:
    return fit.x if isinstance(fit.x, str) else "train_flops"


def _group_rows(df, fit) -> np.ndarray:
    mask = np.ones(len(df), dtype=bool)
    for col, value in fit.group.items():
        if isinstance(value, float) and math.isnan(value):
            mask &= df[col].isna().to_numpy()
        else:
            mask &= (df[col] == value).to_numpy()
    return mask


def _style(i: int) -> tuple[str, str]:
    return COLORS[i % len(COLORS)], MARKERS[i % len(MARKERS)]


def _y_limits(fits, target: float | None = None) -> tuple[float, float]:
    """Bottom just below the lowest fitted run (collapsed runs sit on that edge), top above the data."""
    ys = np.concatenate([np.asarray(f.y_values, float) for f in fits] or [np.ones(1)])
    ys = ys[np.isfinite(ys) & (ys > 0)]
    lo = float(ys.min()) / 1.25 if ys.size else 1.0
    hi = float(ys.max()) * 1.12 if ys.size else 100.0
    if target is not None:
        hi = max(hi, target * 1.12)
    if unit_of(fits[0].y) == "%":
        hi = min(hi, 100.0)
    return lo, hi


def _log_y(ax, y: str, lo: float, hi: float) -> None:
    ax.set_yscale("log")
    ax.set_ylim(lo, hi)
    if unit_of(y) == "%":
        ticks = [t for t in (1, 2, 5, 10, 15, 20, 25, 30, 35, 40, 45, 50, 55, 60, 65, 70, 75, 80, 85, 90, 95, 100)
                 if lo <= t <= hi]
        if len(ticks) > 10:
            ticks = [t for t in ticks if t % 10 == 0 or t < 10]
        if len(ticks) >= 2:
            ax.yaxis.set_major_locator(FixedLocator(ticks))
            ax.yaxis.set_major_formatter(ScalarFormatter())
            ax.yaxis.set_minor_formatter(NullFormatter())



def _compute_axes(ax, x: str, y: str, lo: float, hi: float, x_note: str = "", y_label: str | None = None) -> None:
    """Log compute on x, log accuracy/error on y in [lo, hi], labelled with units, major grid."""
    ax.set_xscale("log")
    _log_y(ax, y, lo, hi)
    ax.set_xlabel(axis_label(x) + x_note)
    ax.set_ylabel(y_label or axis_label(y))
    ax.grid(True, which="major", alpha=0.3)


def _scatter_group(ax, df, fit, i: int, x: str, floor: float, show_excluded: bool = True) -> bool:
    """Fitted runs filled; runs kept but not fitted (off the frontier) light; collapsed or excluded runs
    hollow, on the bottom edge when below it. Returns whether hollow markers were drawn."""
    color, marker = _style(i)
    rows = _group_rows(df, fit)
    index = df.index[rows]
    xs = np.asarray(df.loc[rows, x], dtype=float)
    ys = np.asarray(df.loc[rows, fit.y], dtype=float)
    fitted = index.isin(fit.fitted_index)
    kept = index.isin(fit.kept_index)
    collapsed = np.zeros(len(index), dtype=bool)
    if "collapsed" in df.columns:
        collapsed = df.loc[rows, "collapsed"].astype("boolean").fillna(False).to_numpy(bool)
    ok = np.isfinite(xs) & np.isfinite(ys) & (xs > 0)
    hollow = ok & (collapsed | ~kept)
    ax.scatter(xs[ok & fitted & ~hollow], ys[ok & fitted & ~hollow], s=22, color=color, marker=marker, alpha=0.8,
               edgecolor="white", linewidth=0.4, zorder=3)
    light = ok & kept & ~fitted & ~hollow
    if light.any():
        ax.scatter(xs[light], ys[light], s=18, color=color, marker=marker, alpha=0.25, linewidth=0, zorder=2)
    if show_excluded and hollow.any():
        ax.scatter(xs[hollow], np.maximum(ys[hollow], floor), s=24, facecolors="none", edgecolors=color,
                   marker=marker, linewidth=0.9, alpha=0.8, zorder=2, clip_on=False)
    return bool(show_excluded and hollow.any())


def _fit_line(ax, fit, i: int, x_lo: float, x_hi: float, n: int = 200, band: bool = True, ls: str = "-",
              label: str | None = None) -> None:
    if not fit.converged:
        return
    color, _ = _style(i)
    grid = np.logspace(math.log10(x_lo), math.log10(x_hi), n)
    yhat = fit.predict(grid)
    ax.plot(grid, yhat, color=color, lw=1.8, ls=ls, label=label, zorder=4)
    if band and fit.has_bootstrap:
        lo, hi = fit.predict_interval(grid)
        ax.fill_between(grid, lo, hi, color=color, alpha=0.15, linewidth=0, zorder=1)


def _legend(fig, ax, fits, hollow: bool, floor: float) -> None:
    handles, labels = ax.get_legend_handles_labels()
    if hollow:
        handles.append(Line2D([], [], ls="", marker="o", markerfacecolor="none", markeredgecolor="0.3"))
        unit = "%" if unit_of(fits[0].y) == "%" else ""
        labels.append(f"collapsed / excluded runs (hollow; those below {fmt(floor)}{unit} on the bottom edge)")
    if handles:
        fig.legend(handles, labels, fontsize=7.5, loc="outside lower center", ncols=1, frameon=False)


def _describe(fit) -> str:
    name = fit.exponent_name
    value = fit.params.get(name, float("nan"))
    ci = fit.ci.get(name)
    text = f"{name} = {fmt(value)}" + (f" [{fmt(ci[0])}, {fmt(ci[1])}]" if ci else "")
    if fit.law in ("saturating", "chinchilla"):
        ci = fit.ci.get("y_max")
        text += f", max {fmt(fit.params.get('y_max'))}%" + (f" [{fmt(ci[0])}, {fmt(ci[1])}]" if ci else "")
    return text


def _bands_note(fits) -> str:
    boot = [f for f in fits if f.has_bootstrap]
    return f"bands: {fits[0].level * 100:g}% bootstrap" if boot else "no bootstrap"


def plot_scaling(df, fits: Sequence, title: str | None = None, show_frontier: bool = True):
    """Runs and fitted laws over the range of the data (log-log), one color per group."""
    fig, (ax,) = new_figure(7.5, 5.6)
    x = _x_column(fits[0])
    y = fits[0].y
    lo, hi = _y_limits(fits)
    hollow = False
    for i, fit in enumerate(fits):
        color, marker = _style(i)
        hollow |= _scatter_group(ax, df, fit, i, x, lo)
        ident = identify(fit)
        if fit.converged and ident.shows_parameters:
            flag = "; lack of fit" if ident.status == LACK_OF_FIT else ""
            _fit_line(ax, fit, i, *fit.x_range, label=f"{group_label(fit, fits)}: {_describe(fit)}{flag}")
        elif fit.converged:  # a law the runs do not identify: no curve, no numbers
            ax.plot([], [], color=color, marker=marker, ls="", label=f"{group_label(fit, fits)}: {ident.status}")
        else:
            ax.plot([], [], color=color, marker=marker, ls="",
                    label=f"{group_label(fit, fits)}: fit did not converge ({fit.message})")
        if show_frontier and len(fit.kept_index) >= 2:
            part = df.loc[fit.kept_index]
            part = part[(part[x].astype(float) > 0)]
            front = pareto_frontier(part, x, fit.y)  # each group its own metric
            fx = np.r_[front[x].to_numpy(float), part[x].astype(float).max()]
            fy = np.r_[front[fit.y].to_numpy(float), front[fit.y].to_numpy(float)[-1]]
            ax.step(fx, fy, where="post", color=color, lw=0.9, ls=":", alpha=0.9, zorder=2)
    _compute_axes(ax, x, y, lo, hi, y_label=metric_label(fits))
    what = LABELS.get(y, y) if len({f.y for f in fits}) == 1 else "accuracy"
    ax.set_title(title or f"{what} vs compute, {fits[0].law} law per group\n"
                 f"({_bands_note(fits)}{'; dotted: Pareto frontier' if show_frontier else ''})", fontsize=9)
    _legend(fig, ax, fits, hollow, lo)
    return fig


def plot_extrapolation(df, fits: Sequence, target: float, title: str | None = None, max_decades: float = 12.0):
    """Laws carried to ``target``: crossing marked with its interval, or the asymptote when out of reach."""
    fig, (ax,) = new_figure(7.5, 5.6)
    x = _x_column(fits[0])
    y = fits[0].y
    pct = unit_of(y) == "%"
    x_lo = min(f.x_range[0] for f in fits)
    x_data_hi = max(f.x_range[1] for f in fits)
    # Only laws the runs identify and do not reject are carried to the target.
    status = {i: identify(f).status for i, f in enumerate(fits)}
    solved = {i: (f.solve_interval(target) if f.has_bootstrap else {"x": f.solve_for(target)})
              for i, f in enumerate(fits) if f.converged and status[i] == OK}
    # the rulebook's refusal limit bounds the drawing as it bounds the tables (identified.reach)
    refused = {i for i, s in solved.items() if math.isfinite(s["x"]) and s["x"] > MAX_EXTRAPOLATION * fits[i].x_range[1]}
    finite = [s["x"] for i, s in solved.items() if math.isfinite(s["x"]) and i not in refused]
    x_hi = min(max([x_data_hi * 2] + [v * 1.5 for v in finite]), x_data_hi * MAX_EXTRAPOLATION,
               x_data_hi * 10 ** max_decades)
    lo, hi = _y_limits(fits, target)
    for i, fit in enumerate(fits):
        color, marker = _style(i)
        _scatter_group(ax, df, fit, i, x, lo, show_excluded=False)
        if not fit.converged:
            ax.plot([], [], color=color, ls="", marker=marker, label=f"{fit.label}: fit did not converge")
            continue
        if i not in solved:
            ax.plot([], [], color=color, ls="", marker=marker, label=f"{fit.label}: {status[i]}, not extrapolated")
            continue
        _fit_line(ax, fit, i, *fit.x_range)
        _fit_line(ax, fit, i, fit.x_range[1], x_hi, ls="--")
        s = solved[i]
        low, high = s.get("low", float("nan")), s.get("high", float("nan"))
        share = s.get("share_reachable", float("nan"))
        share_txt = f"; {100 * share:.0f}% of bootstrap fits reach it" if math.isfinite(share) else ""
        if i in refused:
            desc = f"{fit.label}: target beyond the refusal limit of {MAX_EXTRAPOLATION:g}x the largest run, refused"
        elif math.isfinite(s["x"]) and s["x"] <= x_hi:
            ax.plot([s["x"]], [target], marker="*", ms=14, color=color, markeredgecolor="black", zorder=6)
            ax.axvline(s["x"], color=color, lw=0.8, ls=":", alpha=0.8)
            if math.isfinite(low):
                ax.plot([low, min(high, x_hi)], [target, target], color=color, lw=5, alpha=0.35,
                        solid_capstyle="butt", zorder=5)
            desc = f"{fit.label}: {fmt(s['x'])} {unit_of(x) or ''}".rstrip()
            if math.isfinite(low):
                desc += f" [{fmt(low)}, {fmt(high)}]"
        elif math.isfinite(s["x"]):
            desc = f"{fit.label}: reached at {fmt(s['x'])} {unit_of(x)}, beyond this plot"
        else:
            ymax = fit.params.get("y_max")
            if ymax is not None and math.isfinite(ymax):
                ax.axhline(ymax, color=color, lw=0.9, ls="-.", alpha=0.7)
                desc = f"{fit.label}: not reachable, asymptote {fmt(ymax)}{'%' if pct else ''}{share_txt}"
            else:
                desc = f"{fit.label}: not reachable (the law does not increase){share_txt}"
        ax.plot([], [], color=color, lw=1.8, label=desc)
    ax.axhline(target, color="black", lw=1.0, ls="--", alpha=0.7)
    ax.axvspan(x_data_hi, x_hi, color="0.92", zorder=0, lw=0)
    ax.text(x_lo / 1.8, target, f"target {fmt(target)}{'%' if pct else ''}", va="bottom", fontsize=8)
    _compute_axes(ax, x, y, lo, hi, x_note="   (shaded: beyond the data)", y_label=metric_label(fits))
    ax.set_xlim(x_lo / 2, x_hi)
    ax.set_title(title or f"{fits[0].law} law extrapolated to {fmt(target)}{'%' if pct else ''}\n"
                 f"(dashed: beyond the data; star: crossing; bar: its {fits[0].level * 100:g}% interval)", fontsize=9)
    _legend(fig, ax, fits, False, lo)
    return fig


def plot_residuals(fits: Sequence, title: str | None = None):
    """Observed minus fitted y vs x for each converged fit."""
    fig, (ax,) = new_figure(7.5, 3.6)
    y = fits[0].y
    for i, fit in enumerate(fits):
        if not fit.converged:
            continue
        color, marker = _style(i)
        xv = fit.x_values if fit.x_values.ndim == 1 else fit.x_values[:, 0] * fit.x_values[:, 1] * fit.params.get("k", 1)
        ax.scatter(xv, fit.residuals, s=16, color=color, marker=marker, alpha=0.7, linewidth=0,
                   label=f"{fit.label} (RMS {fmt(float(np.sqrt(np.mean(fit.residuals ** 2))))})")
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xscale("log")
    x = _x_column(fits[0])
    ax.set_xlabel(axis_label(x))
    unit = unit_of(y)
    ax.set_ylabel(f"residual: observed - fitted [{'pp' if unit == '%' else unit}]")
    ax.grid(True, alpha=0.3)
    ax.set_title(title or f"residuals of the {fits[0].law} fits", fontsize=9)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7.5, framealpha=0.85)
    return fig


def plot_cost(df, x: str = "train_flops", columns: Sequence[str] = ("energy_kwh", "electricity_usd"),
              fits: dict | None = None, title: str | None = None):
    """``columns`` vs ``x`` on log-log axes, each with a power-law fit over all runs (``fits[col]`` if given)."""
    columns = [c for c in columns if c in df.columns and np.isfinite(np.asarray(df[c], float)).any()]
    fig, axes = new_figure(4.2 * max(len(columns), 1), 3.8, ncols=max(len(columns), 1))
    for ax, col in zip(axes, columns):
        xs = np.asarray(df[x], float)
        ys = np.asarray(df[col], float)
        ok = np.isfinite(xs) & np.isfinite(ys) & (xs > 0) & (ys > 0)
        ax.scatter(xs[ok], ys[ok], s=14, color="#1f77b4", alpha=0.6, linewidth=0, label="runs")
        fit = (fits or {}).get(col)
        if fit is None and ok.sum() >= 3:
            fit = fit_law(df.loc[ok], "power", x=x, y=col, bootstrap=200)
        if fit is not None and fit.converged:
            grid = np.logspace(np.log10(xs[ok].min()), np.log10(xs[ok].max()), 100)
            ci = fit.ci.get("alpha")
            label = f"power law: alpha = {fmt(fit.params['alpha'])}" + (f" [{fmt(ci[0])}, {fmt(ci[1])}]" if ci else "")
            ax.plot(grid, fit.predict(grid), color="#d62728", lw=1.8, label=label)
            if fit.has_bootstrap:
                lo, hi = fit.predict_interval(grid)
                ax.fill_between(grid, lo, hi, color="#d62728", alpha=0.15, linewidth=0)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(axis_label(x))
        ax.set_ylabel(axis_label(col))
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7.5)
    fig.suptitle(title or "energy and cost vs compute, all runs (power-law fit, 95% bootstrap band)", fontsize=9)
    return fig


def plot_exponents(fits: Sequence, title: str | None = None):
    """The main exponent with its bootstrap interval (forest plot) of each fit whose numbers may be shown;
    None when no fit's numbers may be shown (no empty panel)."""
    ok = [f for f in fits if f.converged and identify(f).shows_parameters]
    if not ok:
        return None
    fig, (ax,) = new_figure(6.5, 0.9 + 0.45 * max(len(ok), 1))
    for j, fit in enumerate(ok):
        i = list(fits).index(fit)
        color, marker = _style(i)
        v = fit.exponent
        ci = fit.ci.get(fit.exponent_name)
        if ci:
            ax.plot([ci[0], ci[1]], [j, j], color=color, lw=2.5, alpha=0.6)
        ax.plot([v], [j], marker=marker, color=color, ms=8)
    ax.set_yticks(range(len(ok)))
    ax.set_yticklabels([f.label for f in ok], fontsize=8)
    ax.invert_yaxis()
    ax.axvline(0, color="black", lw=0.8)
    x = _x_column(fits[0])
    ax.set_xlabel(f"exponent {ok[0].exponent_name} of the {fits[0].law} law in {LABELS.get(x, x.replace('_', ' '))}")
    ax.grid(True, axis="x", alpha=0.3)
    ax.set_title(title or "fitted exponents with bootstrap intervals", fontsize=9)
    return fig


# ---------------------------------------------------------------------- output
def plot_families(df, families: Sequence[dict], x: str = "train_flops", title: str | None = None):
    """Several families on ONE compute axis: each its own accuracy column (e.g. standard training's clean
    accuracy and adversarial training's robust accuracy), runs with 95% Wilson error bars, and the
    fitted law with its bootstrap band where the law is identified.

    ``families``: dicts with ``label``, ``y`` (column), ``rows`` (boolean mask or index of ``df``),
    ``fit`` (an identified FitResult or None) and ``note`` (shown in the legend, e.g. why no law is drawn).
    Interval columns ``<y>_ci_low`` / ``<y>_ci_high`` are used when present. Linear accuracy axis.
    """
    fig, (ax,) = new_figure(7.5, 5.2)
    xs_all = []
    for i, fam in enumerate(families):
        color, marker = _style(i)
        part = df.loc[fam["rows"]]
        xs = np.asarray(part[x], float)
        ys = np.asarray(part[fam["y"]], float)
        ok = np.isfinite(xs) & np.isfinite(ys) & (xs > 0)
        xs_all.append(xs[ok])
        lo_col, hi_col = f"{fam['y']}_ci_low", f"{fam['y']}_ci_high"
        if lo_col in part.columns and hi_col in part.columns:
            lo = np.asarray(part[lo_col], float)[ok]
            hi = np.asarray(part[hi_col], float)[ok]
            yerr = np.vstack([np.where(np.isfinite(lo), ys[ok] - lo, 0), np.where(np.isfinite(hi), hi - ys[ok], 0)])
            yerr = np.maximum(yerr, 0.0)  # stored accuracies and their intervals agree only to rounding
        else:
            yerr = None
        fit = fam.get("fit")
        metric = LABELS.get(fam["y"], fam["y"].replace("_", " "))
        # the family's own label when it already says its metric ("standard training (clean)"), else label + metric
        label = fam["label"] if "(" in fam["label"] else f"{fam['label']} ({metric})"
        label += f": {_describe(fit)}" if fit is not None else (f": {fam['note']}" if fam.get("note") else "")
        ax.errorbar(xs[ok], ys[ok], yerr=yerr, fmt=marker, color=color, ms=5, elinewidth=0.9, capsize=2,
                    alpha=0.9, label=label, zorder=3)
        if fit is not None:
            _fit_line(ax, fit, i, *fit.x_range)
    ax.set_xscale("log")
    lo, hi = ax.get_ylim()
    ax.set_ylim(max(lo, 0.0), min(hi, 100.0))  # accuracies: a law's band past 100% is not a result
    ax.set_xlabel(axis_label(x))
    ax.set_ylabel("accuracy [%] (each family its own metric)")
    ax.grid(True, which="major", alpha=0.3)
    allx = np.concatenate(xs_all) if xs_all else np.ones(1)
    if allx.size:
        ax.set_xlim(allx.min() / 1.5, allx.max() * 1.5)
    ax.set_title(title or "accuracy vs training compute (error bars: 95% Wilson; bands: 95% bootstrap of the law)",
                 fontsize=9)
    fig.legend(*ax.get_legend_handles_labels(), fontsize=7.5, loc="outside lower center", ncols=1, frameon=False)
    return fig


def figure_png(fig, dpi: int = 110) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def figure_png_base64(fig) -> str:
    return base64.b64encode(figure_png(fig)).decode("ascii")


def save_figure(fig, directory: str | Path, name: str, formats: Sequence[str] = ("png", "svg"),
                png: bytes | None = None) -> list[Path]:
    """Write ``<directory>/<name>.<fmt>`` for each format (atomically); returns the paths.

    ``png``: an already rendered PNG of ``fig`` to reuse instead of drawing it again.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for ext in formats:
        path = directory / f"{name}.{ext}"
        if ext == "png" and png is not None:
            data = png
        else:
            buf = io.BytesIO()
            fig.savefig(buf, format=ext, dpi=150 if ext == "png" else None)
            data = buf.getvalue()
        write_bytes(path, data)
        paths.append(path)
    return paths
