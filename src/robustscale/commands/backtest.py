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
from .fit import check_common

PAPER_GROUPS = "method,synthetic_data,epochs"


def run(args) -> int:
    check_common(args)
    if args.split not in SPLITS:
        raise UserError(f"invalid --split {args.split!r}; valid: {', '.join(SPLITS)}")
    if args.path and not args.paper_runs:
        raise UserError("--path goes with --paper-runs")
    laws = [law.strip() for law in args.law.split(",") if law.strip()]
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
    results = backtest(df, args.split, laws=laws, group_by=group_by.split(",") if group_by else None,
                       frontier=frontier, fraction=args.fraction, cutoff=args.cutoff, bootstrap=args.bootstrap,
                       seed=args.seed, exclude_below=args.exclude_below, level=args.level, seed_sd=args.seed_sd,
                       n_jobs=args.jobs, progress=(not args.json) and sys.stderr.isatty())
    if args.json:
        print(json.dumps({"split": args.split, "results": [b.to_dict() for b in results]}, indent=2, allow_nan=False))
    else:
        print(format_backtests(results))
    return 0
