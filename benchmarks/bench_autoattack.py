"""AutoAttack throughput (examples/s) on the CPU demo model: official pyautoattack vs robustscale.evaluation.

    python benchmarks/bench_autoattack.py                          # trains the demo model once (cached), then times
    python benchmarks/bench_autoattack.py --run runs/<name>        # any robustscale run folder
    python benchmarks/bench_autoattack.py --n 48 --json aa.json
    python benchmarks/bench_autoattack.py --device cuda --random-model wide_resnet28_10 --dataset cifar10 --n 256 --json -

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
so the per-stage seconds and accuracies are printed too. ``same_per_example`` says whether both paths
leave the same examples robust.

``--random-model NAME`` skips training (a GPU check has no time for it): an untrained ``NAME`` on
seeded uniform images of ``--dataset``'s shape, labelled with the model's own clean predictions so that
every example starts correct and every stage has work to do. Such a model is not robust, so APGD-CE
breaks most points and the later stages see few: the figure compares the two paths on the same work,
it is not the throughput on a robust model.
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


def random_model_batch(name: str, dataset: str, n: int, device: str, seed: int):
    """An untrained ``name`` and ``n`` seeded uniform images labelled by its own predictions."""
    import torch

    from robustscale.data import dataset_info
    from robustscale.models import create_model

    info = dataset_info(dataset)
    torch.manual_seed(seed)
    model = create_model(name, info.num_classes, info.in_chans, mean=info.mean, std=info.std).to(device).eval()
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, *info.input_size, generator=g).to(device)
    with torch.no_grad():
        y = torch.cat([model(x[i:i + 256]).argmax(1) for i in range(0, n, 256)])
    return model, x, y


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
        aa = AutoAttack(model, norm="Linf", eps=eps, version="standard", seed=seed, device=str(x.device))
        t0, c0 = time.perf_counter(), time.process_time()
        x_adv, _ = aa.run_standard_evaluation(x, y, batch_size=x.shape[0])
        seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - c0
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    with torch.no_grad():
        clean = (model(x).argmax(1) == y).float().mean().item() * 100
        robust_flags = (model(x_adv).argmax(1) == y).cpu()
        robust = robust_flags.float().mean().item() * 100
    stage_seconds, last = {}, 0.0
    for name, _, total in handler.stages:
        stage_seconds[name], last = total - last, total
    return {"path": "official", "seconds": seconds, "cpu_seconds": cpu_seconds,
            "examples_per_second": x.shape[0] / seconds, "clean_acc": clean,
            "robust_acc": robust, "stage_acc": {s: a for s, a, _ in handler.stages}, "stage_seconds": stage_seconds,
            "robust_flags": robust_flags.tolist()}


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
            "backward_images": res.get("backward_images"), "robust_flags": res["robust_flags"].cpu().tolist()}


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
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    p.add_argument("--random-model", default=None, metavar="NAME",
                   help="time an untrained NAME on random images instead of a trained run (see the module doc)")
    p.add_argument("--dataset", default="cifar10", help="input shape and classes for --random-model")
    p.add_argument("--json", default=None, help="also write the results to this JSON file ('-': stdout, last)")
    args = p.parse_args(argv)

    import timm
    import torch

    import robustscale
    from robustscale.config import parse_fraction
    from robustscale.data import load_eval_tensors
    from robustscale.train import load_run

    eps = parse_fraction(args.eps, "eps")
    from robustscale.compute import cpu_model_name

    if args.random_model:
        model_name, run_dir = args.random_model, None
        model, x, y = random_model_batch(args.random_model, args.dataset, args.n, args.device, args.seed)
        source = f"untrained {model_name}, {args.n} random {args.dataset}-shaped images labelled by the model"
    else:
        run_dir = Path(args.run) if args.run else demo_run(args.model, args.train_epochs, Path(args.cache_dir))
        cfg, model = load_run(run_dir)
        model_name = cfg.model
        x, y = load_eval_tensors(cfg.dataset, args.n)
        model, x, y = model.to(args.device), x.to(args.device), y.to(args.device)
        source = f"{cfg.model} from {run_dir}, first {args.n} {cfg.dataset} test images"
    where = (torch.cuda.get_device_name(x.device) if x.device.type == "cuda"
             else f"cpu ({cpu_model_name()}, {torch.get_num_threads()} threads)")
    out = sys.stderr if args.json == "-" else sys.stdout
    print(f"AutoAttack standard, Linf eps={args.eps}, {source}, one batch; {where}; torch "
          f"{torch.__version__}, timm {timm.__version__}", file=out, flush=True)
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
                 if r.get("stage_seconds") else ""), file=out, flush=True)
    flags = [r["robust_flags"] for r in rows]
    same = all(f == flags[0] for f in flags) if len(flags) > 1 else None
    if same is not None:
        print(f"same robust examples on both paths: {same}", file=out, flush=True)
    if args.json:
        doc = {"args": vars(args), "model": model_name, "run_dir": str(run_dir) if run_dir else None, "n": args.n,
               "device": where, "same_per_example": same,
               "versions": {"torch": torch.__version__, "timm": timm.__version__,
                            "robustscale": robustscale.__version__}, "rows": rows}
        if args.json == "-":
            print(json.dumps(doc, indent=2, default=str), flush=True)
        else:
            with open(args.json, "w") as fh:
                json.dump(doc, fh, indent=2, default=str)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
