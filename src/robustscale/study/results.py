"""What a study found, as data: the runs with their accuracies (each with its sample size and Wilson
interval) and how each was selected, the fitted laws with their status, and ``study.json``.

Accuracies come from the evaluations in the results store (not from the training loop's
per-epoch check): per run and metric, the evaluation at the run's training eps with the most
images. Metric names follow the attack: ``clean_acc``, ``pgd_robust_acc``, ``apgd_ce_robust_acc``,
``aa_robust_acc``; each has ``<metric>_n_examples`` and ``<metric>_ci_low`` / ``_ci_high`` columns
(``<metric>_ci: [low, high]`` in study.json).
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from .. import rundir
from ..errors import UserError
from ..intervals import accuracy_interval, correct_count, wilson_interval
from ..schema import finite_float as _num

ATTACK_METRICS = {"pgd": "pgd_robust_acc", "apgd-ce": "apgd_ce_robust_acc", "aa-standard": "aa_robust_acc",
                  "aa-rand": "aa_rand_robust_acc"}
ACC_METRICS = ("clean_acc",) + tuple(ATTACK_METRICS.values())
MIN_FIT_EXAMPLES = 1000  # accuracies entering a fit: SE <= 1.6 points
RUN_KEYS = ("name", "family", "model", "method", "attack_steps", "train_images", "epochs", "train_flops",
            "selected_epoch", "selection_split", "selection_metric")
INT_KEYS = ("attack_steps", "train_images", "epochs", "selected_epoch")
_EPS_TOL = 1e-9


def metric_of(attack: str) -> str:
    """``apgd-ce`` -> ``apgd_ce_robust_acc`` (the column a study fits on)."""
    return ATTACK_METRICS.get(str(attack).lower(), str(attack).lower().replace("-", "_") + "_robust_acc")


def accuracy_columns(evaluations: Sequence[Mapping[str, Any]], eps: float) -> dict[str, Any]:
    """Per metric, the value, count and Wilson interval from the largest evaluation at ``eps``."""
    best: dict[str, tuple[int, float]] = {}
    for ev in evaluations:
        n = ev.get("n_examples")
        clean_only = ev.get("attack") == "clean"  # recorded at eps 0: it holds for every eps
        if n is None or (not clean_only and (ev.get("eps") is None or abs(float(ev["eps"]) - float(eps)) > _EPS_TOL)):
            continue
        for metric, value in (("clean_acc", ev.get("clean_acc")), (metric_of(ev["attack"]), ev.get("robust_acc"))):
            if ev.get("attack") == "clean" and metric != "clean_acc":
                continue
            if value is not None and (metric not in best or int(n) > best[metric][0]):
                best[metric] = (int(n), float(value))
    out: dict[str, Any] = {}
    for metric in ACC_METRICS:
        n, value = best.get(metric, (None, None))
        ci = accuracy_interval(value, n)
        out.update({metric: value, f"{metric}_n_examples": n, f"{metric}_ci_low": ci[0] if ci else None,
                    f"{metric}_ci_high": ci[1] if ci else None})
    return out


def selection_info(run_dir: str | Path | None) -> dict[str, Any]:
    """Which checkpoint the evaluations scored: ``selected_epoch``, ``selection_split``, ``selection_metric``.

    Runs written before checkpoint selection on validation data kept ``best.safetensors`` by the
    per-epoch accuracy on the first ``eval_subset`` test images: that is reported as split ``test``.
    """
    summary: dict[str, Any] = {}
    if run_dir is not None and (Path(run_dir) / "summary.json").is_file():
        try:
            summary = json.loads((Path(run_dir) / "summary.json").read_text())
        except ValueError:
            summary = {}
    if "selection_split" in summary:
        return {k: summary.get(k) for k in ("selected_epoch", "selection_split", "selection_metric")}
    legacy_metric = "pgd_robust_acc" if summary.get("best_pgd_robust_acc") is not None else "clean_acc"
    return {"selected_epoch": summary.get("best_epoch"), "selection_split": "test" if summary else None,
            "selection_metric": legacy_metric if summary else None}


def study_frame(st, spec, opts) -> Any:
    """The finished runs of ``spec`` (store columns) with evaluation-derived accuracies and selection info."""
    df = st.runs_frame()
    df = df[df["name"].isin([r.name for r in spec.runs])].reset_index(drop=True)
    if df.empty:
        return df
    evals = st.evaluations_of(df["name"])
    by_name = {r.name: r for r in spec.runs}
    extra = []
    for _, row in df.iterrows():
        run = by_name[row["name"]]
        extra.append({**accuracy_columns(evals.get(row["name"], []), float(run.cfg.eps)),
                      **selection_info(run.run_dir)})
    extra = pd.DataFrame(extra, index=df.index)
    df = df.drop(columns=[c for c in extra.columns if c in df.columns])
    df = pd.concat([df, extra], axis=1)
    # Families may select on any TrainConfig key (e.g. train_subset), not only the store's columns; the seed
    # tells the fits which runs are seeds of one configuration (the lack-of-fit test measures their spread).
    for key in sorted(({k for fam in opts.fits for k in fam.where} | {"seed"}) - set(df.columns)):
        df[key] = [by_name[n].cfg.to_dict().get(key) for n in df["name"]]
    return df


def where_mask(df, where: Mapping[str, Sequence[Any]], what: str):
    """Rows of the runs table whose columns take one of ``where``'s values: numbers compare as numbers
    (the store keeps ``attack_steps`` as a float column, where NaN marks standard training), all else as text.
    UserError (naming ``what``) for a column the table lacks."""
    mask = np.ones(len(df), bool)
    for col, values in where.items():
        if col not in df.columns:
            raise UserError(f"{what} selects on column {col!r}, which the runs table lacks; "
                            f"columns: {', '.join(map(str, df.columns))}")
        text = df[col].astype(str).isin([str(v) for v in values]).to_numpy().copy()
        numbers = pd.to_numeric(pd.Series([str(v) for v in values]), errors="coerce").dropna()
        if len(numbers) and pd.api.types.is_numeric_dtype(df[col]):
            text |= df[col].isin(numbers.tolist()).to_numpy()
        mask &= text
    return mask


def run_records(df) -> list[dict[str, Any]]:
    """study.json's ``runs``: identity, compute, selection and every accuracy with ``_n_examples`` / ``_ci``."""
    out = []
    for _, row in df.iterrows():
        rec = {k: _plain(row.get(k), integer=k in INT_KEYS) for k in RUN_KEYS if k in row.index}
        for metric in ACC_METRICS:
            if row.get(metric) is None or (isinstance(row.get(metric), float) and math.isnan(row[metric])):
                continue
            lo, hi = row.get(f"{metric}_ci_low"), row.get(f"{metric}_ci_high")
            rec.update({metric: _num(row[metric]),
                        f"{metric}_n_examples": _plain(row.get(f"{metric}_n_examples"), integer=True),
                        f"{metric}_ci": [_num(lo), _num(hi)]})
        out.append(rec)
    return out


def _plain(v, integer: bool = False):
    """numpy / pandas scalars -> Python, NaN -> None; ``integer``: counts that pandas made floats -> int."""
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if integer and isinstance(v, float) and v.is_integer():
        return int(v)
    return v


def autoattack_gaps(st, spec, fit_metric: str) -> list[dict[str, Any]]:
    """AutoAttack vs its own first stage (APGD-CE, the fit's attack) on the same images, per run with AutoAttack.

    AutoAttack attacks only the points APGD-CE left robust, so the gap ``APGD-CE acc - AA acc`` is the
    share of images the later stages broke: a binomial count with its own Wilson interval (paired, no
    between-run noise). ``fit_acc`` is the fit metric's value on its own (larger) image set, for scale.
    """
    names = [r.name for r in spec.runs]
    out = []
    for name, evals in st.evaluations_of(names).items():
        for ev in evals:
            if ev.get("attack") != "aa-standard" or ev.get("robust_acc") is None:
                continue
            stages = ev.get("per_attack") or {}
            first = stages.get("apgd-ce")
            n = int(ev["n_examples"])
            if first is None:
                continue
            broken = correct_count(first, n) - correct_count(ev["robust_acc"], n)
            lo, hi = wilson_interval(broken, n)
            fit_ev = [e for e in evals if metric_of(e.get("attack")) == fit_metric and e.get("robust_acc") is not None]
            fit_ev = max(fit_ev, key=lambda e: e["n_examples"]) if fit_ev else None
            out.append({"name": name, "n_examples": n, "apgd_ce_robust_acc": first, "aa_robust_acc": ev["robust_acc"],
                        "gap": 100.0 * broken / n, "gap_ci": [lo, hi],
                        "fit_metric": fit_metric, "fit_acc": fit_ev["robust_acc"] if fit_ev else None,
                        "fit_n_examples": fit_ev["n_examples"] if fit_ev else None})
    return out


def format_gap(g: Mapping[str, Any]) -> str:
    """One line: ``AutoAttack vs APGD-CE on the same 200 images of <run>: 55.0% vs 54.5%, gap 0.5 [0.09, 2.8] points``."""
    lo, hi = g["gap_ci"]
    return (f"AutoAttack vs APGD-CE on the same {g['n_examples']} images of {g['name']}: APGD-CE "
            f"{g['apgd_ce_robust_acc']:.3g}%, AutoAttack {g['aa_robust_acc']:.3g}%; gap {g['gap']:.2g} "
            f"[{lo:.2g}, {hi:.2g}] points (95% Wilson)")


def write_study_json(path: Path, runs: list[dict], fits: list[dict], extra: Mapping[str, Any] | None = None) -> Path:
    """``study.json`` (stable key order, sorted runs and fits, so two studies diff line by line)."""
    doc = {"schema": "robustscale.study/1", **(extra or {}), "runs": sort_runs(runs), "fits": sort_fits(fits)}
    return rundir.write_json(path, doc, mkdir=True)


def sort_runs(runs: list[dict]) -> list[dict]:
    return sorted(runs, key=lambda r: (str(r.get("family")), str(r.get("name"))))


def sort_fits(fits: list[dict]) -> list[dict]:
    return sorted(fits, key=lambda f: (str(f.get("family")), str(f.get("law"))))


__all__ = ["ATTACK_METRICS", "ACC_METRICS", "MIN_FIT_EXAMPLES", "metric_of", "accuracy_columns", "selection_info",
           "study_frame", "where_mask", "run_records", "autoattack_gaps", "format_gap", "write_study_json"]
