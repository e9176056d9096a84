"""The parser of ``robustscale evaluate`` (built for every start of the CLI: no heavy imports; see cli.py)."""
from __future__ import annotations

import argparse


EPILOG = """\
examples:
  robustscale evaluate --run runs/wrn16_4-fmnist --attack aa-standard --n-examples 1000
  robustscale evaluate --run runs/wrn16_4-fmnist --attack pgd --steps 50 --restarts 5
  robustscale evaluate --model wide_resnet28_10 --checkpoint model_best.pth.tar --dataset cifar10 \\
      --attack aa-standard --eps 8/255 --n-examples 10000 --batch-size 500

Robust accuracy is measured on the first N test images (RobustBench convention), counting a point
robust only if it is classified correctly both clean and under the attack. aa-standard is the
official AutoAttack (pyautoattack): APGD-CE, APGD-T, FAB-T, Square, with the accuracy after each.
Long AutoAttack runs save their progress after every batch in <dir>/eval/.state-*.pt; rerunning the
same command continues (the state is keyed by checkpoint hash, data, attack, eps, batch size, seed).
The claim goes to <run_dir or checkpoint dir>/eval/<attack>-<eps>.json; with --run it is also attached
to summary.json and the results store.
"""


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "evaluate", help="clean / PGD / AutoAttack accuracy of a run or checkpoint, with its FLOPs and energy",
        description="Evaluate adversarial robustness: clean accuracy, then robust accuracy under PGD or the official "
        "AutoAttack on the same first N test images, with wall time, FLOPs and energy of the evaluation; "
        "writes a RobustBench-style JSON claim.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_argument_group("what to evaluate (--run, or --checkpoint with --model/--dataset)")
    src.add_argument("--run", metavar="RUN_DIR", help="a training run folder (config.yaml + best/last.safetensors)")
    src.add_argument("--which", choices=("best", "last"), default="best",
                     help="with --run: which checkpoint (default: best, falling back to last)")
    src.add_argument("--model", metavar="NAME", help="any timm model name (ours included); optional for our "
                     "safetensors, which name their model")
    src.add_argument("--checkpoint", metavar="FILE", help="our .safetensors, a timm .pth / .pth.tar state dict, or a "
                     "timm-layout folder (config.json with mean/std + model.safetensors, e.g. from `export`)")
    src.add_argument("--dataset", metavar="NAME", help="sets classes, channels, mean/std and the test split "
                     "(cifar10, cifar100, fashion_mnist, mnist, imagefolder)")
    src.add_argument("--num-classes", type=int, metavar="K", help="override the dataset's class count")
    src.add_argument("--no-ema", action="store_true", help="use the raw weights of a timm checkpoint that also has "
                     "EMA weights (default: EMA when present)")
    atk = p.add_argument_group("attack")
    atk.add_argument("--attack", default="pgd", metavar="ATTACK", help="clean, pgd, apgd-ce, aa-standard or aa-rand (default: pgd)")
    atk.add_argument("--eps", help="radius in [0,1] pixel units, e.g. 8/255 (default: the run's, else 8/255 for "
                     "linf and 0.5 for l2)")
    atk.add_argument("--norm", help="linf or l2 (default: the run's, else linf)")
    atk.add_argument("--steps", metavar="K", help="pgd steps (default 10) or apgd-ce iterations (default 100)")
    atk.add_argument("--step-size", metavar="S", help="pgd step in pixel units (default: 2.5 * eps / steps)")
    atk.add_argument("--restarts", metavar="R", help="pgd / apgd-ce random restarts (default 1)")
    atk.add_argument("--seed", default="0", metavar="S", help="seeds PGD starts and AutoAttack (default 0)")
    ev = p.add_argument_group("evaluation")
    ev.add_argument("--n-examples", metavar="N", help="first N test images (default: the whole test split)")
    ev.add_argument("--batch-size", default="256", metavar="B", help="examples per batch (default 256)")
    ev.add_argument("--data-dir", metavar="DIR", help="dataset folder (default: the run's, else auto-located)")
    ev.add_argument("--download", action="store_true", help="download the dataset if missing")
    ev.add_argument("--amp", default="off", metavar="DTYPE", help="off, bf16 or fp16 autocast for clean / pgd (refused for AutoAttack)")
    ev.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    ev.add_argument("--max-batches", type=int, metavar="N", help="stop after N batches, keeping the resume state (run again to "
                    "continue): splits long AutoAttack runs across job time limits")
    ev.add_argument("--restart", action="store_true", help="discard a saved resume state and start over")
    ev.add_argument("--output-dir", metavar="DIR", help="with --checkpoint: where eval/ goes (default: the "
                    "checkpoint's folder)")
    ev.add_argument("--store", metavar="URL", help="with --run: results store (default: the run's)")
    ev.add_argument("--no-energy", action="store_true", help="do not measure energy (codecarbon)")
    ev.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--json", action="store_true", help="print the claim as JSON on stdout")
    p.set_defaults(handler="run")
    return p
