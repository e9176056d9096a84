"""The field's law and the ledger's figures and HTML report.

:func:`fit_field` fits a saturating and a power law to the compute frontier of the leaderboard
(best AutoAttack accuracy at or below each training compute; the frontier is recomputed in every
bootstrap resample); :func:`field_extrapolations` solves each law for 75 / 80 / 85 % with the
usual honesty (not reachable, not identified). :func:`write_leaderboard_report` writes one HTML file
plus every figure as PNG and SVG.
"""
from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from ..errors import UserError
from ..report import Section, write_html
from ..report.html import table_html
from ..report.plots import COLORS, axis_label, new_figure, plot_extrapolation
from ..scaling import extrapolate, fit_law
from ..scaling.format import fmt, fmt_ci
from ..scaling.frontier import pareto_frontier
from ..scaling.identified import LACK_OF_FIT, identify
from .compute import DEFAULT_FLOPS_PER_SECOND
from .recipes import load_recipes

TARGETS = (75.0, 80.0, 85.0)
# Bartoldson et al. (2024): robust accuracy on CIFAR-10 l-inf 8/255 plateaus near 90 % in their scaling law
BARTOLDSON_PLATEAU_ACC = 90.0
LAWS = ("saturating", "power")
EXCLUDE_BELOW = 10.0  # AutoAttack % under which an entry is a broken defense, not a point on the curve


def field_points(ledger):
    """Leaderboard entries with a bounded compute estimate (x = point estimate, measured convention)."""
    df = ledger[(ledger["source"] == "robustbench")].copy()
    df["train_flops"] = pd.to_numeric(df["train_flops"], errors="coerce")
    return df[df["train_flops"].notna() & (df["train_flops"] > 0)]


def fit_field(ledger, laws: Sequence[str] = LAWS, bootstrap: int = 1000, seed: int = 0, n_jobs: int | None = None,
              progress: bool = False) -> dict[str, Any]:
    """law -> FitResult on the field's compute frontier (entries with AutoAttack >= 10 %)."""
    df = field_points(ledger)
    fits = {}
    for law in laws:
        try:
            fits[law] = fit_law(df, law=law, x="train_flops", y="aa_robust_acc", frontier=True, bootstrap=bootstrap,
                                seed=seed, exclude_below=EXCLUDE_BELOW, n_jobs=n_jobs, progress=progress,
                                group={"law": law})
        except UserError as exc:  # too few frontier points for this law: not identified
            fits[law] = str(exc)
    return fits


def field_extrapolations(fits: dict[str, Any], ledger, targets: Sequence[float] = TARGETS,
                         flops_per_second: float = DEFAULT_FLOPS_PER_SECOND, device_type: str = "A100-80GB"):
    """{law: [Extrapolation per target]} for the fits that exist (strings are fits that could not run)."""
    df = field_points(ledger)
    out = {}
    for law, fit in fits.items():
        if isinstance(fit, str):
            continue
        out[law] = [extrapolate(fit, t, df, flops_per_second=flops_per_second, device_type=device_type)[0]
                    for t in targets]
    return out


def law_summary(fit) -> str:
    """One line: the law's parameters with intervals, or why it is not identified."""
    if isinstance(fit, str):
        return f"not identified: {fit}"
    if not fit.converged:
        return f"not identified: {fit.message}"
    ident = identify(fit)
    if not ident.shows_parameters:  # AIC describes the point fit (comparable across laws), not a parameter
        return f"{ident.status}: {ident.reason} (n = {fit.n} frontier entries, AIC {fmt(fit.aic)})"
    name = fit.exponent_name
    text = f"{fit.formula}: {name} = {fmt_ci(fit.params.get(name), fit.ci.get(name))}"
    if "y_max" in fit.params:
        ci = fit.ci.get("y_max")
        text += f", asymptote {fmt_ci(fit.params['y_max'], ci)} %"
        if ci:
            inside = "inside" if ci[0] <= BARTOLDSON_PLATEAU_ACC <= ci[1] else "outside"
            text += f" (Bartoldson et al. 2024's ~{BARTOLDSON_PLATEAU_ACC:g} % plateau is {inside} it)"
    if fit.law == "power":
        text += f", C = {fmt_ci(fit.params.get('C'), fit.ci.get('C'))}"
    text += (f" (n = {fit.n} frontier entries, {fit.n_bootstrap} bootstrap resamples, R2 {fmt(fit.r2)}, "
             f"AIC {fmt(fit.aic)})")
    return text + (f"; lack of fit: {ident.reason}" if ident.status == LACK_OF_FIT else "")


def extrapolation_line(ex) -> str:
    if not ex.converged:
        return f"{ex.target:g} %: law not identified ({ex.message})"
    if not ex.solved:
        return f"{ex.target:g} %: not extrapolated ({ex.status}: {ex.status_reason})"
    if not ex.reachable:
        return f"{ex.target:g} %: {ex.summary().split(': ', 1)[1]}"
    c = ex.values["compute_flops"]
    h = ex.values["device_hours"]
    hi = "inf (too many resampled laws never reach it)" if c[2] == math.inf else fmt(c[2])
    return (f"{ex.target:g} %: {fmt(c[0])} FLOPs [{fmt(c[1])}, {hi}] ({ex.reach}), "
            f"{fmt(h[0])} GPU-h at the stated throughput")


def drawable(fit) -> bool:
    """Only a law whose numbers the tables print as a result (status ok) is drawn."""
    return not isinstance(fit, str) and fit.converged and identify(fit).ok


def inference_only(recipes=None) -> dict[str, str]:
    """Entries whose only difference from the entry they are based on is an inference-time operator (no training
    phase of their own, not an ensemble): name -> the base entry. Their training compute is the base's."""
    recipes = load_recipes() if recipes is None else recipes
    return {name: e.based_on.value for name, e in recipes.items()
            if e.based_on is not None and not e.phases and e.members is None}


# ---------------------------------------------------------------------- figures
def _status_style(status: str) -> dict[str, Any]:
    return {"sourced": dict(color="#1f77b4", marker="o", filled=True, label="sourced recipe"),
            "range": dict(color="#ff7f0e", marker="s", filled=False, label="recipe with unsourced facts (range)"),
            "measured": dict(color="#2ca02c", marker="D", filled=True, label="our runs (measured)")}.get(
        status, dict(color="0.5", marker="x", filled=True, label=status))


def _scatter_ledger(ax, df, x: str, lo: str, hi: str) -> None:
    for status in ("sourced", "range", "measured"):
        part = df[df["recipe_status"] == status]
        if part.empty:
            continue
        st = _status_style(status)
        xs = part[x].to_numpy(float)
        low = part[lo].to_numpy(float)
        high = part[hi].to_numpy(float)
        ys = part["aa_robust_acc"].to_numpy(float)
        rng = np.isfinite(low) & np.isfinite(high) & (high > low)
        if rng.any():
            ax.hlines(ys[rng], low[rng], high[rng], color=st["color"], lw=1.0, alpha=0.45, zorder=2)
        ax.scatter(xs, ys, s=26, marker=st["marker"], zorder=3, label=st["label"],
                   facecolors=st["color"] if st["filled"] else "white", edgecolors=st["color"], linewidths=1.0)


def plot_field(ledger, fits: dict[str, Any] | None = None, title: str | None = None):
    """AutoAttack accuracy vs training compute of every entry, its frontier and the fitted laws."""
    fig, (ax,) = new_figure(8.0, 5.8)
    df = ledger[ledger["train_flops"].notna() & (ledger["aa_robust_acc"] >= EXCLUDE_BELOW)]
    _scatter_ledger(ax, df, "train_flops", "train_flops_low", "train_flops_high")
    field = df[df["source"] == "robustbench"]
    front = pareto_frontier(field, "train_flops", "aa_robust_acc")
    xmax = float(df["train_flops"].max())
    ax.step(np.r_[front["train_flops"].to_numpy(float), xmax], np.r_[front["aa_robust_acc"].to_numpy(float),
            front["aa_robust_acc"].to_numpy(float)[-1]], where="post", color="black", lw=1.0, ls=":",
            label="field's compute frontier", zorder=2)
    for j, (_, r) in enumerate(front.tail(4).iterrows()):  # the frontier's top entries
        ax.annotate(r["name"], (r["train_flops"], r["aa_robust_acc"]), fontsize=6.5, color="0.25",
                    xytext=(-110, 6 + 12 * (j % 2)), textcoords="offset points",
                    arrowprops=dict(arrowstyle="-", color="0.7", lw=0.5))
    for i, (law, fit) in enumerate((fits or {}).items()):
        if not drawable(fit):  # the text gives its status and reason; a curve would show what it withholds
            status = "not identified" if isinstance(fit, str) or not fit.converged else identify(fit).status
            ax.plot([], [], color=COLORS[i + 2], label=f"{law} law: {status} (not drawn)")
            continue
        grid = np.logspace(math.log10(fit.x_range[0]), math.log10(fit.x_range[1]), 200)
        ax.plot(grid, fit.predict(grid), color=COLORS[i + 2], lw=1.8, label=f"{law} law on the frontier", zorder=4)
        if fit.has_bootstrap:
            lo, hi = fit.predict_interval(grid)
            ax.fill_between(grid, lo, hi, color=COLORS[i + 2], alpha=0.15, lw=0, zorder=1)
    ax.set_xscale("log")
    ax.set_xlabel(axis_label("train_flops") + " (measured convention; bars: low-high of a range)")
    ax.set_ylabel(axis_label("aa_robust_acc"))
    ax.grid(True, which="major", alpha=0.3)
    ax.set_title(title or "RobustBench CIFAR-10 l-inf 8/255: AutoAttack accuracy vs training compute\n"
                 f"({len(field)} entries with a compute estimate and AA >= {EXCLUDE_BELOW:g} %; "
                 "bands: 95% bootstrap)", fontsize=9)
    ax.legend(fontsize=7.5, loc="lower right", framealpha=0.9)
    return fig


def frontier_over_time(ledger):
    """Per year: the best entry up to that year (AutoAttack) and its training compute."""
    df = field_points(ledger)
    df = df[df["year"].notna()]
    rows = []
    for year in sorted(df["year"].astype(int).unique()):
        upto = df[df["year"].astype(int) <= year]
        best = upto.loc[upto["aa_robust_acc"].idxmax()]
        rows.append({"year": int(year), "name": best["name"], "aa_robust_acc": float(best["aa_robust_acc"]),
                     "train_flops": float(best["train_flops"]), "train_flops_low": best["train_flops_low"],
                     "train_flops_high": best["train_flops_high"], "recipe_status": best["recipe_status"]})
    return pd.DataFrame(rows)


def plot_frontier_over_time(ledger):
    """Year vs the training compute of the best entry so far (log), every entry faint behind it."""
    fig, (ax,) = new_figure(7.5, 5.0)
    df = field_points(ledger)
    df = df[df["year"].notna() & (df["aa_robust_acc"] >= EXCLUDE_BELOW)]
    ax.scatter(df["year"].astype(float), df["train_flops"], s=14, color="0.7", zorder=1, label="all entries")
    best = frontier_over_time(ledger)
    ax.plot(best["year"], best["train_flops"], "-o", color="#d62728", zorder=3, label="best entry so far")
    changed = best[best["name"] != best["name"].shift()]  # label each new record once
    for j, (_, r) in enumerate(changed.iterrows()):
        ax.annotate(f"{r['name']}\n{r['aa_robust_acc']:.1f} %", (r["year"], r["train_flops"]), fontsize=6.5,
                    xytext=(6 if j == 0 else -60, 10 if j % 2 else -22), textcoords="offset points",
                    arrowprops=dict(arrowstyle="-", color="0.6", lw=0.5))
    ax.set_yscale("log")
    ax.set_xlabel("year of the entry (as in its RobustBench name)")
    ax.set_ylabel(axis_label("train_flops"))
    ax.set_xticks(sorted(best["year"].unique()))
    ax.grid(True, alpha=0.3)
    ax.set_title("The field's frontier over time: training compute of the best AutoAttack entry", fontsize=9)
    ax.legend(fontsize=7.5, loc="upper left")
    return fig


def plot_with_paper_runs(ledger, paper_runs):
    """The field and the 2024 study's runs on one axis (the study's FLOP convention for both)."""
    fig, (ax,) = new_figure(7.5, 5.4)
    runs = paper_runs[paper_runs["aa_robust_acc"] >= EXCLUDE_BELOW]
    for synth, color in ((False, "#9467bd"), (True, "#8c564b")):
        part = runs[runs["synthetic_data"].astype(bool) == synth]
        ax.scatter(part["train_flops"], part["aa_robust_acc"], s=10, color=color, alpha=0.55, lw=0, zorder=2,
                   label=f"2024 study runs ({'with' if synth else 'without'} generated data, n={len(part)})")
    df = ledger[ledger["train_flops_2024"].notna() & (ledger["aa_robust_acc"] >= EXCLUDE_BELOW)]
    _scatter_ledger(ax, df, "train_flops_2024", "train_flops_2024_low", "train_flops_2024_high")
    ax.set_xscale("log")
    ax.set_xlabel(axis_label("train_flops") + " (2024 study's convention: 3F per pass)")
    ax.set_ylabel(axis_label("aa_robust_acc"))
    ax.grid(True, alpha=0.3)
    ax.set_title("RobustBench entries and the 2024 study's 319 runs on the same compute axis", fontsize=9)
    ax.legend(fontsize=7, loc="lower right", framealpha=0.9)
    return fig


# ---------------------------------------------------------------------- report
def ledger_table(ledger, flops_per_second: float) -> tuple[list[str], list[list[str]]]:
    """Headers and rows (strings, 3 significant digits) of the printed / HTML table."""
    headers = ["#", "entry", "year", "architecture", "params [M]", "AA [%]", "clean [%]",
               "train FLOPs as spent [low, high]", "as needed [FLOPs]", "saving [%]",
               f"GPU-h @ {fmt(flops_per_second)} FLOP/s", "recipe", "code"]
    rows = []
    inference = inference_only()
    for i, r in enumerate(ledger.to_dict("records"), 1):
        lo, hi = r.get("train_flops_low"), r.get("train_flops_high")
        status = str(r.get("recipe_status"))
        if r["name"] in inference:
            status += f"; inference-time operator on {inference[r['name']]}: its training compute"
        if r.get("recipe_status") in ("no recipe", "excluded"):
            flops = r["recipe_status"]
        elif hi is None or (isinstance(hi, float) and math.isnan(hi)):
            flops = f">= {fmt(lo)} (unbounded)"
        elif lo == hi:
            flops = fmt(lo)
        else:
            flops = f"[{fmt(lo)}, {fmt(hi)}]"
        params = r.get("model_parameters")
        year = r.get("year")
        rows.append([str(i), r["name"], "-" if year is None or year != year else str(int(year)),
                     str(r.get("architecture")), fmt(params / 1e6) if params == params and params else "-",
                     fmt(r["aa_robust_acc"]), fmt(r.get("clean_acc")), flops, fmt(r.get("train_flops_needed")),
                     fmt(100 * r["saving"]) if _finite(r.get("saving")) else "-", fmt(r.get("device_hours")),
                     status, str(r.get("implementation_status") or "-")])
    return headers, rows


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def sources_html(ledger) -> str:
    """Every entry's facts, each with its source (linked where it names a repository file or a paper)
    or, unsourced, its range and reason."""
    parts = []
    for r in ledger.to_dict("records"):
        facts = r.get("fact_sources")
        if not isinstance(facts, list) or not facts:
            continue
        items = []
        for f in facts:
            text = html.escape(f["source"] or f"unsourced: {f['reason']}")
            links = " ".join(f'<a href="{html.escape(u)}">[{i + 1}]</a>' for i, u in enumerate(f["urls"]))
            items.append(f"<li><b>{html.escape(f['fact'])}</b> = {html.escape(str(f['value']))}: {text} {links}</li>")
        parts.append(f"<details><summary>{html.escape(str(r['name']))}</summary><ul>{''.join(items)}</ul></details>")
    return "".join(parts)


def write_leaderboard_report(directory: str | Path, ledger, fits: dict[str, Any], extrapolations: dict[str, list],
                             flops_per_second: float, paper_runs=None, counts: dict[str, int] | None = None) -> Path:
    """``<directory>/leaderboard.html`` plus every figure as PNG and SVG in ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    counts = counts or {}
    field = field_points(ledger)
    figures = [("AutoAttack accuracy vs training compute: the whole field, its frontier and the fitted laws",
                plot_field(ledger, fits), "field-vs-compute"),
               ("The field's frontier over time", plot_frontier_over_time(ledger), "frontier-over-time")]
    if paper_runs is not None:
        figures.append(("RobustBench entries and the 2024 study's runs (the study's FLOP convention)",
                        plot_with_paper_runs(ledger, paper_runs), "field-and-2024-runs"))
    converged = [f for f in fits.values() if drawable(f)]
    if converged:
        by_law = pd.concat([field.assign(law=f.group["law"]) for f in converged])  # plot_extrapolation groups by law
        figures.append(("The laws carried to 75 % (shaded: beyond the data)",
                        plot_extrapolation(by_law, converged, 75.0, title=(
                            "the field's frontier laws carried to 75 %\n(dashed: beyond the data; star: crossing; "
                            "bar: its 95% bootstrap interval)")), "extrapolation-75"))
    intro = (f"{counts.get('entries', len(ledger))} leaderboard entries; {counts.get('sourced', 0)} with sourced "
             f"recipes ({counts.get('verified', 0)} of them read in their sources while curating), "
             f"{counts.get('range', 0)} with a compute range from plausible values, {counts.get('excluded', 0)} "
             f"excluded, {counts.get('no recipe', 0)} without a recipe. Training FLOPs are measured with "
             "torch.utils.flop_counter (2 x MACs) per image and multiplied by the samples seen; GPU-hours assume an "
             f"achieved {fmt(flops_per_second)} FLOP/s per GPU. Points of a range sit at the geometric mean of "
             "its ends.")
    laws = "".join(f"<li><b>{law}</b>: {law_summary(fit)}</li>" for law, fit in fits.items())
    ex_html = ""
    for law, exs in extrapolations.items():
        ex_html += f"<h3>{law} law</h3><ul>" + "".join(f"<li>{extrapolation_line(e)}</li>" for e in exs) + "</ul>"
    sections = [
        Section("Data", text=intro),
        Section("The field's law (compute frontier, entries with AutoAttack >= 10 %)",
                html=f"<ul>{laws}</ul>" + ex_html),
        Section("Figures", figures=figures),
        Section("The ledger", html=table_html(ledger_table(ledger, flops_per_second))),
        Section("Sources of every fact", html=sources_html(ledger)),
        Section("Method", text=(
            "Recipes come from the packaged table (robustscale/leaderboard/recipes.yaml): every fact cites a "
            "paper section or a public repository file; unsourced facts carry a plausible range and its reason, and "
            "their entries get a compute range. Training FLOPs are given twice. As spent (the frontier and the "
            "laws use it): what the authors' code runs, per attack step attack_forwards forwards and a backward "
            "that is input-only (Bin) or full (B, loss.backward() inside the attack), plus the redundant forwards "
            "and passes their code makes (a separate clean forward, a logging forward). As needed: the same recipe "
            "on robustscale's efficient step, F(K+1) + K Bin + B (PGD-K), F(K+2) + K Bin + 2B (TRADES-K) or F + B "
            "(standard); the saving column is 1 - needed / spent. F, Bin and B are measured on the meta device; "
            "teacher forwards and extra training passes (AWP, helper losses) count in both. Data "
            "generation, evaluation and weight averaging are not counted. The frontier fits resample the entries "
            "and recompute the frontier in every resample.")),
    ]
    return write_html(directory / "leaderboard.html", "The field's compute ledger: RobustBench CIFAR-10 l-inf",
                      sections, subtitle=f"{len(ledger)} rows", plots_dir=directory)
