"""Wall time of `robustscale plan` on the 2024 study's 319 runs with 1,000 bootstrap resamples.

    python benchmarks/bench_plan.py                      # ../shared/data/paper-runs/results.csv, 1e20 FLOPs
    python benchmarks/bench_plan.py --bootstrap 1000 --budget-flops 1e20 --json out.json

Times the command end to end in a fresh process (interpreter start, imports, measured FLOPs of
the zoo's wide ResNets, four group fits with their bootstrap refits, the plan), as a user runs it.
The measured step FLOPs are cached on disk (``$ROBUSTSCALE_FLOPS_CACHE`` or
``~/.cache/robustscale/step-flops.json``): the first run on a machine measures them (tens of
seconds), later runs read them; the script says which case it timed. Goal: under 60 s. Other
processes on a small machine change the wall time: it prints the load average before and after,
and the CPU seconds of the command (less sensitive to load).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

DEFAULT_RUNS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "paper-runs" / "results.csv"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", default=str(DEFAULT_RUNS), help="the study's results.csv")
    p.add_argument("--bootstrap", type=int, default=1000)
    p.add_argument("--budget-flops", default="1e20")
    p.add_argument("--json", default=None, help="also write the timing to this JSON file")
    args = p.parse_args(argv)
    if not Path(args.runs).is_file():
        print(f"paper runs not found at {args.runs}; pass --runs", file=sys.stderr)
        return 2
    from robustscale.sweep.estimate import default_cache_path

    cache = default_cache_path()
    warm = cache is not None and cache.is_file()
    cmd = [sys.executable, "-m", "robustscale", "plan", "--paper-runs", "--path", args.runs,
           "--budget-flops", args.budget_flops, "--bootstrap", str(args.bootstrap), "--json"]
    load_before = [round(v, 2) for v in os.getloadavg()]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - start
    child = resource.getrusage(resource.RUSAGE_CHILDREN)  # CPU time of the command and its bootstrap workers
    cpu = child.ru_utime + child.ru_stime
    if proc.returncode != 0:
        print(proc.stderr.strip(), file=sys.stderr)
        return proc.returncode
    plan = json.loads(proc.stdout)
    b = plan["budgets"][0]
    result = {"command": " ".join(cmd[1:]), "wall_seconds": round(wall, 2), "cpu_seconds": round(cpu, 2),
              "bootstrap": args.bootstrap,
              "flops_cache": str(cache), "flops_cache_warm": warm, "cpu_count": os.cpu_count(),
              "load_average_before": load_before, "load_average_after": [round(v, 2) for v in os.getloadavg()],
              "optimum_group": b["label"], "predicted_acc": b["predicted_acc"], "predicted_acc_ci": b["predicted_acc_ci"]}
    print(f"robustscale plan, {plan['n_runs']} runs, {args.bootstrap} bootstrap resamples, budget "
          f"{args.budget_flops} FLOPs: {wall:.1f} s wall, {cpu:.1f} s CPU ({'warm' if warm else 'cold'} FLOPs cache; "
          f"load average {load_before[0]} -> {result['load_average_after'][0]} on {os.cpu_count()} cores)")
    print(f"optimum: {b['label']}, predicted AutoAttack accuracy {b['predicted_acc']} {b['predicted_acc_ci']}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
