"""The parser of ``robustscale flops`` (built for every start of the CLI: no heavy imports; see cli.py)."""
from __future__ import annotations

import argparse


METHODS = ("standard", "pgd", "trades", "fgsm_rs", "n_fgsm", "grad_align")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "flops", help="measured FLOPs per image of one training step (forward, attack step, backward)",
        description="Measure, per image, the FLOPs of a forward pass, of one attack step (forward + "
        "input-only backward), of the training backward and of one full training step of the method, "
        "with torch.utils.flop_counter on a real step of the training task (meta device: shapes only, "
        "seconds even for wide_resnet70_16). Shown next to the 2024 study's analytic convention "
        "(3F for standard, 3F(K+2) for PGD-K, 3F(K+3) for TRADES-K, 3F(1+2) for FGSM-RS and N-FGSM, "
        "3F(1+3) for GradAlign) so that runs of both can share one compute axis. Several methods side by "
        "side: --method fgsm_rs n_fgsm grad_align pgd2 pgd10. 1 GFLOP = 1e9 FLOPs = 0.5e9 multiply-adds.")
    p.add_argument("--model", required=True, help="timm model name, e.g. wide_resnet28_10")
    p.add_argument("--method", nargs="+", default=["pgd"], metavar="METHOD",
                   help=f"training method(s): {', '.join(METHODS)}; pgd / trades may carry their K, e.g. pgd2 "
                   "(default: pgd)")
    p.add_argument("--attack-steps", type=int, default=10, metavar="K",
                   help="attack steps per training step for pgd / trades without a K of their own (default: 10)")
    p.add_argument("--input-size", type=int, nargs=3, default=[3, 32, 32], metavar=("C", "H", "W"),
                   help="input image size (default: 3 32 32)")
    p.add_argument("--batch-size", type=int, default=2, metavar="B",
                   help="images in the measured batch; results are per image (default: 2)")
    p.add_argument("--num-classes", type=int, default=10, metavar="N", help="classifier outputs (default: 10)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table (a list for several methods)")
    p.set_defaults(handler="run")
