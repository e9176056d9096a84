"""The parser of ``robustscale export`` (built for every start of the CLI: no heavy imports; see cli.py)."""
from __future__ import annotations

import argparse


EPILOG = """\
examples:
  robustscale export runs/wide_resnet16_1-fashion_mnist-pgd5-1a2b3c4d --to exports/wrn16_1-fmnist
  robustscale export RUN_DIR --to DIR --weights last --force
  robustscale export RUN_DIR --to DIR --push-to-hub my-name/wrn16_1-fmnist-pgd5

The folder holds model.safetensors, config.json (timm's pretrained_cfg: architecture, classes, input
size, mean/std) and README.md, a model card with the robustness claims of these weights (n images and
Wilson 95 % intervals) under Hub metadata (license, datasets, tags, model-index), the training compute bill (FLOPs in our measured convention and the 2024 study's,
device-hours, energy, emissions, cost with the price table's date) and the recipe. Load it with (pip install robustscale; the import registers its architectures in timm)
  import robustscale, timm; timm.create_model("local-dir:DIR", pretrained=True)
or evaluate it with robustscale evaluate --checkpoint DIR.
"""


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "export", help="write a run as a timm / Hugging Face folder with a model card and its compute bill",
        description="Export a training run's weights as a timm-layout folder (model.safetensors, config.json, "
        "README.md model card), written to a temporary folder and renamed into place.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", metavar="RUN_DIR", help="a training run folder (config.yaml + best/last.safetensors)")
    p.add_argument("--to", required=True, metavar="DIR", help="the folder to write (must be absent or empty)")
    p.add_argument("--weights", default="best", metavar="WHICH",
                   help="best (default: the epoch with the best per-epoch check), last, or ema (the EMA weights "
                   "of a run trained with ema_decay; best/last already hold them in such a run)")
    p.add_argument("--force", action="store_true", help="replace a non-empty --to folder")
    p.add_argument("--push-to-hub", metavar="REPO", help="then upload the folder to this Hugging Face Hub repo "
                   "(huggingface_hub; needs network and a token)")
    p.add_argument("--license", default="mit", metavar="ID",
                   help="the weights' license, a Hugging Face Hub license id for the card's metadata (default: mit, "
                   "robustscale's own; the dataset's terms may ask for another)")
    p.add_argument("--private", action="store_true", help="with --push-to-hub: create the repo private")
    p.add_argument("--json", action="store_true", help="print what was written as JSON")
    p.set_defaults(handler="run")
    return p
