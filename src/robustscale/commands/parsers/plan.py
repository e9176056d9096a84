"""The parser of ``robustscale plan`` (built for every start of the CLI: no heavy imports; see cli.py)."""
from __future__ import annotations

from .common import add_flops_per_second_argument, add_paper_runs_argument


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "plan", help="for a budget: model size, epochs and attack steps that maximise robust accuracy",
        description="Fit the joint law 100 - AA = E + A N^-alpha + B D^-beta + G k^-gamma (N parameters, D "
                    "samples seen, k attack steps) per group of runs (method, generated data) with Huber on log "
                    "error and L-BFGS-B from a grid of starts, bootstrap every parameter, and for each budget print "
                    "the compute-optimal N*, D*, k* with 95% intervals and the best concrete recipes from the zoo "
                    "(model, epochs, attack steps) with predicted accuracy, FLOPs, device-hours and cost. Inputs "
                    "with fewer than 3 distinct values, or whose exponent hits a bound, enter as levels and their "
                    "exponent is reported as not identified. Approach 1 (frontier slopes) is shown as a cross-check.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--runs", metavar="SOURCE", help="runs table: .csv/.parquet or a results store (sqlite:///...)")
    add_paper_runs_argument(p, "plan from", group=src)
    p.add_argument("--budget-flops", action="append", default=[], metavar="X",
                   help="training budget in FLOPs (repeatable or comma list, e.g. 1e19,1e20)")
    p.add_argument("--budget-gpu-hours", action="append", default=[], metavar="H",
                   help="budget in device-hours (via the runs' device-hours per FLOP or --flops-per-second)")
    p.add_argument("--budget-usd", action="append", default=[], metavar="U",
                   help="budget in dollars of cloud rental (--rental price of --device-type)")
    p.add_argument("--y", default=None,
                   help="accuracy column (default on a results store: each training method on its own metric, "
                        "planned as the study's 'what to run next'; else aa_robust_acc [%%])")
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
    p.add_argument("--bootstrap", type=int, default=None, metavar="B",
                   help="bootstrap resamples (default 500 on a results store, as a study; else 1000)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    p.add_argument("--level", type=float, default=0.95, help="interval level (default 0.95)")
    p.add_argument("--jobs", type=int, default=None, help="bootstrap worker processes (default: the idle cores)")
    p.add_argument("--exclude-below", type=float, default=None, metavar="Y",
                   help="drop runs with y below Y (default 10 for a robust accuracy: collapsed runs); counted in "
                        "the output")
    p.add_argument("--max-extrapolation", type=float, default=10.0, metavar="X",
                   help="refuse budgets, optima and recipes more than X times outside the runs' range (default and "
                        "maximum: the rulebook's refusal limit, 10; see docs/backtests.md)")
    p.add_argument("--conditional", action="store_true",
                   help="where the optimum is not identified because model size or samples seen sits on observed "
                        "levels, also print the best split with it held there, labelled as a conditional plan")
    p.add_argument("--epoch-images", type=int, default=None, metavar="N",
                   help="images per epoch (default: the runs' train_images_seen / epochs)")
    add_flops_per_second_argument(p, "the runs' median")
    p.add_argument("--device-type", default=None, help="device type of the price table (default: the runs', else gpu)")
    p.add_argument("--price-preset", default="default", help="price preset: default or paper-2024")
    p.add_argument("--prices", default=None, metavar="YAML", help="your own price table merged over prices.yaml")
    p.add_argument("--rental", default="low", choices=("low", "high"), help="rental price for --budget-usd")
    p.add_argument("--map", action="append", default=[], metavar="OLD=NEW", help="rename columns of the runs table")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON instead of tables")
    p.set_defaults(handler="run")
