"""AutoAttack throughput (examples/s) on the CPU demo model: official pyautoattack vs robustscale.evaluation.

    python benchmarks/bench_autoattack.py                          # trains the demo model once (cached), then times
    python benchmarks/bench_autoattack.py --run runs/<name>        # any robustscale run folder
    python benchmarks/bench_autoattack.py --n 48 --json aa.json

The demo model is ``configs/cpu/fashion-mnist.yaml`` with ``--model`` (default wide_resnet16_2)
trained for ``--train-epochs`` epochs on real Fashion-MNIST (1x28x28), cached under
``--cache-dir``. Both paths run AutoAttack standard (APGD-CE, APGD-T, FAB-T, Square) at the same
eps on the same first ``--n`` test images with seed 0, in one batch:

- ``official``: ``pyautoattack.AutoAttack(...).run_standard_evaluation`` on the model as users
  usually hand it over (parameters requiring grad, so FAB's ``backward()`` also fills weight
  gradients);
- ``robustscale``: ``robustscale.evaluation.evaluate(..., attack="aa-standard")`` (parameters'
  requires_grad off, pass counting, gradient-masking check, FLOPs).

Throughput depends on how many points stay robust after each stage (each stage attacks only those),
so the per-stage seconds and accuracies are printed too.
"""
from __future__ import annotations

import argparse
import json
import logging
import re
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def demo_run(model: str, epochs: int, cache_dir: Path) -> Path:
    """Train (once) the CPU demo model and return its run folder."""
    from robustscale.config import TrainConfig
    from robustscale.train import train

    name = f"demo-{model}-{epochs}ep"
    run_dir = cache_dir / name
    if (run_dir / "summary.json").is_file():
        return run_dir
    cfg = TrainConfig.from_yaml(REPO / "configs" / "cpu" / "fashion-mnist.yaml", {
        "model": model, "epochs": epochs, "output_dir": str(cache_dir), "name": name, "energy": False,
        "eval_subset": 200})
    print(f"training the demo model ({model}, {epochs} epoch(s), {cfg.train_subset} images) into {run_dir}",
          file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    train(cfg)
    print(f"trained in {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    return run_dir


class _StageTimes(logging.Handler):
    """Collects pyautoattack's 'robust accuracy after X: a% (total time t s)' debug lines."""

    pattern = re.compile(r"robust accuracy after ([A-Z0-9-]+): ([0-9.]+)% \(total time ([0-9.]+) s\)")

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.stages: list[tuple[str, float, float]] = []

    def emit(self, record):
        m = self.pattern.search(record.getMessage())
        if m:
            self.stages.append((m.group(1).lower(), float(m.group(2)), float(m.group(3))))


def run_official(model, x, y, eps: float, seed: int) -> dict:
    import torch
    from pyautoattack import AutoAttack

    model.eval()
    for p in model.parameters():
        p.requires_grad_(True)  # as a user's model usually is
    logger = logging.getLogger("auto-attack")
    handler = _StageTimes()
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.DEBUG)
    try:
        aa = AutoAttack(model, norm="Linf", eps=eps, version="standard", seed=seed, device="cpu")
        t0, c0 = time.perf_counter(), time.process_time()
        x_adv, _ = aa.run_standard_evaluation(x, y, batch_size=x.shape[0])
        seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - c0
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    with torch.no_grad():
        clean = (model(x).argmax(1) == y).float().mean().item() * 100
        robust = (model(x_adv).argmax(1) == y).float().mean().item() * 100
    stage_seconds, last = {}, 0.0
    for name, _, total in handler.stages:
        stage_seconds[name], last = total - last, total
    return {"path": "official", "seconds": seconds, "cpu_seconds": cpu_seconds,
            "examples_per_second": x.shape[0] / seconds, "clean_acc": clean,
            "robust_acc": robust, "stage_acc": {s: a for s, a, _ in handler.stages}, "stage_seconds": stage_seconds}


def run_ours(model, x, y, eps: float, seed: int) -> dict:
    from robustscale.evaluation import evaluate

    t0, c0 = time.perf_counter(), time.process_time()
    res = evaluate(model, x, y, attack="aa-standard", eps=eps, n_examples=x.shape[0], batch_size=x.shape[0],
                   seed=seed)
    seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - c0
    return {"path": "robustscale", "seconds": seconds, "cpu_seconds": cpu_seconds,
            "examples_per_second": x.shape[0] / seconds,
            "clean_acc": res["clean_acc"], "robust_acc": res["robust_acc"], "stage_acc": res.get("stage_acc"),
            "eval_flops": res.get("eval_flops"), "forward_images": res.get("forward_images"),
            "backward_images": res.get("backward_images")}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", default=None, help="a robustscale run folder (default: the cached demo model)")
    p.add_argument("--model", default="wide_resnet16_2", help="demo model architecture")
    p.add_argument("--train-epochs", type=int, default=1, help="demo model training epochs")
    p.add_argument("--cache-dir", default=str(Path.home() / ".cache" / "robustscale" / "bench"))
    p.add_argument("--n", type=int, default=24, help="first N Fashion-MNIST test images")
    p.add_argument("--eps", default="0.1", help="l-inf radius (the demo config trains at 0.1)")
    p.add_argument("--paths", default="official,robustscale", help="comma-separated: official, robustscale")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = p.parse_args(argv)

    import timm
    import torch

    import robustscale
    from robustscale.config import parse_fraction
    from robustscale.data import load_eval_tensors
    from robustscale.train import load_run

    eps = parse_fraction(args.eps, "eps")
    run_dir = Path(args.run) if args.run else demo_run(args.model, args.train_epochs, Path(args.cache_dir))
    cfg, model = load_run(run_dir)
    x, y = load_eval_tensors(cfg.dataset, args.n)
    from robustscale.compute import cpu_model_name

    print(f"AutoAttack standard, Linf eps={args.eps}, {cfg.model} from {run_dir}, first {args.n} {cfg.dataset} "
          f"test images, one batch; cpu ({cpu_model_name()}, {torch.get_num_threads()} threads); torch "
          f"{torch.__version__}, timm {timm.__version__}", flush=True)
    rows = []
    for path in [s.strip() for s in args.paths.split(",") if s.strip()]:
        runner = {"official": run_official, "robustscale": run_ours}[path]
        rows.append(runner(model, x, y, eps, args.seed))
        r = rows[-1]
        stages = ", ".join(f"{k} {v:.1f}" for k, v in (r.get("stage_acc") or {}).items())
        print(f"{path:<12} {r['examples_per_second']:7.3f} examples/s ({r['seconds']:.1f} s, CPU "
              f"{r['cpu_seconds']:.1f} s)  clean "
              f"{r['clean_acc']:.1f}%  robust {r['robust_acc']:.1f}%  after each stage: {stages}"
              + (f"  stage s: {', '.join(f'{k} {v:.1f}' for k, v in r['stage_seconds'].items())}"
                 if r.get("stage_seconds") else ""), flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"args": vars(args), "model": cfg.model, "run_dir": str(run_dir),
                       "versions": {"torch": torch.__version__, "timm": timm.__version__,
                                    "robustscale": robustscale.__version__}, "rows": rows}, fh, indent=2, default=str)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
