"""The analyses of the paper reproduction: per-level tables, paired comparisons, collapse, fit groups."""
from __future__ import annotations

import math
from typing import Any, Iterable, Sequence

import pandas as pd

from .result import BASELINE_ARCH, GROUP_COLUMNS, METHOD_NAMES, SYNTH_NAMES, arch_label, group_key, group_label


def prepare_runs(df):
    """Add ``architecture`` (model without the DeepMind-style ``_dm`` suffix) and ``activation``."""
    df = df.copy()
    model = df["model"].astype(str)
    df["architecture"] = model.str.replace(r"_dm$", "", regex=True)
    df["activation"] = model.str.endswith("_dm").map({True: "swish (DM)", False: "relu"})
    df["synthetic_data"] = df["synthetic_data"].astype(bool)
    df["epochs"] = df["epochs"].astype(int)
    df["attack_steps"] = df["attack_steps"].astype(int)
    return df


def level_table(df, column: str, order: Iterable | None = None, labels: dict | None = None):
    """Robust accuracy per level of ``column``.

    Returns a DataFrame with one row per level: ``level``, ``n_runs``, ``n_collapsed``
    (AA < threshold), and over the non-collapsed runs ``aa_mean``, ``aa_median``, ``aa_max`` (%),
    ``clean_mean`` (%), plus ``aa_max_all`` over all runs.
    """
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


def group_specs(runs):
    """``[(key, label, group dict, frame, frontier)]``: all runs, their frontier, then each grid group.

    The group dicts name real columns (``{}`` for all runs), as ``scaling.fit_groups`` would."""
    specs = [("all", "all runs", {}, runs, False), ("frontier", "all runs, Pareto frontier", {}, runs, True)]
    for key, part in runs.groupby(list(GROUP_COLUMNS), sort=True):
        group = {c: (k.item() if hasattr(k, "item") else k) for c, k in zip(GROUP_COLUMNS, key)}
        group["synthetic_data"] = bool(group["synthetic_data"])
        specs.append((group_key(group), group_label(group), group, part, False))
    return specs


def analysis_tables(runs) -> dict[str, Any]:
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
    archs = archs_by_size(runs)
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
                     label=f"{arch_label(a)} vs {arch_label(BASELINE_ARCH)}")
        for a in archs if a != BASELINE_ARCH])
    t["model_size_gain_by_data"] = _concat([
        gain_summary(model_pairs[(model_pairs["architecture"] == a) & (model_pairs["synthetic_data"] == s)],
                     label=f"{arch_label(a)} vs {arch_label(BASELINE_ARCH)}, {SYNTH_NAMES[s]}")
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
    frames = [f for f in frames if f is not None and len(f)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _model_levels(runs):
    lv = level_table(runs, "model", runs.groupby("model")["model_parameters"].first().sort_values().index)
    params = runs.groupby("model")["model_parameters"].first()
    lv.insert(1, "parameters", [params[m] for m in lv["level"]])
    return lv



def archs_by_size(runs) -> list[str]:
    return runs.groupby("architecture")["model_parameters"].median().sort_values().index.tolist()
