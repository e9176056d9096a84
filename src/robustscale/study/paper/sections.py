"""The prose of the paper reproduction: its sections (text, tables and figures, in reading order)."""
from __future__ import annotations

import math

import pandas as pd

from ...report import Sections
from ...scaling.identified import BEYOND_REACH, MAX_EXTRAPOLATION, identify
from ...schema import COLLAPSE_THRESHOLD_ACC
from .result import (BASELINE_ARCH, LAW_TITLES, LAWS, METHOD_NAMES, PARTIAL_COLLAPSE_ACC, PRICE_PRESET,
                     PaperReproduction, arch_label, interval_text, num_text, pct_text)
from .tables import (INTEGER, PCT1, PCT2, TEXT, display_frame, exponent_comparison_table, extrapolation_tables,
                     fit_table, gain_display, levels_display)


def paper_sections(result: PaperReproduction, figures: dict, cost_model, command: str) -> Sections:
    """The report's sections in reading order (``figures``: file stem -> (Figure, caption))."""
    out = Sections()
    _overview(out, result, cost_model, command)
    _fits_section(out, result, figures)
    _electricity_section(out, result, figures)
    _collapse_section(out, result, figures)
    _effect_sections(out, result, figures)
    _extrapolation_section(out, result, figures)
    return out


def _overview(out: Sections, result: PaperReproduction, cost_model, command: str) -> None:
    """What was recomputed, from what, with which intervals and prices."""
    runs = result.runs
    n = len(runs)
    n_col = int(runs["collapsed"].sum())
    out.section("Overview")
    out.text(f"This page recomputes the analyses of Debenedetti et al. (2024), *Scaling Compute Is Not All You Need "
             f"for Adversarial Robustness*, from the study's {n} published runs (`results.csv`, CIFAR-10, "
             f"ℓ∞ ε = 8/255, AutoAttack on the 10,000 test images). {n_col} runs collapsed "
             f"(AutoAttack accuracy below {COLLAPSE_THRESHOLD_ACC:g}%); they are flagged in every table and left out "
             f"of the scaling fits.")
    intervals = (f"Intervals are {100 * _level(result):.0f}% case-resampling bootstrap percentile intervals with "
                 f"**{result.bootstrap} resamples**, **seed {result.seed}** (fit group *i* in the order of the tables "
                 f"below uses seed {result.seed} + *i*)." if result.bootstrap else
                 "No bootstrap (**0 resamples**): point estimates only, no intervals.")
    out.text(f"{intervals} Costs use the `{PRICE_PRESET}` price preset ({cost_model.to_dict()['description']}) and "
             f"each group's own GPU-hours per FLOP.")
    out.text(_key_numbers(result))
    out.text(f"Regenerated with:\n\n```\n{command}\n```")
    out.text("Units: FLOPs are total training FLOPs of a run (all 4 GPUs, attack steps included); accuracies are "
             "percent; gains are percentage points (pp); GPU-hours count every GPU.")


def _fits_section(out: Sections, result: PaperReproduction, figures: dict) -> None:
    """Robust accuracy vs compute: the fits of both laws, the exponents."""
    runs = result.runs
    out.section("Robust accuracy vs training compute")
    out.text("One fit per method × generated data × training length (each pools the 4 model sizes × 2 "
             "activations × 5 attack-step counts), plus all runs together and their Pareto frontier (the best "
             "accuracy reached at or below each compute). The study's form is the power law "
             "`AA = C · FLOPs^α`; the saturating form `100 − AA = E + A · FLOPs^−α` lets accuracy level off at "
             "100 − E. Each fit has a status (`robustscale.scaling.identified`): a law the runs do not pin down "
             "(too few runs for its parameters, a bootstrap interval at a bound, a parameter at its bound) is "
             "*not identified* and shows its reasons instead of numbers; a law whose residuals are far larger "
             "than the 10,000 test images' sampling and an assumed seed SD of 1 point explain (chi² test, "
             "p < 0.001) is a *lack of fit*: its "
             "exponent is shown as a trend (the case-resampling interval holds whatever the scatter) but it is "
             "not extrapolated.")
    partial = runs[~runs["collapsed"] & (runs["aa_robust_acc"] < PARTIAL_COLLAPSE_ACC)]
    if len(partial):
        names = ", ".join(f"{r.name} ({r.aa_robust_acc:.1f}% AA, PGD-40 {r.pgd_robust_acc:.1f}%)"
                          for r in partial.itertuples())
        one = len(partial) == 1
        out.text(f"{len(partial)} run{'' if one else 's'} sit{'s' if one else ''} between collapse and the rest "
                 f"({COLLAPSE_THRESHOLD_ACC:g}% ≤ AA < {PARTIAL_COLLAPSE_ACC:g}%): {names}. "
                 f"{'It stays in the fits and pulls' if one else 'They stay in the fits and pull'} the power law of "
                 f"{'its' if one else 'their'} group (least squares on log AA); the saturating law's Huber loss is "
                 f"less sensitive.")
    _add_figure(out, figures, "aa_vs_flops")
    for law in LAWS:
        out.table(fit_table(result, law), f"{LAW_TITLES[law]}")
    comparisons = exponent_comparison_table(result)
    if len(comparisons):
        out.table(comparisons, "power-law exponent with generated data minus without (same method and epochs), "
                  "bootstrap interval and p-value")
    _add_figure(out, figures, "exponents")


def _electricity_section(out: Sections, result: PaperReproduction, figures: dict) -> None:
    """Electricity cost and GPU-hours vs compute, and per model."""
    runs, t = result.runs, result.tables
    fit = result.electricity
    dh = t["device_hours_fit"]
    out.section("Electricity cost vs compute")
    lo, hi = fit.ci.get("alpha", (math.nan, math.nan))
    ratio = (runs["device_hours"] / runs["train_flops"])
    out.text(f"Power law `electricity_usd = C · FLOPs^α` over all {fit.n} runs: exponent **{fit.params['alpha']:.3f}** "
             f"[{lo:.3f}, {hi:.3f}], R² {fit.r2:.3f}. An exponent of 1 means cost is proportional to compute. "
             f"GPU-hours vs FLOPs: exponent {dh.params['alpha']:.3f} "
             f"[{num_text(dh.ci.get('alpha', (math.nan,))[0])}, {num_text(dh.ci.get('alpha', (math.nan, math.nan))[1])}]. "
             f"Achieved throughput: median {1 / ratio.median() / 3600 / 1e12:.1f} TFLOP/s per GPU "
             f"(range {1 / ratio.max() / 3600 / 1e12:.1f}–{1 / ratio.min() / 3600 / 1e12:.1f}).")
    _add_figure(out, figures, "electricity_vs_flops")
    per_model = runs.groupby("model").agg(runs=("name", "size"), flops=("train_flops", "median"),
                                          gpu_hours=("device_hours", "median"), usd=("electricity_usd", "median"),
                                          params=("model_parameters", "first")).sort_values("params")
    per_model["tflops_per_gpu"] = per_model["flops"] / per_model["gpu_hours"] / 3600 / 1e12
    out.table(pd.DataFrame({"model": per_model.index, "runs": per_model["runs"].astype(str).values,
                            "median FLOPs": [num_text(v) for v in per_model["flops"]],
                            "median GPU-hours": [num_text(v) for v in per_model["gpu_hours"]],
                            "median electricity [USD]": [num_text(v) for v in per_model["usd"]],
                            "achieved TFLOP/s per GPU": [f"{v:.1f}" for v in per_model["tflops_per_gpu"]]}),
              "compute and cost per model (medians over its runs)")


def _collapse_section(out: Sections, result: PaperReproduction, figures: dict) -> None:
    """Collapse of few-step training: PGD-40 next to AutoAttack."""
    t = result.tables
    out.section("Collapse of 1- and 2-step training (PGD-40 vs AutoAttack)")
    c = t["collapse"]
    one = c[c["attack_steps"] == 1]
    n1, c1 = int(one["n_runs"].sum()), int(one["n_collapsed"].sum())
    multi = t["collapsed_multistep"]
    multi_text = "No run with more attack steps collapses." if not len(multi) else (
        f"{len(multi)} run(s) with more steps collapse too ({_describe_runs(multi)}), listed below.")
    who = f"All {n1} 1-step runs collapse" if c1 == n1 and n1 else f"{c1} of {n1} 1-step runs collapse"
    out.text(f"{who}: AutoAttack accuracy below {COLLAPSE_THRESHOLD_ACC:g}% while PGD-40 on the last epoch still reads "
             f"{one['collapsed_pgd40_min'].min():.1f}–{one['collapsed_pgd40_max'].max():.1f}% (catastrophic overfitting "
             f"that the weaker attack does not see). {multi_text}")
    _add_figure(out, figures, "collapse_pgd40_vs_aa")
    out.table(display_frame(c, {"method": ("method", lambda v: METHOD_NAMES.get(v, v)), "attack_steps": ("steps", INTEGER),
                           "epochs": ("epochs", INTEGER), "n_runs": ("runs", INTEGER), "n_collapsed": ("collapsed", INTEGER),
                           "pgd40_mean": ("mean PGD-40 [%]", PCT1), "aa_mean": ("mean AA [%]", PCT1),
                           "aa_max": ("max AA [%]", PCT1),
                           "collapsed_pgd40_min": ("PGD-40 of collapsed, min [%]", PCT1),
                           "collapsed_pgd40_max": ("PGD-40 of collapsed, max [%]", PCT1),
                           "gap_max": ("max PGD-40 − AA [pp]", PCT1)}),
              f"runs and collapsed runs (AA < {COLLAPSE_THRESHOLD_ACC:g}%) per method, attack steps and epochs")
    out.table(display_frame(t["collapsed_multistep"], {"model": ("model", TEXT), "method": ("method", TEXT),
                                                  "attack_steps": ("steps", INTEGER), "epochs": ("epochs", INTEGER),
                                                  "synthetic_data": ("generated data", TEXT),
                                                  "pgd_robust_acc": ("PGD-40 [%]", PCT2),
                                                  "aa_robust_acc": ("AA [%]", PCT2), "clean_acc": ("clean [%]", PCT2)}),
              "collapsed runs with more than one attack step")
    out.table(levels_display(t["steps_levels"], "attack steps"),
              "AutoAttack accuracy per number of attack steps (statistics over non-collapsed runs)")


def _effect_sections(out: Sections, result: PaperReproduction, figures: dict) -> None:
    """Paired effects of generated data, model size and training length."""
    runs, t = result.runs, result.tables
    out.section("Effect of generated data")
    same_compute = ": the same number of images is seen per epoch, so compute barely changes"
    g = t["generated_data_gain"].iloc[0]
    out.text(f"Pairs of runs equal in model, method, attack steps and epochs, with and without the 1M DDPM images: "
             f"{int(g['n_pairs'])} pairs where neither run collapsed gain **{g['gain_mean']:+.2f} pp** AA on average "
             f"(range {g['gain_min']:+.2f} to {g['gain_max']:+.2f}; positive in {100 * g['share_positive']:.0f}%), "
             f"at a median FLOPs ratio of {g['flops_ratio']:.3g} (treated / baseline training FLOPs"
             f"{same_compute if abs(g['flops_ratio'] - 1) < 0.05 else ''}).")
    _add_figure(out, figures, "effects")
    out.table(levels_display(t["generated_data_levels"], "training data"),
              "AA per level (mean/median/max over non-collapsed runs)")
    out.table(gain_display(t["generated_data_gain"]), "paired AA gain from generated data")

    out.section("Effect of model size")
    out.text(f"Each larger architecture against {arch_label(BASELINE_ARCH)} with the same activation (ReLU or "
             f"DeepMind-style Swish), method, attack steps, epochs and data.")
    out.table(levels_display(t["model_levels"], "model"), "AA per model (statistics over non-collapsed runs)")
    out.table(gain_display(t["model_size_gain"]), f"paired AA gain vs {arch_label(BASELINE_ARCH)}")
    out.table(gain_display(t["model_size_gain_by_data"]), "the same, split by training data")

    out.section("Effect of training length")
    ep = sorted(runs["epochs"].unique())
    out.text(f"{ep[-1]}-epoch runs against {ep[0]}-epoch runs of the same model, method, attack steps and data "
             f"(the longer recipe also adds weight averaging and CutMix).")
    out.table(levels_display(t["epochs_levels"], "epochs"),
              "AA per training length (statistics over non-collapsed runs)")
    out.table(gain_display(t["epochs_gain"]), f"paired AA gain of {ep[-1]} over {ep[0]} epochs")


def _extrapolation_section(out: Sections, result: PaperReproduction, figures: dict) -> None:
    """What the targets would cost under each law."""
    out.section("Extrapolation: what would 60–75% AutoAttack accuracy cost?")
    out.text(f"Each law solved for the target accuracy; compute converted to GPU-hours with the group's median "
             f"GPU-hours per FLOP, to energy at 300 W per GPU and to dollars with the `{PRICE_PRESET}` preset "
             f"($0.12/kWh × PUE 1.58 for electricity; $0.43–1.46 per GPU-hour for cloud rental). "
             f"Only laws with the status ok are solved (\"not extrapolated\" otherwise, see the fits above). "
             f"\"Not reachable\" means the fitted law never gets there (saturating asymptote below the target, or a "
             f"non-positive exponent); the share of bootstrap fits that do reach it is given. An upper bound of ∞ "
             f"means more than {100 * (1 - _level(result)) / 2:.1f}% of the bootstrap laws never reach the target. "
             f"A target whose compute lies beyond {MAX_EXTRAPOLATION:g}x the largest fitted run is refused (the "
             f"rulebook's refusal limit, docs/rulebook.md): a law fitted over about a decade says nothing that far out. "
             f"How far these laws do predict was measured by back-testing them (`robustscale backtest --paper-runs`, "
             f"docs/backtests.md): where the power law is identified on the cheaper two thirds of a group, its 95% "
             f"prediction intervals covered every held-out run, over the 1.5-3.6x reach the splits test.")
    _add_figure(out, figures, "extrapolation")
    for law in LAWS:
        matrix, detail = extrapolation_tables(result, law)
        out.table(matrix, f"{LAW_TITLES[law]}: FLOPs to reach each target")
        if len(detail):
            out.table(detail, f"{LAW_TITLES[law]}: time, energy and cost where reachable")


def _key_numbers(result: PaperReproduction) -> str:
    """The headline numbers as a bullet list (all computed above)."""
    t = result.tables
    top = max(result.targets)
    lines = []
    front = result.group("frontier")
    fp, fs = front.fits["power"], front.fits["saturating"]
    fp_id, fs_id = identify(fp), identify(fs)
    if fp.converged and not fp_id.shows_parameters:
        lines.append(f"- Power law on the Pareto frontier of all runs: {fp_id.status} ({fp_id.reason}).")
    elif fp.converged:
        ex = front.extrapolations["power"][top]
        lo, hi = fp.ci.get("alpha", (math.nan, math.nan))
        reach = "" if ex.solved else (f"; {top:g}% AA refused: {ex.status_reason}" if ex.status == BEYOND_REACH
                                      else f"; not extrapolated ({ex.status})")
        if ex.solved and ex.reachable:
            v = ex.values
            reach = (f"; it reaches {top:g}% AA at {interval_text(*v['compute_flops'])} FLOPs ({ex.reach}), "
                     f"{num_text(v['device_hours'][0] / (24 * 365.25))} GPU-years, "
                     f"${num_text(v['electricity_usd'][0])} of electricity")
        lines.append(f"- Power law on the Pareto frontier of all runs: α = {interval_text(fp.params['alpha'], lo, hi)}"
                     f"{reach}.")
    if fs.converged and not fs_id.ok:
        lines.append(f"- Saturating law on the same frontier: {fs_id.status} ({fs_id.reason}): no asymptote and no "
                     f"cost of {top:g}% can be read off it.")
    elif fs.converged:
        ex = front.extrapolations["saturating"][top]
        lo, hi = fs.ci.get("y_max", (math.nan, math.nan))
        share = "" if math.isnan(ex.share_reachable) else \
            f" (reachable in {pct_text(100 * ex.share_reachable, 0)}% of bootstrap fits)"
        if ex.status == BEYOND_REACH:
            reach = f"{top:g}% refused: {ex.status_reason}"
        elif not ex.reachable:
            reach = f"{top:g}% is not reachable under it{share}"
        else:
            reach = f"{top:g}% is reached at {num_text(ex.values['compute_flops'][0])} FLOPs ({ex.reach})"
        lines.append(f"- Saturating law on the same frontier: asymptote {interval_text(fs.params['y_max'], lo, hi)}% AA; "
                     f"{reach}.")
    grid = [g for g in result.groups if g.group and g.fits["power"].converged
            and identify(g.fits["power"]).shows_parameters]
    for synth in (True, False):
        alphas = [g.fits["power"].params["alpha"] for g in grid if g.group["synthetic_data"] == synth]
        if alphas:
            lines.append(f"- Power-law exponents of the {len(alphas)} groups {'with' if synth else 'without'} "
                         f"generated data: {min(alphas):.3g} to {max(alphas):.3g}.")
    e = result.electricity
    if e.converged and identify(e).shows_parameters:
        lo, hi = e.ci.get("alpha", (math.nan, math.nan))
        lines.append(f"- Electricity cost grows as FLOPs^{interval_text(e.params['alpha'], lo, hi)}.")
    g = t["generated_data_gain"].iloc[0]
    lines.append(f"- Generated data adds {g['gain_mean']:+.1f} pp AA on average over {int(g['n_pairs'])} matched pairs "
                 f"(range {g['gain_min']:+.1f} to {g['gain_max']:+.1f}).")
    c = t["collapse"]
    lines.append(f"- {int(c['n_collapsed'].sum())} of {int(c['n_runs'].sum())} runs collapse (AA < "
                 f"{COLLAPSE_THRESHOLD_ACC:g}%): {int(c[c['attack_steps'] == 1]['n_collapsed'].sum())} with 1 step, "
                 f"{int(c[c['attack_steps'] > 1]['n_collapsed'].sum())} with more.")
    return "Key numbers:\n\n" + "\n".join(lines)



def _describe_runs(runs) -> str:
    """``"2-step, 400 epochs: 3 PGD-AT, 7 TRADES"``."""
    parts = []
    for (steps, ep), part in runs.groupby(["attack_steps", "epochs"], sort=True):
        counts = part["method"].value_counts().sort_index()
        methods = ", ".join(f"{n} {METHOD_NAMES.get(m, m)}" for m, n in counts.items())
        parts.append(f"{steps}-step, {ep} epochs: {methods}")
    return "; ".join(parts)



def _add_figure(section: Sections, figures: dict, name: str) -> None:
    png, caption = figures[name]
    section.figure(png, name, caption)



def _level(result: PaperReproduction) -> float:
    return result.groups[0].fits["power"].level

