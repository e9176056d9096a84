"""``robustscale evaluate``: clean and robust accuracy (PGD or AutoAttack) of a run or a checkpoint."""
from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

from ..data import dataset_info
from ..errors import UserError
from ..evaluation import evaluate_checkpoint, evaluate_run
from ..evaluation.api import resolve_device
from ..evaluation.spec import EvalSpec, check_value
from ..models import check_model_name
from ..store import resolve_store_url


def run(args: argparse.Namespace) -> int:
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
    check_model_name(name)


def _check_dataset(name: str) -> None:
    dataset_info(name)


def _check_device(device: str) -> None:
    resolve_device(device)  # a device that exists here: `--device cuda` without a GPU is one line


def _check_store(url: str) -> None:
    resolve_store_url(url)


def _int_or_none(value, what: str):
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
