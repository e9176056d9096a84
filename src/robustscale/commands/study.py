"""``robustscale study``: a whole scaling study in one command."""
from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from ..errors import UserError
from ..study import format_study_table, load_study, run_study
from ..study.bill import format_bill, study_bill
from ..study.next import format_next_table
from ..study.paper import PAPER_URL, format_summary_table, reproduce_paper


def run(args: argparse.Namespace) -> int:
    if args.paper_runs:
        if args.spec:
            raise UserError(f"give either a study spec or --paper-runs, not both (got spec {args.spec!r})")
        return _paper(args)
    if not args.spec:
        raise UserError("missing study spec; e.g. robustscale study configs/studies/cpu-fashion-mnist.yaml "
                        "(or --paper-runs)")
    spec, opts = load_study(args.spec)
    if args.bill:
        bill = study_bill(spec, opts)
        print(json.dumps(bill, indent=2) if args.json else format_bill(bill))
        if bill["within_limit"] is False:
            raise UserError(f"the bill of {args.spec} is {bill['total_hours']:.2f} h, over its study.scaling.max_hours "
                            f"{bill['max_hours']:g} h")
        return 0
    if args.bootstrap is not None:
        if args.bootstrap < 0:
            raise UserError(f"invalid --bootstrap {args.bootstrap}: must be >= 0")
        opts.bootstrap = args.bootstrap
    if args.eval_workers is not None:
        if args.eval_workers < 1:
            raise UserError(f"invalid --eval-workers {args.eval_workers}: must be >= 1")
        opts.eval_workers = args.eval_workers
    if args.output:
        opts.report = str(Path(args.output) / "report.html")
    log = (lambda msg: print(msg, file=sys.stderr)) if args.json else print
    result = run_study(spec, opts, store=args.store, executor=args.executor, max_parallel=args.max_parallel,
                       progress=not args.no_progress, log=log)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2, default=str))
        return 0
    print()
    print(f"study {spec.name}: {result.n_runs} runs, {result.wall_seconds:.0f} s "
          f"({result.sweep.get('submitted', 0)} trained now, {result.sweep.get('done_before', 0)} reused)")
    print(format_study_table(result.records, result.comparison_records))
    if result.next:
        print()
        print(format_next_table(result.next))
    print(f"\nreport: {result.report_path}\nstudy.json: {result.json_path}")
    return 0


def _paper(args: argparse.Namespace) -> int:
    source = args.path or PAPER_URL
    out_dir = Path(args.output or "paper-reproduction")
    parts = ["robustscale", "study", "--paper-runs"]
    for flag, value in (("--path", args.path), ("-o", args.output), ("--markdown", args.markdown),
                        ("--bootstrap", args.bootstrap)):
        if value is not None:
            parts += [flag, str(value)]
    command = " ".join(shlex.quote(p) for p in parts)
    result = reproduce_paper(source, out_dir, markdown=Path(args.markdown) if args.markdown else None,
                             bootstrap=1000 if args.bootstrap is None else args.bootstrap,
                             progress=not args.no_progress and not args.json,
                             command=command)
    rows = result.summary_rows()
    if args.json:
        print(json.dumps({"report": str(result.report_path), "rows": rows}, indent=2, default=str))
        return 0
    print(format_summary_table(rows))
    print(f"\nreport: {result.report_path}")
    if result.markdown_path:
        print(f"markdown: {result.markdown_path}")
    return 0
