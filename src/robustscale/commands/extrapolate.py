"""``robustscale extrapolate RUNS --target 75``: what would a target robust accuracy cost?"""
from __future__ import annotations

import json

from .fit import LAW_HELP, add_common_arguments, describe, load_and_fit

CONVERSION_HELP = ("FLOPs -> device-hours: with --flops-per-second, FLOPs / (FLOP/s) / 3600; with --throughput, "
                   "FLOPs / (images/s x the group's median train_flops_per_image) / 3600; otherwise the median "
                   "device_hours / train_flops of the group's own runs. Device-hours -> energy (device power x "
                   "hours), CO2e and dollars through the cost model (prices.yaml, --price-preset).")


def run(args) -> int:
    from ..errors import UserError
    from ..scaling import extrapolate
    from ..scaling.format import fmt, render_table, with_unit

    if args.throughput is not None and args.flops_per_second is not None:
        raise UserError("give either --throughput or --flops-per-second, not both")
    from ..scaling.extrapolate import check_target
    from ..schema import resolve_column

    # Before loading and fitting: a target no law can reach is the user's to fix, whatever the runs say.
    check_target(args.target, resolve_column(args.y), error_law=args.law in ("saturating", "chinchilla"))
    df, fits, settings = load_and_fit(args)
    results = extrapolate(fits, args.target, df, flops_per_second=args.flops_per_second,
                          throughput=args.throughput, device_type=args.device_type, price_preset=args.price_preset,
                          prices_path=args.prices)
    if args.json:
        print(json.dumps({**settings, "target": args.target, "fits": [f.to_dict() for f in fits],
                          "extrapolations": [r.to_dict() for r in results]}, indent=2))
        return 0
    print(describe(settings, fits))
    first = results[0]
    print(f"target {with_unit(fits[0].y)} = {args.target:g}; device type {first.device_type}, "
          f"price preset {first.price_preset}")
    level = f"{100 * args.level:g}%"
    for r in results:
        print()
        print(r.group)
        if not r.converged:
            print(f"  fit did not converge: {r.message}")
            continue
        if r.status == "beyond reach":
            print(f"  {args.target:g} refused: {r.status_reason}")
            continue
        if not r.solved:
            print(f"  not extrapolated: the law's status is {r.status} ({r.status_reason})")
            continue
        if not r.reachable:
            y_max, lo, hi = r.asymptote
            ci = f" [{fmt(lo)}, {fmt(hi)}]" if lo == lo else ""
            share = "" if r.share_reachable != r.share_reachable else \
                f"; reachable in {100 * r.share_reachable:.1f}% of bootstrap fits"
            if r.law == "power":
                print(f"  not reachable under this law (it does not increase with compute{share})")
            else:
                print(f"  not reachable under this law: asymptote {fmt(y_max)}{ci} < {args.target:g}{share}")
            continue
        where = f"{r.reach} ({fmt(r.largest_run_flops)} FLOPs)"
        print(f"  reachable in {100 * r.share_reachable:.1f}% of bootstrap fits; {where}"
              if r.share_reachable == r.share_reachable else f"  {where}")
        rows = []
        names = {"compute_flops": "compute [FLOPs]", "device_hours": "device-hours [h]", "energy_kwh": "energy [kWh]",
                 "emissions_kg": "emissions [kg CO2e]", "electricity_usd": "electricity [USD]",
                 "cloud_usd_low": "cloud rental, low [USD]", "cloud_usd_high": "cloud rental, high [USD]"}
        for key, label in names.items():
            point, lo, hi = r.values[key]
            rows.append([label, fmt(point), fmt(lo), fmt(hi)])
        table = render_table(["quantity", "estimate", f"{level} low", f"{level} high"], rows)
        print("\n".join("  " + line for line in table.splitlines()))
        if r.optimal_split:
            print(f"  compute-optimal split: {fmt(r.optimal_split['model_parameters'])} parameters x "
                  f"{fmt(r.optimal_split['train_images_seen'])} images seen")
        print(f"  hours from {r.conversion}")
    return 0


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
    p.add_argument("--flops-per-second", type=float, default=None, metavar="FLOPS",
                   help="achieved training FLOP/s per device, to convert FLOPs into device-hours")
    p.add_argument("--device-type", default=None,
                   help="device type of the price table (H100, A100-80GB, ...; default: the runs' device, else gpu)")
    p.add_argument("--price-preset", default="default", help="price preset: default or paper-2024")
    p.add_argument("--prices", default=None, metavar="YAML", help="your own price table merged over prices.yaml")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON instead of the table")
    p.set_defaults(func=run)
