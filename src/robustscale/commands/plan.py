"""``robustscale plan``: for a compute budget, the model size, training length and attack steps that
maximise robust accuracy under the joint law of a table of runs, with intervals and concrete recipes."""
from __future__ import annotations

import json
import sys


def run(args) -> int:
    from ..errors import UserError
    from ..plan import make_plan, parse_budgets
    from ..scaling import load_paper_runs, load_runs, parse_mapping
    from ..scaling.published_runs import PAPER_URL
    from .fit import check_common

    budgets = parse_budgets(args.budget_flops, args.budget_gpu_hours, args.budget_usd)
    check_common(args)
    if args.path and not args.paper_runs:
        raise UserError("--path goes with --paper-runs; for another table use --runs SOURCE")
    if args.paper_runs:
        source = args.path or PAPER_URL
        df = load_paper_runs(source)
    else:
        source = args.runs
        df = load_runs(args.runs, parse_mapping(args.map))
    plan = make_plan(df, budgets, y=args.y, group_by=args.group_by,
                     levels=[c for c in args.levels.split(",") if c.strip()], convention=args.flops_convention,
                     models=[m.strip() for m in args.models.split(",") if m.strip()] if args.models else None,
                     top=args.top, bootstrap=args.bootstrap, seed=args.seed, level=args.level, n_jobs=args.jobs,
                     exclude_below=args.exclude_below, max_extrapolation=args.max_extrapolation,
                     conditional=args.conditional,
                     flops_per_second=args.flops_per_second, device_type=args.device_type,
                     price_preset=args.price_preset, prices=args.prices, rental=args.rental,
                     epoch_images=args.epoch_images, progress=(not args.json) and sys.stderr.isatty(),
                     source=str(source))
    for line in plan.get("warnings", []):  # e.g. the runs' FLOPs per parameter disagree with the zoo's
        print(line, file=sys.stderr)
    if args.json:
        print(json.dumps(plan, indent=2, allow_nan=False))
    else:
        from ..plan.render import render_plan

        print(render_plan(plan))
    return 0
