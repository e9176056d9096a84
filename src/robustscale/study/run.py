"""``robustscale study SPEC``: run a sweep, evaluate every run, fit the laws, write the report.

A study spec is a sweep spec (see ``robustscale.sweep.spec``) plus a ``study:`` section::

    study:
      evaluations:                  # extra evaluations of finished runs (after the sweep's own)
        - {attack: aa-standard, n_examples: 200, where: {method: [pgd, trades]}}
      fits:                         # named families of runs, each fitted against train_flops
        standard:    {where: {method: standard}, y: clean_acc}
        adversarial: {where: {method: [pgd, trades]}, y: aa_robust_acc}
      compare: [adversarial, standard]   # difference of exponents a - b, with its interval
      laws: [power, saturating]
      targets: [70, 75, 80]         # accuracies (%) whose cost is extrapolated
      bootstrap: 500
      seed: 0
      eval_workers: 2               # extra evaluations in N processes at once (CPU studies; default 1)

Runs that are already done in the store (same config hash) are not trained again and claims
already on disk are not recomputed, so a second invocation only refits and rewrites the report.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..config import load_yaml
from ..errors import UserError

STUDY_KEYS = ("evaluations", "fits", "compare", "laws", "targets", "bootstrap", "seed", "x", "exclude_below",
              "device_type", "price_preset", "report", "eval_workers")
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
        mask = None
        for col, values in self.where.items():
            if col not in df.columns:
                raise UserError(f"study fit {self.name!r} selects on column {col!r}, which the runs table lacks; "
                                f"columns: {', '.join(map(str, df.columns))}")
            m = df[col].astype(str).isin([str(v) for v in values])
            mask = m if mask is None else mask & m
        return df if mask is None else df[mask]


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


def load_study(path: str | Path, overrides: Mapping[str, Any] | None = None):
    """Read a study spec: ``(SweepSpec, StudyOptions)``. Bad keys fail here, before any run starts."""
    from ..sweep import build_spec

    path = Path(path)
    data = dict(load_yaml(path))
    study = data.pop("study", None) or {}
    spec = build_spec(data, path=path, overrides=overrides)
    return spec, parse_study_options(study, str(path))


def parse_study_options(study: Mapping[str, Any], where: str) -> StudyOptions:
    from ..scaling.laws import LawName
    from ..errors import choice

    if not isinstance(study, Mapping):
        raise UserError(f"`study` in {where} must be a mapping; valid keys: {', '.join(STUDY_KEYS)}")
    for key in study:
        if key not in STUDY_KEYS:
            raise UserError(f"unknown key {key!r} in study of {where}; valid: {', '.join(STUDY_KEYS)}")
    opts = StudyOptions()
    evaluations = study.get("evaluations") or []
    if not isinstance(evaluations, list) or not all(isinstance(e, Mapping) for e in evaluations):
        raise UserError(f"study.evaluations in {where} must be a list of mappings like {{attack: aa-standard, "
                        f"n_examples: 200}}")
    from ..sweep.spec import _parse_evaluation

    opts.evaluations = []
    for e in evaluations:
        e = dict(e)
        select = e.pop("where", None) or {}
        if not isinstance(select, Mapping):
            raise UserError(f"`where` of a study evaluation in {where} must map TrainConfig keys to values")
        ev = _parse_evaluation(e, where).kwargs()
        ev["where"] = {str(k): [str(x) for x in (v if isinstance(v, (list, tuple)) else [v])] for k, v in select.items()}
        opts.evaluations.append(ev)
    fits = study.get("fits") or {}
    if not isinstance(fits, Mapping) or not fits:
        raise UserError(f"study.fits in {where} must name at least one family, e.g. "
                        f"{{adversarial: {{where: {{method: pgd}}, y: aa_robust_acc}}}}")
    for name, spec in fits.items():
        if not isinstance(spec, Mapping):
            raise UserError(f"study.fits.{name} in {where} must be a mapping with keys {', '.join(FIT_KEYS)}")
        for key in spec:
            if key not in FIT_KEYS:
                raise UserError(f"unknown key {key!r} in study.fits.{name} of {where}; valid: {', '.join(FIT_KEYS)}")
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
    return opts


@dataclass
class StudyResult:
    spec_name: str
    report_path: Path
    n_runs: int
    fits: dict[str, dict[str, Any]]  # law -> family name -> FitResult
    comparisons: dict[str, Any]  # law -> ExponentComparison | None
    extrapolations: dict[str, dict[float, list]]  # law -> target -> [Extrapolation]
    rows: list[dict[str, Any]]
    wall_seconds: float
    sweep: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"study": self.spec_name, "report": str(self.report_path), "n_runs": self.n_runs,
                "wall_seconds": self.wall_seconds, "sweep": {k: v for k, v in self.sweep.items() if k != "outcomes"},
                "rows": self.rows,
                "comparisons": {law: (c.to_dict() if c is not None else None) for law, c in self.comparisons.items()}}


def run_study(spec, opts: StudyOptions, *, store: str | None = None, executor: str = "local",
              max_parallel: int | None = None, progress: bool = True, log=print) -> StudyResult:
    """Run the sweep (what is not done), the extra evaluations, the fits and the report."""
    from ..sweep import open_sweep_store, run_sweep

    start = time.perf_counter()
    sweep = run_sweep(spec, executor=executor, store=store, max_parallel=max_parallel, progress=progress, log=log)
    if sweep.get("failed"):
        names = [n for n, v in sweep["outcomes"].items() if v == "failed"]
        log(f"warning: {len(names)} run(s) failed and are left out of the fits: {', '.join(names)}")
    st = open_sweep_store(spec, store)
    run_extra_evaluations(spec, opts, st, progress=progress, log=log)
    df = st.runs_frame()
    df = df[df["name"].isin([r.name for r in spec.runs])].reset_index(drop=True)
    if df.empty:
        raise UserError(f"no finished runs of study {spec.name} in the store {st.display_url}; see `robustscale "
                        f"sweep status {spec.path}`")
    runs_df, df = df, family_frame(df, opts)
    fits, comparisons, extrapolations = fit_study(df, opts, spec)
    report = Path(opts.report) if opts.report else Path(spec.output_dir) / "report.html"
    write_study_report(df, spec, opts, fits, comparisons, extrapolations, report)
    rows = summary_rows(opts, fits, comparisons, extrapolations)
    return StudyResult(spec.name, report, len(runs_df), fits, comparisons, extrapolations, rows,
                       time.perf_counter() - start, sweep)


def pending_evaluations(spec, opts: StudyOptions, st) -> list[tuple[Any, dict[str, Any]]]:
    """``(run, evaluate_run kwargs)`` of every extra evaluation a done run still lacks, in spec order."""
    done = {row["name"] for row in st.list_runs(names=[r.name for r in spec.runs]) if row.get("status") == "done"}
    todo = []
    for run in spec.runs:
        if run.name not in done:
            continue
        cfg = run.cfg.to_dict()
        for ev in opts.evaluations:
            ev = dict(ev)
            select = ev.pop("where")
            if any(str(cfg.get(k)) not in values for k, values in select.items()):
                continue  # e.g. AutoAttack only on adversarially trained runs
            eps = ev.get("eps") if ev.get("eps") is not None else run.cfg.eps
            if st.evaluation_exists(run.name, ev["attack"], eps, ev.get("n_examples")):
                continue  # done by an earlier invocation: claims are reused, not recomputed
            todo.append((run, ev))
    return todo


def _evaluate_in_worker(run_dir: str, store: str, threads: int, ev: dict[str, Any]) -> dict[str, Any]:
    """One extra evaluation in a worker process (``threads`` intra-op threads); the claim's headline."""
    import torch

    from ..evaluation import evaluate_run

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
    todo = pending_evaluations(spec, opts, st)
    if not todo:
        return
    workers = min(opts.eval_workers, len(todo))
    if workers <= 1:
        from ..evaluation import evaluate_run

        for run, ev in todo:
            t0 = time.perf_counter()
            claim = evaluate_run(run.run_dir, progress=progress, store=st.url, **ev)
            _log_claim(log, run.name, ev["attack"], {**claim, "seconds": time.perf_counter() - t0})
        return

    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    import torch
    from tqdm.auto import tqdm

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
    import pandas as pd

    parts = [fam.select(df).assign(family=fam.label) for fam in opts.fits]
    return pd.concat(parts, ignore_index=True) if parts else df.assign(family=None)


def fit_study(df, opts: StudyOptions, spec=None):
    """Fit every family under every law; compare exponents; extrapolate to the targets."""
    from ..scaling import compare_exponents, extrapolate, fit_law
    from ..schema import COLLAPSE_THRESHOLD_ACC

    fits: dict[str, dict[str, Any]] = {}
    comparisons: dict[str, Any] = {}
    extrapolations: dict[str, dict[float, list]] = {}
    device_type = opts.device_type or (spec.cost.device_type if spec is not None else None)
    preset = opts.price_preset or (spec.cost.price_preset if spec is not None else "default")
    for law in opts.laws:
        fits[law] = {}
        for i, fam in enumerate(opts.fits):
            sub = df[df["family"] == fam.label] if "family" in df.columns else fam.select(df)
            exclude = opts.exclude_below
            if exclude is None and fam.y.endswith("robust_acc"):
                exclude = COLLAPSE_THRESHOLD_ACC
            try:
                fit = fit_law(sub, law=law, x=opts.x, y=fam.y, bootstrap=opts.bootstrap, seed=opts.seed + i,
                              exclude_below=exclude, group={"family": fam.label})
            except UserError as exc:  # too few runs in this family: say so in the report, keep the others
                fit = exc
            fits[law][fam.name] = fit
        comparisons[law] = None
        if opts.compare:
            a, b = (fits[law][n] for n in opts.compare)
            if not isinstance(a, Exception) and not isinstance(b, Exception) and a.converged and b.converged \
                    and a.has_bootstrap and b.has_bootstrap:
                comparisons[law] = compare_exponents(a, b, name=None)
        good = [f for f in fits[law].values() if not isinstance(f, Exception) and f.converged]
        extrapolations[law] = {t: (extrapolate(good, t, df, device_type=device_type, price_preset=preset)
                                   if good else []) for t in opts.targets}
    return fits, comparisons, extrapolations


def summary_rows(opts: StudyOptions, fits, comparisons, extrapolations) -> list[dict[str, Any]]:
    """Per law and family: exponent with interval, asymptote, and the cost of each target."""
    rows = []
    for law, fams in fits.items():
        for name, fit in fams.items():
            row: dict[str, Any] = {"law": law, "family": name}
            if isinstance(fit, Exception) or not fit.converged:
                row["status"] = str(fit) if isinstance(fit, Exception) else f"did not converge: {fit.message}"
                rows.append(row)
                continue
            exp_name = fit.exponent_name
            lo, hi = fit.ci.get(exp_name, (math.nan, math.nan))
            row.update(status="ok", y=fit.y, n=fit.n, exponent=fit.exponent, exponent_low=lo, exponent_high=hi,
                       asymptote_acc=fit.params.get("y_max", math.nan), r2=fit.r2)
            for target, exs in extrapolations[law].items():
                ex = next((e for e in exs if e.group == fit.label), None)
                if ex is None:
                    continue
                key = f"{target:g}"
                row[f"reachable_{key}"] = ex.reachable
                row[f"share_reachable_{key}"] = ex.share_reachable
                for q in ("compute_flops", "device_hours", "energy_kwh", "electricity_usd", "cloud_usd_high"):
                    if ex.reachable and q in ex.values:
                        row[f"{q}_{key}"] = ex.values[q][0]
            rows.append(row)
    for law, comp in comparisons.items():
        if comp is not None:
            names = opts.compare or (comp.a, comp.b)
            rows.append({"law": law, "family": f"{names[0]} - {names[1]}", "status": "comparison",
                         "exponent": comp.diff, "exponent_low": comp.low, "exponent_high": comp.high,
                         "p_value": comp.p_value})
    return rows


def _fmt(v, spec=".3g") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return format(v, spec)


def format_study_table(rows: Sequence[Mapping[str, Any]], targets: Sequence[float]) -> str:
    """The terminal table: per law and family the exponent and asymptote, then one line per target
    with its cost (FLOPs, device-hours, kWh, USD). Fits that failed and exponent differences get one
    line each, their text outside the columns so that it never widens them."""
    headers = ["law", "family", "n", "exponent [95% CI]", "asymptote %", "target", "FLOPs", "device-h", "kWh",
               "USD (cloud high)"]
    body: list[list[str]] = []
    free_text: dict[int, str] = {}  # row index -> text printed after the first three columns
    for r in rows:
        if r.get("status") == "comparison":
            free_text[len(body)] = (f"difference of exponents {r['exponent']:+.3g} [{_fmt(r['exponent_low'], '+.3g')}, "
                                    f"{_fmt(r['exponent_high'], '+.3g')}]")
            body.append([r["law"], r["family"], ""] + [""] * (len(headers) - 3))
            continue
        if r.get("status") != "ok":
            free_text[len(body)] = str(r.get("status"))
            body.append([r["law"], r["family"], ""] + [""] * (len(headers) - 3))
            continue
        head = [r["law"], r["family"], str(r["n"]),
                f"{r['exponent']:.3g} [{_fmt(r['exponent_low'])}, {_fmt(r['exponent_high'])}]",
                _fmt(r.get("asymptote_acc"), ".1f")]
        for i, t in enumerate(targets or [None]):
            lead = head if i == 0 else [""] * len(head)
            if t is None:
                body.append(lead + ["-"] * 5)
                continue
            key = f"{t:g}"
            if f"reachable_{key}" not in r:
                cost = ["-"] * 4
            elif not r[f"reachable_{key}"]:
                share = r.get(f"share_reachable_{key}", math.nan)
                free_text[len(body)] = (f"not reachable ({_fmt(100 * share, '.0f')}% of fits)" if share == share
                                        else "not reachable")
                cost = None
            else:
                cost = [_fmt(r.get(f"compute_flops_{key}"), ".2e"), _fmt(r.get(f"device_hours_{key}"), ".3g"),
                        _fmt(r.get(f"energy_kwh_{key}"), ".3g"), _fmt(r.get(f"cloud_usd_high_{key}"), ".3g")]
            body.append(lead + [f"{key}%"] + (cost if cost is not None else [""] * 4))
    widths = [max([len(h)] + [len(row[i]) for j, row in enumerate(body)
                              if j not in free_text or i < _free_from(row)]) for i, h in enumerate(headers)]
    out = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip()]
    for j, row in enumerate(body):
        if j in free_text:
            k = _free_from(row)
            out.append(("  ".join(c.ljust(w) for c, w in zip(row[:k], widths[:k])) + "  " + free_text[j]).rstrip())
        else:
            out.append("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
    return "\n".join(out)


def _free_from(row: Sequence[str]) -> int:
    """Columns kept before a line's free text: up to the target column when it has one, else law/family/n."""
    return 6 if len(row) > 5 and row[5] else 3


def write_study_report(df, spec, opts: StudyOptions, fits, comparisons, extrapolations, out_path: Path) -> Path:
    """The study's HTML report: setup (grid, subset sizes), fits, comparison, extrapolation."""
    import pandas as pd

    from ..report import Section, write_report
    from ..report.plots import plot_extrapolation, plot_residuals, plot_scaling

    first = spec.runs[0].cfg
    eval_lines = []
    if spec.evaluation is not None:
        ev = spec.evaluation
        eval_lines.append(f"{ev.attack} on the first {ev.n_examples} test images")
    eval_lines += [f"{e['attack']} on the first {e.get('n_examples')} test images"
                   + (f" (runs with {', '.join(f'{k} in {v}' for k, v in e['where'].items())})" if e["where"] else "")
                   for e in opts.evaluations]
    setup = (f"{len(spec.runs)} planned runs ({len(df)} finished) of sweep <code>{spec.name}</code> on "
             f"{first.dataset}, eps {first.eps:.4g} ({first.norm.value}). Axes: {', '.join(spec.axes) or 'none'}. "
             f"Each run is evaluated with {'; '.join(eval_lines) or 'its per-epoch PGD only'}. "
             f"Per-epoch PGD during training uses the first {first.eval_subset} test images. "
             f"Fits: {', '.join(opts.laws)} laws, {opts.bootstrap} bootstrap resamples (seed {opts.seed}), "
             f"runs with robust accuracy below 10% are excluded as collapsed.")
    cols = [c for c in ("family", "name", "model", "method", "attack_steps", "train_images", "epochs", "train_flops",
                        "wall_seconds", "energy_kwh", "clean_acc", "pgd_robust_acc", "aa_robust_acc", "aa_n_examples")
            if c in df.columns]
    runs_table = df[cols].copy()
    for c in ("train_flops",):
        if c in runs_table:
            runs_table[c] = runs_table[c].map(lambda v: f"{v:.3g}")
    sections = [Section("Setup", html=setup), Section("Runs", table=runs_table)]
    for law in opts.laws:
        good = [f for f in fits[law].values() if not isinstance(f, Exception)]
        figures = []
        for fit in good:
            figures.append((f"{fit.label}: {fit.y} vs {opts.x} ({law})", plot_scaling(df, [fit])))
        conv = [f for f in good if f.converged]
        if conv:
            figures.append((f"residuals ({law})", plot_residuals(conv)))
            t = max(opts.targets)
            for fit in conv:
                figures.append((f"{fit.label} extrapolated to {t:g}%", plot_extrapolation(df, [fit], t)))
        rows = [r for r in summary_rows(opts, {law: fits[law]}, {law: comparisons.get(law)},
                                        {law: extrapolations[law]})]
        table = pd.DataFrame(rows)
        text = ""
        comp = comparisons.get(law)
        if comp is not None:
            text = (f"Difference of exponents {comp.a} - {comp.b}: {comp.diff:+.3g} "
                    f"[{comp.low:+.3g}, {comp.high:+.3g}] ({comp.level * 100:g}% bootstrap), "
                    f"p = {comp.p_value:.3g}.")
        sections.append(Section(f"{law} law", text=text or None, table=table, figures=figures))
    out_path.parent.mkdir(parents=True, exist_ok=True)
    return write_report(df, out_path, sections, include_scaling=False, title=f"Study {spec.name}: robustness vs compute",
                        source=str(spec.path) if spec.path else None)
