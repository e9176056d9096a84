"""The parser of ``robustscale train`` (built for every start of the CLI: no heavy imports; see cli.py)."""
from __future__ import annotations

import argparse
import dataclasses
import enum

from ...config import TrainConfig

EPILOG = """\
examples:
  robustscale train --config configs/cpu/fashion-mnist.yaml
  robustscale train --config configs/paper/cifar10-pgd.yaml --attack-steps 5 --epochs 50 --amp bf16
  robustscale train --resume runs/wide_resnet16_1-fashion_mnist-pgd5-1a2b3c4d
  torchrun --nproc_per_node 2 -m robustscale train --config configs/cpu/fashion-mnist.yaml
  srun --nodes 2 --ntasks-per-node 4 --gpus-per-node 4 robustscale train --config configs/paper/cifar10-pgd.yaml

batch_size is the global batch (processes x micro_batch_size x accumulation steps): a run resumed on
another number of processes keeps its batches, accumulating gradients where needed (docs/multi-node.md).

Any TrainConfig key can be overridden as --key value (or --key=value; a bare --flag means true),
e.g. --eps 8/255 --method trades --trades-beta 6 --ema-decay 0.995 --compile --channels-last false.
--compile is auto by default: torch.compile on CUDA, and on the CPU for runs of >= 3e13 training
FLOPs (long enough to repay the warm-up); --compile / --compile false force it.
Writes <output_dir>/<name>/ with config.yaml, metrics.jsonl, last/best.safetensors, state.pt,
summary.json. Ctrl-C saves a resumable checkpoint.
--log-to wandb,mlflow,tensorboard also logs to experiment trackers (pip install 'robustscale[wandb]' ...;
--log-to-required stops the run when one cannot start).
"""


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "train", help="train a model (standard, PGD, TRADES, FGSM-RS, N-FGSM, GradAlign), counting its compute",
        description="Train a timm model with adversarial training (PGD / TRADES / FGSM-RS / N-FGSM / GradAlign) or "
        "standard training, checking clean, PGD and FGSM accuracy every epoch on a validation split of the "
        "training images (which picks the checkpoint; a run whose PGD accuracy collapses is flagged: on_collapse "
        "warn|stop) and recording FLOPs, time, energy and cost.",
        epilog=EPILOG + "\n" + config_keys_help(), formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    parser.add_argument("--config", metavar="FILE", help="YAML recipe (TrainConfig keys); defaults when omitted")
    parser.add_argument("--resume", metavar="RUN_DIR",
                        help="continue an interrupted run (its config.yaml is used unless --config is given, "
                        "which must then describe the same run)")
    parser.add_argument("--output-dir", metavar="DIR", help="parent folder of the run directory (default: runs)")
    parser.add_argument("--name", help="run directory name (default: <model>-<dataset>-<method><steps>-<hash>)")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON on stdout")
    parser.set_defaults(handler="run", accepts_overrides=True, overrides=[])
    return parser


def _default_text(value) -> str:
    if isinstance(value, enum.Enum):
        choices = "|".join(str(m.value) for m in type(value))
        return f"{value.value} ({choices})"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.6g}"
    return "none" if value is None else str(value)


def config_keys_help(width: int = 100) -> str:
    """Every TrainConfig key as ``--key default``, in the dataclass's order (its defaults, not a copy)."""
    defaults = TrainConfig()
    items = [f"--{f.name.replace('_', '-')} {_default_text(getattr(defaults, f.name))}"
             for f in dataclasses.fields(TrainConfig)]
    lines = [""]
    for item in items:  # a key and its default stay on one line
        if lines[-1] and len(lines[-1]) + len(item) + 4 > width:
            lines.append("")
        lines[-1] += ("; " if lines[-1] else "  ") + item
    return "config keys (--key value; the default follows each key):\n" + "\n".join(lines) + "\n"
