"""``robustscale study SPEC``: run a sweep, evaluate every run, fit the laws, write the report.

A study spec is a sweep spec (see ``robustscale.sweep.spec``) plus a ``study:`` section::

    evaluation: {attack: apgd-ce, n_examples: 1000}   # every run: what the fits use
    study:
      evaluations:                  # extra evaluations of finished runs (after the sweep's own)
        - {attack: aa-standard, n_examples: 200, where: {method: [pgd, trades]}, strongest: 2}
      fits:                         # named families of runs, each fitted against train_flops
        standard:    {where: {method: standard}, y: clean_acc}
        adversarial: {where: {method: [pgd, trades]}, y: apgd_ce_robust_acc}
      compare: [adversarial, standard]   # difference of exponents a - b, with its interval
      laws: [power, saturating]
      targets: [70, 75, 80]         # accuracies (%) whose cost is extrapolated
      bootstrap: 500
      seed: 0
      eval_workers: 2               # extra evaluations in N processes at once (CPU studies; default 1)
      seed_sd: 1.0                  # seed-to-seed SD (points) the lack-of-fit test allows (default: assumed 1)
      scaling: {...}                # the joint law, a planned run trained and checked, a markdown page
                                    # (robustscale.study.scaling)

``strongest: k`` gives an extra evaluation only to the k runs (of those ``where`` selects) with the
highest robust accuracy (``by: <column>``; default: the sweep's evaluation if it is an attack, else
the first study evaluation that is one), e.g. full AutoAttack on the two most robust runs; the study
prints AutoAttack's gap to its first stage (APGD-CE) on the same images. Entries run in order.

The grid is checked before anything trains: every family needs at least ``parameters + 3`` runs for
each law (see ``robustscale.scaling.identified``) and two distinct compute settings. Accuracies come
with their sample size and Wilson interval; laws the data do not identify are reported with the reason.
Results: ``report.html`` and ``study.json`` in the output folder.

Runs that are already done in the store (same config hash) are not trained again and claims
already on disk are not recomputed, so a second invocation only refits and rewrites the report.
"""
from __future__ import annotations

import json
import math
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd
import torch
from tqdm.auto import tqdm

from ..config import load_yaml
from ..errors import UserError, check_keys, choice
from ..evaluation import evaluate_run
from ..scaling.identified import SEED_SD_POINTS, check_seed_sd, min_runs
from ..scaling.laws import LawName, get_law
from ..sweep import build_spec, open_sweep_store, run_sweep
from ..sweep.spec import parse_evaluation
from .fits import backtest_records, comparison_records, fit_records, fit_study, study_backtests
from .next import next_runs
from .report import write_study_report
from .results import (MIN_FIT_EXAMPLES, accuracy_columns, autoattack_gaps, format_gap, metric_of, run_records,
                      sort_fits, sort_runs, study_frame, where_mask, write_study_json)
from .scaling import ScalingOptions, parse_scaling, run_scaling
from .scaling_page import write_scaling_outputs

STUDY_KEYS = ("evaluations", "fits", "compare", "laws", "targets", "bootstrap", "seed", "x", "exclude_below",
              "device_type", "price_preset", "report", "eval_workers", "seed_sd", "scaling")
FIT_KEYS = ("where", "y", "label")
DEFAULT_LAWS = ("power", "saturating")


@dataclass
class StudyFit:
    """A family of runs (``where``: column -> value or list of values) fitted on ``y`` vs compute."""

    name: str
    where: dict[str, list[Any]]
    y: str
    label: str

    def select(self, df):
        return df[where_mask(df, self.where, f"study fit {self.name!r}")]


@dataclass
class StudyOptions:
    evaluations: list[dict[str, Any]] = field(default_factory=list)
    fits: list[StudyFit] = field(default_factory=list)
    compare: tuple[str, str] | None = None
    laws: tuple[str, ...] = DEFAULT_LAWS
    targets: tuple[float, ...] = (70.0, 75.0, 80.0)
    bootstrap: int = 500
    seed: int = 0
    x: str = "train_flops"
    exclude_below: float | None = None
    device_type: str | None = None
    price_preset: str | None = None
    report: str | None = None  # default: <output_dir>/report.html
    eval_workers: int = 1  # processes for the extra evaluations (each gets cores // workers threads)
    seed_sd: float | None = None  # lack-of-fit test's seed SD in points (None: identified.SEED_SD_POINTS)
    scaling: ScalingOptions | None = None  # the joint law and its planned run (robustscale.study.scaling)


def load_study(path: str | Path, overrides: Mapping[str, Any] | None = None):
    """Read a study spec: ``(SweepSpec, StudyOptions)``. Bad keys, and a grid that cannot carry a requested
    law, fail here, before any run starts."""
    path = Path(path)
    data = dict(load_yaml(path))
    study = data.pop("study", None) or {}
    spec = build_spec(data, path=path, overrides=overrides)
    opts = parse_study_options(study, str(path))
    check_grid(spec, opts)
    return spec, opts


# TrainConfig keys that change a run's training FLOPs: runs equal in all of them sit at one compute value.
COMPUTE_KEYS = ("dataset", "model", "method", "attack_steps", "train_subset", "epochs", "batch_size", "input_size",
                "generated_data", "generated_fraction")


def check_grid(spec, opts: StudyOptions) -> None:
    """UserError (one line, exit 2) when a family's planned runs cannot identify a requested law."""
    planned = pd.DataFrame([{**r.cfg.to_dict(), "name": r.name} for r in spec.runs])
    for fam in opts.fits:
        sub = fam.select(planned)
        n = len(sub)
        computes = len(sub[[k for k in COMPUTE_KEYS if k in sub.columns]].astype(str).drop_duplicates())
        for law in opts.laws:
            p = get_law(law).n_params
            if n < min_runs(p):
                raise UserError(f"study fit {fam.name!r} has {n} run(s) in the grid of {spec.path or spec.name}, but "
                                f"the {law} law needs at least {min_runs(p)} ({p} parameters + 3); add runs to the "
                                f"family or drop the law")
            if computes < 2:
                raise UserError(f"study fit {fam.name!r} has {n} run(s) in the grid of {spec.path or spec.name}, all "
                                f"at a single compute value; the {law} law needs at least 2 distinct compute values "
                                f"(vary model, train_subset or epochs)")


def parse_study_options(study: Mapping[str, Any], where: str) -> StudyOptions:
    if not isinstance(study, Mapping):
        raise UserError(f"`study` in {where} must be a mapping; valid keys: {', '.join(STUDY_KEYS)}")
    check_keys(study, STUDY_KEYS, f"study of {where}")
    opts = StudyOptions()
    evaluations = study.get("evaluations") or []
    if not isinstance(evaluations, list) or not all(isinstance(e, Mapping) for e in evaluations):
        raise UserError(f"study.evaluations in {where} must be a list of mappings like {{attack: aa-standard, "
                        f"n_examples: 200}}")
    opts.evaluations = []
    for e in evaluations:
        e = dict(e)
        select = e.pop("where", None) or {}
        strongest, by = e.pop("strongest", None), e.pop("by", None)
        if not isinstance(select, Mapping):
            raise UserError(f"`where` of a study evaluation in {where} must map TrainConfig keys to values")
        if strongest is not None and (not isinstance(strongest, int) or isinstance(strongest, bool) or strongest < 1):
            raise UserError(f"invalid strongest {strongest!r} of a study evaluation in {where}: an integer >= 1 "
                            f"(the number of most robust runs to evaluate)")
        ev = parse_evaluation(e, where).kwargs()
        ev["where"] = {str(k): [str(x) for x in (v if isinstance(v, (list, tuple)) else [v])] for k, v in select.items()}
        ev["strongest"], ev["by"] = strongest, (str(by) if by is not None else None)
        opts.evaluations.append(ev)
    fits = study.get("fits") or {}
    if not isinstance(fits, Mapping) or not fits:
        raise UserError(f"study.fits in {where} must name at least one family, e.g. "
                        f"{{adversarial: {{where: {{method: pgd}}, y: aa_robust_acc}}}}")
    for name, spec in fits.items():
        if not isinstance(spec, Mapping):
            raise UserError(f"study.fits.{name} in {where} must be a mapping with keys {', '.join(FIT_KEYS)}")
        check_keys(spec, FIT_KEYS, f"study.fits.{name} of {where}")
        where_map = {str(k): (list(v) if isinstance(v, (list, tuple)) else [v])
                     for k, v in (spec.get("where") or {}).items()}
        opts.fits.append(StudyFit(str(name), where_map, str(spec.get("y", "aa_robust_acc")),
                                  str(spec.get("label", name))))
    compare = study.get("compare")
    if compare is not None:
        names = [f.name for f in opts.fits]
        if not (isinstance(compare, (list, tuple)) and len(compare) == 2 and all(c in names for c in compare)):
            raise UserError(f"study.compare in {where} must be two fit names out of {', '.join(names)}; got {compare!r}")
        opts.compare = (str(compare[0]), str(compare[1]))
    laws = study.get("laws", list(DEFAULT_LAWS))
    laws = [laws] if isinstance(laws, str) else list(laws)
    opts.laws = tuple(choice(LawName, law, what="law").value for law in laws)
    if "chinchilla" in opts.laws:
        raise UserError(f"study.laws in {where}: chinchilla needs two inputs; use power or saturating here")
    targets = study.get("targets", list(opts.targets))
    targets = [targets] if isinstance(targets, (int, float)) else list(targets)
    for t in targets:
        if not isinstance(t, (int, float)) or not 0 < t < 100:
            raise UserError(f"invalid study target {t!r} in {where}: accuracies in (0, 100) percent")
    opts.targets = tuple(float(t) for t in targets)
    for key in ("bootstrap", "seed", "eval_workers"):
        if key in study:
            value = study[key]
            low = 1 if key == "eval_workers" else 0
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise UserError(f"invalid study.{key} {value!r} in {where}: an integer >= {low}")
            setattr(opts, key, value)
    for key in ("x", "device_type", "price_preset", "report"):
        if study.get(key) is not None:
            setattr(opts, key, str(study[key]))
    if study.get("exclude_below") is not None:
        opts.exclude_below = float(study["exclude_below"])
    opts.seed_sd = check_seed_sd(study.get("seed_sd"), "study.seed_sd", f" in {where}")
    opts.scaling = parse_scaling(study.get("scaling"), where)
    return opts


@dataclass
class StudyResult:
    spec_name: str
    report_path: Path
    json_path: Path
    n_runs: int
    fits: dict[str, dict[str, Any]]  # law -> family name -> FitResult (or the UserError that stopped it)
    comparisons: dict[str, Any]  # law -> ExponentComparison | None (identified laws only)
    extrapolations: dict[str, dict[float, list]]  # law -> target -> [Extrapolation]
    runs: list[dict[str, Any]]  # study.json's runs
    records: list[dict[str, Any]]  # study.json's fits
    comparison_records: list[dict[str, Any]]
    gaps: list[dict[str, Any]]  # AutoAttack vs APGD-CE on the same images
    warnings: list[str]
    wall_seconds: float
    sweep: dict[str, Any]
    next: list[dict[str, Any]] = field(default_factory=list)  # what to run next (study.next)
    scaling: dict[str, Any] | None = None  # scaling.json (study.scaling), with "page": the markdown written

    def to_dict(self) -> dict[str, Any]:
        return {"study": self.spec_name, "report": str(self.report_path), "study_json": str(self.json_path),
                "n_runs": self.n_runs, "wall_seconds": self.wall_seconds,
                "sweep": {k: v for k, v in self.sweep.items() if k != "outcomes"},
                "runs": self.runs, "fits": self.records, "comparisons": self.comparison_records,
                "autoattack_gaps": self.gaps, "warnings": self.warnings, "next": self.next,
                "scaling": None if self.scaling is None else {"json": self.scaling.get("json"),
                                                              "page": self.scaling.get("page")}}


def run_study(spec, opts: StudyOptions, *, store: str | None = None, executor: str = "local",
              max_parallel: int | None = None, progress: bool = True, log=print) -> StudyResult:
    """Run the sweep (what is not done), the extra evaluations, the fits, the report and study.json."""
    start = time.perf_counter()
    sweep = run_sweep(spec, executor=executor, store=store, max_parallel=max_parallel, progress=progress, log=log)
    if sweep.get("failed"):
        names = [n for n, v in sweep["outcomes"].items() if v == "failed"]
        log(f"warning: {len(names)} run(s) failed and are left out of the fits: {', '.join(names)}")
    st = open_sweep_store(spec, store)
    run_extra_evaluations(spec, opts, st, progress=progress, log=log)
    runs_df = study_frame(st, spec, opts)
    if runs_df.empty:
        raise UserError(f"no finished runs of study {spec.name} in the store {st.display_url}; see `robustscale "
                        f"sweep status {spec.path}`")
    df = family_frame(runs_df, opts)
    backtests = study_backtests(df, opts)
    fits, comparisons, extrapolations = fit_study(df, opts, spec, backtests)
    records, comps = sort_fits(fit_records(df, opts, fits, extrapolations)), comparison_records(opts, comparisons)
    warnings = study_warnings(df, opts)
    for w in warnings:
        log(f"warning: {w}")
    fit_metric = next((f.y for f in opts.fits if f.y.endswith("robust_acc")), "apgd_ce_robust_acc")
    gaps = autoattack_gaps(st, spec, fit_metric)
    for g in gaps:
        log(format_gap(g))
    out_dir = Path(opts.report).parent if opts.report else Path(spec.output_dir)
    report = Path(opts.report) if opts.report else out_dir / "report.html"
    runs = sort_runs(run_records(df))
    nxt = next_runs(df, opts, spec)
    write_study_report(df, spec, opts, fits, comparisons, extrapolations, records, gaps, warnings, report, nxt,
                       backtests)
    json_path = write_study_json(out_dir / "study.json", runs, records, {
        "study": spec.name, "laws": list(opts.laws), "targets": list(opts.targets), "bootstrap": opts.bootstrap,
        "seed": opts.seed, "seed_sd": opts.seed_sd if opts.seed_sd is not None else SEED_SD_POINTS,
        "seed_sd_assumed": opts.seed_sd is None, "comparisons": comps, "autoattack_gaps": gaps, "warnings": warnings, "next": nxt,
        "backtests": backtest_records(backtests)})
    scaling = None
    if opts.scaling is not None:
        scaling = run_scaling(spec, opts, st, runs_df, fits, run_extra_evaluations, store=store, executor=executor,
                              max_parallel=max_parallel, progress=progress, log=log, backtests=backtests)
        scaling = write_scaling_outputs(scaling, spec, opts, runs, records, comps, sweep,
                                        time.perf_counter() - start, out_dir)
    return StudyResult(spec.name, report, json_path, len(runs_df), fits, comparisons, extrapolations, runs, records,
                       comps, gaps, warnings, time.perf_counter() - start, sweep, nxt, scaling)


def metric_of_spec(spec) -> str | None:
    """The robust-accuracy column of the sweep's own evaluation (``apgd-ce`` -> ``apgd_ce_robust_acc``)."""
    ev = spec.evaluation
    return metric_of(ev.attack) if ev is not None and ev.attack != "clean" else None


def study_warnings(df, opts: StudyOptions) -> list[str]:
    """What a reader must know: fit inputs on fewer than 1,000 images, selection on test images, runs that
    predict (almost) one class."""
    out = []
    for fam in opts.fits:
        sub = df[df["family"] == fam.label]
        col = f"{fam.y}_n_examples"
        if col in sub.columns and len(sub):
            n_min = sub[col].min()
            if n_min == n_min and n_min < MIN_FIT_EXAMPLES:
                out.append(f"family {fam.name}: {fam.y} is measured on {int(n_min)} images for some runs "
                           f"(fits want >= {MIN_FIT_EXAMPLES}: a standard error of at most 1.6 points)")
    if "selection_split" in df.columns:
        test = sorted(set(df.loc[df["selection_split"] == "test", "name"]))
        if test:
            out.append(f"{len(test)} run(s) selected their checkpoint on TEST images (select_split test or an old "
                       f"run): {', '.join(test[:6])}{' ...' if len(test) > 6 else ''}")
    if "clean_acc" in df.columns:
        weak = sorted(set(df.loc[df["clean_acc"] < 20, "name"]))  # 2x chance on 10 classes
        if weak:
            out.append(f"{len(weak)} run(s) reach less than 20% clean accuracy (near one class): {', '.join(weak)}")
    return out


def pending_evaluations(spec, opts: StudyOptions, st, entries: Sequence[dict] | None = None
                        ) -> list[tuple[Any, dict[str, Any]]]:
    """``(run, evaluate_run kwargs)`` of every extra evaluation (of ``entries``, default all) a done run still
    lacks, in spec order."""
    done = {row["name"] for row in st.list_runs(names=[r.name for r in spec.runs]) if row.get("status") == "done"}
    todo = []
    for ev in (opts.evaluations if entries is None else entries):
        ev = dict(ev)
        select, strongest, by = ev.pop("where"), ev.pop("strongest", None), ev.pop("by", None)
        # e.g. AutoAttack only on adversarially trained runs
        chosen = [run for run in spec.runs if run.name in done and
                  all(str(run.cfg.to_dict().get(k)) in values for k, values in select.items())]
        if strongest is not None:
            chosen = strongest_runs(spec, opts, st, chosen, strongest, by)
        for run in chosen:
            eps = ev.get("eps") if ev.get("eps") is not None else run.cfg.eps
            if st.evaluation_exists(run.name, ev["attack"], eps, ev.get("n_examples")):
                continue  # done by an earlier invocation: claims are reused, not recomputed
            todo.append((run, ev))
    return todo


def ranking_metric(spec, opts: StudyOptions, by: str | None = None) -> str:
    """What ``strongest`` ranks by: ``by``, else the sweep's evaluation if it is an attack, else the first
    study evaluation that is one (e.g. ``apgd_ce_robust_acc``)."""
    if by:
        return by
    metric = metric_of_spec(spec)
    if metric is None:
        metric = next((metric_of(e["attack"]) for e in opts.evaluations if e["attack"] != "clean"), None)
    if metric is None:
        raise UserError(f"`strongest` in study {spec.name} needs a robust accuracy to rank runs by: give `by` "
                        f"or an attack as the sweep's evaluation")
    return metric


def strongest_runs(spec, opts: StudyOptions, st, runs: list, k: int, by: str | None = None) -> list:
    """The ``k`` runs with the highest ``ranking_metric`` (ties: by name); runs without it are left out."""
    metric = ranking_metric(spec, opts, by)
    evals = st.evaluations_of([r.name for r in runs])
    score = {r.name: accuracy_columns(evals.get(r.name, []), float(r.cfg.eps)).get(metric) for r in runs}
    ranked = sorted((r for r in runs if score[r.name] is not None), key=lambda r: (-score[r.name], r.name))
    return ranked[:k]


def _evaluate_in_worker(run_dir: str, store: str, threads: int, ev: dict[str, Any]) -> dict[str, Any]:
    """One extra evaluation in a worker process (``threads`` intra-op threads); the claim's headline."""
    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    claim = evaluate_run(run_dir, progress=False, store=store, **ev)
    return {"n_examples": claim.get("n_examples"), "robust_acc": claim.get("robust_acc"),
            "seconds": time.perf_counter() - t0}


def _log_claim(log, name: str, attack: str, res: Mapping[str, Any]) -> None:
    acc = res.get("robust_acc")
    log(f"evaluated {name}: {attack} on {res.get('n_examples')} images -> "
        f"{acc if acc is not None else float('nan'):.1f}% ({res['seconds']:.0f} s)")


def run_extra_evaluations(spec, opts: StudyOptions, st, *, progress: bool, log) -> None:
    """Evaluate every done run of the sweep with the study's extra attacks (claims on disk are reused).

    With ``opts.eval_workers`` > 1 the evaluations run in that many processes with the cores split
    between them: small models on a few CPU cores use 2 threads poorly (AutoAttack on WRN-16-2:
    116 s on 1 thread, 76 s on 2), so two at once finish sooner. Evaluations are resumable, so an
    interrupted study loses at most the batches in flight.
    """
    # One entry at a time: a later entry's `strongest` ranks runs by an earlier entry's results.
    for entry in opts.evaluations:
        todo = pending_evaluations(spec, opts, st, [entry])
        if todo:
            _run_evaluations(todo, opts, st, progress=progress, log=log)


def _run_evaluations(todo, opts: StudyOptions, st, *, progress: bool, log) -> None:
    workers = min(opts.eval_workers, len(todo))
    if workers <= 1:
        for run, ev in todo:
            t0 = time.perf_counter()
            claim = evaluate_run(run.run_dir, progress=progress, store=st.url, **ev)
            _log_claim(log, run.name, ev["attack"], {**claim, "seconds": time.perf_counter() - t0})
        return


    threads = max(1, torch.get_num_threads() // workers)  # split this process's threads between the workers
    log(f"{len(todo)} evaluations in {workers} processes x {threads} thread(s)")
    # spawn: a fresh interpreter per worker (forking a process that holds torch threads can deadlock)
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
    try:
        futures = {pool.submit(_evaluate_in_worker, str(run.run_dir), st.url, threads, ev): (run, ev)
                   for run, ev in todo}
        with tqdm(total=len(todo), desc="evaluations", unit="eval", disable=not progress) as bar:
            for fut in as_completed(futures):
                run, ev = futures[fut]
                res = fut.result()  # a worker's UserError / exception surfaces here, with its message
                bar.update(1)
                with bar.external_write_mode():
                    _log_claim(log, run.name, ev["attack"], res)
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()


def family_frame(df, opts: StudyOptions):
    """One row per (run, family) with a ``family`` column, so that fits and plots select by it."""
    parts = [fam.select(df).assign(family=fam.label) for fam in opts.fits]
    return pd.concat(parts, ignore_index=True) if parts else df.assign(family=None)
