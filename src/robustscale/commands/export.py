"""``robustscale export``: a run as a timm-layout folder (weights, config.json, model card with its compute bill)."""
from __future__ import annotations

import argparse

from ..errors import UserError

EPILOG = """\
examples:
  robustscale export runs/wide_resnet16_1-fashion_mnist-pgd5-1a2b3c4d --to exports/wrn16_1-fmnist
  robustscale export RUN_DIR --to DIR --weights last --force
  robustscale export RUN_DIR --to DIR --push-to-hub my-name/wrn16_1-fmnist-pgd5

The folder holds model.safetensors, config.json (timm's pretrained_cfg: architecture, classes, input
size, mean/std) and README.md, a model card with the robustness claims of these weights (n images and
Wilson 95 % intervals), the training compute bill (FLOPs in our measured convention and the 2024 study's,
device-hours, energy, emissions, cost with the price table's date) and the recipe. Load it with
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
    p.add_argument("--private", action="store_true", help="with --push-to-hub: create the repo private")
    p.add_argument("--json", action="store_true", help="print what was written as JSON")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    import json
    import sys
    import warnings

    from ..hub import export_run

    if not str(args.to).strip():
        raise UserError("--to is empty; give the folder to write (it must be absent or empty)")
    if args.private and not args.push_to_hub:
        raise UserError("--private applies to the Hub repo that --push-to-hub creates; add --push-to-hub REPO "
                        "or leave --private out")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = export_run(args.run_dir, args.to, args.weights, force=args.force, push_to_hub=args.push_to_hub,
                            private=args.private)
    for w in caught:
        print(f"warning: {str(w.message).splitlines()[0] if str(w.message) else w.category.__name__}",
              file=sys.stderr)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"exported the {result['weights']} weights (epoch {result['epoch']}) of {args.run_dir} to {result['path']}"
          f" ({result['claims']} evaluation claim(s) in the model card)")
    if result["pushed"]:
        print(f"pushed: {result['pushed']}")
    return 0
