"""The six figures of the paper reproduction (matplotlib Figures, no pyplot)."""
from __future__ import annotations

import math
from typing import Any

import matplotlib as mpl
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from ...report.plots import plot_cost
from ...scaling.identified import MAX_EXTRAPOLATION, identify
from ...schema import COLLAPSE_THRESHOLD_ACC
from .analysis import archs_by_size
from .result import (BASELINE_ARCH, LAW_TITLES, LAWS, METHOD_NAMES, SYNTH_COLOR, SYNTH_NAMES, PaperReproduction,
                     arch_label, group_key)

# report.plots draws accuracy on a log axis with collapsed runs at 0.5%, which squeezes this
# grid's 30-61% into a sliver; these panels use a linear axis and leave collapsed runs to the
# collapse figure. The PGD-40-vs-AA and paired-gain figures have no counterpart in report.plots.
def _new_figure(w: float, h: float):
    """An empty Agg-rendered figure (no pyplot: no display, no global state), as report.plots draws."""
    return Figure(figsize=(w, h), dpi=110, layout="constrained")


def paper_figures(result: PaperReproduction) -> dict[str, tuple[Any, str]]:
    """``file stem -> (matplotlib Figure, caption)``."""
    runs = result.runs
    return {
        "aa_vs_flops": (_fig_aa_vs_flops(result), "AutoAttack accuracy vs total training FLOPs per method and "
                        "training length; solid: power law, dashed: saturating law (collapsed runs not shown)."),
        "exponents": (_fig_exponents(result), "Left: power-law exponent α per group; right: the saturating law's "
                      "asymptote 100 − E per group, with the targets dotted (95% bootstrap intervals)."),
        "extrapolation": (_fig_extrapolation(result), "The laws carried towards the targets: all runs' Pareto "
                          "frontier (black, 95% bootstrap band) and the groups trained with generated data; the "
                          "dashed vertical line marks the largest run; curves stop at the refusal limit (10x the largest run, "
                          "docs/rulebook.md)."),
        "electricity_vs_flops": (plot_cost(runs, "train_flops", ["electricity_usd", "device_hours"],
                                           fits={"electricity_usd": result.electricity,
                                                 "device_hours": result.tables["device_hours_fit"]},
                                           title=f"electricity cost and GPU-hours vs compute ({len(runs)} runs)"),
                                 "Electricity cost ($0.12/kWh, 300 W per GPU, PUE 1.58) and GPU-hours vs FLOPs, "
                                 "with power-law fits and 95% bootstrap bands."),
        "collapse_pgd40_vs_aa": (_fig_collapse(result), "PGD-40 (last epoch, ~1,024 test images) vs AutoAttack "
                                 "(10,000 test images) per run; crosses: collapsed runs (AA < 10%)."),
        "effects": (_fig_effects(result), "Paired AA gains (percentage points) from generated data, a larger model "
                    "and longer training (runs equal in everything else; pairs with a collapsed run left out)."),
    }


def _curve(fit, xs, extrapolated: bool = False):
    """The law over ``xs``, or None where it must not be drawn: not identified (or, carried beyond the data,
    anything but ok)."""
    ident = identify(fit)
    if not fit.converged or not (ident.ok if extrapolated else ident.shows_parameters):
        return None
    return np.asarray(fit.predict(xs), float)


def _missing(fit) -> str:
    return "fit failed" if not fit.converged else identify(fit).status


def _fig_aa_vs_flops(result: PaperReproduction):
    runs = result.runs
    methods = sorted(runs["method"].unique())
    epochs = sorted(runs["epochs"].unique())
    fig = _new_figure(11, 8)
    axes = fig.subplots(len(methods), len(epochs), sharey=True, squeeze=False)
    ok = runs[~runs["collapsed"]]
    ylo = max(0.0, ok["aa_robust_acc"].min() - 3)
    yhi = ok["aa_robust_acc"].max() + 3
    for i, method in enumerate(methods):
        for j, ep in enumerate(epochs):
            ax = axes[i][j]
            n_col = 0
            for synth in (False, True):
                part = runs[(runs["method"] == method) & (runs["epochs"] == ep) & (runs["synthetic_data"] == synth)]
                if not len(part):
                    continue
                n_col += int(part["collapsed"].sum())
                good = part[~part["collapsed"]]
                color = SYNTH_COLOR[synth]
                ax.scatter(good["train_flops"], good["aa_robust_acc"], s=18, color=color, alpha=0.7,
                           label=f"{SYNTH_NAMES[synth]} ({len(good)} runs)")
                g = result.group(group_key({"method": method, "synthetic_data": synth, "epochs": ep}))
                if not len(good):
                    continue
                xs = np.geomspace(good["train_flops"].min(), good["train_flops"].max(), 100)
                for law, style in (("power", "-"), ("saturating", "--")):
                    fit = g.fits[law]
                    ys = _curve(fit, xs)
                    if ys is None:
                        ax.plot([], [], style, color=color, label=f"{law}: {_missing(fit)}")
                        continue
                    extra = f", max {fit.params['y_max']:.1f}%" if law == "saturating" else ""
                    ax.plot(xs, ys, style, color=color, lw=1.6, label=f"{law}: α={fit.params['alpha']:.3g}{extra}")
            _log_x(ax)
            ax.set_ylim(ylo, yhi)
            ax.grid(True, which="both", alpha=0.3)
            ax.set_title(f"{METHOD_NAMES.get(method, method)}, {ep} epochs ({n_col} collapsed runs not shown)",
                         fontsize=10)
            if i == len(methods) - 1:
                ax.set_xlabel("total training compute [FLOPs]")
            if j == 0:
                ax.set_ylabel("AutoAttack robust accuracy [%]")
            ax.legend(fontsize=7, loc="lower right")
    fig.suptitle("AutoAttack accuracy vs training compute (CIFAR-10, ε = 8/255)")
    return fig


def _log_x(ax) -> None:
    """Log x axis labelled at powers of ten only (minor labels collide over one decade)."""
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(NullFormatter())


def _fig_exponents(result: PaperReproduction):
    """Forest plots: power-law alpha and saturating asymptote per group, with intervals."""
    fig = _new_figure(12, 0.9 + 0.42 * len(result.groups))
    axes = fig.subplots(1, 2, sharey=True)
    labels = [g.label for g in result.groups]
    for ax, law, key, title in ((axes[0], "power", "alpha", "power law: exponent α"),
                                (axes[1], "saturating", "y_max", "saturating law: asymptote 100 − E [%]")):
        for j, g in enumerate(result.groups):
            fit = g.fits[law]
            color = "black" if not g.group else SYNTH_COLOR[g.group["synthetic_data"]]
            if not fit.converged or not identify(fit).shows_parameters:
                ax.text(0.02, j, _missing(fit), transform=ax.get_yaxis_transform(), va="center", fontsize=8,
                        color="0.4")
                continue
            lo, hi = fit.ci.get(key, (math.nan, math.nan))
            if math.isfinite(lo):
                ax.plot([lo, hi], [j, j], color=color, lw=2.5, alpha=0.45)
            ax.plot([fit.params[key]], [j], "o", color=color, ms=7)
        if law == "power":
            ax.axvline(0, color="0.3", lw=0.8)
        else:
            for t in result.targets:
                ax.axvline(t, color="0.5", ls=":", lw=1)
            ax.set_xlim(40, 101)
        ax.set_title(title, fontsize=10)
        ax.grid(True, axis="x", alpha=0.3)
    axes[0].set_yticks(range(len(labels)), labels, fontsize=8)
    axes[0].invert_yaxis()
    fig.suptitle("Fitted laws per group (black: all runs; red: with generated data; blue: without)", fontsize=11)
    return fig


def _fig_extrapolation(result: PaperReproduction):
    runs = result.runs
    ok = runs[~runs["collapsed"]]
    shown = ["frontier"] + [g.key for g in result.groups if g.group.get("synthetic_data") is True]
    colors = ["black", "#d62728", "#ff7f0e", "#9467bd", "#2ca02c", "#8c564b"]
    fig = _new_figure(12, 5.4)
    axes = fig.subplots(1, len(LAWS), sharey=True)
    xmin = ok["train_flops"].min() / 2
    x_data = ok["train_flops"].max()
    # Out to the rulebook's refusal limit (identified.MAX_EXTRAPOLATION x the largest run), no further: the
    # tables print no target beyond it, so the figure draws no curve there either.
    front = result.group("frontier").fits["power"]
    xmax = x_data * MAX_EXTRAPOLATION
    xs = np.geomspace(xmin, xmax, 300)
    front_runs = runs.loc[front.fitted_index] if front.converged else ok.iloc[:0]
    top = max(result.targets) + 5
    for ax, law in zip(axes, LAWS):
        ax.scatter(ok["train_flops"], ok["aa_robust_acc"], s=8, color="0.72", label="runs (not collapsed)")
        ax.scatter(front_runs["train_flops"], front_runs["aa_robust_acc"], s=22, color="black",
                   label="Pareto frontier runs")
        for key, color in zip(shown, colors):
            g = result.group(key)
            fit = g.fits[law]
            ys = _curve(fit, xs, extrapolated=True)
            if ys is not None:
                ys = np.where(xs <= fit.x_range[1] * MAX_EXTRAPOLATION, ys, np.nan)
            if ys is None:
                ax.plot([], [], color=color, label=f"{g.label}: {_missing(fit)}, not extrapolated")
                continue
            extra = f", max {fit.params['y_max']:.1f}%" if law == "saturating" else ""
            ax.plot(xs, ys, "-", color=color, lw=2 if key == "frontier" else 1.3,
                    label=f"{g.label}: α={fit.params['alpha']:.3g}{extra}")
            if key == "frontier" and fit.has_bootstrap:
                lo, hi = fit.predict_interval(xs)
                ax.fill_between(xs, np.clip(lo, 0, 100), np.clip(hi, 0, 100), color=color, alpha=0.12, lw=0)
        for t in result.targets:
            ax.axhline(t, color="0.4", ls=":", lw=1)
            ax.text(xs[0] * 1.1, t + 0.3, f"{t:g}%", fontsize=8, color="0.3")
        ax.axvline(x_data, color="0.5", ls="--", lw=0.8)
        ax.text(xs[-1] / 1.05, 31, f"refusal limit: {MAX_EXTRAPOLATION:g}x the largest run", fontsize=7, color="0.3",
                ha="right")
        _log_x(ax)
        ax.set_xlim(xs[0], xs[-1])
        ax.set_ylim(30, top)
        ax.set_xlabel("total training compute [FLOPs]")
        ax.set_title(LAW_TITLES[law], fontsize=10)
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=7, loc="lower right", framealpha=0.9)
    axes[0].set_ylabel("AutoAttack robust accuracy [%]")
    fig.suptitle("Extrapolating robust accuracy with compute")
    return fig


def _fig_collapse(result: PaperReproduction):
    runs = result.runs
    fig = _new_figure(7.2, 5.8)
    ax = fig.subplots()
    steps = sorted(runs["attack_steps"].unique())
    cmap = mpl.colormaps["viridis"].resampled(max(len(steps), 2))
    for k, s in enumerate(steps):
        part = runs[runs["attack_steps"] == s]
        for collapsed, marker in ((False, "o"), (True, "x")):
            p = part[part["collapsed"] == collapsed]
            if not len(p):
                continue
            ax.scatter(p["pgd_robust_acc"], p["aa_robust_acc"], marker=marker, s=30 if collapsed else 16,
                       color=cmap(k), alpha=0.8,
                       label=f"{s} step{'s' if s > 1 else ''}" + (f" (collapsed: {len(p)})" if collapsed else ""))
    top = max(runs["pgd_robust_acc"].max(), runs["aa_robust_acc"].max()) + 3
    ax.plot([0, top], [0, top], color="0.5", lw=1, ls="--", label="AA = PGD-40")
    ax.axhline(COLLAPSE_THRESHOLD_ACC, color="#d62728", lw=1, ls=":",
               label=f"collapse threshold ({COLLAPSE_THRESHOLD_ACC:g}%)")
    ax.set_xlim(0, top)
    ax.set_ylim(-2, top)
    ax.set_xlabel("PGD-40 robust accuracy [%] (last epoch, ~1,024 test images)")
    ax.set_ylabel("AutoAttack robust accuracy [%] (10,000 test images)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7.5, loc="upper left", ncol=2)
    n = int(runs["collapsed"].sum())
    ax.set_title(f"PGD-40 vs AutoAttack: {n} of {len(runs)} runs collapsed", fontsize=10)
    return fig


def _fig_effects(result: PaperReproduction):
    t = result.tables
    fig = _new_figure(13, 4.8)
    axes = fig.subplots(1, 3, gridspec_kw={"width_ratios": [2, 6, 2]})
    rng = np.random.default_rng(0)  # horizontal jitter only

    def strip(ax, groups, title):
        for k, (name, values, color) in enumerate(groups):
            v = np.asarray(values, float)
            ax.scatter(k + rng.uniform(-0.18, 0.18, len(v)), v, s=12, alpha=0.6, color=color)
            if len(v):
                ax.hlines(np.mean(v), k - 0.3, k + 0.3, color="black", lw=2)
                ax.text(k, np.max(v) + 0.4, f"{np.mean(v):+.1f}", fontsize=8,
                        ha="center", va="bottom")
        ax.axhline(0, color="0.4", lw=0.8)
        ax.set_xticks(range(len(groups)), [g[0] for g in groups], fontsize=8)
        ax.set_xlim(-0.6, len(groups) - 0.4)
        ax.set_title(title, fontsize=10)
        ax.grid(True, axis="y", alpha=0.3)

    p = t["generated_data_pairs"]
    p = p[~p["collapsed"]]
    strip(axes[0], [(f"{ep} epochs", p[p["epochs"] == ep]["gain"], SYNTH_COLOR[True])
                    for ep in sorted(p["epochs"].unique())], "generated data vs none")
    m = t["model_size_pairs"]
    m = m[~m["collapsed"]] if len(m) else m
    archs = [a for a in archs_by_size(result.runs) if a != BASELINE_ARCH]
    strip(axes[1], [(f"{arch_label(a)}\n{'gen. data' if s else 'no gen. data'}",
                     m[(m["architecture"] == a) & (m["synthetic_data"] == s)]["gain"] if len(m) else [],
                     SYNTH_COLOR[s]) for a in archs for s in (False, True)],
          f"larger model vs {arch_label(BASELINE_ARCH)} (same activation)")
    e = t["epochs_pairs"]
    e = e[~e["collapsed"]]
    ep = sorted(result.runs["epochs"].unique())
    strip(axes[2], [(SYNTH_NAMES[s], e[e["synthetic_data"] == s]["gain"], SYNTH_COLOR[s]) for s in (False, True)],
          f"{ep[-1]} vs {ep[0]} epochs")
    axes[0].set_ylabel("paired AA gain [percentage points]")
    fig.suptitle("What moves AutoAttack accuracy: paired comparisons (black bar and number: mean)")
    return fig

