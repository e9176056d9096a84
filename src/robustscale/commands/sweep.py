"""``robustscale sweep plan|run|status SPEC``: expand, price, run and follow a sweep of training runs."""
from __future__ import annotations

import json
from dataclasses import replace

from ..cost import default_flop_rate
from ..errors import UserError
from ..store import StoreNotFound
from ..sweep import check_collisions, estimate_runs, load_spec, open_sweep_store, run_sweep, sweep_states, totals
from .runs import format_cell, format_table


# ---------------------------------------------------------------------- helpers
def _load(args):
    overrides = {}
    for item in args.set:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise UserError(f"invalid --set {item!r}; expected KEY=VALUE")
        overrides[key.strip().replace("-", "_")] = value
    return load_spec(args.spec, overrides)


def _existing_store(spec, store_arg):
    """The sweep's store if it exists already (plan/status never create one)."""
    try:
        return open_sweep_store(spec, store_arg, readonly=True)
    except StoreNotFound:
        return None


# ---------------------------------------------------------------------- plan
def run_plan(args) -> int:
    spec = _load(args)
    store = _existing_store(spec, args.store)
    statuses: dict[str, str] = {}
    if store is not None:
        check_collisions(spec, store)
        statuses = {s.run.name: s.state for s in sweep_states(spec, store)}
    if args.throughput is not None and args.throughput <= 0:
        raise UserError(f"invalid --throughput {args.throughput}: must be > 0 images per second")
    if args.flop_rate is not None and args.flop_rate <= 0:
        raise UserError(f"invalid --flops-per-second {args.flop_rate}: must be > 0 FLOP/s")
    estimates = None
    if not args.no_cost:
        estimates = estimate_runs(spec, throughput=args.throughput, flop_rate=args.flop_rate,
                                  device_type=args.device_type,
                                  price_preset=args.price_preset, store=store, progress=not args.json)
    rows = []
    for i, run in enumerate(spec.runs):
        row = {"index": run.index, "name": run.name, "config_hash": run.config_hash, "axes": run.axes}
        row.update({f"axis:{k}": v for k, v in run.axes.items()})
        if statuses:
            row["store_status"] = statuses.get(run.name)
        if estimates is not None:
            row.update(estimates[i].to_dict())
        rows.append(row)
    total = totals(estimates) if estimates is not None else {"runs": len(rows)}
    if args.json:
        out = {"sweep": spec.name, "spec": str(spec.path), "output_dir": spec.output_dir, "runs": [],
               "totals": total, "evaluation": spec.evaluation.__dict__ if spec.evaluation else None}
        for run, row in zip(spec.runs, rows):
            rec = {k: v for k, v in row.items() if not k.startswith("axis:")}
            rec["config"] = run.cfg.to_dict()
            out["runs"].append(rec)
        print(json.dumps(out, indent=2, default=str))
        return 0
    columns = [("#", "index", "d"), ("name", "name", "s")]
    columns += [(k, f"axis:{k}", "s") for k in spec.axes]
    if statuses:
        columns.append(("store", "store_status", "s"))
    if estimates is not None:
        columns += [("GFLOPs/img", "train_flops_per_image", "gflops"), ("train PFLOPs", "train_flops", "pflops"),
                    ("eval PFLOPs", "eval_flops", "pflops"), ("img/s", "throughput", "n"),
                    ("device h", "device_hours", "n"), ("kWh", "energy_kwh", "n"),
                    ("elec $", "electricity_usd", "n"), ("cloud $ low", "cloud_usd_low", "n"),
                    ("cloud $ high", "cloud_usd_high", "n")]
    print(format_table(rows, columns))
    print(f"sweep {spec.name}: {len(rows)} runs -> {spec.output_dir}")
    if estimates is not None:
        sources = sorted({e.throughput_source for e in estimates})
        dev = sorted({e.device_type for e in estimates if e.device_type})
        parts = [f"train {format_cell(total['train_flops'], 'pflops')} PFLOPs"]
        if total["eval_flops"]:
            parts.append(f"evaluation {format_cell(total['eval_flops'], 'pflops')} PFLOPs")
        if total["device_hours"] is not None:
            n = {k: format_cell(total[k], "n") for k in ("eval_device_hours", "device_hours", "energy_kwh",
                                                          "electricity_usd", "cloud_usd_low", "cloud_usd_high")}
            evals = f" ({n['eval_device_hours']} of them evaluating)" if total["eval_flops"] else ""
            parts += [f"{n['device_hours']} device-hours ({', '.join(dev)}){evals}", f"{n['energy_kwh']} kWh",
                      f"electricity ${n['electricity_usd']}", f"cloud ${n['cloud_usd_low']}-{n['cloud_usd_high']}"]
        else:
            parts.append("time/energy/cost unknown: give --throughput IMG_PER_S or --flops-per-second FLOPS, "
                         "or finish a run of each family")
        print("total: " + ", ".join(parts) + f" (throughput: {', '.join(sources)})")
        for source in sources:
            if source.startswith("default:"):
                rate, entry, why = default_flop_rate(source.split(":", 1)[1])
                print(f"throughput {source}: {rate:.3g} FLOP/s per device from compute/throughput.yaml ({why}); "
                      f"--flops-per-second or --throughput for your own (robustscale bench prints it)")
        if spec.evaluation is not None and spec.evaluation.attack == "aa-standard":
            print("AutoAttack is priced as its upper bound (every image through every stage); a model it breaks "
                  "costs less")
    if spec.evaluation is not None:
        e = spec.evaluation
        eps = format_cell(e.eps, "eps") if e.eps is not None else "of run"
        print(f"evaluation after training: {e.attack} at eps {eps} on {e.n_examples} test images")
    return 0


# ---------------------------------------------------------------------- run
def run_run(args) -> int:
    spec = _load(args)
    opts = spec.executor
    changes = {k: getattr(args, k) for k in ("partition", "gpus_per_job", "cpus_per_task", "mem_gb", "timeout_min",
                                             "array_parallelism") if getattr(args, k) is not None}
    for key in ("gpus_per_job", "cpus_per_task", "timeout_min", "array_parallelism"):
        if key in changes and changes[key] < (1 if key != "gpus_per_job" else 0):
            raise UserError(f"invalid --{key.replace('_', '-')} {changes[key]}: must be >= "
                            f"{1 if key != 'gpus_per_job' else 0}")
    if args.sbatch:
        extra = dict(opts.sbatch)
        for item in args.sbatch:
            key, eq, value = item.partition("=")
            if not eq or not key.strip():
                raise UserError(f"invalid --sbatch {item!r}; expected KEY=VALUE (e.g. account=myproj)")
            extra[key.strip()] = value
        changes["sbatch"] = extra
    opts = replace(opts, **changes)
    log = (lambda msg: None) if args.json else (lambda msg: print(msg, flush=True))
    result = run_sweep(spec, executor=args.executor, store=args.store, max_parallel=args.max_parallel, options=opts,
                       wait=not args.no_wait, log=log, progress=not (args.no_progress or args.json))
    if args.json:
        print(json.dumps(result, indent=2))
    elif result["submitted"] or result.get("adopted"):
        done = sum(v == "done" for v in result["outcomes"].values())
        ran = result["submitted"] + result.get("adopted", 0)
        waiting = ran - len(result["outcomes"])
        stopped = f", {result['interrupted']} interrupted" if result.get("interrupted") else ""
        skipped = sum(v == "skipped" for v in result["outcomes"].values())
        stopped += f", {skipped} skipped (done or running in another sweep run)" if skipped else ""
        print(f"{done} done, {result['failed']} failed{stopped}" + (f", {waiting} submitted" if waiting else "")
              + f" of {ran} run(s); `robustscale sweep status {args.spec}` for the table")
    return 1 if result["failed"] else 0


# ---------------------------------------------------------------------- status
STATUS_COLUMNS = (("name", "name", "s"), ("status", "state", "s"), ("note", "note", "s"), ("epochs", "epochs", "s"),
                  ("train PFLOPs", "train_flops", "pflops"), ("wall s", "wall_seconds", ".0f"),
                  ("device h", "device_hours", "n"), ("kWh", "energy_kwh", "n"), ("elec $", "electricity_usd", "n"),
                  ("clean %", "clean_acc", ".2f"), ("robust %", "robust_acc", ".2f"), ("error", "error", "s"))
SPENT_KEYS = ("train_flops", "eval_flops", "wall_seconds", "device_hours", "energy_kwh", "electricity_usd",
              "cloud_usd_low", "cloud_usd_high")


def status_rows(spec, store) -> list[dict]:
    if store is None:
        return [{"name": r.name, "state": "pending", "note": "", "epochs": f"0/{r.cfg.epochs}"} for r in spec.runs]
    rows = []
    for s in sweep_states(spec, store):
        row = s.row or {}
        robust = None
        if spec.evaluation is not None and row:
            robust = row.get("aa_robust_acc") if spec.evaluation.attack.startswith("aa") else row.get("pgd_robust_acc")
        rec = {"name": s.run.name, "state": s.state, "note": s.note,
               "epochs": f"{row.get('epochs_done') or 0}/{s.run.cfg.epochs}",
               "clean_acc": row.get("clean_acc"), "robust_acc": robust,
               "error": (row.get("error") or "")[:60] if s.state in ("failed", "stale", "interrupted") else ""}
        rec.update({k: row.get(k) for k in SPENT_KEYS})
        rows.append(rec)
    return rows


def run_status(args) -> int:
    spec = _load(args)
    store = _existing_store(spec, args.store)
    rows = status_rows(spec, store)
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["state"]] = counts.get(r["state"], 0) + 1
    spent = {k: sum(r.get(k) or 0.0 for r in rows) for k in SPENT_KEYS}
    if args.json:
        print(json.dumps({"sweep": spec.name, "store": store.display_url if store else None, "counts": counts,
                          "spent": spent, "runs": rows}, indent=2, default=str))
        return 0
    print(format_table(rows, STATUS_COLUMNS))
    order = ("done", "running", "queued", "needs_eval", "interrupted", "stale", "failed", "pending")
    tally = ", ".join(f"{counts[k]} {k}" for k in order if k in counts)
    print(f"sweep {spec.name}: {len(rows)} runs: {tally}")
    print(f"spent so far: train {spent['train_flops'] / 1e15:,.4g} PFLOPs, eval {spent['eval_flops'] / 1e15:,.4g} PFLOPs, "
          f"{spent['wall_seconds'] / 3600:,.3f} wall-hours, {spent['device_hours']:,.3f} device-hours, "
          f"{spent['energy_kwh']:,.4f} kWh, electricity ${spent['electricity_usd']:,.2f}, "
          f"cloud ${spent['cloud_usd_low']:,.2f}-{spent['cloud_usd_high']:,.2f}"
          + (f" (store {store.display_url})" if store else " (no store yet)"))
    return 0
