"""``robustscale backtest``: fit each law on the cheaper runs, predict the held-out expensive ones, and report the
prediction errors, the coverage of the 95 % prediction intervals and the reach over which it held."""
from __future__ import annotations

import json
import sys

from ..errors import UserError
from ..leaderboard.ledger import build_ledger
from ..leaderboard.model_info import read_model_info_dir
from ..leaderboard.report import field_points
from ..scaling import load_paper_runs, load_runs, parse_mapping
from ..scaling.backtest import SPLITS, backtest, format_backtests
from ..scaling.published_runs import PAPER_URL
from ..scaling.io import is_store_source
from .fit import DEFAULT_Y, check_common, exclude_threshold, family_metrics

PAPER_GROUPS = "method,synthetic_data,epochs"


def run(args) -> int:
    check_common(args)
    if args.split not in SPLITS:
        raise UserError(f"invalid --split {args.split!r}; valid: {', '.join(SPLITS)}")
    if args.path and not args.paper_runs:
        raise UserError("--path goes with --paper-runs")
    on_store = bool(args.runs) and is_store_source(str(args.runs))
    law_list = args.law or ("error-power,power,saturating" if on_store else "power,saturating")
    laws = [law.strip() for law in law_list.split(",") if law.strip()]
    frontier, group_by = args.frontier, args.group_by
    if args.paper_runs:
        df = load_paper_runs(args.path or PAPER_URL)
        group_by = group_by or PAPER_GROUPS
    elif args.model_info:
        df = field_points(build_ledger(read_model_info_dir(args.model_info), progress=not args.json))
        frontier = True
    else:
        df = load_runs(args.runs, parse_mapping(args.map))
    if group_by and str(group_by).lower() == "none":
        group_by = None
    common = dict(frontier=frontier, fraction=args.fraction, cutoff=args.cutoff, bootstrap=args.bootstrap,
                  seed=args.seed, level=args.level, seed_sd=args.seed_sd, n_jobs=args.jobs,
                  progress=(not args.json) and sys.stderr.isatty())
    groups = group_by.split(",") if group_by else None
    # As `fit`: on a results store without --y, each training method on its own metric.
    families = family_metrics(df) if on_store and args.y is None and "method" in df.columns else {}
    if len(families) > 1:
        parts = [(f"method={method} ({y}), ", df[df["method"] == method], y, groups or ["method"])
                 for method, y in families.items()]
    else:
        y = args.y or next(iter(families.values()), DEFAULT_Y)
        parts = [("", df, y, groups)]
    results, skipped = [], []  # (metric, result); (family and law, why) where the split leaves too few runs
    for what, part, y, part_groups in parts:
        for law in laws:
            try:
                results += [(y, b) for b in backtest(part, args.split, laws=[law], group_by=part_groups, y=y,
                                                     exclude_below=exclude_threshold(args, y), **common)]
            except UserError as exc:  # said, and the other families and laws go on (as `fit` does)
                skipped.append((f"{what}{law}", str(exc)))
    if not results:
        raise UserError("nothing could be back-tested: " + "; ".join(f"{g}: {why}" for g, why in skipped))
    if args.json:
        print(json.dumps({"split": args.split, "results": [{**b.to_dict(), "y": y} for y, b in results],
                          "not_backtested": [{"group": g, "reason": why} for g, why in skipped]},
                         indent=2, allow_nan=False))
        return 0
    print(format_backtests([b for _, b in results]))
    metrics = dict.fromkeys(f"{b.label}: {y}" for y, b in results)
    if len(families) > 1:
        print("metric per family: " + "; ".join(metrics))
    for group, why in skipped:
        print(f"not back-tested: {group}: {why}")
    return 0
