"""``robustscale extrapolate RUNS --target 75``: what would a target robust accuracy cost?"""
from __future__ import annotations

import json

from ..errors import UserError
from ..scaling import extrapolate
from ..scaling.extrapolate import check_target
from ..scaling.format import fmt, render_table, with_unit
from ..scaling.io import is_store_source
from ..schema import resolve_column
from .fit import DEFAULT_Y, default_law, describe, load_and_fit


def run(args) -> int:
    if args.throughput is not None and args.flops_per_second is not None:
        raise UserError("give either --throughput or --flops-per-second, not both")

    # Before loading and fitting: a target no law can reach is the user's to fix, whatever the runs say.
    law = default_law(args, is_store_source(str(args.runs)))
    check_target(args.target, resolve_column(args.y or DEFAULT_Y), error_law=law in ("saturating", "chinchilla"))
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
    ys = list(dict.fromkeys(f.y for f in fits))
    what = with_unit(ys[0]) if len(ys) == 1 else "each family's own metric [%]"
    print(f"target {what} = {args.target:g}; device type {first.device_type}, "
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
