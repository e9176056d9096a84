"""``robustscale leaderboard``: training compute on every RobustBench CIFAR-10 l-inf entry, and the field's law."""
from __future__ import annotations

import argparse
import json
import math
import os

import numpy as np

from ..cost import CostModel
from ..errors import UserError
from ..leaderboard import (DEFAULT_FLOPS_PER_SECOND, add_store_runs, build_ledger, download_model_info,
                           export_model_info, export_table, field_extrapolations, fit_field, read_model_info_dir,
                           write_leaderboard_report)
from ..leaderboard.report import extrapolation_line, inference_only, law_summary, ledger_table
from ..scaling import load_paper_runs, load_runs
from ..scaling.format import fmt, render_table


def _check_outputs(args) -> None:
    """Refuse bad output paths before any work, so a mistake writes nothing."""
    if args.export:
        if not args.export.lower().endswith((".csv", ".parquet", ".pq")):
            raise UserError(f"invalid --export {args.export!r}: the table is written as .csv or .parquet")
        folder = os.path.dirname(os.path.abspath(args.export))
        if not os.path.isdir(folder):
            raise UserError(f"folder {folder} does not exist (for --export)")
    for flag, path in (("--report", args.report), ("--export-model-info", args.export_model_info)):
        if path is None:
            continue
        if os.path.exists(path) and not os.path.isdir(path):
            raise UserError(f"{flag} {path} exists and is not a folder")
        parent = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(parent):
            raise UserError(f"folder {parent} does not exist (for {flag} {path})")
    if args.bootstrap < 0:
        raise UserError(f"invalid --bootstrap {args.bootstrap}: must be >= 0")
    if args.flops_per_second is not None and not (args.flops_per_second > 0 and math.isfinite(args.flops_per_second)):
        raise UserError(f"invalid --flops-per-second {args.flops_per_second!r}: must be a positive number")


def _counts(ledger) -> dict[str, int]:
    field = ledger[ledger["source"] == "robustbench"]
    status = field["recipe_status"].value_counts().to_dict()
    return {"entries": len(field), "sourced": int(status.get("sourced", 0)),
            "verified": int(field["recipe_verified"].fillna(False).astype(bool).sum()),
            "range": int(status.get("range", 0)), "excluded": int(status.get("excluded", 0)),
            "no recipe": int(status.get("no recipe", 0)), "ours": int((ledger["source"] == "ours").sum())}


def run(args: argparse.Namespace) -> int:
    _check_outputs(args)
    if not args.model_info and not args.download:
        raise UserError("give --model-info DIR (RobustBench model_info/cifar10/Linf files) or --download")
    fps = args.flops_per_second or DEFAULT_FLOPS_PER_SECOND
    CostModel.from_yaml().price(args.device_type)  # UserError listing the device types
    infos = read_model_info_dir(download_model_info() if args.download else args.model_info)
    paper = (load_paper_runs(args.path) if args.path else load_paper_runs()) if args.paper_runs else None
    runs = load_runs(args.runs) if args.runs else None

    ledger = build_ledger(infos, flops_per_second=fps, progress=not args.json)
    if runs is not None:
        ledger = add_store_runs(ledger, runs, flops_per_second=fps)
    fits = fit_field(ledger, bootstrap=args.bootstrap, seed=args.seed, n_jobs=args.jobs)
    extrapolations = field_extrapolations(fits, ledger, flops_per_second=fps, device_type=args.device_type)
    counts = _counts(ledger)

    written = []
    if args.report:
        written.append(str(write_leaderboard_report(args.report, ledger, fits, extrapolations, fps, paper, counts)))
    if args.export:
        written.append(str(export_table(ledger, args.export)))
    if args.export_model_info:
        written.append(str(export_model_info(ledger, infos, args.export_model_info)))

    if args.json:
        print(json.dumps(_as_json(ledger, fits, extrapolations, counts, fps, written), indent=2, default=str))
        return 0
    headers, rows = ledger_table(ledger, fps)
    print(render_table(headers, rows, right=[True, False, True, False, True, True, True, True, True, True, True, False, False]))
    print(f"\n{counts['entries']} entries: {counts['sourced']} with sourced recipes ({counts['verified']} read in "
          f"their sources while curating), {counts['range']} with compute ranges, {counts['excluded']} excluded, "
          f"{counts['no recipe']} without a recipe" + (f"; {counts['ours']} of our runs" if counts["ours"] else ""))
    print(f"GPU-hours at an achieved {fmt(fps)} FLOP/s per GPU.")
    print("\nThe field's law on its compute frontier (AutoAttack >= 10 %):")
    for law, fit in fits.items():
        print(f"  {law}: {law_summary(fit)}")
        for ex in extrapolations.get(law, []):
            print(f"    {extrapolation_line(ex)}")
    for path in written:
        print(f"wrote {path}")
    return 0


def _as_json(ledger, fits, extrapolations, counts, fps, written) -> dict:
    records = ledger.replace({np.nan: None}).to_dict("records")
    inference = inference_only()
    for r in records:  # an inference-time operator on another entry: its training compute is the base's
        r["inference_only_on"] = inference.get(r["name"])
    return {"counts": counts, "flops_per_second": fps, "entries": records,
            "fits": {law: ({"identified": False, "message": fit} if isinstance(fit, str) else
                           {"identified": fit.to_dict()["status"] == "ok", **fit.to_dict()}) for law, fit in fits.items()},
            "extrapolations": {law: [e.to_dict() for e in exs] for law, exs in extrapolations.items()},
            "written": written}
