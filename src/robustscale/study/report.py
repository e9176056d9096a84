"""The study's HTML report: setup, the central figure (every family on one compute axis), the runs with
their accuracies and intervals, the laws (numbers only where identified, reasons otherwise), the
AutoAttack gap, and how each checkpoint was selected."""
from __future__ import annotations

import html as _html
from pathlib import Path
from typing import Any, Sequence

from ..report import Section, write_report
from ..report.plots import plot_families
from ..scaling.backtest import backtest_table
from ..scaling.format import fmt, p_text
from ..scaling.identified import OK, SEED_SD_POINTS, identify
from .fits import asymptote_text
from .next import NEXT_FACTORS, next_table
from .results import format_gap

ACC_LABELS = {"clean_acc": "clean", "pgd_robust_acc": "PGD", "apgd_ce_robust_acc": "APGD-CE",
              "aa_robust_acc": "AutoAttack"}


def _acc(row, metric: str) -> str:
    """``61.1 [58.0, 64.1] (1000)``: accuracy, 95% Wilson interval, images."""
    v = row.get(metric)
    if v is None or v != v:
        return "-"
    lo, hi, n = row.get(f"{metric}_ci_low"), row.get(f"{metric}_ci_high"), row.get(f"{metric}_n_examples")
    ci = f" [{fmt(lo)}, {fmt(hi)}]" if lo == lo and lo is not None else ""
    return f"{fmt(v)}{ci} ({int(n)})" if n == n and n is not None else f"{fmt(v)}{ci}"


def runs_table(df, metrics: Sequence[str]) -> tuple[list[str], list[list[str]]]:
    """One row per run and family: what it trained, its compute, how it was selected, its accuracies."""
    headers = ["family", "run", "train images", "epochs", "train FLOPs", "wall [s]", "energy [kWh]", "selected"]
    headers += [f"{ACC_LABELS.get(m, m)} % [95% CI] (n)" for m in metrics]
    rows = []
    for _, r in df.sort_values(["family", "train_flops"]).iterrows():
        sel = "-"
        if r.get("selection_split"):
            sel = f"epoch {r.get('selected_epoch')} on {r['selection_split']} ({ACC_LABELS.get(r.get('selection_metric'), r.get('selection_metric'))})"
        rows.append([r["family"], r["name"], fmt(r.get("train_images")), fmt(r.get("epochs")), fmt(r.get("train_flops")),
                     fmt(r.get("wall_seconds")), fmt(r.get("energy_kwh"))] + [sel] + [_acc(r, m) for m in metrics])
    return headers, rows


def laws_table(records: Sequence[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    headers = ["law", "family", "runs", "status", "exponent [95% CI]", "asymptote % [95% CI]", "fitted FLOPs range"]
    rows = []
    for r in records:
        span = f"{fmt(r['x_min'])} - {fmt(r['x_max'])}" if r.get("x_min") else "-"
        if r["status"] != OK:
            rows.append([r["law"], r["label"], fmt(r.get("n")), f"{r['status']}: {r.get('reason')}", "-", "-", span])
            continue
        a, ci = r["params"].get("alpha"), r["ci"].get("alpha")
        asym_text = asymptote_text(r.get("asymptote"))
        rows.append([r["law"], r["label"], fmt(r["n"]), "ok", f"{fmt(a)} [{fmt(ci[0])}, {fmt(ci[1])}]" if ci else fmt(a),
                     asym_text, span])
    return headers, rows


def targets_table(records: Sequence[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    headers = ["law", "family", "target %", "compute [FLOPs] [95% CI]", "x largest run", "device-h", "energy [kWh]",
               "cloud (high) [USD]"]
    rows = []
    for r in records:
        for t in r.get("targets") or []:
            lead = [r["law"], r["label"], fmt(t["target"])]
            if t.get("status") == "beyond reach":
                rows.append(lead + [f"refused: {t.get('reason')}", "-", "-", "-", "-"])
                continue
            if not t["reachable"]:
                share = t.get("share_reachable")
                rows.append(lead + ["not reachable" + (f" ({100 * share:.0f}% of resampled laws reach it)"
                                                       if share is not None else ""), "-", "-", "-", "-"])
                continue
            lo, hi = t["compute_flops_ci"]
            factor = t.get("reach") or (f"{fmt(t['factor_vs_largest_run'])}" + (" (extrapolation)" if t["extrapolation"]
                                                                               else ""))
            rows.append(lead + [f"{fmt(t['compute_flops'])} [{fmt(lo)}, {fmt(hi)}]", factor, fmt(t.get("device_hours")),
                                fmt(t.get("energy_kwh")), fmt(t.get("cloud_usd_high"))])
    return headers, rows


def _central_figure(df, opts, fits):
    families = []
    for fam in opts.fits:
        chosen, note = None, "no law the runs identify and accept (see Laws)"
        for law in opts.laws:  # the first identified law in the spec's order is drawn
            fit = fits[law][fam.name]
            if not isinstance(fit, Exception):
                if identify(fit).ok:
                    chosen = fit
                    break
        families.append({"label": fam.label, "y": fam.y, "rows": df["family"] == fam.label, "fit": chosen,
                         "note": note if chosen is None else ""})
    return plot_families(df, families, x=opts.x)


def _backtest_section(backtests):
    """The study's own back-test: does each law predict the family's most expensive third from the rest?"""
    done = [bt for fams in backtests.values() for bt in fams.values() if not isinstance(bt, str)]
    skipped = [f"{law}, {name}: {bt}" for law, fams in backtests.items() for name, bt in fams.items()
               if isinstance(bt, str)]
    reasons = [f"{bt.label}, {bt.law}: {bt.status}: {bt.reason}" for bt in done if bt.status != OK]
    text = ("Each law fitted on the cheapest two thirds of a family's runs and asked to predict the rest, each with "
            "a 95% prediction interval (the law's bootstrap plus the run's binomial and seed noise); coverage is the "
            "share of held-out runs inside their interval (with its binomial interval), reach the compute factor "
            "beyond the largest fitted run up to which every held-out run was covered. The targets above say "
            "whether they lie within that reach (robustscale backtest; docs/backtests.md).")
    if reasons or skipped:
        text += "\n\n" + "\n\n".join(reasons + skipped)
    return Section("Back-test: predicting the most expensive runs", text=text,
                   table=backtest_table(done) if done else None)


def _next_section(records):
    text = (f"robustscale plan on this study's runs: the joint law 100 - y = E + A N^-alpha + B D^-beta + G k^-gamma "
            f"of each robust family (inputs the runs do not vary held at their value), asked for its optimum at "
            f"{', '.join(f'{f:g}x' for f in NEXT_FACTORS)} the family's largest run. Recipes use the family's own "
            f"architectures only. Beyond the largest run every number is an extrapolation of these runs.")
    for r in records:
        law = r.get("law")
        if law:
            ni = "; ".join(f"{k}: {v}" for k, v in (law.get("not_identified") or {}).items())
            text += f"\n\n{r['label']}: {law.get('n')} runs fitted" + (f"; not identified: {ni}" if ni else "") + "."
    return Section("What to run next", text=text, table=next_table(records), wrap=(3, 8))


def _setup_text(df, spec, opts) -> str:
    first = spec.runs[0].cfg
    evals = []
    if spec.evaluation is not None:
        ev = spec.evaluation
        evals.append(f"{ev.attack} on the first {ev.n_examples} test images")
    for e in opts.evaluations:
        who = ", ".join(f"{k} in {v}" for k, v in e["where"].items())
        who += (f"; the {e['strongest']} most robust" if e.get("strongest") else "")
        evals.append(f"{e['attack']} on the first {e.get('n_examples')} test images" + (f" ({who})" if who else ""))
    sel = sorted(set(df["selection_split"].dropna())) if "selection_split" in df.columns else []
    return (f"{len(spec.runs)} planned runs ({df['name'].nunique()} finished) of sweep <code>{_html.escape(spec.name)}"
            f"</code> on {first.dataset}, eps {first.eps:.4g} ({first.norm.value}). Axes: "
            f"{_html.escape(', '.join(spec.axes) or 'none')}. Every finished run is evaluated with "
            f"{_html.escape('; '.join(evals) or 'nothing')}. Checkpoints are selected on "
            f"<b>{_html.escape(', '.join(sel) or '-')}</b> data (validation images are carved from the training "
            f"split, never test images; clean accuracy for standard training, PGD accuracy for adversarial "
            f"training). Accuracies carry their 95% Wilson interval and image count. Laws: "
            f"{', '.join(opts.laws)}, {opts.bootstrap} bootstrap resamples (seed {opts.seed}); a law is shown "
            f"with numbers only when the data identify it (more than parameters + 2 runs, a non-degenerate "
            f"bootstrap, no parameter at its bound) and its residuals do not reject it (chi-square against each "
            f"run's noise: the binomial error of its test images and a seed-to-seed SD of {_seed_sd_text(opts)}; "
            f"p &lt; 0.001 is a lack of fit). Targets beyond 10x the largest run are labelled extrapolations.")


def _seed_sd_text(opts) -> str:
    if opts.seed_sd is None:
        return (f"{SEED_SD_POINTS:g} point (assumed; measured instead where a configuration ran with several seeds, and "
                f"study.seed_sd sets one)")
    return f"{opts.seed_sd:g} points (study.seed_sd)"


def write_study_report(df, spec, opts, fits, comparisons, extrapolations, records, gaps, warnings,
                       out_path: Path, next_records: Sequence[dict[str, Any]] = (), backtests=None) -> Path:
    """Write ``out_path`` (HTML, self-contained)."""
    metrics = [m for m in ACC_LABELS if m in df.columns and df[m].notna().any()]
    sections = [Section("Setup", html=_setup_text(df, spec, opts))]
    if warnings:
        sections.append(Section("Read this first", html="<ul>" + "".join(
            f'<li class="note">{_html.escape(w)}</li>' for w in warnings) + "</ul>"))
    sections.append(Section("Accuracy vs training compute", figures=[
        ("every family on one compute axis: " + "; ".join(f"{f.label}: {f.y}" for f in opts.fits),
         _central_figure(df, opts, fits), "families")]))
    sections.append(Section("Laws", table=laws_table(records), wrap=(3,)))
    text = []
    for law, comp in comparisons.items():
        if comp is not None:
            text.append(f"Difference of exponents ({law} law) {opts.compare[0]} - {opts.compare[1]}: {comp.diff:+.3g} "
                        f"[{comp.low:+.3g}, {comp.high:+.3g}] ({comp.level * 100:g}% bootstrap), {p_text(comp.p_value, comp.n)}.")
    if opts.compare and not text:
        text.append(f"No difference of exponents: {opts.compare[0]} and {opts.compare[1]} are not both identified "
                    f"under any law.")
    sections.append(Section("Compute to reach the targets", text="\n\n".join(text) or None,
                            table=targets_table(records)))
    if gaps:
        sections.append(Section("AutoAttack vs the fits' attack", text="\n\n".join(format_gap(g) for g in gaps)))
    if backtests:
        sections.append(_backtest_section(backtests))
    if next_records:
        sections.append(_next_section(next_records))
    sections.append(Section("Runs", table=runs_table(df, metrics), wrap=(7,)))
    out_path.parent.mkdir(parents=True, exist_ok=True)
    return write_report(df, out_path, sections, include_scaling=False,
                        title=f"Study {spec.name}: accuracy vs compute", source=str(spec.path) if spec.path else None)
