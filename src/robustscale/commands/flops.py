"""``robustscale flops``: measured FLOPs per image of a training step, next to the 2024 convention."""
from __future__ import annotations

import argparse
import json

METHODS = ("standard", "pgd", "trades", "fgsm_rs")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "flops", help="measured FLOPs per image of one training step (forward, attack step, backward)",
        description="Measure, per image, the FLOPs of a forward pass, of one attack step (forward + "
        "input-only backward), of the training backward and of one full training step of the method, "
        "with torch.utils.flop_counter on a real step of the training task (meta device: shapes only, "
        "seconds even for wide_resnet70_16). Shown next to the 2024 study's analytic convention "
        "(3F for standard, 3F(K+2) for PGD-K, 3F(K+3) for TRADES-K, 3F(1+2) for FGSM-RS) so that "
        "runs of both can share one compute axis. 1 GFLOP = 1e9 FLOPs = 0.5e9 multiply-adds.")
    p.add_argument("--model", required=True, help="timm model name, e.g. wide_resnet28_10")
    p.add_argument("--method", default="pgd", help=f"training method: {', '.join(METHODS)} (default: pgd)")
    p.add_argument("--attack-steps", type=int, default=10, metavar="K",
                   help="attack steps per training step for pgd / trades (default: 10)")
    p.add_argument("--input-size", type=int, nargs=3, default=[3, 32, 32], metavar=("C", "H", "W"),
                   help="input image size (default: 3 32 32)")
    p.add_argument("--batch-size", type=int, default=2, metavar="B",
                   help="images in the measured batch; results are per image (default: 2)")
    p.add_argument("--num-classes", type=int, default=10, metavar="N", help="classifier outputs (default: 10)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import time

    import torch

    from ..compute import measure_step_flops
    from ..config import TrainConfig
    from ..errors import UserError
    from ..models import check_model_name, create_model

    start = time.perf_counter()
    check_model_name(args.model)
    if args.num_classes < 1:
        raise UserError(f"invalid --num-classes {args.num_classes}: must be >= 1")
    if args.batch_size < 1:
        raise UserError(f"invalid --batch-size {args.batch_size}: must be >= 1")
    cfg = TrainConfig.from_dict({"model": args.model, "method": args.method, "attack_steps": args.attack_steps},
                                source="command line")
    in_chans = args.input_size[0]
    if in_chans < 1:
        raise UserError(f"invalid input size {' '.join(map(str, args.input_size))}: expected three positive "
                        "integers C H W, e.g. 3 32 32")
    try:
        with torch.device("meta"):  # no memory, no init cost: shapes only
            model = create_model(args.model, num_classes=args.num_classes, in_chans=in_chans)
    except (RuntimeError, NotImplementedError):  # a model whose init needs real tensors
        model = create_model(args.model, num_classes=args.num_classes, in_chans=in_chans)
    step = measure_step_flops(model, cfg, tuple(args.input_size), batch_size=args.batch_size, use_cache=False)
    seconds = time.perf_counter() - start

    if args.json:
        print(json.dumps({**step.to_dict(), "num_classes": args.num_classes, "seconds": seconds}, indent=2))
        return 0
    k = step.attack_steps
    conv = {"standard": "3F", "pgd": "3F(K+2)", "trades": "3F(K+3)", "fgsm_rs": "3F(1+2)"}[step.method]
    rows = [
        ("forward (F)", step.forward_flops),
        ("input-only backward (attack)", step.input_backward_flops),
        ("full backward (training)", step.full_backward_flops),
        ("attack step (F + input backward)", step.attack_step_flops),
        ("train step, measured", step.train_step_flops),
        (f"train step, 2024 convention {conv}", step.analytic_train_step_flops),
    ]
    size = "x".join(map(str, step.input_size))
    steps = f", K={k}" if step.method in ("pgd", "trades") else ""
    print(f"{step.model}, {step.method}{steps}, input {size}, {args.num_classes} classes "
          f"(measured on {step.measured_on}, batch {step.batch_size}, {seconds:.1f} s)")
    width = max(len(r[0]) for r in rows)
    print(f"{'quantity':<{width}}  {'GFLOPs/image':>13}  {'x F':>7}")
    for label, value in rows:
        print(f"{label:<{width}}  {value / 1e9:>13.3f}  {value / step.forward_flops:>7.2f}")
    print(f"{'measured / 2024 convention':<{width}}  {step.measured_to_analytic:>13.3f}")
    print(f"{'attack share of measured step':<{width}}  {step.attack_flops_fraction:>13.3f}")
    return 0
