"""The parser of ``robustscale extrapolate RUNS --target 75`` (built for every start of the CLI: no heavy imports; see cli.py)."""
from __future__ import annotations

from .common import add_flops_per_second_argument

from .fit import LAW_HELP, add_common_arguments

CONVERSION_HELP = ("FLOPs -> device-hours: with --flops-per-second, FLOPs / (FLOP/s) / 3600; with --throughput, "
                   "FLOPs / (images/s x the group's median train_flops_per_image) / 3600; otherwise the median "
                   "device_hours / train_flops of the group's own runs. Device-hours -> energy (device power x "
                   "hours), CO2e and dollars through the cost model (prices.yaml, --price-preset).")


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "extrapolate", help="compute, device-hours, kWh, CO2e and dollars to reach a target robust accuracy",
        description="Solve each group's fitted law for --target (y units, e.g. 75 for 75% AutoAttack accuracy), "
                    "with a bootstrap interval, and convert the compute into device-hours, energy, emissions and "
                    "dollars. Targets above a saturating law's asymptote are reported as not reachable, with the "
                    "share of bootstrap fits that reach them. " + CONVERSION_HELP + " " + LAW_HELP)
    add_common_arguments(p, default_law="saturating", default_bootstrap=1000)
    p.add_argument("--target", type=float, required=True, help="target y, e.g. 75 (percent AutoAttack accuracy)")
    p.add_argument("--throughput", type=float, default=None, metavar="IMG_PER_S",
                   help="training images per second per device, to convert FLOPs into device-hours")
    add_flops_per_second_argument(p, "the median device_hours / train_flops of the group's own runs")
    p.add_argument("--device-type", default=None,
                   help="device type of the price table (H100, A100-80GB, ...; default: the runs' device, else gpu)")
    p.add_argument("--price-preset", default="default", help="price preset: default or paper-2024")
    p.add_argument("--prices", default=None, metavar="YAML", help="your own price table merged over prices.yaml")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON instead of the table")
    p.set_defaults(handler="run")
