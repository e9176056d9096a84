"""The parser of ``robustscale report RUNS -o report.html`` (built for every start of the CLI: no heavy imports; see cli.py)."""
from __future__ import annotations

from .common import add_flops_per_second_argument
from .fit import add_seed_sd_argument


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "report", help="one self-contained HTML report: fits table, figures, extrapolation table",
        description="Fit the laws per group, extrapolate to --target and write one HTML file with the fits "
                    "table, the figures (embedded PNG) and the extrapolation table. Groups too small to fit are "
                    "named in the report (as `fit` lists them) and the others are fitted all the same.")
    p.add_argument("runs", metavar="RUNS", help="runs table (.csv/.parquet/results.csv) or a results store URL/path")
    p.add_argument("-o", "--output", required=True, help="the HTML file to write")
    p.add_argument("--plots-dir", default=None, metavar="DIR", help="also write every figure there as PNG and SVG")
    p.add_argument("--law", default=None, help="laws to fit, comma-separated (power, error-power, saturating, "
                   "chinchilla; default: error-power on a results store, else power,saturating)")
    p.add_argument("--x", default=None, help="compute column (default train_flops)")
    p.add_argument("--y", default=None, help="metric column (default: as `fit`: on a results store each training "
                   "method its own metric, as a study judges it; else aa_robust_acc)")
    p.add_argument("--group-by", default=None, metavar="COLS", help="e.g. at,synthetic_data")
    p.add_argument("--exclude-below", type=float, default=None, metavar="Y",
                   help="drop runs with y below Y (default 10 for robust accuracies: collapsed runs)")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples (0: none)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--level", type=float, default=0.95, help="interval level")
    p.add_argument("--frontier", action="store_true", help="fit only the Pareto frontier of each group")
    p.set_defaults(law_default="power")
    p.add_argument("--target", type=float, default=75.0, help="target y for the extrapolation")
    p.add_argument("--throughput", type=float, default=None, metavar="IMG_PER_S",
                   help="images/s per device for FLOPs -> device-hours (default: the runs' own ratio)")
    add_flops_per_second_argument(p, "the median device_hours / train_flops of the group's own runs")
    p.add_argument("--device-type", default=None, help="price-table device type (default: the runs' device, else gpu)")
    p.add_argument("--price-preset", default="default", help="default or paper-2024")
    p.add_argument("--prices", default=None, metavar="YAML", help="your own price table")
    p.add_argument("--map", action="append", default=[], metavar="OLD=NEW", help="rename a column of RUNS")
    p.add_argument("--jobs", type=int, default=None, help="bootstrap worker processes (default: the idle cores)")
    p.add_argument("--title", default="Robust accuracy vs compute", help="report title")
    add_seed_sd_argument(p)
    p.set_defaults(handler="run")
