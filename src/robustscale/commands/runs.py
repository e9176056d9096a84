"""``robustscale runs``: list, show, export and import runs of the results store; sync it from run folders.

Reading actions (list, show, export) open the store read-only. The run folders are the source of
truth: ``runs sync RUN_DIR...`` (or ``runs import --from-dirs DIR``) rebuilds their rows, and
``runs sync`` alone reconciles every stale row (its process is gone) from its folder.
"""
from __future__ import annotations

import datetime as dt
import json
import os

from ..errors import UserError, one_of, writing
from ..intervals import accuracy_intervals
from ..schema import N_EXAMPLES_ALIASES, RUN_COLUMNS
from ..store import open_store, store_url_for
from ..store.records import attack_steps_of
from ..store.sync import read_run_folder, reconcile_stale, run_dirs_under, sync_run_dir
from ..store.tables import status_choices
from .parsers.runs import EXPORT_FORMATS, PAPER_SOURCE


_SUFFIXES = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet", ".json": "json"}


# ---------------------------------------------------------------------- actions
def _open(args, create: bool = False, readonly: bool = False):
    return open_store(args.store, output_dir=args.output_dir, create=create, readonly=readonly)


def _status_filter(status: str) -> str | None:
    """``--status`` checked against the statuses a run can have (None for ``all``)."""
    return None if status == "all" else one_of(status, status_choices() + ["all"], "--status")


LIST_COLUMNS = (  # (header, key, format)
    ("name", "name", "s"), ("status", "effective_status", "s"), ("source", "source", "s"), ("model", "model", "s"),
    ("method", "method", "s"), ("k", "attack_steps", "d"), ("epochs", "epochs", "d"), ("gen", "synthetic_data", "b"),
    ("train PFLOPs", "train_flops", "pflops"), ("device h", "device_hours", "n"), ("kWh", "energy_kwh", "n"),
    ("clean % (n)", "clean_text", "s"), ("PGD % (n)", "pgd_text", "s"), ("APGD-CE % (n)", "apgd_ce_text", "s"),
    ("AA % (n)", "aa_text", "s"),
)
# Each headline accuracy of `runs list` with the test images it was measured on (its n).
HEADLINE_CELLS = (("clean_text", "clean_acc"), ("pgd_text", "pgd_robust_acc"), ("apgd_ce_text", "apgd_ce_robust_acc"),
                  ("aa_text", "aa_robust_acc"))


def run_list(args) -> int:
    store = _open(args, readonly=True)
    rows = store.list_runs(args.where)
    if args.json:
        keys = ("name", "effective_status", "status", "source", "sweep", "config_hash", "run_dir", "host",
                "started_at", "finished_at", "heartbeat_at", "epochs_done", "error")
        out = [{**{k: r.get(k) for k in RUN_COLUMNS}, **{k: r.get(k) for k in keys}} for r in rows]
        for rec, r in zip(out, rows):
            rec["status"] = r["effective_status"]
            rec["stored_status"] = r["status"]
            del rec["effective_status"]
        print(json.dumps(out, indent=2, default=_json_default))
        return 0
    print(format_table([_list_row(r) for r in rows], LIST_COLUMNS))
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["effective_status"]] = counts.get(r["effective_status"], 0) + 1
    tally = ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
    print(f"{len(rows)} runs{' (' + tally + ')' if tally else ''} in {store.display_url}")
    return 0


def run_show(args) -> int:
    store = _open(args, readonly=True)
    row = store.get_run(args.name)
    if row is None:
        close = [r["name"] for r in store.list_runs() if args.name.lower() in r["name"].lower()][:5]
        hint = f"; similar: {', '.join(close)}" if close else ""
        raise UserError(f"no run named {args.name!r} in {store.display_url}{hint}")
    row["evaluations"] = [_with_intervals(e) for e in row.get("evaluations") or []]
    if args.json:
        print(json.dumps(row, indent=2, default=_json_default))
        return 0
    skip = {"id", "config", "summary", "extra", "epoch_metrics", "evaluations", "status"}
    print(f"run {row['name']}")
    for key, value in row.items():
        if key in skip or value is None or key == "name":
            continue
        label = "status" if key == "effective_status" else key
        print(f"  {label:<22} {_fmt_value(value)}")
    if row.get("config"):
        cfg = row["config"]
        print("config:")
        print("  " + ", ".join(f"{k}={cfg[k]}" for k in cfg if cfg[k] is not None))
    if row["epoch_metrics"]:
        epoch_rows = [{**(e.get("metrics") or {}), **{k: v for k, v in e.items() if v is not None}}
                      for e in row["epoch_metrics"]]
        keys = [k for k in ("train_loss", "train_adv_acc", "train_clean_acc", "clean_acc", "pgd_robust_acc",
                            "fgsm_robust_acc", "lr", "images_per_second", "wall_seconds", "ledger_wall_seconds")
                if any(e.get(k) is not None for e in epoch_rows)]
        print("epochs:")
        print(format_table(epoch_rows, [("epoch", "epoch", "d")] + [(k, k, ".4g") for k in keys], indent=2))
    sessions = (row.get("summary") or {}).get("compute_sessions") or []
    if sessions:  # the compute ledger: what each training session (start, resumes) spent
        print("sessions:")
        print(format_table([{**s, "epochs": "-".join(map(str, s["epochs"])) if s.get("epochs") else None}
                            for s in sessions], (
            ("session", "session", "d"), ("epochs", "epochs", "s"), ("wall s", "wall_seconds", ".1f"),
            ("device h", "device_hours", "n"), ("kWh", "energy_kwh", "n"), ("kg CO2e", "emissions_kg", "n")),
            indent=2))
    if row["evaluations"]:
        print("evaluations:")
        shown = [{**e, "clean_text": _acc_text(e, "clean_acc"), "robust_text": _acc_text(e, "robust_acc")}
                 for e in row["evaluations"]]
        print(format_table(shown, (
            ("attack", "attack", "s"), ("eps", "eps", "eps"), ("n", "n_examples", "d"),
            ("clean % [95% CI]", "clean_text", "s"), ("robust % [95% CI]", "robust_text", "s"),
            ("eval GFLOPs", "eval_flops", "gflops"), ("s", "wall_seconds", ".1f")),
            indent=2))
    return 0


def _with_intervals(e: dict) -> dict:
    """An evaluation row with the Wilson 95% interval of each accuracy on its ``n_examples`` images."""
    return {**e, **accuracy_intervals(e, e.get("n_examples"))}


def _acc_text(e: dict, key: str) -> str | None:
    ci = e.get(f"{key}_ci")
    return None if ci is None else f"{e[key]:.1f} [{ci[0]:.1f}, {ci[1]:.1f}]"


def _list_row(row: dict) -> dict:
    """A row as `runs list` shows it: k is the steps the method takes (none for standard training); each
    accuracy as ``86.0 (1,000)``, with its n (``?`` where the record does not say)."""
    cells = {}
    for cell, metric in HEADLINE_CELLS:
        acc, n = row.get(metric), row.get(N_EXAMPLES_ALIASES.get(metric, f"{metric}_n_examples"))
        cells[cell] = None if acc is None else f"{acc:.1f} ({'?' if n is None else f'{int(n):,}'})"
    return {**row, **cells, "attack_steps": attack_steps_of(row.get("method"), row.get("attack_steps"))}


def export_format(output: str, fmt: str | None) -> str:
    """The export format: ``--format``, else the suffix; UserError for a suffix we cannot write."""
    if fmt is not None:
        return fmt
    suffix = os.path.splitext(output)[1].lower()
    if not suffix:
        return "csv"
    if suffix not in _SUFFIXES:
        raise UserError(f"cannot export runs as {suffix!r} ({output}); valid suffixes: "
                        f"{', '.join(_SUFFIXES)} (or pass --format {'|'.join(EXPORT_FORMATS)})")
    return _SUFFIXES[suffix]


def run_export(args) -> int:
    from ..rundir import atomic_write  # rundir imports torch: only `runs export` pays for it (LAZY_IMPORTS)

    fmt = export_format(args.output, args.format)
    status = _status_filter(args.status)
    out = os.path.abspath(args.output)
    folder = os.path.dirname(out)
    if not os.path.isdir(folder):
        raise UserError(f"output folder {folder} does not exist")
    store = _open(args, readonly=True)
    frame = store.runs_frame(status=status, where=args.where)
    writers = {"csv": lambda tmp: frame.to_csv(tmp, index=False),
               "parquet": lambda tmp: frame.to_parquet(tmp, index=False),
               "json": lambda tmp: frame.to_json(tmp, orient="records", indent=2)}
    with writing(out, "-o", "choose a writable path"):
        atomic_write(out, writers[fmt])
    if args.json:
        print(json.dumps({"path": out, "format": fmt, "runs": len(frame), "columns": list(frame.columns)}))
    else:
        print(f"wrote {len(frame)} runs to {out} ({fmt}, {len(frame.columns)} columns)")
    return 0


def run_sync(args) -> int:
    if not args.run_dirs:
        store = _open(args, create=False)
        try:
            return _print_sync(args, reconcile_stale(store), f"no stale runs in {store.display_url}")
        finally:
            store.close()
    return _print_sync(args, _sync_dirs(args.run_dirs, args.store), "")


def run_import_dirs(args) -> int:
    dirs = [d for root in args.from_dirs for d in run_dirs_under(root)]
    if not dirs:
        raise UserError(f"no run folders (with a config.yaml) in {', '.join(args.from_dirs)}")
    return _print_sync(args, _sync_dirs(dirs, args.store), "")


def _sync_dirs(run_dirs, store_arg) -> list:
    """Sync each folder into ``store_arg``, else into the store its own config points at."""
    stores: dict[str, object] = {}
    results = []
    try:
        for run_dir in run_dirs:
            url = store_url_for(read_run_folder(run_dir).cfg, store_arg)
            if url is None:
                raise UserError(f"the results store of {run_dir} is disabled (store: none); pass --store URL")
            if url not in stores:
                stores[url] = open_store(url)
            results.append(sync_run_dir(stores[url], run_dir))
    finally:
        for store in stores.values():
            store.close()
    return results


def _print_sync(args, results, empty: str) -> int:
    if args.json:
        print(json.dumps([r.__dict__ for r in results], indent=2))
    elif not results and empty:
        print(empty)
    for r in [] if args.json else results:
        print(r.line())
    return 0


def run_import_paper(args) -> int:
    from ..scaling import load_paper_runs  # pandas and scipy: only `runs import --paper` pays (LAZY_IMPORTS)

    source = args.path or args.url
    if args.path and not os.path.isfile(args.path):
        raise UserError(f"paper results file not found: {args.path}")
    frame = load_paper_runs(source) if source is not None else load_paper_runs()
    store = _open(args, create=True)
    counts = store.import_frame(frame, PAPER_SOURCE)
    total = sum(counts.values())
    if args.json:
        print(json.dumps({"store": store.display_url, "source": PAPER_SOURCE, "runs": total, **counts}))
    else:
        print(f"{total} runs of {PAPER_SOURCE} in {store.display_url}: {counts['inserted']} new, "
              f"{counts['updated']} updated, {counts['unchanged']} unchanged")
    return 0


# ---------------------------------------------------------------------- formatting
def format_table(rows, columns, indent: int = 0) -> str:
    """Aligned text table; ``columns`` is a sequence of (header, key, format)."""
    cells = [[format_cell(r.get(key), fmt) for _, key, fmt in columns] for r in rows]
    headers = [h for h, _, _ in columns]
    widths = [max([len(h)] + [len(c[i]) for c in cells]) for i, h in enumerate(headers)]
    numeric = [fmt not in ("s",) for _, _, fmt in columns]

    def line(vals):
        return " " * indent + "  ".join(v.rjust(w) if num else v.ljust(w)
                                        for v, w, num in zip(vals, widths, numeric)).rstrip()

    return "\n".join([line(headers)] + [line(c) for c in cells])


def format_cell(value, fmt: str) -> str:
    if value is None:
        return "-"
    if fmt == "s":
        return str(value)
    if fmt == "b":
        return "yes" if value else "no"
    if fmt == "d":
        return str(int(value))
    if fmt == "n":  # a quantity of any size: 3 significant digits below 100, whole numbers above
        return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"
    if fmt == "pflops":
        return f"{value / 1e15:,.3g}"
    if fmt == "gflops":
        return f"{value / 1e9:,.4g}"
    if fmt == "eps":
        k = round(value * 255)
        return f"{k}/255" if k and abs(value * 255 - k) < 1e-6 else f"{value:.4g}"
    try:
        return format(value, fmt)
    except (TypeError, ValueError):
        return str(value)


def _fmt_value(value) -> str:
    if isinstance(value, dt.datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S UTC")
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _json_default(value):
    if isinstance(value, dt.datetime):
        return value.isoformat() + "Z"
    return str(value)
