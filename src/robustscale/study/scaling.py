"""A study's ``scaling:`` section: the joint law on the study's runs, and the run it predicts, trained.

::

    study:
      scaling:
        where: {method: pgd}          # the joint law's runs (every adversarial run, all k)
        y: apgd_ce_robust_acc
        models: [wide_resnet10_1, wide_resnet16_2]   # recipes from these (default: the runs' models)
        budget_factor: 2              # the planned run: this x the largest run's training FLOPs (2-4)
        verify_seeds: [0, 1, 2]       # seeds the planned recipe is trained with
        similar_compute: 4            # grid runs within this factor below the budget are "of similar compute"
        page: docs/scaling-study.md   # the generated page (relative to the working directory)
        train_flop_rate: 9.16e10      # the bill (--bill): training + validation FLOP/s of the machine, or
                                      # per model: {default: 9.16e10, wide_resnet10_0p25: 3.2e10}
        eval_flop_rate: 1.246e11      # attack FLOP/s of the machine (a number or per model, the same way)
        max_hours: 2                  # --bill fails when its estimate exceeds this

After the grid, its evaluations and the per-family fits of ``robustscale study``:

1. ``robustscale plan`` (:func:`robustscale.plan.make_plan`) on the ``where`` runs: the joint law
   ``100 - y = E + A N^-alpha + B D^-beta + G k^-gamma`` with bootstrap intervals, the allocation
   exponents by approach 3 (the law) and approach 1 (the frontier), and its best recipe (a zoo model,
   whole epochs, attack steps) for ``budget_factor`` x the largest run.
2. That recipe is trained with each of ``verify_seeds`` (the template is the grid run of the same
   model, so everything but model, attack steps, epochs and seed is the grid's) and evaluated with the
   study's evaluations. Names start ``plan-``; runs already done in the store are reused.
3. Observed vs predicted: the mean over seeds against the law's interval for the mean accuracy, and
   against the prediction interval of a mean of the seeds (the law's interval widened on each side by
   1.96 x the standard error of that mean: the measured seed SD and each run's binomial variance);
   and against the grid's best run within ``similar_compute`` below the budget.

Steps 2-3 are :func:`close_the_loop`, a function of the grid's runs, the plan and a train-and-evaluate
callable (the study's is :func:`study_trainer`), so they are tested on a planted grid.

Everything lands in ``scaling.json`` beside ``study.json``; :mod:`robustscale.study.scaling_page`
writes the page from it.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from typing import Any, Mapping

import numpy as np

from ..errors import UserError, check_keys
from ..intervals import accuracy_interval
from ..plan import BudgetSpec, make_plan
from ..schema import COLLAPSE_THRESHOLD_ACC
from ..scaling.backtest import format_backtests
from ..scaling.identified import SEED_SD_POINTS, seed_sd_of
from ..sweep import run_sweep
from ..sweep.spec import PlannedRun
from .results import study_frame, where_mask

SCALING_KEYS = ("where", "y", "models", "budget_factor", "verify_seeds", "similar_compute", "page",
                "train_flop_rate", "eval_flop_rate", "max_hours", "bootstrap")
BUDGET_FACTOR_RANGE = (2.0, 4.0)  # the closing experiment: beyond the grid, but not so far that nothing is learnt
Z95 = 1.959963984540054  # two-sided 95% normal quantile
VERIFY_PREFIX = "plan-"


@dataclass
class ScalingOptions:
    where: dict[str, list[str]] = field(default_factory=lambda: {"method": ["pgd"]})
    y: str = "apgd_ce_robust_acc"
    models: list[str] | None = None
    budget_factor: float = 2.0
    verify_seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    similar_compute: float = 4.0
    page: str | None = None  # default: <output_dir>/scaling-study.md
    # FLOP/s of the whole machine by model name ("default": every other model); small nets run slower per FLOP
    train_flop_rate: dict[str, float] | None = None
    eval_flop_rate: dict[str, float] | None = None
    max_hours: float | None = None
    bootstrap: int | None = None  # default: the study's


def parse_scaling(value: Any, where: str) -> ScalingOptions | None:
    """``study.scaling`` of a spec (None when absent); UserError naming the bad key or value."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise UserError(f"study.scaling in {where} must be a mapping; valid keys: {', '.join(SCALING_KEYS)}")
    check_keys(value, SCALING_KEYS, f"study.scaling of {where}")
    out = ScalingOptions()
    if "where" in value:
        if not isinstance(value["where"], Mapping) or not value["where"]:
            raise UserError(f"study.scaling.where in {where} must map run columns to values, e.g. {{method: pgd}}")
        out.where = {str(k): [str(x) for x in (v if isinstance(v, (list, tuple)) else [v])]
                     for k, v in value["where"].items()}
    if "y" in value:
        out.y = str(value["y"])
    if value.get("models") is not None:
        models = value["models"]
        if not isinstance(models, list) or not models:
            raise UserError(f"study.scaling.models in {where} must be a list of zoo model names")
        out.models = [_model_name(m) for m in models]
    for key in ("train_flop_rate", "eval_flop_rate"):
        if value.get(key) is not None:
            setattr(out, key, _parse_rates(value[key], f"study.scaling.{key} in {where}"))
    for key, low, high in (("budget_factor", *BUDGET_FACTOR_RANGE), ("similar_compute", 1.0, math.inf),
                           ("max_hours", 0.0, math.inf)):
        if value.get(key) is None:
            continue
        v = value[key]
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and low <= v <= high
        if not ok or (low == 0.0 and v <= 0):
            bound = f"in [{low:g}, {high:g}]" if math.isfinite(high) else (f">= {low:g}" if low else "> 0")
            raise UserError(f"invalid study.scaling.{key} {v!r} in {where}: a number {bound}")
        setattr(out, key, float(v))
    if "verify_seeds" in value:
        seeds = value["verify_seeds"]
        if not (isinstance(seeds, list) and seeds and all(isinstance(s, int) and not isinstance(s, bool) and s >= 0
                                                          for s in seeds) and len(set(seeds)) == len(seeds)):
            raise UserError(f"invalid study.scaling.verify_seeds {seeds!r} in {where}: distinct integers >= 0")
        out.verify_seeds = list(seeds)
    if value.get("bootstrap") is not None:
        b = value["bootstrap"]
        if not isinstance(b, int) or isinstance(b, bool) or b < 0:
            raise UserError(f"invalid study.scaling.bootstrap {b!r} in {where}: an integer >= 0")
        out.bootstrap = b
    if value.get("page") is not None:
        out.page = str(value["page"])
    return out


def _positive_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0


def _parse_rates(value: Any, what: str) -> dict[str, float]:
    """A FLOP rate: one number for every model, or {model: rate, default: rate}."""
    if _positive_number(value):
        return {"default": float(value)}
    if not isinstance(value, Mapping) or not value:
        raise UserError(f"invalid {what} {value!r}: a number > 0 (FLOP/s), or a mapping of model names "
                        f"(and default) to numbers > 0")
    out = {}
    for model, rate in value.items():
        if not _positive_number(rate):
            raise UserError(f"invalid {what}: {model}: {rate!r} is not a number > 0 (FLOP/s)")
        out["default" if model == "default" else _model_name(model)] = float(rate)
    return out


def _model_name(name: Any) -> str:
    # Lazy: the models package brings torch and timm, which a study without models never needs.
    from ..models import check_model_name

    return check_model_name(str(name))


def rate_of(rates: Mapping[str, float], model: str, what: str) -> float:
    """``model``'s rate out of a parsed ``*_flop_rate`` (its own, else the default)."""
    if model in rates:
        return rates[model]
    if "default" in rates:
        return rates["default"]
    raise UserError(f"{what} has no rate for {model} and no default")


def select_runs(df, where: Mapping[str, list[str]]):
    """The rows of ``df`` that ``study.scaling.where`` selects."""
    return df[where_mask(df, where, "study.scaling.where")]


def planned_budget(df, sc: ScalingOptions) -> float:
    """The closing experiment's budget: ``budget_factor`` x the largest ``where`` run's training FLOPs."""
    flops = df["train_flops"].to_numpy(float) if "train_flops" in df.columns else np.array([])
    flops = flops[np.isfinite(flops) & (flops > 0)]
    if not flops.size:
        raise UserError("no run of study.scaling.where has measured train_flops: nothing to plan from")
    return sc.budget_factor * float(flops.max())


def scaling_plan(df, sc: ScalingOptions, *, bootstrap: int, seed: int, device_type: str | None,
                 exclude_below: float | None, source: str) -> dict[str, Any]:
    """``robustscale plan`` on the ``where`` runs for the planned budget (its ``--json`` document);
    ``exclude_below`` None: the store's collapse threshold."""
    sub = select_runs(df, sc.where)
    budget = planned_budget(sub, sc)
    models = sc.models or sorted(set(sub["model"].astype(str)))
    epoch_images = int(sub["train_images"].max()) if "train_images" in sub.columns and \
        sub["train_images"].notna().any() else None
    return make_plan(sub, [BudgetSpec("flops", budget)], y=sc.y, group_by="none", models=models, top=5,
                     epoch_images=epoch_images, bootstrap=bootstrap, seed=seed, device_type=device_type,
                     exclude_below=COLLAPSE_THRESHOLD_ACC if exclude_below is None else exclude_below,
                     max_extrapolation=2 * BUDGET_FACTOR_RANGE[1], source=source)


def verify_runs(spec, recipe: Mapping[str, Any], seeds: list[int]) -> list:
    """The planned recipe as runs of ``spec`` (one per seed): the grid's adversarial run of the same model
    (else the first one of the recipe's method) with model, attack steps, epochs and seed replaced."""
    method = str(recipe["method"])
    same = [r for r in spec.runs if r.cfg.method.value == method and r.cfg.model == recipe["model"]]
    pool = same or [r for r in spec.runs if r.cfg.method.value == method]
    if not pool:
        raise UserError(f"the planned recipe's method {method!r} has no run in {spec.name} to copy the recipe from")
    template = pool[0].cfg
    out = []
    for i, seed in enumerate(seeds):
        name = f"{VERIFY_PREFIX}{recipe['model']}-k{int(recipe['attack_steps'])}-e{int(recipe['epochs'])}-s{seed}"
        cfg = template.replace(model=str(recipe["model"]), attack_steps=int(recipe["attack_steps"]),
                               epochs=int(recipe["epochs"]), seed=int(seed), name=name)
        out.append(PlannedRun(index=len(spec.runs) + i, name=name, cfg=cfg,
                              axes={"model": str(recipe["model"]), "attack_steps": str(recipe["attack_steps"]),
                                    "epochs": str(recipe["epochs"]), "seed": str(seed)},
                              config_hash=cfg.config_hash()))
    return out


def family_seed_sd(fits: Mapping[str, Mapping[str, Any]], family: str) -> dict[str, Any] | None:
    """The seed SD (points) and its source for one family (``fits[law][family]``, as ``study.fits``
    returns them), from any of its fits: they share the runs, so the measurement is the same."""
    for by_family in fits.values():
        fit = by_family.get(family)
        if fit is not None and hasattr(fit, "y_values"):
            sd, source = seed_sd_of(fit)
            return {"seed_sd": sd, "source": source, "assumed": source == "assumed"}
    return None


def observed_vs_predicted(rows, recipe: Mapping[str, Any], y: str, seed_sd: float, grid, budget: float,
                          similar: float) -> dict[str, Any]:
    """The planned runs' accuracies against the recipe's prediction and the grid's best run of similar compute.

    ``rows``: the planned runs (a frame with ``y`` and ``{y}_n_examples``); ``grid``: the ``where`` runs.
    """
    acc = rows[y].to_numpy(float)
    n = rows[f"{y}_n_examples"].to_numpy(float)
    ok = np.isfinite(acc) & np.isfinite(n) & (n > 0)
    acc, n, names = acc[ok], n[ok], rows["name"].astype(str).to_numpy()[ok]
    out: dict[str, Any] = {
        "runs": [{"name": str(nm), y: float(a), "n_examples": int(m), "ci": list(accuracy_interval(float(a), int(m)))}
                 for nm, a, m in zip(names, acc, n)],
        "predicted_acc": recipe["predicted_acc"], "predicted_acc_ci": recipe["predicted_acc_ci"],
        "seed_sd": seed_sd}
    if not acc.size:
        out.update(mean=None, reason="no planned run has been evaluated")
        return out
    q = np.clip(acc / 100.0, 0.5 / n, 1 - 0.5 / n)
    var_runs = 1e4 * q * (1 - q) / n + seed_sd ** 2  # one run's variance: its test images and the seed
    se_mean = float(math.sqrt(var_runs.sum()) / acc.size)
    mean = float(acc.mean())
    lo, hi = recipe["predicted_acc_ci"]
    half = Z95 * se_mean
    pi = [lo - half if lo is not None else None, hi + half if hi is not None else None]
    out.update(mean=mean, sd=float(acc.std(ddof=1)) if acc.size > 1 else None, se_mean=se_mean,
               mean_ci=[mean - half, mean + half], prediction_interval=pi,
               inside_law_ci=bool(lo is not None and lo <= mean <= hi),
               inside_prediction_interval=bool(pi[0] is not None and pi[0] <= mean <= pi[1]),
               error=mean - float(recipe["predicted_acc"]))
    if not out["inside_prediction_interval"]:
        out["outside_by"] = float(pi[0] - mean if mean < pi[0] else mean - pi[1]) if pi[0] is not None else None
    out["grid_best"] = grid_best(grid, y, budget, similar, seed_sd, mean, se_mean)
    return out


def grid_best(grid, y: str, budget: float, similar: float, seed_sd: float, mean: float, se_mean: float) -> dict[str, Any] | None:
    """The grid's most accurate run with training FLOPs in ``[budget / similar, budget]`` and the planned
    mean's difference to it with a 95% interval (both runs' binomial and seed noise)."""
    flops = grid["train_flops"].to_numpy(float)
    acc = grid[y].to_numpy(float)
    near = np.isfinite(acc) & (flops >= budget / similar) & (flops <= budget)
    if not near.any():
        return None
    i = int(np.flatnonzero(near)[np.argmax(acc[near])])
    row = grid.iloc[i]
    n = float(row[f"{y}_n_examples"])
    q = min(max(acc[i] / 100.0, 0.5 / n), 1 - 0.5 / n)
    se_best = math.sqrt(1e4 * q * (1 - q) / n + seed_sd ** 2)
    diff = mean - float(acc[i])
    se = math.sqrt(se_mean ** 2 + se_best ** 2)
    return {"name": str(row["name"]), "model": str(row.get("model")), "attack_steps": int(row["attack_steps"]),
            "epochs": int(row["epochs"]), "train_flops": float(flops[i]), y: float(acc[i]), "n_examples": int(n),
            "n_similar": int(near.sum()), "difference": diff, "difference_ci": [diff - Z95 * se, diff + Z95 * se],
            "beat": bool(diff - Z95 * se > 0), "worse": bool(diff + Z95 * se < 0)}


def study_backtest(backtests: dict[str, dict[str, Any]] | None) -> dict[str, Any]:
    """The page's back-test: the study's own (``study.fits.study_backtests``: each family's cheapest two thirds
    fitted, the rest predicted), as text; its reason where no family could be split."""
    done = [bt for fams in (backtests or {}).values() for bt in fams.values() if not isinstance(bt, str)]
    if not done:
        reasons = sorted({bt for fams in (backtests or {}).values() for bt in fams.values() if isinstance(bt, str)})
        return {"status": "not available", "reason": "; ".join(reasons) or "the study fitted no law"}
    return {"status": "ok", "text": format_backtests(done)}


def study_trainer(spec, opts, st, evaluate, *, store: str | None, executor: str, max_parallel: int | None,
                  progress: bool, log):
    """The study's train-and-evaluate for :func:`close_the_loop`: ``(recipe, seeds) -> (rows, trained_now,
    reused)``; the recipe as runs of ``spec`` (:func:`verify_runs`), swept into the store and evaluated with
    the study's evaluations (``evaluate``: ``run.run_extra_evaluations``); ``rows``: their study frame."""
    def train_and_evaluate(recipe: Mapping[str, Any], seeds: list[int]):
        vspec = replace(spec, name=f"{spec.name}-plan", runs=verify_runs(spec, recipe, seeds))
        sweep = run_sweep(vspec, executor=executor, store=store, max_parallel=max_parallel, progress=progress,
                          log=log)
        evaluate(vspec, opts, st, progress=progress, log=log)
        return study_frame(st, vspec, opts), sweep.get("submitted", 0), sweep.get("done_before", 0)
    return train_and_evaluate


def close_the_loop(grid, plan: Mapping[str, Any], sc: ScalingOptions, seed_sd: float, train_and_evaluate,
                   log=print) -> dict[str, Any]:
    """Steps 2-3 of the module docstring: the plan's best recipe trained with ``sc.verify_seeds`` through
    ``train_and_evaluate(recipe, seeds) -> (rows, trained_now, reused)`` (``rows``: the planned runs with
    ``sc.y`` and ``{y}_n_examples``), against its prediction and ``grid``'s best run of similar compute.
    ``{"reason": ...}`` where the plan has no recipe."""
    budget = plan["budgets"][0]
    recipes = budget.get("recipes") or []
    if not recipes:
        return {"reason": budget.get("reason") or "the planner found no recipe within the budget"}
    recipe = recipes[0]
    log(f"planned recipe: {recipe['model']}, {recipe['attack_steps']} attack steps, {recipe['epochs']} epochs "
        f"({recipe['train_flops']:.3g} FLOPs), predicted {sc.y} {recipe['predicted_acc']:.1f}%; "
        f"training it with seeds {', '.join(map(str, sc.verify_seeds))}")
    rows, trained_now, reused = train_and_evaluate(recipe, sc.verify_seeds)
    out = {"recipe": recipe, "budget_flops": budget["budget_flops"],
           "largest_run_flops": budget["budget_flops"] / sc.budget_factor,  # recorded train_flops
           "runs_trained_now": trained_now, "runs_reused": reused,
           "wall_seconds_runs": float(rows["wall_seconds"].fillna(0).sum())
           if "wall_seconds" in getattr(rows, "columns", ()) else 0.0}
    out.update(observed_vs_predicted(rows, recipe, sc.y, seed_sd, grid, budget["budget_flops"], sc.similar_compute)
               if not rows.empty else {"mean": None, "reason": "no planned run finished"})
    return out


def run_scaling(spec, opts, st, runs_df, fits, evaluate, *, store: str | None, executor: str,
                max_parallel: int | None, progress: bool, log,
                backtests: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """Steps 1-3 of the module docstring; the JSON-able document ``scaling.json`` holds. ``evaluate``: the
    study's extra evaluations of a spec's done runs (``run.run_extra_evaluations``)."""
    sc = opts.scaling
    start = time.perf_counter()
    grid = select_runs(runs_df, sc.where)
    doc: dict[str, Any] = {"where": sc.where, "y": sc.y, "budget_factor": sc.budget_factor,
                           "verify_seeds": sc.verify_seeds, "similar_compute": sc.similar_compute,
                           "seed_sd": {f.name: family_seed_sd(fits, f.name) for f in opts.fits},
                           "backtest": study_backtest(backtests), "verify": None}
    log(f"planning: the joint law on {len(grid)} runs, budget {sc.budget_factor:g}x the largest run")
    doc["plan"] = scaling_plan(runs_df, sc, bootstrap=opts.bootstrap if sc.bootstrap is None else sc.bootstrap,
                               seed=opts.seed, device_type=opts.device_type or spec.cost.device_type,
                               exclude_below=opts.exclude_below, source=f"study {spec.name}")
    fam = next((f for f in opts.fits if f.y == sc.y), None)
    sd = (doc["seed_sd"].get(fam.name) if fam is not None else None) or {"seed_sd": None}
    seed_sd = sd["seed_sd"] if sd["seed_sd"] is not None else SEED_SD_POINTS
    trainer = study_trainer(spec, opts, st, evaluate, store=store, executor=executor, max_parallel=max_parallel,
                            progress=progress, log=log)
    verify = close_the_loop(grid, doc["plan"], sc, seed_sd, trainer, log=log)
    if "recipe" not in verify:
        doc["verify_reason"] = verify["reason"]
    else:
        doc["train_wall_seconds"] = float(runs_df["wall_seconds"].fillna(0).sum()
                                          if "wall_seconds" in runs_df.columns else 0.0) + verify.pop("wall_seconds_runs")
        doc["verify"] = {**verify, "seed_sd_family": fam.name if fam is not None else None}
    doc["wall_seconds"] = time.perf_counter() - start
    return doc
