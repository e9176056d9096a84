"""``robustscale report RUNS -o report.html``: fits, figures and extrapolation in one self-contained HTML file."""
from __future__ import annotations

import os

from .fit import check_common, exclude_threshold
from .parsers.fit import LAW_CHOICES


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
