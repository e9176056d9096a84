"""``robustscale flops``: measured FLOPs per image of a training step, next to the 2024 convention."""
from __future__ import annotations

import argparse
import json
import re
import time

import torch

from ..compute import measure_step_flops
from ..config import TrainConfig
from ..errors import UserError
from ..models import check_model_name, create_model

CONVENTION = {"standard": "3F", "pgd": "3F(K+2)", "trades": "3F(K+3)", "fgsm_rs": "3F(1+2)", "n_fgsm": "3F(1+2)",
              "grad_align": "3F(1+3)"}
_WITH_STEPS = re.compile(r"^(pgd|trades)-?(\d+)$")  # pgd10, pgd-10, trades5: a method with its K


def _configs(args: argparse.Namespace) -> list:
    """One TrainConfig per requested method (validated: a bad method or K is a one-line error)."""
    out = []
    for token in args.method:
        m = _WITH_STEPS.match(str(token).strip().lower())
        method, steps = (m.group(1), int(m.group(2))) if m else (token, args.attack_steps)
        out.append(TrainConfig.from_dict({"model": args.model, "method": method, "attack_steps": steps},
                                         source="command line"))
    return out


def run(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    check_model_name(args.model)
    if args.num_classes < 1:
        raise UserError(f"invalid --num-classes {args.num_classes}: must be >= 1")
    if args.batch_size < 1:
        raise UserError(f"invalid --batch-size {args.batch_size}: must be >= 1")
    configs = _configs(args)
    in_chans = args.input_size[0]
    if in_chans < 1:
        raise UserError(f"invalid input size {' '.join(map(str, args.input_size))}: expected three positive "
                        "integers C H W, e.g. 3 32 32")
    try:
        with torch.device("meta"):  # no memory, no init cost: shapes only
            model = create_model(args.model, num_classes=args.num_classes, in_chans=in_chans)
    except (RuntimeError, NotImplementedError):  # a model whose init needs real tensors
        model = create_model(args.model, num_classes=args.num_classes, in_chans=in_chans)
    steps = [measure_step_flops(model, cfg, tuple(args.input_size), batch_size=args.batch_size, use_cache=False)
             for cfg in configs]
    seconds = time.perf_counter() - start

    if args.json:
        rows = [{**s.to_dict(), "num_classes": args.num_classes, "seconds": seconds} for s in steps]
        print(json.dumps(rows[0] if len(rows) == 1 else rows, indent=2))
        return 0
    if len(steps) == 1:
        _print_one(steps[0], args.num_classes, seconds)
    else:
        _print_side_by_side(steps, args.num_classes, seconds)
    return 0


def _label(step) -> str:
    return f"{step.method}-{step.attack_steps}" if step.method in ("pgd", "trades") else step.method


def _rows(step) -> list[tuple[str, float]]:
    rows = [
        ("forward (F)", step.forward_flops),
        ("input-only backward (attack)", step.input_backward_flops),
        ("full backward (training)", step.full_backward_flops),
        ("attack step (F + input backward)", step.attack_step_flops),
    ]
    if step.double_backward_flops:
        rows.append(("GradAlign penalty backward (double)", step.double_backward_flops))
    return rows + [("train step, measured", step.train_step_flops)]


def _print_one(step, num_classes: int, seconds: float) -> None:
    k = step.attack_steps
    rows = _rows(step) + [(f"train step, 2024 convention {CONVENTION[step.method]}", step.analytic_train_step_flops)]
    size = "x".join(map(str, step.input_size))
    steps = f", K={k}" if step.method in ("pgd", "trades") else ""
    print(f"{step.model}, {step.method}{steps}, input {size}, {num_classes} classes "
          f"(measured on {step.measured_on}, batch {step.batch_size}, {seconds:.1f} s)")
    width = max(len(r[0]) for r in rows)
    print(f"{'quantity':<{width}}  {'GFLOPs/image':>13}  {'x F':>7}")
    for label, value in rows:
        print(f"{label:<{width}}  {value / 1e9:>13.3f}  {value / step.forward_flops:>7.2f}")
    print(f"{'measured / 2024 convention':<{width}}  {step.measured_to_analytic:>13.3f}")
    print(f"{'attack share of measured step':<{width}}  {step.attack_flops_fraction:>13.3f}")


def _print_side_by_side(steps: list, num_classes: int, seconds: float) -> None:
    """One column per method: GFLOPs per image of the step and its parts, then x F and x the first method."""
    first = steps[0]
    size = "x".join(map(str, first.input_size))
    print(f"{first.model}, input {size}, {num_classes} classes (measured on "
          f"{', '.join(sorted({s.measured_on for s in steps}))}, batch {first.batch_size}, {seconds:.1f} s); "
          "GFLOPs per image")
    labels = [_label(s) for s in steps]
    rows = [
        ("attack steps", [f"{s.attack_steps}" for s in steps]),
        ("attack step (F + input backward)", [f"{s.attack_step_flops / 1e9:.3f}" for s in steps]),
        ("GradAlign penalty backward (double)", [f"{s.double_backward_flops / 1e9:.3f}" for s in steps]),
        ("train step, measured", [f"{s.train_step_flops / 1e9:.3f}" for s in steps]),
        ("train step, measured (x F)", [f"{s.train_step_flops / s.forward_flops:.2f}" for s in steps]),
        (f"train step (x {labels[0]})", [f"{s.train_step_flops / first.train_step_flops:.2f}" for s in steps]),
        ("2024 convention", [f"{CONVENTION[s.method]}" for s in steps]),
        ("train step, 2024 convention", [f"{s.analytic_train_step_flops / 1e9:.3f}" for s in steps]),
        ("measured / 2024 convention", [f"{s.measured_to_analytic:.3f}" for s in steps]),
    ]
    width = max(len(r[0]) for r in rows)
    col = max(9, *(len(x) for x in labels))
    print(f"{'quantity':<{width}}  " + "  ".join(f"{x:>{col}}" for x in labels))
    for name, values in rows:
        print(f"{name:<{width}}  " + "  ".join(f"{v:>{col}}" for v in values))
    print(f"{'forward (F)':<{width}}  {first.forward_flops / 1e9:>{col}.3f}  (same for every method)")
