"""Training speed of the 2024 study's runs, per GPU, from its published results (no GPU needed).

    python benchmarks/paper_throughput.py                      # ../shared/data/paper-runs/results.csv
    python benchmarks/paper_throughput.py --models wide_resnet28_10 wide_resnet34_10 --json out.json

The study published, per run, training FLOPs (its 3F(K+2) convention) and electricity cost, from
which `robustscale.scaling.load_paper_runs` recovers wall time and device-hours (4 GPUs per run).
This prints, per (model, method, attack steps): images per second per GPU, and the achieved
FLOP/s per GPU both in the study's convention and in robustscale's measured FLOPs
(`measure_step_flops`: input-only attack backward, so fewer FLOPs for the same work). The
median measured-convention FLOP/s is what `robustscale sweep plan --flop-rate` takes to bill a
sweep at the study's speed (e.g. `configs/studies/cifar10-wrn.yaml` when no GPU of your own was
benchmarked).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

DEFAULT_RUNS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "paper-runs" / "results.csv"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", default=str(DEFAULT_RUNS), help="the study's results.csv (or its URL)")
    p.add_argument("--models", nargs="+", default=["wide_resnet28_10"],
                   help="models to tabulate (each needs a FLOP measurement per method/steps, seconds each)")
    p.add_argument("--json", help="also write the rows to this JSON file")
    args = p.parse_args(argv)

    from robustscale.config import TrainConfig
    from robustscale.scaling import load_paper_runs
    from robustscale.sweep.estimate import StepFlopsCache

    if not args.runs.startswith("http") and not Path(args.runs).is_file():
        print(f"error: results file not found: {args.runs}", file=sys.stderr)
        return 2
    df = load_paper_runs(args.runs)
    df = df[df["model"].isin(args.models) & (df["device_hours"] > 0)]
    if df.empty:
        print(f"error: no runs of {', '.join(args.models)} in {args.runs}", file=sys.stderr)
        return 2
    df = df.assign(img_s_gpu=df["train_images_seen"] / (df["device_hours"] * 3600.0))
    cache = StepFlopsCache()
    rows = []
    for (model, method, steps), g in df.groupby(["model", "method", "attack_steps"]):
        measured = cache.get(TrainConfig(model=model, dataset="cifar10", method=method, attack_steps=int(steps)))
        img_s = float(g["img_s_gpu"].median())
        rows.append({"model": model, "method": method, "attack_steps": int(steps), "runs": len(g),
                     "img_s_per_gpu": img_s,
                     "study_flops_per_image": float(g["train_flops_per_image"].median()),
                     "measured_flops_per_image": measured,
                     "study_tflop_s_per_gpu": img_s * float(g["train_flops_per_image"].median()) / 1e12,
                     "measured_tflop_s_per_gpu": img_s * measured / 1e12})
    header = f"{'model':<22}{'method':<8}{'K':>3}{'runs':>6}{'img/s/GPU':>11}{'TFLOP/s (study conv.)':>23}" \
             f"{'TFLOP/s (measured conv.)':>26}"
    print(header)
    for r in rows:
        print(f"{r['model']:<22}{r['method']:<8}{r['attack_steps']:>3}{r['runs']:>6}{r['img_s_per_gpu']:>11.1f}"
              f"{r['study_tflop_s_per_gpu']:>23.1f}{r['measured_tflop_s_per_gpu']:>26.1f}")
    med = statistics.median(r["measured_tflop_s_per_gpu"] for r in rows)
    print(f"\nmedian achieved rate per GPU, robustscale's measured FLOPs: {med:.3g} TFLOP/s "
          f"(robustscale sweep plan SPEC --flop-rate {med * 1e12:.3g})")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "median_measured_flop_rate": med * 1e12}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
