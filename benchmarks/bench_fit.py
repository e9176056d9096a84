"""Speed of a saturating-law fit with 1000 bootstrap resamples on the 2024 study's 319 runs.

    python benchmarks/bench_fit.py                         # ../shared/data/paper-runs/results.csv
    python benchmarks/bench_fit.py --runs results.csv --bootstrap 1000 --jobs 2 --json out.json

Cases (each timed end to end: point fit from a grid of starts + bootstrap refits):
  pooled   one saturating law over all 319 runs (collapsed runs included: AA 0% = error 100%)
  grouped  one law per (at, synthetic_data) group, collapsed runs excluded (245 runs, 4 groups)
and for reference the power law (closed form, vectorised) on the grouped case. Also prints the
wall-clock time of a point fit alone and the machine's load average, since other processes on a
small machine change the figures.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

DEFAULT_RUNS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "paper-runs" / "results.csv"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", default=str(DEFAULT_RUNS), help="the study's results.csv (or its URL)")
    p.add_argument("--bootstrap", type=int, default=1000)
    p.add_argument("--jobs", type=int, default=None,
                   help="worker processes (default: the idle cores, cores minus the load average)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = p.parse_args(argv)

    from robustscale.scaling import fit_groups, fit_law, load_paper_runs

    if not args.runs.startswith("http") and not Path(args.runs).is_file():
        print(f"paper runs not found at {args.runs}; pass --runs", file=sys.stderr)
        return 2
    df = load_paper_runs(args.runs)
    from robustscale.scaling.bootstrap import auto_jobs

    results = {"n_runs": len(df), "bootstrap": args.bootstrap, "jobs": args.jobs or auto_jobs(),
               "cpu_count": os.cpu_count(), "load_average_before": [round(v, 2) for v in os.getloadavg()]}

    def timed(name, fn):
        t = time.perf_counter()
        out = fn()
        results[name] = round(time.perf_counter() - t, 3)
        return out

    timed("saturating_point_fit_s", lambda: fit_law(df, "saturating"))
    pooled = timed("saturating_pooled_s", lambda: fit_law(df, "saturating", bootstrap=args.bootstrap,
                                                          seed=args.seed, n_jobs=args.jobs))
    grouped = timed("saturating_grouped_s", lambda: fit_groups(df, ["method", "synthetic_data"], law="saturating",
                                                               exclude_below=10, bootstrap=args.bootstrap,
                                                               seed=args.seed, n_jobs=args.jobs))
    timed("power_grouped_s", lambda: fit_groups(df, ["method", "synthetic_data"], law="power", exclude_below=10,
                                                bootstrap=args.bootstrap, seed=args.seed))
    results["load_average"] = [round(v, 2) for v in os.getloadavg()]  # after
    results["pooled_converged"] = pooled.converged
    results["grouped_converged"] = [f.converged for f in grouped]

    print(f"{len(df)} runs, {args.bootstrap} bootstrap resamples, {results['jobs']} worker process(es) "
          f"on {os.cpu_count()} cores (load average {results['load_average'][0]})")
    rows = [("saturating, point fit only", results["saturating_point_fit_s"]),
            (f"saturating + {args.bootstrap} bootstrap, pooled (319 runs)", results["saturating_pooled_s"]),
            (f"saturating + {args.bootstrap} bootstrap, 4 groups (245 runs)", results["saturating_grouped_s"]),
            (f"power + {args.bootstrap} bootstrap, 4 groups", results["power_grouped_s"])]
    width = max(len(r[0]) for r in rows)
    print(f"{'case'.ljust(width)}  wall [s]")
    for name, sec in rows:
        print(f"{name.ljust(width)}  {sec:8.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
