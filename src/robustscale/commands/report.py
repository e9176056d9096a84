"""``robustscale report RUNS -o report.html``: fits, figures and extrapolation in one self-contained HTML file."""
from __future__ import annotations

import os

from ..cost import CostModel
from ..errors import UserError, check_writable_dir
from ..report import Section, write_report
from ..scaling import load_runs, parse_mapping
from ..scaling.fit import group_label
from ..scaling.io import is_store_source
from .fit import ROBUST_METRICS, check_common, exclude_threshold, fit_runs
from .parsers.fit import LAW_CHOICES


def run(args) -> int:
    check_common(args)
    on_store = is_store_source(str(args.runs))
    laws = [s.strip() for s in (args.law or ("error-power" if on_store else "power,saturating")).split(",")
            if s.strip()]
    for law in laws:
        if law not in LAW_CHOICES:
            raise UserError(f"unknown law {law!r}; valid: {', '.join(LAW_CHOICES)}")
    if not args.output.lower().endswith((".html", ".htm")):
        raise UserError(f"invalid -o {args.output!r}: the report is one HTML file, e.g. report.html")
    if args.prices is not None:  # the price table is read after the fits: check it before them
        CostModel.from_yaml(args.prices, preset=args.price_preset)
    df = load_runs(args.runs, parse_mapping(args.map))
    # Before the fits and bootstraps: a report nobody can write is wasted work.
    check_writable_dir(os.path.dirname(os.path.abspath(args.output)), "-o folder", "choose a writable -o path")
    if args.plots_dir:
        check_writable_dir(args.plots_dir, "--plots-dir", "choose a writable --plots-dir")
    # As `fit` does: a group too small to fit is named in the report, and the others are fitted all the same.
    fits, skipped = {}, {}
    for law in laws:
        fits[law], not_fitted = fit_runs(args, df, law, on_store)
        for group, reason in not_fitted:
            skipped.setdefault(group_label(group), []).append(f"{law}: {reason}")
    sections = [Section("Groups not fitted", text="\n\n".join(f"{g}: {'; '.join(r)}" for g, r in skipped.items()))] \
        if skipped else []
    ys = list(dict.fromkeys(f.y for fs in fits.values() for f in fs))
    y = ys[0] if len(ys) == 1 else ROBUST_METRICS[0]
    path = write_report(df, args.output, sections, fits=fits, laws=laws, x=args.x, y=y, group_by=args.group_by,
                        exclude_below=exclude_threshold(args, y), bootstrap=args.bootstrap, seed=args.seed,
                        level=args.level, frontier=args.frontier, target=args.target, device_type=args.device_type,
                        price_preset=args.price_preset, prices_path=args.prices,
                        flops_per_second=args.flops_per_second, throughput=args.throughput, title=args.title,
                        plots_dir=args.plots_dir, source=str(args.runs), n_jobs=args.jobs, seed_sd=args.seed_sd)
    print(f"wrote {path}" + (f" (figures also in {args.plots_dir} as PNG and SVG)" if args.plots_dir else ""))
    return 0
