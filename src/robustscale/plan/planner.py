"""For compute budgets: the compute-optimal model size, samples seen and attack steps under the
joint law of each group of runs, with intervals, and the best concrete recipes from the zoo.

:func:`make_plan` returns a JSON-able dict (``robustscale plan --json`` prints it)::

    {"law": {"formula", "groups": [JointFit.to_dict() ...]},
     "approach1": {"groups": [...]}, "allocation": [...],
     "compute_model": {...}, "data_compute_range_flops": [lo, hi],
     "budgets": [{"budget_flops", "budget_given", "extrapolation_factor", "extrapolation",
                  "group", "label", "identified", "reason", "model_parameters", "model_parameters_ci",
                  "samples_seen", "samples_seen_ci", "epochs", "attack_steps", "attack_steps_ci",
                  "predicted_acc", "predicted_acc_ci", "by_group": [...], "recipes": [...]}]}

A budget entry's optimum is the group whose optimum predicts the highest accuracy (``by_group``
holds every group's). An optimum is printed only where the rulebook (``scaling.identified.identify_optimum``)
identifies it and N*, D* and the budget lie within its refusal limit; otherwise ``identified`` is False,
``status`` says why (``not identified`` / ``beyond reach``) and ``reason`` explains it. With
``conditional=True``, a group whose model size or samples seen is held at observed levels also gets
``conditional``: the best split with those inputs held, labelled as such (never the optimum). Runs are grouped by ``method`` and ``synthetic_data`` where they vary: the
compute of a step depends on the method, and generated data change what an epoch is worth.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

from ..cost import CostModel
from ..errors import UserError
from ..models import our_models
from ..schema import COLLAPSE_THRESHOLD_ACC
from ..schema import finite_float as _num
from ..scaling.allocation import frontier_allocation
from ..scaling.extrapolate import default_device_type
from ..scaling.identified import BEYOND_REACH, MAX_EXTRAPOLATION, NOT_IDENTIFIED, OK, identify_optimum, reach
from ..scaling.io import require_columns, resolve_columns
from ..scaling.joint import D_COL, K_COL, N_COL, JointFit, Role, fit_joint_groups, interval
from .compute import ComputeModel, zoo_candidates
from .recipes import outside_factor, recipes_for

REQUIRED = ("model_parameters", "train_images_seen", "attack_steps", "method")
DEFAULT_GROUPS = ("method", "synthetic_data")
BUDGET_KINDS = ("flops", "gpu_hours", "usd")
# Bartoldson et al. (2024), approach 3 on their CIFAR-10 runs, as quoted in issue 18.
BARTOLDSON_2024 = {"a": 0.48, "b": 0.52}
# Bootstrap resamples of a family's plan: a study's default (study.run.StudyOptions) and plan's on a study's store.
FAMILY_BOOTSTRAP = 500


@dataclass(frozen=True)
class BudgetSpec:
    kind: str  # flops, gpu_hours, usd
    value: float

    @property
    def text(self) -> str:
        unit = {"flops": "FLOPs", "gpu_hours": "GPU-hours", "usd": "USD"}[self.kind]
        return f"{self.value:.3g} {unit}"


def parse_budgets(flops: Iterable[str] = (), gpu_hours: Iterable[str] = (), usd: Iterable[str] = ()
                  ) -> list[BudgetSpec]:
    """``["1e19,1e20", "1e21"]`` per kind -> budgets (UserError for a value that is not a number > 0)."""
    out = []
    for kind, items, flag in (("flops", flops, "--budget-flops"), ("gpu_hours", gpu_hours, "--budget-gpu-hours"),
                              ("usd", usd, "--budget-usd")):
        for item in items or []:
            for part in str(item).split(","):
                if not part.strip():
                    continue
                try:
                    v = float(part)
                except ValueError:
                    raise UserError(f"invalid {flag} {part.strip()!r}: expected a number > 0, e.g. 1e20") from None
                if not (math.isfinite(v) and v > 0):
                    raise UserError(f"invalid {flag} {part.strip()!r}: must be a finite number > 0")
                out.append(BudgetSpec(kind, v))
    if not out:
        raise UserError("give a budget: --budget-flops X, --budget-gpu-hours H or --budget-usd U")
    return out


def _group_columns(df, group_by) -> list[str]:
    if group_by is None:
        return [c for c in DEFAULT_GROUPS if c in df.columns and df[c].nunique(dropna=False) > 1]
    cols = [] if str(group_by).lower() in ("", "none") else resolve_columns(group_by)
    require_columns(df, cols)
    return cols


def _kept(df, y: str, exclude_below: float | None) -> np.ndarray:
    acc = pd.to_numeric(df[y], errors="coerce").to_numpy(float)
    ok = np.isfinite(acc)
    for c in (N_COL, D_COL, K_COL):
        ok &= np.isfinite(pd.to_numeric(df[c], errors="coerce").to_numpy(float))
    return ok & ~(acc < exclude_below) if exclude_below is not None else ok


def _hours_per_flop(df, run_flops, flops_per_second) -> tuple[float | None, str]:
    if flops_per_second is not None:
        if not (flops_per_second > 0 and math.isfinite(flops_per_second)):
            raise UserError(f"invalid --flops-per-second {flops_per_second!r}: must be > 0")
        return 1.0 / (flops_per_second * 3600.0), f"{flops_per_second:.3g} FLOP/s per device (given)"
    if "device_hours" in df.columns:
        h = pd.to_numeric(df["device_hours"], errors="coerce").to_numpy(float)
        ok = np.isfinite(h) & (h > 0) & np.isfinite(run_flops) & (run_flops > 0)
        if ok.any():
            r = float(np.median(h[ok] / run_flops[ok]))
            return r, f"median device_hours / FLOPs of {int(ok.sum())} runs ({1 / (r * 3600):.3g} FLOP/s per device)"
    return None, "unknown (no device_hours in the runs; give --flops-per-second)"


def _extrapolation(budget: float, lo: float, hi: float, limit: float) -> tuple[float | None, str, bool]:
    """The budget on the rulebook's scale (``identified.reach``): factor outside the runs' compute, label, refused."""
    if budget > hi:
        r = reach(budget / hi, "the largest run's compute", limit=limit)
    elif budget < lo:
        r = reach(lo / budget, "below the cheapest run's compute", limit=limit)
    else:
        return None, "inside the runs' compute range", False
    return r.factor, r.label, r.refused


def make_plan(df, budgets: Sequence[BudgetSpec], *, y: str = "aa_robust_acc", group_by=None,
              levels: Iterable[str] = (), convention: str = "measured", models: Iterable[str] | None = None,
              top: int = 5, bootstrap: int = 1000, seed: int = 0, level: float = 0.95, n_jobs: int | None = None,
              exclude_below: float | None = 10.0, max_extrapolation: float = MAX_EXTRAPOLATION,
              conditional: bool = False,
              flops_per_second: float | None = None, device_type: str | None = None, price_preset: str = "default",
              prices=None, rental: str = "low", epoch_images: int | None = None, flops_cache=None,
              progress: bool = False, source: str = "") -> dict[str, Any]:
    """The plan for each budget (see the module docstring). UserError for bad input, before any fit."""
    if not (1 <= max_extrapolation <= MAX_EXTRAPOLATION):
        raise UserError(f"invalid --max-extrapolation {max_extrapolation!r}: must be in [1, {MAX_EXTRAPOLATION:g}] "
                        f"(the rulebook's refusal limit, scaling.identified.MAX_EXTRAPOLATION)")
    if top < 1:
        raise UserError(f"invalid --top {top}: must be >= 1")
    if rental not in ("low", "high"):
        raise UserError(f"invalid --rental {rental!r}; valid: low, high")
    df, cols, kept = _prepare_runs(df, y, group_by, exclude_below)
    epoch_images = _epoch_images(df, epoch_images)
    compute, candidates, run_flops = _compute_model(df, kept, models, convention, max_extrapolation, flops_cache)
    c_lo, c_hi = float(np.min(run_flops[kept])), float(np.max(run_flops[kept]))
    hpf, hours_source = _hours_per_flop(df, run_flops, flops_per_second)
    costs = CostModel.from_yaml(prices, preset=price_preset)
    device_type = device_type or default_device_type(df, costs)
    usd_per_hour = getattr(costs.price(device_type), f"usd_per_hour_{rental}")
    entries = _budget_entries(budgets, hpf, usd_per_hour, c_lo, c_hi, max_extrapolation)  # before the slow fit
    fits = fit_joint_groups(df, cols or None, y=y, levels=levels, bootstrap=bootstrap, seed=seed,
                            exclude_below=exclude_below, level=level, n_jobs=n_jobs, progress=progress)
    approach1 = [_approach1(f, df, run_flops, kept, y, bootstrap, seed, level) for f in fits]
    meta = {f.label: {c: _constant(df, f, c) for c in ("method", "synthetic_data")} for f in fits}
    ctx = dict(compute=compute, candidates=candidates, epoch_images=epoch_images, limit=max_extrapolation,
               hpf=hpf, costs=costs, device_type=device_type, meta=meta, conditional=conditional)
    for entry in entries:
        _plan_budget(entry, fits, df, ctx, top)
    methods = sorted(df["method"].unique())
    return {
        "source": source, "n_runs": int(len(df)), "n_fitted": int(sum(f.n for f in fits)),
        "n_excluded": int(sum(f.n_excluded for f in fits)), "exclude_below": exclude_below, "y": y,
        "group_by": cols, "bootstrap": bootstrap, "seed": seed, "level": level,
        "compute_model": {**compute.to_dict(methods), "epoch_images": epoch_images, "hours_per_flop": hpf,
                          "hours_source": hours_source, "device_type": device_type, "price_preset": costs.preset,
                          "rental": rental},
        "data_compute_range_flops": [c_lo, c_hi], "max_extrapolation": max_extrapolation,
        "warnings": [w for w in [(compute.runs_calibration or {}).get("warning")] if w],
        "optimum_status": {f.label: identify_optimum(f).to_dict() for f in fits},
        "runs_flops_vs_recorded": _vs_recorded(df, run_flops),
        "law": {"formula": "100 - y = E + A*N^-alpha + B*D^-beta + G*k^-gamma",
                "groups": [f.to_dict() for f in fits]},
        "approach1": {"groups": approach1},
        "allocation": [_allocation_row(f, a) for f, a in zip(fits, approach1)],
        "reference": {"bartoldson2024": BARTOLDSON_2024},
        "budgets": entries,
    }


def plan_family(df, budgets: Sequence[BudgetSpec], *, y: str, bootstrap: int = FAMILY_BOOTSTRAP, seed: int = 0,
                exclude_below: float | None = None, models: Iterable[str] | None = None,
                epoch_images: int | None = None, **kw) -> dict[str, Any]:
    """The plan of one family of runs (one training method, judged on its own metric ``y``), as a study's
    "what to run next" and ``robustscale plan`` on a study's store both make it, so that they agree: one law
    for the family (no grouping), recipes from the family's own architectures (a law fitted on these runs says
    nothing about other ones), an epoch of the family's largest training set (what a next, larger run would
    train on), the collapse threshold on a robust accuracy, and the conditional plan where the optimum is not
    identified (labelled, never the optimum). ``kw`` goes to :func:`make_plan`."""
    if models is None and "model" in df.columns:
        models = sorted(set(df["model"].dropna().astype(str)))
    if epoch_images is None and "train_images" in df.columns and df["train_images"].notna().any():
        epoch_images = int(df["train_images"].max())
    if exclude_below is None and y.endswith("robust_acc"):
        exclude_below = COLLAPSE_THRESHOLD_ACC
    kw.setdefault("conditional", True)
    return make_plan(df, budgets, y=y, group_by="none", models=models, epoch_images=epoch_images,
                     bootstrap=bootstrap, seed=seed, exclude_below=exclude_below, **kw)


def _budget_entries(budgets, hpf, usd_per_hour, c_lo, c_hi, limit) -> list[dict]:
    """Budgets in FLOPs with their extrapolation label; UserError beyond ``limit`` x the runs' compute range."""
    entries = []
    for b in budgets:
        flops = _budget_flops(b, hpf, usd_per_hour)
        factor, text, refused = _extrapolation(flops, c_lo, c_hi, limit)
        if refused:
            raise UserError(f"budget {b.text} ({flops:.3g} FLOPs) is {factor:.3g}x outside the runs' compute "
                            f"({c_lo:.3g}-{c_hi:.3g} FLOPs): {text}")
        entries.append({"budget_flops": flops, "budget_given": {"kind": b.kind, "value": b.value, "text": b.text},
                        "extrapolation_factor": factor, "extrapolation": text})
    return entries


def _prepare_runs(df, y: str, group_by, exclude_below):
    """Checked copy of the runs (positional index, lower-case methods), group columns, kept-runs mask."""
    require_columns(df, list(REQUIRED) + [y])
    cols = _group_columns(df, group_by)
    df = df.reset_index(drop=True)
    df["method"] = df["method"].astype(str).str.lower()
    for key, part in (df.groupby(cols, sort=True) if cols else [((), df)]):
        if part["method"].nunique() > 1:
            raise UserError(f"runs of group {key!r} mix methods {', '.join(sorted(part['method'].unique()))}: "
                            f"one compute model per group needs --group-by to include method")
    kept = _kept(df, y, exclude_below)
    if not kept.any():
        raise UserError(f"no runs left to fit: all {len(df)} lack {y}/{N_COL}/{D_COL}/{K_COL} "
                        f"or have {y} below {exclude_below:g}")
    return df, cols, kept


def _compute_model(df, kept, models, convention, limit, cache):
    """The compute model over the zoo architectures within ``limit`` x of the runs' model sizes (and the
    runs' own models), the recipe candidates among them, and every run's FLOPs in that convention."""
    N = pd.to_numeric(df[N_COL], errors="coerce").to_numpy(float)
    n_lo, n_hi = float(np.nanmin(N[kept])), float(np.nanmax(N[kept]))
    run_models = df["model"].astype(str).tolist() if "model" in df.columns else [""] * len(df)
    dataset = str(df["dataset"].mode().iloc[0]) if "dataset" in df.columns and df["dataset"].notna().any() \
        else "cifar10"
    names = zoo_candidates(run_models, models)
    ours = [m for m in dict.fromkeys(run_models) if _is_ours(m)]
    compute = ComputeModel.from_zoo(list(names) + ours, dataset, convention, cache=cache)
    in_reach = {k: a for k, a in compute.architectures.items()
                if n_lo / limit <= a.parameters <= n_hi * limit and any(n in names for n in (a.name,) + a.same_as)}
    compute.architectures = {k: a for k, a in compute.architectures.items()
                             if k in in_reach or any(n in ours for n in (a.name,) + a.same_as)}
    steps = pd.to_numeric(df[K_COL], errors="coerce").fillna(0).to_numpy()
    seen = pd.to_numeric(df[D_COL], errors="coerce").to_numpy(float)
    recorded = pd.to_numeric(df["train_flops"], errors="coerce").to_numpy(float) if "train_flops" in df.columns \
        else None
    if recorded is not None:  # the runs' own compute sets the constant (kept runs only: the fitted ones)
        compute.calibrate(df["method"].tolist(), steps, N, seen, np.where(kept, recorded, np.nan))
    run_flops = compute.run_flops(run_models, df["method"].tolist(), steps, N, seen, recorded)
    return compute, list(in_reach.values()), run_flops


def _vs_recorded(df, run_flops) -> dict | None:
    """The planner's FLOPs of each run / the run's recorded ``train_flops`` (median, min, max)."""
    if "train_flops" not in df.columns:
        return None
    rec = pd.to_numeric(df["train_flops"], errors="coerce").to_numpy(float)
    ok = np.isfinite(rec) & (rec > 0)
    if not ok.any():
        return None
    r = run_flops[ok] / rec[ok]
    return {"median": float(np.median(r)), "min": float(r.min()), "max": float(r.max()), "n": int(ok.sum())}


def _constant(df, fit: JointFit, col: str):
    """The value of ``col`` shared by all of ``fit``'s runs (None if absent or mixed)."""
    if col not in df.columns:
        return None
    values = df.loc[fit.fitted_index, col].dropna().unique()
    return values[0].item() if len(values) == 1 and hasattr(values[0], "item") else \
        (values[0] if len(values) == 1 else None)


def _is_ours(name: str) -> bool:
    return name in our_models()


def _epoch_images(df, given: int | None) -> int:
    if given is not None:
        if int(given) < 1:
            raise UserError(f"invalid --epoch-images {given!r}: must be >= 1")
        return int(given)
    if "epochs" in df.columns:
        ep = pd.to_numeric(df["epochs"], errors="coerce").to_numpy(float)
        seen = pd.to_numeric(df[D_COL], errors="coerce").to_numpy(float)
        ok = np.isfinite(ep) & (ep > 0) & np.isfinite(seen)
        if ok.any():
            return int(round(float(np.median(seen[ok] / ep[ok]))))
    raise UserError("the runs have no epochs column to tell how many images an epoch is; give --epoch-images N")


def _budget_flops(b: BudgetSpec, hpf: float | None, usd_per_hour: float) -> float:
    if b.kind == "flops":
        return b.value
    if hpf is None:
        raise UserError(f"budget {b.text} needs device-hours per FLOP: the runs have no device_hours; "
                        f"give --flops-per-second or budget in FLOPs")
    hours = b.value if b.kind == "gpu_hours" else b.value / usd_per_hour
    return hours / hpf


def _approach1(fit: JointFit, df, run_flops, kept, y, bootstrap, seed, level) -> dict:
    idx = np.asarray(fit.fitted_index)
    pos = df.index.get_indexer(idx)
    res = frontier_allocation(run_flops[pos], df[N_COL].to_numpy(float)[pos], df[D_COL].to_numpy(float)[pos],
                              df[y].to_numpy(float)[pos], bootstrap=bootstrap, seed=seed, level=level)
    res["group"], res["label"] = fit.to_dict()["group"], fit.label
    res["frontier_runs"] = (df["name"].astype(str).to_numpy()[pos][res.pop("frontier_index")].tolist()
                            if "name" in df.columns else None)
    for k in ("a_ci", "b_ci"):
        res[k] = list(map(_num, res[k])) if res[k] is not None else None
    return res


def _allocation_row(fit: JointFit, a1: dict) -> dict:
    a3 = fit.allocation()
    ident = identify_optimum(fit)
    if a3["reason"] is None and not ident.ok:  # exponents of a law the rulebook rejects: every printer hides them
        a3 = {"a": None, "a_ci": None, "b": None, "b_ci": None, "reason": f"{ident.status}: {ident.reason}"}
    return {"label": fit.label,
            "approach3": {"a": _num(a3["a"]), "a_ci": list(map(_num, a3["a_ci"])) if a3["a_ci"] else None,
                          "b": _num(a3["b"]), "b_ci": list(map(_num, a3["b_ci"])) if a3["b_ci"] else None,
                          "reason": a3["reason"]},
            "approach1": {k: a1.get(k) for k in ("a", "a_ci", "a_reason", "b", "b_ci", "b_reason", "n_frontier")}}


def _group_optimum(fit: JointFit, budget: float, ctx) -> dict:
    """The group's optimum at ``budget`` where the rulebook lets it be printed, else its status and reason
    (and, asked for, the conditional plan with the inputs off a power law held at their observed levels)."""
    keys = ("model_parameters", "samples_seen", "epochs", "attack_steps", "predicted_acc")
    out = {"group": fit.to_dict()["group"], "label": fit.label, "identified": False, "status": NOT_IDENTIFIED,
           "reason": None, **{k: None for k in keys}, **{f"{k}_ci": None for k in keys if k != "epochs"}}
    ident = identify_optimum(fit)
    off = fit.axes_off_law()
    wanted = ident.ok or (ctx["conditional"] and bool(off) and fit.optimum_reason() is None)
    point = _solve_optimum(fit, budget, ctx) if wanted else None
    beyond = [] if point is None or point.get("reason") else \
        [f"{sym}* {r['label']}" for sym, r in (("N", point["reach"][N_COL]), ("D", point["reach"][D_COL]))
         if r["refused"]]
    if not ident.ok:
        out.update(status=ident.status, reason=ident.reason)
        if point is not None and not point.get("reason") and not beyond:
            point["label"] = f"conditional plan, {' and '.join(off)} held at the observed levels: not the optimum"
            out["conditional"] = point
        elif point is not None:  # asked for, but the rulebook refuses it too
            out["conditional_reason"] = point.get("reason") or "; ".join(beyond)
        return out
    if point.get("reason"):
        out["reason"] = point["reason"]
        return out
    if beyond:
        out.update(status=BEYOND_REACH, reason="; ".join(beyond))
        return out
    out.update(point, identified=True, status=OK, reason=None)
    return out


def _solve_optimum(fit: JointFit, budget: float, ctx) -> dict:
    """N*, D*, k*, predicted accuracy (with bootstrap intervals) of ``fit`` at ``budget`` and each input's reach;
    ``{"reason": ...}`` when the law has no finite optimum there."""
    method = ctx["meta"][fit.label]["method"]
    coeffs = ctx["compute"].coefficients(method)
    point = fit.optimum([budget], coeffs)
    values = {"model_parameters": point["N"][0, 0], "samples_seen": point["D"][0, 0],
              "attack_steps": point["k"][0, 0], "predicted_acc": point["acc"][0, 0]}
    if not np.isfinite(values["predicted_acc"]):
        return {"reason": "the law has no finite optimum at this budget"}
    out: dict[str, Any] = {k: float(v) for k, v in values.items()}
    out["epochs"] = float(values["samples_seen"] / ctx["epoch_images"])
    out["train_flops"] = float(coeffs.flops(values["model_parameters"], values["samples_seen"],
                                            values["attack_steps"]))
    lv = fit.levels[int(point["level"][0, 0])]
    out["on_levels"] = {c: v for c, v in lv.items() if fit.roles[c] is Role.LEVELS}
    # The same keys with or without a bootstrap (None: no interval), so every printer can read them.
    out.update({f"{key}_ci": None for key in ("model_parameters", "samples_seen", "attack_steps", "predicted_acc")})
    if fit.n_bootstrap:
        boot = fit.optimum([budget], coeffs, bootstrap=True)
        for key, arr in (("model_parameters", "N"), ("samples_seen", "D"), ("attack_steps", "k"),
                         ("predicted_acc", "acc")):
            lo, hi = interval(boot[arr], fit.level)
            out[f"{key}_ci"] = [_num(lo[0]), _num(hi[0])]
    out["inputs_extrapolation"] = {c: outside_factor(out[k], *fit.range(c))
                                   for c, k in ((N_COL, "model_parameters"), (D_COL, "samples_seen"))}
    out["reach"] = {c: reach(f or 1.0, f"outside the runs' {c}", limit=ctx["limit"]).to_dict()
                    for c, f in out["inputs_extrapolation"].items()}
    return out


def _plan_budget(entry: dict, fits: list[JointFit], df, ctx, top: int) -> None:
    budget = entry["budget_flops"]
    by_group = [_group_optimum(f, budget, ctx) for f in fits]
    ok = [g for g in by_group if g["identified"]]
    best = max(ok, key=lambda g: g["predicted_acc"]) if ok else None
    if best is None:
        reason = "no group's law identifies an optimum (" + "; ".join(f"{g['label']}: {g['status']}: {g['reason']}"
                                                                      for g in by_group) + ")"
        entry.update({k: v for k, v in by_group[0].items() if k not in ("group", "label", "conditional")})
        status = BEYOND_REACH if all(g["status"] == BEYOND_REACH for g in by_group) else NOT_IDENTIFIED
        entry.update(group=None, label=None, identified=False, status=status, reason=reason)
    else:
        entry.update(best)
    entry["by_group"] = by_group
    rec = []
    for f in fits:
        if f.usable:
            rec += recipes_for(f, budget, df, ctx)
    rec.sort(key=lambda r: -r["predicted_acc"])
    entry["recipes"] = rec[:top]
