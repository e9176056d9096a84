"""``robustscale report RUNS -o report.html``: fits, figures and extrapolation in one self-contained HTML file."""
from __future__ import annotations

import os

from .fit import LAW_CHOICES, add_seed_sd_argument, check_common, exclude_threshold


def run(args) -> int:
    from ..errors import UserError, check_writable_dir
    from ..report import write_report
    from ..scaling import load_runs, parse_mapping

    check_common(args)
    laws = [s.strip() for s in args.law.split(",") if s.strip()]
    for law in laws:
        if law not in LAW_CHOICES:
            raise UserError(f"unknown law {law!r}; valid: {', '.join(LAW_CHOICES)}")
    if not args.output.lower().endswith((".html", ".htm")):
        raise UserError(f"invalid -o {args.output!r}: the report is one HTML file, e.g. report.html")
    if args.prices is not None:  # the price table is read after the fits: check it before them
        from ..compute import CostModel

        CostModel.from_yaml(args.prices, preset=args.price_preset)
    df = load_runs(args.runs, parse_mapping(args.map))
    # Before the fits and bootstraps: a report nobody can write is wasted work.
    check_writable_dir(os.path.dirname(os.path.abspath(args.output)), "-o folder", "choose a writable -o path")
    if args.plots_dir:
        check_writable_dir(args.plots_dir, "--plots-dir", "choose a writable --plots-dir")
    path = write_report(df, args.output, laws=laws, x=args.x, y=args.y, group_by=args.group_by,
                        exclude_below=exclude_threshold(args), bootstrap=args.bootstrap, seed=args.seed,
                        level=args.level, frontier=args.frontier, target=args.target, device_type=args.device_type,
                        price_preset=args.price_preset, prices_path=args.prices,
                        flops_per_second=args.flops_per_second, throughput=args.throughput, title=args.title,
                        plots_dir=args.plots_dir, source=str(args.runs), n_jobs=args.jobs, seed_sd=args.seed_sd)
    print(f"wrote {path}" + (f" (figures also in {args.plots_dir} as PNG and SVG)" if args.plots_dir else ""))
    return 0


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "report", help="one self-contained HTML report: fits table, figures, extrapolation table",
        description="Fit the laws per group, extrapolate to --target and write one HTML file with the fits "
                    "table, the figures (embedded PNG) and the extrapolation table.")
    p.add_argument("runs", metavar="RUNS", help="runs table (.csv/.parquet/results.csv) or a results store URL/path")
    p.add_argument("-o", "--output", required=True, help="the HTML file to write")
    p.add_argument("--plots-dir", default=None, metavar="DIR", help="also write every figure there as PNG and SVG")
    p.add_argument("--law", default="power,saturating", help="laws to fit, comma-separated (power,saturating,chinchilla)")
    p.add_argument("--x", default=None, help="compute column (default train_flops)")
    p.add_argument("--y", default="aa_robust_acc", help="metric column")
    p.add_argument("--group-by", default=None, metavar="COLS", help="e.g. at,synthetic_data")
    p.add_argument("--exclude-below", type=float, default=None, metavar="Y",
                   help="drop runs with y below Y (default 10 for robust accuracies: collapsed runs)")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples (0: none)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--level", type=float, default=0.95, help="interval level")
    p.add_argument("--frontier", action="store_true", help="fit only the Pareto frontier of each group")
    p.add_argument("--target", type=float, default=75.0, help="target y for the extrapolation")
    p.add_argument("--throughput", type=float, default=None, metavar="IMG_PER_S",
                   help="images/s per device for FLOPs -> device-hours (default: the runs' own ratio)")
    p.add_argument("--flops-per-second", type=float, default=None, metavar="FLOPS",
                   help="achieved FLOP/s per device for FLOPs -> device-hours")
    p.add_argument("--device-type", default=None, help="price-table device type (default: the runs' device, else gpu)")
    p.add_argument("--price-preset", default="default", help="default or paper-2024")
    p.add_argument("--prices", default=None, metavar="YAML", help="your own price table")
    p.add_argument("--map", action="append", default=[], metavar="OLD=NEW", help="rename a column of RUNS")
    p.add_argument("--jobs", type=int, default=None, help="bootstrap worker processes (default: the idle cores)")
    p.add_argument("--title", default="Robust accuracy vs compute", help="report title")
    add_seed_sd_argument(p)
    p.set_defaults(func=run)
