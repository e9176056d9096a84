"""Reproduce the 2024 study (Debenedetti et al., "Scaling Compute Is Not All You Need for
Adversarial Robustness") from its 319 published runs.

:func:`reproduce_paper` loads ``results.csv`` (``scaling.load_paper_runs``: total training FLOPs,
device-hours, kWh and USD per run) and recomputes the study's analyses:

1. AutoAttack robust accuracy vs total training FLOPs, one fit per (method, generated data,
   epochs) plus all runs and their Pareto frontier, under the study's power law
   ``AA = C * FLOPs^alpha`` and the saturating law ``100 - AA = E + A * FLOPs^-alpha``
   (asymptote ``100 - E``). Collapsed runs (AA < ``schema.COLLAPSE_THRESHOLD_ACC``) are left out of
   the fits and counted.
2. Electricity cost vs FLOPs (power law; its exponent is 1 when energy is proportional to compute).
3. Collapse (catastrophic overfitting): PGD-40 next to AutoAttack per method / steps / epochs.
4. The effect of generated data, model size and training length: per-level tables and paired
   comparisons (same configuration except the factor).
5. Extrapolation: compute, GPU-hours, energy and dollars to reach each target AA under each law,
   with bootstrap intervals, priced with the ``paper-2024`` preset of ``compute/prices.yaml`` and the
   runs' own GPU-hours per FLOP; "not reachable" where the law never gets there.

Outputs: ``out_dir/report.html`` (self-contained), optionally a markdown page and its PNG figures.
Accuracies are percent (0-100); FLOPs are total training FLOPs of a run (all 4 GPUs).
"""
from __future__ import annotations

import html
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from ..errors import UserError
from ..rundir import write_bytes
from ..schema import COLLAPSE_THRESHOLD_ACC
from ..scaling.paper import PAPER_URL

DEFAULT_TARGETS = (60, 65, 70, 75)
REPORT_TITLE = "Reproducing the 2024 scaling study from its published runs"
PRICE_PRESET = "paper-2024"
LAWS = ("power", "saturating")
LAW_TITLES = {"power": "power law  AA = C·FLOPs^α", "saturating": "saturating law  100 − AA = E + A·FLOPs^−α"}
# The per-group fits: the study's grid factors other than model and attack steps.
GROUP_COLUMNS = ("method", "synthetic_data", "epochs")
PARTIAL_COLLAPSE_ACC = 30.0  # runs above the collapse threshold but this far below the rest are named
BASELINE_ARCH = "wide_resnet28_10"  # the smallest model of the grid: the model-size baseline
METHOD_NAMES = {"pgd": "PGD-AT", "trades": "TRADES"}
SYNTH_COLOR = {False: "#1f77b4", True: "#d62728"}
SYNTH_NAMES = {False: "CIFAR-10 only", True: "+ generated data"}


# ---------------------------------------------------------------------- report content
@dataclass
class Block:
    """One piece of a section: ``kind`` is ``"text"`` (markdown), ``"table"`` or ``"figure"``.

    text: ``content`` is markdown (paragraphs, ``- `` bullets, ``**bold**``, ```code```, fences).
    table: ``content`` is a DataFrame of display strings with a ``caption``. figure: ``content``
    is a matplotlib Figure, ``name`` its file stem (``docs/figures/paper/<name>.png``).
    """

    kind: str
    content: Any
    caption: str = ""
    name: str = ""


@dataclass
class Section:
    title: str
    blocks: list[Block] = field(default_factory=list)

    def text(self, markdown: str) -> None:
        self.blocks.append(Block("text", markdown))

    def table(self, df, caption: str = "") -> None:
        self.blocks.append(Block("table", df, caption))

    def figure(self, fig, name: str, caption: str) -> None:
        self.blocks.append(Block("figure", fig, caption, name))


# ---------------------------------------------------------------------- result
@dataclass
class GroupFit:
    """The fits of one group of runs: ``fits[law]`` is a ``scaling.FitResult``;
    ``extrapolations[law][target]`` a ``scaling.Extrapolation``."""

    key: str
    label: str
    group: dict[str, Any]
    frontier: bool
    fits: dict[str, Any]
    extrapolations: dict[str, dict[float, Any]] = field(default_factory=dict)


@dataclass
class PaperReproduction:
    """What :func:`reproduce_paper` computed.

    ``runs``: the 319 runs in the run schema (plus ``architecture`` and ``activation``).
    ``groups``: the AA-vs-FLOPs fits, in report order. ``electricity``: power-law fit of
    ``electricity_usd`` vs ``train_flops``. ``tables``: the numeric tables behind the report
    (DataFrames), e.g. ``collapse``, ``generated_data_pairs``, ``generated_data_gain``.
    """

    source: str
    runs: Any
    groups: list[GroupFit]
    electricity: Any
    tables: dict[str, Any]
    sections: list[Section]
    targets: tuple[float, ...]
    bootstrap: int
    seed: int
    report_path: Path
    markdown_path: Path | None = None
    figure_paths: list[Path] = field(default_factory=list)
    elapsed_seconds: float = float("nan")

    def group(self, key: str) -> GroupFit:
        for g in self.groups:
            if g.key == key:
                return g
        raise KeyError(f"no group {key!r}; groups: {', '.join(g.key for g in self.groups)}")

    def summary_rows(self) -> list[dict[str, Any]]:
        """One dict per (group, law), JSON-safe (None for NaN / infinite bounds).

        Keys: ``group`` (label), ``key``, ``law``, ``n_runs`` (fitted), ``n_excluded`` (collapsed),
        ``converged``, ``message``, ``exponent`` / ``exponent_low`` / ``exponent_high`` (alpha),
        ``asymptote_acc`` / ``_low`` / ``_high`` (100 - E, saturating only), ``r2``; and per target
        T: ``reachable_T``, ``share_reachable_T`` and ``<q>_T`` / ``<q>_T_low`` / ``<q>_T_high`` for q in
        ``compute_flops``, ``device_hours``, ``energy_kwh``, ``electricity_usd``, ``cloud_usd_low``,
        ``cloud_usd_high``. ``<q>_T_high`` is None when the upper bound is infinite (too many
        bootstrap laws never reach T).
        """
        rows = []
        for g in self.groups:
            for law in LAWS:
                fit = g.fits[law]
                row: dict[str, Any] = {"group": g.label, "key": g.key, "law": law, "n_runs": fit.n,
                                       "n_excluded": fit.n_excluded, "converged": bool(fit.converged),
                                       "message": fit.message}
                lo, hi = fit.ci.get("alpha", (math.nan, math.nan))
                row.update(exponent=_safe(fit.params.get("alpha") if fit.converged else None),
                           exponent_low=_safe(lo), exponent_high=_safe(hi))
                if law == "saturating" and fit.converged:
                    lo, hi = fit.ci.get("y_max", (math.nan, math.nan))
                    row.update(asymptote_acc=_safe(fit.params.get("y_max")), asymptote_acc_low=_safe(lo),
                               asymptote_acc_high=_safe(hi))
                else:
                    row.update(asymptote_acc=None, asymptote_acc_low=None, asymptote_acc_high=None)
                row["r2"] = _safe(fit.r2) if fit.converged else None
                for t in self.targets:
                    ex = g.extrapolations[law][t]
                    tag = _tag(t)
                    row[f"reachable_{tag}"] = bool(ex.converged and ex.reachable)
                    row[f"share_reachable_{tag}"] = _safe(ex.share_reachable)
                    for q in SUMMARY_QUANTITIES:
                        point, low, high = ex.values.get(q, (math.nan, math.nan, math.nan))
                        row[f"{q}_{tag}"] = _safe(point)
                        row[f"{q}_{tag}_low"] = _safe(low)
                        row[f"{q}_{tag}_high"] = _safe(high)
                rows.append(row)
        return rows


SUMMARY_QUANTITIES = ("compute_flops", "device_hours", "energy_kwh", "electricity_usd", "cloud_usd_low",
                      "cloud_usd_high")


def _tag(target: float) -> str:
    return f"{target:g}"


def _safe(v) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


# ---------------------------------------------------------------------- formatting
def _num(v, digits: int = 3) -> str:
    """Compact number for tables: ``47.6``, ``3.1e+21``; None/NaN -> ``-``; inf -> ``∞``."""
    from ..scaling.format import fmt

    if v is not None and isinstance(v, (int, float)) and math.isinf(v):
        return "∞"
    return fmt(v, digits)


def _interval(point, low, high, digits: int = 3) -> str:
    if low is None or (isinstance(low, float) and math.isnan(low)):
        return _num(point, digits)
    return f"{_num(point, digits)} [{_num(low, digits)}, {_num(high, digits)}]"


def _pct(v, digits: int = 1) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.{digits}f}"


def format_summary_table(rows: Sequence[dict[str, Any]]) -> str:
    """Aligned plain-text table of :meth:`PaperReproduction.summary_rows` for the terminal:
    exponent with its interval, asymptote, and the FLOPs (and electricity USD for the last target)
    to reach each target; ``n/r (p%)`` where the law does not reach it (``p``: share of bootstrap
    fits that do)."""
    from ..scaling.format import render_table

    if not rows:
        return "(no fits)"
    targets = [k[len("reachable_"):] for k in rows[0] if k.startswith("reachable_")]
    headers = ["group", "law", "runs", "alpha [95% CI]", "asymptote AA [%]"]
    headers += [f"FLOPs to {t}% AA" for t in targets]
    if targets:
        headers += [f"GPU-h to {targets[-1]}%", f"electricity to {targets[-1]}% [USD]"]
    body = []
    for r in rows:
        if not r["converged"]:
            cells = [r["group"], r["law"], str(r["n_runs"]), "fit failed", "-"] + ["-"] * len(targets)
            cells += ["-", "-"] if targets else []
            body.append(cells)
            continue
        cells = [r["group"], r["law"], str(r["n_runs"]),
                 _interval(r["exponent"], r["exponent_low"], r["exponent_high"]),
                 _interval(r["asymptote_acc"], r["asymptote_acc_low"], r["asymptote_acc_high"])
                 if r["asymptote_acc"] is not None else "-"]
        for t in targets:
            cells.append(_num(r[f"compute_flops_{t}"]) if r[f"reachable_{t}"] else _not_reachable_short(
                r[f"share_reachable_{t}"]))
        if targets:
            t = targets[-1]
            reach = r[f"reachable_{t}"]
            cells.append(_num(r[f"device_hours_{t}"]) if reach else "-")
            cells.append(_num(r[f"electricity_usd_{t}"]) if reach else "-")
        body.append(cells)
    right = [False, False] + [True] * (len(headers) - 2)
    return render_table(headers, body, right)


def _not_reachable_short(share) -> str:
    return "n/r" if share is None else f"n/r ({100 * share:.0f}%)"


# ---------------------------------------------------------------------- data
def _prepare_runs(df):
    """Add ``architecture`` (model without the DeepMind-style ``_dm`` suffix) and ``activation``."""
    df = df.copy()
    model = df["model"].astype(str)
    df["architecture"] = model.str.replace(r"_dm$", "", regex=True)
    df["activation"] = model.str.endswith("_dm").map({True: "swish (DM)", False: "relu"})
    df["synthetic_data"] = df["synthetic_data"].astype(bool)
    df["epochs"] = df["epochs"].astype(int)
    df["attack_steps"] = df["attack_steps"].astype(int)
    return df


def _arch_label(arch: str) -> str:
    """``wide_resnet34_20`` -> ``WRN-34-20``."""
    parts = arch.replace("wide_resnet", "").split("_")
    return "WRN-" + "-".join(parts) if arch.startswith("wide_resnet") else arch


def _group_label(group: dict[str, Any]) -> str:
    return (f"{METHOD_NAMES.get(group['method'], group['method'])}, "
            f"{'generated data' if group['synthetic_data'] else 'no generated data'}, {group['epochs']} ep")


def _group_key(group: dict[str, Any]) -> str:
    return f"{group['method']}-{'synth' if group['synthetic_data'] else 'nosynth'}-{group['epochs']}ep"


# ---------------------------------------------------------------------- analyses
def level_table(df, column: str, order: Iterable | None = None, labels: dict | None = None):
    """Robust accuracy per level of ``column``.

    Returns a DataFrame with one row per level: ``level``, ``n_runs``, ``n_collapsed``
    (AA < threshold), and over the non-collapsed runs ``aa_mean``, ``aa_median``, ``aa_max`` (%),
    ``clean_mean`` (%), plus ``aa_max_all`` over all runs.
    """
    import pandas as pd

    levels = list(order) if order is not None else sorted(df[column].unique())
    rows = []
    for level in levels:
        part = df[df[column] == level]
        ok = part[~part["collapsed"]]
        rows.append({"level": labels.get(level, level) if labels else level, "n_runs": len(part),
                     "n_collapsed": int(part["collapsed"].sum()),
                     "aa_mean": ok["aa_robust_acc"].mean(), "aa_median": ok["aa_robust_acc"].median(),
                     "aa_max": ok["aa_robust_acc"].max(), "clean_mean": ok["clean_acc"].mean()})
    return pd.DataFrame(rows)


def paired_gain(df, column: str, treated, baseline, keys: Sequence[str]):
    """Pairs of runs equal in ``keys`` whose ``column`` is ``treated`` vs ``baseline``.

    Returns a DataFrame with the keys, ``aa_treated``, ``aa_baseline``, ``gain`` (percentage
    points, treated - baseline), ``collapsed`` (either run of the pair collapsed) and
    ``flops_ratio`` (treated / baseline training FLOPs).
    """
    cols = list(keys) + ["aa_robust_acc", "collapsed", "train_flops"]
    a = df[df[column] == treated][cols]
    b = df[df[column] == baseline][cols]
    m = a.merge(b, on=list(keys), suffixes=("_t", "_b"), how="inner", validate="one_to_one")
    out = m[list(keys)].copy()
    out["aa_treated"] = m["aa_robust_acc_t"]
    out["aa_baseline"] = m["aa_robust_acc_b"]
    out["gain"] = m["aa_robust_acc_t"] - m["aa_robust_acc_b"]
    out["collapsed"] = m["collapsed_t"] | m["collapsed_b"]
    out["flops_ratio"] = m["train_flops_t"] / m["train_flops_b"]
    return out.reset_index(drop=True)


def gain_summary(pairs, by: str | None = None, label: str = "all pairs", order: Iterable | None = None,
                 labels: dict | None = None):
    """Summary of paired gains over the pairs where neither run collapsed, overall and per ``by``.

    Columns: ``subset``, ``n_pairs`` (both runs not collapsed), ``n_collapsed_pairs`` (left out),
    ``gain_mean``, ``gain_median``, ``gain_min``, ``gain_max`` (AA percentage points),
    ``share_positive`` (0-1), ``flops_ratio`` (median treated / baseline FLOPs).
    """
    import pandas as pd

    def one(name, part):
        ok = part[~part["collapsed"]]
        g = ok["gain"]
        return {"subset": name, "n_pairs": len(ok), "n_collapsed_pairs": int(part["collapsed"].sum()),
                "gain_mean": g.mean(), "gain_median": g.median(), "gain_min": g.min(), "gain_max": g.max(),
                "share_positive": (g > 0).mean() if len(g) else math.nan,
                "flops_ratio": ok["flops_ratio"].median()}

    rows = [one(label, pairs)]
    if by is not None:
        levels = list(order) if order is not None else sorted(pairs[by].unique())
        for level in levels:
            name = labels.get(level, level) if labels else f"{by} = {level}"
            rows.append(one(name, pairs[pairs[by] == level]))
    return pd.DataFrame(rows)


def collapse_table(df):
    """Per method / attack steps / epochs: runs, collapsed runs (AA below the threshold), mean
    PGD-40 and AA (%), the PGD-40 range of the collapsed runs and the largest PGD-40 - AA gap."""
    import pandas as pd

    rows = []
    for (method, steps, epochs), part in df.groupby(["method", "attack_steps", "epochs"], sort=True):
        col = part[part["collapsed"]]
        rows.append({"method": method, "attack_steps": int(steps), "epochs": int(epochs), "n_runs": len(part),
                     "n_collapsed": len(col), "pgd40_mean": part["pgd_robust_acc"].mean(),
                     "aa_mean": part["aa_robust_acc"].mean(), "aa_max": part["aa_robust_acc"].max(),
                     "collapsed_pgd40_min": col["pgd_robust_acc"].min() if len(col) else math.nan,
                     "collapsed_pgd40_max": col["pgd_robust_acc"].max() if len(col) else math.nan,
                     "gap_max": (part["pgd_robust_acc"] - part["aa_robust_acc"]).max()})
    return pd.DataFrame(rows)


def _group_specs(runs):
    """``[(key, label, group dict, frame, frontier)]``: all runs, their frontier, then each grid group.

    The group dicts name real columns (``{}`` for all runs), as ``scaling.fit_groups`` would."""
    specs = [("all", "all runs", {}, runs, False), ("frontier", "all runs, Pareto frontier", {}, runs, True)]
    for key, part in runs.groupby(list(GROUP_COLUMNS), sort=True):
        group = {c: (k.item() if hasattr(k, "item") else k) for c, k in zip(GROUP_COLUMNS, key)}
        group["synthetic_data"] = bool(group["synthetic_data"])
        specs.append((_group_key(group), _group_label(group), group, part, False))
    return specs


# ---------------------------------------------------------------------- main entry
def reproduce_paper(source: str | Path = PAPER_URL, out_dir: Path | str = "paper-reproduction", *,
                    markdown: Path | str | None = None, figures_dir: Path | str | None = None,
                    bootstrap: int = 1000, seed: int = 0, targets: Iterable[float] = DEFAULT_TARGETS,
                    progress: bool = True, command: str | None = None, level: float = 0.95,
                    n_jobs: int | None = None) -> PaperReproduction:
    """Recompute the 2024 study's analyses from its published runs and write the report.

    Args:
        source: path or URL of the study's ``results.csv`` (downloaded only for a URL).
        out_dir: folder for ``report.html`` (created).
        markdown: also write this markdown page, with PNG figures in ``figures_dir`` (default:
            ``<markdown folder>/figures/paper``) linked relatively.
        figures_dir: write the PNG figures here (also without ``markdown``).
        bootstrap: case resamples per fit (0: no intervals). Group ``i`` (report order) uses
            bootstrap seed ``seed + i`` so the groups' resamples are independent.
        targets: AutoAttack accuracies (%) to extrapolate to.
        command: the command line to state in the markdown (default: this function call).
        n_jobs: bootstrap worker processes (default: all cores).
    Returns:
        :class:`PaperReproduction` (``report_path``, ``summary_rows()``, the tables and fits).
    Raises:
        UserError: missing/invalid source, bootstrap < 0, a target outside (0, 100).
    """
    from ..scaling import extrapolate, fit_law, load_paper_runs

    start = time.perf_counter()
    bootstrap = int(bootstrap)
    if bootstrap < 0:
        raise UserError(f"invalid bootstrap {bootstrap}: must be >= 0")
    targets = tuple(float(t) for t in targets)
    if not targets:
        raise UserError("no targets given; valid: AutoAttack accuracies in (0, 100), e.g. 60,65,70,75")
    for t in targets:
        if not (0 < t < 100):
            raise UserError(f"invalid target {t:g}: an AutoAttack accuracy target must be in (0, 100) percent")
    if not (0 < level < 1):
        raise UserError(f"invalid level {level}: must be in (0, 1), e.g. 0.95")
    out_dir = Path(out_dir)
    markdown = Path(markdown) if markdown is not None else None
    if markdown is not None and figures_dir is None:
        figures_dir = markdown.parent / "figures" / "paper"
    figures_dir = Path(figures_dir) if figures_dir is not None else None

    steps = ["load"] + [f"fit {law}" for law in LAWS] + ["electricity", "tables", "figures", "write"]
    bar = _Progress(steps, progress)
    bar.step("load")
    runs = _prepare_runs(load_paper_runs(source))
    if not len(runs):
        raise UserError(f"{source} holds no runs")

    from ..compute import CostModel

    cost_model = CostModel.from_yaml(preset=PRICE_PRESET)
    specs = _group_specs(runs)
    groups = [GroupFit(key, label, group, frontier, {}) for key, label, group, _, frontier in specs]
    for law in LAWS:
        bar.step(f"fit {law}")
        for i, (g, (_, _, _, part, frontier)) in enumerate(zip(groups, specs)):
            g.fits[law] = fit_law(part, law=law, x="train_flops", y="aa_robust_acc", bootstrap=bootstrap,
                                  seed=seed + i, frontier=frontier, exclude_below=COLLAPSE_THRESHOLD_ACC,
                                  level=level, n_jobs=n_jobs, progress=progress, group=g.group)
            g.extrapolations[law] = {t: extrapolate(g.fits[law], t, df=runs, cost_model=cost_model,
                                                    device_type="gpu")[0] for t in targets}
    bar.step("electricity")
    electricity = fit_law(runs, law="power", x="train_flops", y="electricity_usd", bootstrap=bootstrap,
                          seed=seed + len(groups), level=level, n_jobs=n_jobs, progress=progress)
    device_hours_fit = fit_law(runs, law="power", x="train_flops", y="device_hours", bootstrap=bootstrap,
                               seed=seed + len(groups) + 1, level=level, n_jobs=n_jobs, progress=progress)

    bar.step("tables")
    tables = _tables(runs)
    result = PaperReproduction(source=str(source), runs=runs, groups=groups, electricity=electricity, tables=tables,
                               sections=[], targets=targets, bootstrap=bootstrap, seed=seed,
                               report_path=out_dir / "report.html")
    result.tables["device_hours_fit"] = device_hours_fit

    bar.step("figures")
    figures = _figures(result)
    result.sections = _sections(result, figures, cost_model, command or _default_command(source, out_dir, markdown,
                                                                                          bootstrap, seed, targets))
    bar.step("write")
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_html(result, result.report_path)
    if figures_dir is not None:
        from ..report.plots import save_figure

        for name, (fig, _) in figures.items():
            result.figure_paths += save_figure(fig, figures_dir, name, formats=("png",))
    if markdown is not None:
        markdown.parent.mkdir(parents=True, exist_ok=True)
        rel = Path(os.path.relpath(figures_dir, markdown.parent)).as_posix()
        write_bytes(markdown, _render_markdown(result, rel).encode("utf-8"))
        result.markdown_path = markdown
    bar.close()
    result.elapsed_seconds = time.perf_counter() - start
    return result


def _default_command(source, out_dir, markdown, bootstrap, seed, targets) -> str:
    args = [repr(str(source)), repr(str(out_dir))]
    if markdown is not None:
        args.append(f"markdown={str(markdown)!r}")
    shown = tuple(int(t) if t == int(t) else t for t in targets)
    args += [f"bootstrap={bootstrap}", f"seed={seed}", f"targets={shown}"]
    return f"python -c \"from robustscale.study.paper import reproduce_paper; reproduce_paper({', '.join(args)})\""


class _Progress:
    """A tqdm bar over the named stages (no-op when disabled)."""

    def __init__(self, steps: list[str], enabled: bool):
        self.bar = None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=len(steps), desc="paper reproduction", unit="stage", dynamic_ncols=True)
        self.started = False

    def step(self, name: str) -> None:
        if self.bar is None:
            return
        if self.started:
            self.bar.update(1)
        self.started = True
        self.bar.set_postfix_str(name)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.update(1)
            self.bar.close()


# ---------------------------------------------------------------------- tables
def _tables(runs) -> dict[str, Any]:
    t: dict[str, Any] = {}
    t["collapse"] = collapse_table(runs)
    t["collapsed_multistep"] = runs[runs["collapsed"] & (runs["attack_steps"] > 1)][
        ["name", "model", "method", "attack_steps", "epochs", "synthetic_data", "pgd_robust_acc", "aa_robust_acc",
         "clean_acc"]].sort_values(["method", "model"]).reset_index(drop=True)
    t["steps_levels"] = level_table(runs, "attack_steps")
    # Generated data
    t["generated_data_levels"] = level_table(runs, "synthetic_data", [False, True], SYNTH_NAMES)
    pairs = paired_gain(runs, "synthetic_data", True, False, ["model", "method", "attack_steps", "epochs"])
    t["generated_data_pairs"] = pairs
    epoch_names = {e: f"{e} epochs" for e in pairs["epochs"].unique()}
    t["generated_data_gain"] = _concat([gain_summary(pairs, "epochs", labels=epoch_names),
                                        gain_summary(pairs, "method", labels=METHOD_NAMES).iloc[1:]])
    # Model size: each architecture vs WRN-28-10 of the same activation, all else equal
    archs = _archs_by_size(runs)
    t["model_levels"] = _model_levels(runs)
    pair_frames = []
    for arch in archs:
        if arch == BASELINE_ARCH:
            continue
        p = paired_gain(runs, "architecture", arch, BASELINE_ARCH,
                        ["activation", "method", "attack_steps", "epochs", "synthetic_data"])
        p["architecture"] = arch
        pair_frames.append(p)
    model_pairs = _concat(pair_frames)
    t["model_size_pairs"] = model_pairs
    t["model_size_gain"] = _concat([
        gain_summary(model_pairs[model_pairs["architecture"] == a],
                     label=f"{_arch_label(a)} vs {_arch_label(BASELINE_ARCH)}")
        for a in archs if a != BASELINE_ARCH])
    t["model_size_gain_by_data"] = _concat([
        gain_summary(model_pairs[(model_pairs["architecture"] == a) & (model_pairs["synthetic_data"] == s)],
                     label=f"{_arch_label(a)} vs {_arch_label(BASELINE_ARCH)}, {SYNTH_NAMES[s]}")
        for s in (False, True) for a in archs if a != BASELINE_ARCH])
    # Training length
    t["epochs_levels"] = level_table(runs, "epochs")
    ep = sorted(runs["epochs"].unique())
    len_pairs = paired_gain(runs, "epochs", ep[-1], ep[0], ["model", "method", "attack_steps", "synthetic_data"])
    t["epochs_pairs"] = len_pairs
    t["epochs_gain"] = _concat([gain_summary(len_pairs, "synthetic_data", labels=SYNTH_NAMES),
                                gain_summary(len_pairs, "method", labels=METHOD_NAMES).iloc[1:]])
    return t


def _concat(frames):
    import pandas as pd

    frames = [f for f in frames if f is not None and len(f)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _model_levels(runs):
    lv = level_table(runs, "model", runs.groupby("model")["model_parameters"].first().sort_values().index)
    params = runs.groupby("model")["model_parameters"].first()
    lv.insert(1, "parameters", [params[m] for m in lv["level"]])
    return lv


# ---------------------------------------------------------------------- figures
# report.plots draws accuracy on a log axis with collapsed runs at 0.5%, which squeezes this
# grid's 30-61% into a sliver; these panels use a linear axis and leave collapsed runs to the
# collapse figure. The PGD-40-vs-AA and paired-gain figures have no counterpart in report.plots.
def _new_figure(w: float, h: float):
    """An empty Agg-rendered figure (no pyplot: no display, no global state), as report.plots draws."""
    from matplotlib.figure import Figure

    return Figure(figsize=(w, h), dpi=110, layout="constrained")


def _figures(result: PaperReproduction) -> dict[str, tuple[Any, str]]:
    """``file stem -> (matplotlib Figure, caption)``."""
    from ..report.plots import plot_cost

    runs = result.runs
    return {
        "aa_vs_flops": (_fig_aa_vs_flops(result), "AutoAttack accuracy vs total training FLOPs per method and "
                        "training length; solid: power law, dashed: saturating law (collapsed runs not shown)."),
        "exponents": (_fig_exponents(result), "Left: power-law exponent α per group; right: the saturating law's "
                      "asymptote 100 − E per group, with the targets dotted (95% bootstrap intervals)."),
        "extrapolation": (_fig_extrapolation(result), "The laws carried towards the targets: all runs' Pareto "
                          "frontier (black, 95% bootstrap band) and the groups trained with generated data; the "
                          "dashed vertical line marks the largest run."),
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


def _curve(fit, xs):
    import numpy as np

    if not fit.converged:
        return None
    return np.asarray(fit.predict(xs), float)


def _fig_aa_vs_flops(result: PaperReproduction):
    import numpy as np

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
                g = result.group(_group_key({"method": method, "synthetic_data": synth, "epochs": ep}))
                if not len(good):
                    continue
                xs = np.geomspace(good["train_flops"].min(), good["train_flops"].max(), 100)
                for law, style in (("power", "-"), ("saturating", "--")):
                    fit = g.fits[law]
                    ys = _curve(fit, xs)
                    if ys is None:
                        ax.plot([], [], style, color=color, label=f"{law}: fit failed")
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
    from matplotlib.ticker import NullFormatter

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
            if not fit.converged:
                ax.text(0.02, j, "fit failed", transform=ax.get_yaxis_transform(), va="center", fontsize=8,
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
    import numpy as np

    runs = result.runs
    ok = runs[~runs["collapsed"]]
    shown = ["frontier"] + [g.key for g in result.groups if g.group.get("synthetic_data") is True]
    colors = ["black", "#d62728", "#ff7f0e", "#9467bd", "#2ca02c", "#8c564b"]
    fig = _new_figure(12, 5.4)
    axes = fig.subplots(1, len(LAWS), sharey=True)
    xmin = ok["train_flops"].min() / 2
    x_data = ok["train_flops"].max()
    # Out to where the frontier's power law reaches the highest target, within 10 decades.
    front = result.group("frontier").fits["power"]
    reach = front.solve_for(max(result.targets)) if front.converged else math.inf
    xmax = min(max(x_data * 100, 3 * reach if math.isfinite(reach) else x_data * 1e4), x_data * 1e10)
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
            ys = _curve(fit, xs)
            if ys is None:
                ax.plot([], [], color=color, label=f"{g.label}: fit failed")
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
    import matplotlib as mpl

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
    import numpy as np

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
    archs = [a for a in _archs_by_size(result.runs) if a != BASELINE_ARCH]
    strip(axes[1], [(f"{_arch_label(a)}\n{'gen. data' if s else 'no gen. data'}",
                     m[(m["architecture"] == a) & (m["synthetic_data"] == s)]["gain"] if len(m) else [],
                     SYNTH_COLOR[s]) for a in archs for s in (False, True)],
          f"larger model vs {_arch_label(BASELINE_ARCH)} (same activation)")
    e = t["epochs_pairs"]
    e = e[~e["collapsed"]]
    ep = sorted(result.runs["epochs"].unique())
    strip(axes[2], [(SYNTH_NAMES[s], e[e["synthetic_data"] == s]["gain"], SYNTH_COLOR[s]) for s in (False, True)],
          f"{ep[-1]} vs {ep[0]} epochs")
    axes[0].set_ylabel("paired AA gain [percentage points]")
    fig.suptitle("What moves AutoAttack accuracy: paired comparisons (black bar and number: mean)")
    return fig


def _archs_by_size(runs) -> list[str]:
    return runs.groupby("architecture")["model_parameters"].median().sort_values().index.tolist()

# ---------------------------------------------------------------------- sections
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
        row["α [95% CI]"] = _interval(fit.params["alpha"], *fit.ci.get("alpha", (None, None)))
        if law == "power":
            row["C"] = _num(fit.params["C"])
        else:
            row["asymptote 100 − E [%]"] = _interval(fit.params["y_max"], *fit.ci.get("y_max", (None, None)))
        row["R²"] = f"{fit.r2:.3f}"
        row["FLOPs range"] = f"{_num(fit.x_range[0])} – {_num(fit.x_range[1])}"
        rows.append(row)
    return pd.DataFrame(rows).fillna("")


def _reach_cell(ex, q: str = "compute_flops") -> str:
    if not ex.converged:
        return "fit failed"
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
            if ex.converged and ex.reachable:
                v = ex.values
                detail.append({
                    "group": g.label, "target AA [%]": f"{t:g}",
                    "FLOPs": _interval(*v["compute_flops"]),
                    "× largest run": _num(ex.factor),
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


def _sections(result: PaperReproduction, figures: dict, cost_model, command: str) -> list[Section]:
    runs = result.runs
    t = result.tables
    n = len(runs)
    n_col = int(runs["collapsed"].sum())
    secs: list[Section] = []

    s = Section("Overview")
    s.text(f"This page recomputes the analyses of Debenedetti et al. (2024), *Scaling Compute Is Not All You Need "
           f"for Adversarial Robustness*, from the study's {n} published runs (`results.csv`, CIFAR-10, "
           f"ℓ∞ ε = 8/255, AutoAttack on the 10,000 test images). {n_col} runs collapsed "
           f"(AutoAttack accuracy below {COLLAPSE_THRESHOLD_ACC:g}%); they are flagged in every table and left out "
           f"of the scaling fits.")
    intervals = (f"Intervals are {100 * _level(result):.0f}% case-resampling bootstrap percentile intervals with "
                 f"**{result.bootstrap} resamples**, **seed {result.seed}** (fit group *i* in the order of the tables "
                 f"below uses seed {result.seed} + *i*)." if result.bootstrap else
                 "No bootstrap (**0 resamples**): point estimates only, no intervals.")
    s.text(f"{intervals} Costs use the `{PRICE_PRESET}` price preset ({cost_model.to_dict()['description']}) and "
           f"each group's own GPU-hours per FLOP.")
    s.text(_key_numbers(result))
    s.text(f"Regenerated with:\n\n```\n{command}\n```")
    s.text("Units: FLOPs are total training FLOPs of a run (all 4 GPUs, attack steps included); accuracies are "
           "percent; gains are percentage points (pp); GPU-hours count every GPU.")
    secs.append(s)

    # --- scaling fits
    s = Section("Robust accuracy vs training compute")
    s.text("One fit per method × generated data × training length (each pools the 4 model sizes × 2 "
           "activations × 5 attack-step counts), plus all runs together and their Pareto frontier (the best "
           "accuracy reached at or below each compute). The study's form is the power law "
           "`AA = C · FLOPs^α`; the saturating form `100 − AA = E + A · FLOPs^−α` lets accuracy level off at "
           "100 − E.")
    partial = runs[~runs["collapsed"] & (runs["aa_robust_acc"] < PARTIAL_COLLAPSE_ACC)]
    if len(partial):
        names = ", ".join(f"{r.name} ({r.aa_robust_acc:.1f}% AA, PGD-40 {r.pgd_robust_acc:.1f}%)"
                          for r in partial.itertuples())
        one = len(partial) == 1
        s.text(f"{len(partial)} run{'' if one else 's'} sit{'s' if one else ''} between collapse and the rest "
               f"({COLLAPSE_THRESHOLD_ACC:g}% ≤ AA < {PARTIAL_COLLAPSE_ACC:g}%): {names}. "
               f"{'It stays in the fits and pulls' if one else 'They stay in the fits and pull'} the power law of "
               f"{'its' if one else 'their'} group (least squares on log AA); the saturating law's Huber loss is "
               f"less sensitive.")
    _add_figure(s, figures, "aa_vs_flops")
    for law in LAWS:
        s.table(_fit_table(result, law), f"{LAW_TITLES[law]}")
    comparisons = _exponent_comparison_table(result)
    if len(comparisons):
        s.table(comparisons, "power-law exponent with generated data minus without (same method and epochs), "
                "bootstrap interval and p-value")
    _add_figure(s, figures, "exponents")
    secs.append(s)

    # --- electricity
    fit = result.electricity
    dh = t["device_hours_fit"]
    s = Section("Electricity cost vs compute")
    lo, hi = fit.ci.get("alpha", (math.nan, math.nan))
    ratio = (runs["device_hours"] / runs["train_flops"])
    s.text(f"Power law `electricity_usd = C · FLOPs^α` over all {fit.n} runs: exponent **{fit.params['alpha']:.3f}** "
           f"[{lo:.3f}, {hi:.3f}], R² {fit.r2:.3f}. An exponent of 1 means cost is proportional to compute. "
           f"GPU-hours vs FLOPs: exponent {dh.params['alpha']:.3f} "
           f"[{_num(dh.ci.get('alpha', (math.nan,))[0])}, {_num(dh.ci.get('alpha', (math.nan, math.nan))[1])}]. "
           f"Achieved throughput: median {1 / ratio.median() / 3600 / 1e12:.1f} TFLOP/s per GPU "
           f"(range {1 / ratio.max() / 3600 / 1e12:.1f}–{1 / ratio.min() / 3600 / 1e12:.1f}).")
    _add_figure(s, figures, "electricity_vs_flops")
    import pandas as pd

    per_model = runs.groupby("model").agg(runs=("name", "size"), flops=("train_flops", "median"),
                                          gpu_hours=("device_hours", "median"), usd=("electricity_usd", "median"),
                                          params=("model_parameters", "first")).sort_values("params")
    per_model["tflops_per_gpu"] = per_model["flops"] / per_model["gpu_hours"] / 3600 / 1e12
    s.table(pd.DataFrame({"model": per_model.index, "runs": per_model["runs"].astype(str).values,
                          "median FLOPs": [_num(v) for v in per_model["flops"]],
                          "median GPU-hours": [_num(v) for v in per_model["gpu_hours"]],
                          "median electricity [USD]": [_num(v) for v in per_model["usd"]],
                          "achieved TFLOP/s per GPU": [f"{v:.1f}" for v in per_model["tflops_per_gpu"]]}),
            "compute and cost per model (medians over its runs)")
    secs.append(s)

    # --- collapse
    s = Section("Collapse of 1- and 2-step training (PGD-40 vs AutoAttack)")
    c = t["collapse"]
    one = c[c["attack_steps"] == 1]
    n1, c1 = int(one["n_runs"].sum()), int(one["n_collapsed"].sum())
    multi = t["collapsed_multistep"]
    multi_text = "No run with more attack steps collapses." if not len(multi) else (
        f"{len(multi)} run(s) with more steps collapse too ({_describe_runs(multi)}), listed below.")
    who = f"All {n1} 1-step runs collapse" if c1 == n1 and n1 else f"{c1} of {n1} 1-step runs collapse"
    s.text(f"{who}: AutoAttack accuracy below {COLLAPSE_THRESHOLD_ACC:g}% while PGD-40 on the last epoch still reads "
           f"{one['collapsed_pgd40_min'].min():.1f}–{one['collapsed_pgd40_max'].max():.1f}% (catastrophic overfitting "
           f"that the weaker attack does not see). {multi_text}")
    _add_figure(s, figures, "collapse_pgd40_vs_aa")
    s.table(_display(c, {"method": ("method", lambda v: METHOD_NAMES.get(v, v)), "attack_steps": ("steps", _INT),
                         "epochs": ("epochs", _INT), "n_runs": ("runs", _INT), "n_collapsed": ("collapsed", _INT),
                         "pgd40_mean": ("mean PGD-40 [%]", _P1), "aa_mean": ("mean AA [%]", _P1),
                         "aa_max": ("max AA [%]", _P1),
                         "collapsed_pgd40_min": ("PGD-40 of collapsed, min [%]", _P1),
                         "collapsed_pgd40_max": ("PGD-40 of collapsed, max [%]", _P1),
                         "gap_max": ("max PGD-40 − AA [pp]", _P1)}),
            f"runs and collapsed runs (AA < {COLLAPSE_THRESHOLD_ACC:g}%) per method, attack steps and epochs")
    s.table(_display(t["collapsed_multistep"], {"model": ("model", _STR), "method": ("method", _STR),
                                                "attack_steps": ("steps", _INT), "epochs": ("epochs", _INT),
                                                "synthetic_data": ("generated data", _STR),
                                                "pgd_robust_acc": ("PGD-40 [%]", _P2),
                                                "aa_robust_acc": ("AA [%]", _P2), "clean_acc": ("clean [%]", _P2)}),
            "collapsed runs with more than one attack step")
    s.table(_levels_display(t["steps_levels"], "attack steps"),
            "AutoAttack accuracy per number of attack steps (statistics over non-collapsed runs)")
    secs.append(s)

    # --- effects
    s = Section("Effect of generated data")
    same_compute = ": the same number of images is seen per epoch, so compute barely changes"
    g = t["generated_data_gain"].iloc[0]
    s.text(f"Pairs of runs equal in model, method, attack steps and epochs, with and without the 1M DDPM images: "
           f"{int(g['n_pairs'])} pairs where neither run collapsed gain **{g['gain_mean']:+.2f} pp** AA on average "
           f"(range {g['gain_min']:+.2f} to {g['gain_max']:+.2f}; positive in {100 * g['share_positive']:.0f}%), "
           f"at a median FLOPs ratio of {g['flops_ratio']:.3g} (treated / baseline training FLOPs"
           f"{same_compute if abs(g['flops_ratio'] - 1) < 0.05 else ''}).")
    _add_figure(s, figures, "effects")
    s.table(_levels_display(t["generated_data_levels"], "training data"),
            "AA per level (mean/median/max over non-collapsed runs)")
    s.table(_gain_display(t["generated_data_gain"]), "paired AA gain from generated data")
    secs.append(s)

    s = Section("Effect of model size")
    s.text(f"Each larger architecture against {_arch_label(BASELINE_ARCH)} with the same activation (ReLU or "
           f"DeepMind-style Swish), method, attack steps, epochs and data.")
    s.table(_levels_display(t["model_levels"], "model"), "AA per model (statistics over non-collapsed runs)")
    s.table(_gain_display(t["model_size_gain"]), f"paired AA gain vs {_arch_label(BASELINE_ARCH)}")
    s.table(_gain_display(t["model_size_gain_by_data"]), "the same, split by training data")
    secs.append(s)

    s = Section("Effect of training length")
    ep = sorted(runs["epochs"].unique())
    s.text(f"{ep[-1]}-epoch runs against {ep[0]}-epoch runs of the same model, method, attack steps and data "
           f"(the longer recipe also adds weight averaging and CutMix).")
    s.table(_levels_display(t["epochs_levels"], "epochs"),
            "AA per training length (statistics over non-collapsed runs)")
    s.table(_gain_display(t["epochs_gain"]), f"paired AA gain of {ep[-1]} over {ep[0]} epochs")
    secs.append(s)

    # --- extrapolation
    s = Section("Extrapolation: what would 60–75% AutoAttack accuracy cost?")
    s.text(f"Each law solved for the target accuracy; compute converted to GPU-hours with the group's median "
           f"GPU-hours per FLOP, to energy at 300 W per GPU and to dollars with the `{PRICE_PRESET}` preset "
           f"($0.12/kWh × PUE 1.58 for electricity; $0.43–1.46 per GPU-hour for cloud rental). "
           f"\"Not reachable\" means the fitted law never gets there (saturating asymptote below the target, or a "
           f"non-positive exponent); the share of bootstrap fits that do reach it is given. An upper bound of ∞ "
           f"means more than {100 * (1 - _level(result)) / 2:.1f}% of the bootstrap laws never reach the target.")
    _add_figure(s, figures, "extrapolation")
    for law in LAWS:
        matrix, detail = _extrapolation_tables(result, law)
        s.table(matrix, f"{LAW_TITLES[law]}: FLOPs to reach each target")
        if len(detail):
            s.table(detail, f"{LAW_TITLES[law]}: time, energy and cost where reachable")
    secs.append(s)
    return secs


def _key_numbers(result: PaperReproduction) -> str:
    """The headline numbers as a bullet list (all computed above)."""
    t = result.tables
    top = max(result.targets)
    lines = []
    front = result.group("frontier")
    fp, fs = front.fits["power"], front.fits["saturating"]
    if fp.converged:
        ex = front.extrapolations["power"][top]
        lo, hi = fp.ci.get("alpha", (math.nan, math.nan))
        reach = ""
        if ex.reachable:
            v = ex.values
            reach = (f"; it reaches {top:g}% AA at {_interval(*v['compute_flops'])} FLOPs ({_num(ex.factor)}× the "
                     f"largest run), {_num(v['device_hours'][0] / (24 * 365.25))} GPU-years, "
                     f"${_num(v['electricity_usd'][0])} of electricity")
        lines.append(f"- Power law on the Pareto frontier of all runs: α = {_interval(fp.params['alpha'], lo, hi)}"
                     f"{reach}.")
    if fs.converged:
        ex = front.extrapolations["saturating"][top]
        lo, hi = fs.ci.get("y_max", (math.nan, math.nan))
        share = "" if math.isnan(ex.share_reachable) else \
            f" (reachable in {_pct(100 * ex.share_reachable, 0)}% of bootstrap fits)"
        reach = (f"{top:g}% is not reachable under it{share}" if not ex.reachable else
                 f"{top:g}% is reached at {_num(ex.values['compute_flops'][0])} FLOPs")
        lines.append(f"- Saturating law on the same frontier: asymptote {_interval(fs.params['y_max'], lo, hi)}% AA; "
                     f"{reach}.")
    grid = [g for g in result.groups if g.group and g.fits["power"].converged]
    for synth in (True, False):
        alphas = [g.fits["power"].params["alpha"] for g in grid if g.group["synthetic_data"] == synth]
        if alphas:
            lines.append(f"- Power-law exponents of the {len(alphas)} groups {'with' if synth else 'without'} "
                         f"generated data: {min(alphas):.3g} to {max(alphas):.3g}.")
    e = result.electricity
    if e.converged:
        lo, hi = e.ci.get("alpha", (math.nan, math.nan))
        lines.append(f"- Electricity cost grows as FLOPs^{_interval(e.params['alpha'], lo, hi)}.")
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


def _add_figure(section: Section, figures: dict, name: str) -> None:
    png, caption = figures[name]
    section.figure(png, name, caption)


def _level(result: PaperReproduction) -> float:
    return result.groups[0].fits["power"].level


def _exponent_comparison_table(result: PaperReproduction):
    """Generated data vs none: difference of power-law exponents per method and epochs."""
    import pandas as pd

    from ..scaling import compare_exponents

    rows = []
    for g in result.groups:
        if g.group.get("synthetic_data") is not True:
            continue
        b = result.group(_group_key({**g.group, "synthetic_data": False}))
        fa, fb = g.fits["power"], b.fits["power"]
        if not (fa.converged and fb.converged and fa.has_bootstrap and fb.has_bootstrap):
            continue
        c = compare_exponents(fa, fb)
        rows.append({"method, epochs": f"{METHOD_NAMES.get(g.group['method'], g.group['method'])}, "
                                       f"{g.group['epochs']} ep",
                     "α with generated data": f"{c.a_value:.4f}", "α without": f"{c.b_value:.4f}",
                     "difference [95% CI]": f"{c.diff:+.4f} [{c.low:+.4f}, {c.high:+.4f}]",
                     "p (bootstrap)": f"{c.p_value:.3f}"})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------- writers
def _md_table(df) -> str:
    if df is None or not len(df):
        return "_(none)_"
    cols = [str(c) for c in df.columns]
    esc = lambda v: str(v).replace("|", "\\|").replace("\n", " ")  # noqa: E731
    lines = ["| " + " | ".join(esc(c) for c in cols) + " |", "|" + "|".join(" --- " for _ in cols) + "|"]
    for row in df.itertuples(index=False):
        lines.append("| " + " | ".join(esc(v) for v in row) + " |")
    return "\n".join(lines)


def _render_markdown(result: PaperReproduction, fig_rel: str) -> str:
    out = [f"# {REPORT_TITLE}", ""]
    for sec in result.sections:
        out += [f"## {sec.title}", ""]
        for b in sec.blocks:
            if b.kind == "text":
                out += [b.content, ""]
            elif b.kind == "table":
                if b.caption:
                    out += [f"**{b.caption}**", ""]
                out += [_md_table(b.content), ""]
            elif b.kind == "figure":
                out += [f"![{b.name}]({fig_rel}/{b.name}.png)", "", f"*{b.caption}*", ""]
    return "\n".join(out).rstrip() + "\n"


def report_sections(sections: Sequence[Section]) -> list:
    """These sections as ``report.Section`` s, in the same order: each table opens a sub-section
    titled by its caption; figures follow what precedes them; text is converted to HTML."""
    from ..report import Section as ReportSection

    out = []
    for sec in sections:
        cur = ReportSection(sec.title, html="", level=2)
        out.append(cur)
        for b in sec.blocks:
            if b.kind == "text":
                if cur.table is not None or cur.figures:
                    cur = ReportSection("", html="", level=3)
                    out.append(cur)
                cur.html += _md_inline_html(b.content)
            elif b.kind == "table":
                cur = ReportSection(b.caption, table=b.content, level=3)
                out.append(cur)
            elif b.kind == "figure":
                cur.figures.append((b.caption, b.content, b.name))
    return out


def _write_html(result: PaperReproduction, path: Path) -> None:
    """Self-contained HTML through ``report.write_report`` (figures embedded as PNG)."""
    from ..report import write_report

    write_report(result.runs, path, report_sections(result.sections), include_scaling=False,
                 title=REPORT_TITLE, source=result.source)


def _md_inline_html(text: str) -> str:
    """The few markdown constructs the sections use: code fences, bullet lists, **bold**, `code`, *em*."""
    out = []
    for para in text.split("\n\n"):
        if para.startswith("```"):
            code = para.strip("`").strip("\n")
            out.append(f"<pre>{html.escape(code)}</pre>")
            continue
        lines = para.split("\n")
        if all(line.startswith("- ") for line in lines):
            out.append("<ul>" + "".join(f"<li>{_inline(line[2:])}</li>" for line in lines) + "</ul>")
        else:
            out.append(f"<p>{_inline(para)}</p>")
    return "\n".join(out)


def _inline(text: str) -> str:
    import re

    s = html.escape(text)
    s = re.sub(r"`([^`]+)`", r"<code>\1</code>", s)
    s = re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", s)
    s = re.sub(r"(?<![*\w])\*([^*]+)\*(?![*\w])", r"<em>\1</em>", s)
    return s
