"""``robustscale plan``: for a compute budget, the model size, training length and attack steps that
maximise robust accuracy under the joint law of a table of runs, with intervals and concrete recipes."""
from __future__ import annotations

import json
import sys


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "plan", help="for a budget: model size, epochs and attack steps that maximise robust accuracy",
        description="Fit the joint law 100 - AA = E + A N^-alpha + B D^-beta + G k^-gamma (N parameters, D "
                    "samples seen, k attack steps) per group of runs (method, generated data) with Huber on log "
                    "error and L-BFGS-B from a grid of starts, bootstrap every parameter, and for each budget print "
                    "the compute-optimal N*, D*, k* with 95%% intervals and the best concrete recipes from the zoo "
                    "(model, epochs, attack steps) with predicted accuracy, FLOPs, device-hours and cost. Inputs "
                    "with fewer than 3 distinct values, or whose exponent hits a bound, enter as levels and their "
                    "exponent is reported as not identified. Approach 1 (frontier slopes) is shown as a cross-check.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--runs", metavar="SOURCE", help="runs table: .csv/.parquet or a results store (sqlite:///...)")
    src.add_argument("--paper-runs", action="store_true", help="the 2024 study's published runs (results.csv)")
    p.add_argument("--path", default=None, metavar="P",
                   help="with --paper-runs: a local results.csv (default: download the public file)")
    p.add_argument("--budget-flops", action="append", default=[], metavar="X",
                   help="training budget in FLOPs (repeatable or comma list, e.g. 1e19,1e20)")
    p.add_argument("--budget-gpu-hours", action="append", default=[], metavar="H",
                   help="budget in device-hours (via the runs' device-hours per FLOP or --flops-per-second)")
    p.add_argument("--budget-usd", action="append", default=[], metavar="U",
                   help="budget in dollars of cloud rental (--rental price of --device-type)")
    p.add_argument("--y", default="aa_robust_acc", help="accuracy column (default aa_robust_acc [%%])")
    p.add_argument("--group-by", default=None, metavar="COLS",
                   help="one law per group (default: method,synthetic_data where they vary; 'none': one law)")
    p.add_argument("--levels", default="", metavar="COLS",
                   help="inputs to enter as levels instead of a power law (model_parameters, train_images_seen, "
                        "attack_steps)")
    p.add_argument("--flops-convention", default="measured", choices=("measured", "paper-2024"),
                   help="measured steps (robustscale flops; default) or the 2024 study's 3F(K+2) / 3F(K+3)")
    p.add_argument("--models", default=None, metavar="NAMES",
                   help="zoo models for recipes, comma list (default: our models of the runs' families)")
    p.add_argument("--top", type=int, default=5, help="recipes shown per budget (default 5)")
    p.add_argument("--bootstrap", type=int, default=1000, metavar="B", help="bootstrap resamples (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    p.add_argument("--level", type=float, default=0.95, help="interval level (default 0.95)")
    p.add_argument("--jobs", type=int, default=None, help="bootstrap worker processes (default: the idle cores)")
    p.add_argument("--exclude-below", type=float, default=10.0, metavar="Y",
                   help="drop runs with y below Y (default 10: collapsed runs); counted in the output")
    p.add_argument("--max-extrapolation", type=float, default=100.0, metavar="X",
                   help="refuse budgets (and skip recipes) more than X times outside the runs' range (default 100)")
    p.add_argument("--epoch-images", type=int, default=None, metavar="N",
                   help="images per epoch (default: the runs' train_images_seen / epochs)")
    p.add_argument("--flops-per-second", type=float, default=None, metavar="FLOPS",
                   help="achieved FLOP/s per device for device-hours (default: the runs' median)")
    p.add_argument("--device-type", default=None, help="device type of the price table (default: the runs', else gpu)")
    p.add_argument("--price-preset", default="default", help="price preset: default or paper-2024")
    p.add_argument("--prices", default=None, metavar="YAML", help="your own price table merged over prices.yaml")
    p.add_argument("--rental", default="low", choices=("low", "high"), help="rental price for --budget-usd")
    p.add_argument("--map", action="append", default=[], metavar="OLD=NEW", help="rename columns of the runs table")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON instead of tables")
    p.set_defaults(func=run)


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

