"""``robustscale evaluate``: clean and robust accuracy (PGD or AutoAttack) of a run or a checkpoint."""
from __future__ import annotations

import argparse
import json
import sys

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
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    import warnings

    from ..evaluation import evaluate_checkpoint, evaluate_run

    check_arguments(args)
    common = dict(attack=args.attack, eps=args.eps, steps=args.steps, step_size=args.step_size,
                  restarts=args.restarts, batch_size=args.batch_size, seed=args.seed, amp=args.amp,
                  data_dir=args.data_dir, device=args.device, progress=not args.no_progress and not args.json,
                  energy=False if args.no_energy else None, max_batches=args.max_batches, resume=not args.restart)
    n = _int_or_none(args.n_examples, "n-examples")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if args.run:
            claim = evaluate_run(args.run, n_examples=n, norm=args.norm, checkpoint=args.which,
                                 download=args.download or None, store=args.store, **common)
        elif args.checkpoint:
            if common["energy"] is None:
                common["energy"] = True
            claim = evaluate_checkpoint(args.checkpoint, args.model, args.dataset, n_examples=n,
                                        norm=args.norm or "linf", download=args.download,
                                        num_classes=args.num_classes, use_ema=False if args.no_ema else None,
                                        output_dir=args.output_dir, **common)
    for w in caught:
        print(f"warning: {str(w.message).splitlines()[0] if str(w.message) else w.category.__name__}",
              file=sys.stderr)
    if args.json:
        print(json.dumps(claim, indent=2, default=str))
        return 0
    print_table(claim)
    return 0


def check_arguments(args: argparse.Namespace) -> None:
    """Every value given, in the order of the options, then their combination, then what is missing:
    a typo is named even when the command also lacks its checkpoint. Nothing is loaded or written."""
    from pathlib import Path

    from ..errors import UserError
    from ..evaluation.spec import EvalSpec, check_value

    def existing(message: str, is_ok):
        def check(value):
            if not is_ok(Path(value).expanduser()):
                raise UserError(f"{message}: {value}")
        return check

    checks = [
        ("run", existing("not a run directory (no config.yaml)", lambda p: (p / "config.yaml").is_file())),
        # --checkpoint: a weights file or a timm-layout folder (load_timm_folder names what a folder lacks)
        ("model", _check_model), ("checkpoint", existing("checkpoint not found", Path.exists)),
        ("dataset", _check_dataset),
        ("num_classes", lambda v: _int_or_none(v, "num-classes")),
        *((key, lambda v, key=key: check_value(key, v)) for key in ("attack", "eps", "norm", "steps", "step_size",
                                                                    "restarts", "seed")),
        ("n_examples", lambda v: _int_or_none(v, "n-examples")), ("batch_size", lambda v: check_value("batch_size", v)),
        ("data_dir", None if args.download else existing("--data-dir folder not found", Path.is_dir)),
        ("amp", lambda v: check_value("amp", v)), ("device", _check_device),
        ("max_batches", lambda v: _int_or_none(v, "max-batches")), ("store", _check_store),
    ]
    for key, check in checks:
        if check is not None and getattr(args, key) is not None:
            check(getattr(args, key))
    if args.run:
        extra = [f for f, v in (("--checkpoint", args.checkpoint), ("--model", args.model),
                                ("--dataset", args.dataset), ("--output-dir", args.output_dir)) if v]
        if extra:
            raise UserError(f"--run takes its model, dataset and checkpoint from the run; drop {', '.join(extra)}")
    EvalSpec.create(args.attack, args.eps, args.norm or "linf", args.steps, args.step_size, args.restarts,
                    args.batch_size, args.seed, args.amp)
    if not args.run and not args.checkpoint:
        raise UserError("nothing to evaluate: give --run RUN_DIR, or --checkpoint FILE (with --model NAME and "
                        "--dataset NAME unless the checkpoint names them)")


def _check_model(name: str) -> None:
    from ..models import check_model_name

    check_model_name(name)


def _check_dataset(name: str) -> None:
    from ..data import dataset_info

    dataset_info(name)


def _check_device(device: str) -> None:
    from ..evaluation.api import resolve_device

    resolve_device(device)  # a device that exists here: `--device cuda` without a GPU is one line


def _check_store(url: str) -> None:
    from ..store import resolve_store_url

    resolve_store_url(url)


def _int_or_none(value, what: str):
    from ..errors import UserError

    if value is None:
        return None
    try:
        number = float(value)
    except ValueError:
        raise UserError(f"invalid {what} {value!r}; expected an integer") from None
    if number != int(number) or number < 1:
        raise UserError(f"invalid {what} {value!r}; expected an integer >= 1")
    return int(number)


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_table(claim: dict) -> None:
    """Per-stage accuracies, then compute, for people."""
    if not claim.get("complete"):
        print(f"stopped after --max-batches; progress saved to {claim['state_path']} "
              "(run the same command to continue)")
        if claim.get("clean_acc") is not None:
            print(f"clean accuracy so far: {claim['clean_acc']:.2f}% of {claim['n_examples']}")
        return
    name = claim.get("model_name") or "model"
    threat = "clean" if claim["attack"] == "clean" else f"{claim['threat_model']} eps {claim['eps_text']}"
    print(f"{name} on {claim['dataset']}, {claim['n_examples']} test images, {threat}, "
          f"{claim['attack_version']}")
    rows = [("clean", claim["clean_acc"])] + list((claim.get("stage_acc") or {}).items())
    if claim.get("robust_acc") is not None and len(rows) > 2:
        rows.append(("robust (total)", claim["robust_acc"]))
    print(f"{'stage':<16} {'accuracy (%)':>12}")
    for stage, acc in rows:
        print(f"{stage:<16} {_fmt(acc, '.2f'):>12}")
    cost = f"{_fmt(claim.get('cloud_usd_low'), '.3g')} - {_fmt(claim.get('cloud_usd_high'), '.3g')}"
    facts = [("eval FLOPs", _fmt(claim.get("eval_flops"), ".3e")),
             ("wall time (s)", _fmt(claim.get("wall_seconds"), ".1f")),
             ("energy (kWh)", _fmt(claim.get("energy_kwh"), ".4g")),
             ("cloud cost (USD)", cost), ("claim", claim["claim_path"])]
    print()
    for key, value in facts:
        print(f"{key:<16} {value}")
