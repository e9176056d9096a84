"""The parser of ``robustscale backtest`` (built for every start of the CLI: no heavy imports; see cli.py)."""
from __future__ import annotations

from .common import add_paper_runs_argument


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "backtest", help="do the laws predict runs they did not see? errors, interval coverage and reach",
        description="Split the runs (by compute: fit the cheapest --fraction; by model size: hold out the largest "
                    "model; by year: fit up to --cutoff), fit each law on the fitted part with a bootstrap, and "
                    "predict every held-out run with a 95% prediction interval (bootstrap law + each run's binomial "
                    "noise + the seed SD). Prints per law the prediction errors, the share of held-out runs covered "
                    "(with its binomial interval) and the compute reach over which coverage held. A law the "
                    "fitted part does not identify predicts nothing (its reason is printed). See docs/backtests.md.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--runs", metavar="SOURCE", help="runs table: .csv/.parquet or a results store (sqlite:///...)")
    add_paper_runs_argument(p, "back-test", group=src)
    src.add_argument("--model-info", metavar="DIR",
                     help="RobustBench model_info folder: back-test the field's compute-frontier law")
    p.add_argument("--split", default="compute", help="compute (default), model-size or year")
    p.add_argument("--fraction", type=float, default=2 / 3, metavar="F",
                   help="--split compute: share of the runs, cheapest first, to fit (default 2/3)")
    p.add_argument("--cutoff", type=float, default=None, metavar="YEAR",
                   help="--split year: fit entries up to this year (default: the median year)")
    p.add_argument("--y", default=None,
                   help="accuracy column (default: as `fit`: on a results store each training method its own metric, "
                        "as a study judges it; else aa_robust_acc)")
    p.add_argument("--law", default=None,
                   help="laws, comma list (default: error-power,power,saturating on a results store, as a study "
                        "fits them; else power,saturating)")
    p.add_argument("--group-by", default=None, metavar="COLS",
                   help="one back-test per group (paper runs default: method,synthetic_data,epochs)")
    p.add_argument("--frontier", action="store_true", help="fit the Pareto frontier only (--model-info: always)")
    p.add_argument("--exclude-below", type=float, default=None, metavar="Y",
                   help="drop runs whose robust accuracy is below Y (default 10: collapsed runs; none for clean "
                        "accuracy)")
    p.add_argument("--bootstrap", type=int, default=1000, metavar="B", help="bootstrap resamples (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    p.add_argument("--seed-sd", type=float, default=None, metavar="PTS",
                   help="seed-to-seed SD of one run's accuracy (default: measured from replicates, else 1 point)")
    p.add_argument("--level", type=float, default=0.95, help="prediction interval level (default 0.95)")
    p.add_argument("--jobs", type=int, default=None, help="bootstrap worker processes (default: the idle cores)")
    p.add_argument("--map", action="append", default=[], metavar="OLD=NEW", help="rename columns of the runs table")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON instead of tables")
    p.set_defaults(handler="run")
