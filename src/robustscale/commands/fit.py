"""``robustscale fit RUNS``: fit how robust accuracy (or cost) grows with compute, with bootstrap intervals."""
from __future__ import annotations

import argparse
import json
import math
import sys

LAW_CHOICES = ("power", "error-power", "saturating", "chinchilla")
LAW_HELP = ("power: y = C x^alpha (least squares in log space); error-power: 100 - y = A x^-alpha (least "
            "squares on log error; the error falls towards 0); saturating: 100 - y = E + A x^-alpha "
            "(accuracy saturates at 100 - E; Huber fit on log error); chinchilla: 100 - y = E + A/N^alpha + "
            "B/D^beta with N = model_parameters, D = train_images_seen")


def add_common_arguments(p: argparse.ArgumentParser, default_law: str | None, default_bootstrap: int) -> None:
    """Arguments shared by fit, extrapolate and report."""
    p.add_argument("runs", metavar="RUNS",
                   help="runs table: .csv/.parquet (schema.RUN_COLUMNS or the 2024 study's results.csv), "
                        "a results store (sqlite:///runs.db, postgresql://..., or a *.db path)")
    p.add_argument("--x", default=None,
                   help="compute column (default train_flops [FLOPs]; chinchilla: model_parameters,train_images_seen)")
    p.add_argument("--y", default="aa_robust_acc", help="metric column (default aa_robust_acc [%%])")
    p.add_argument("--law", choices=LAW_CHOICES, default=default_law,
                   help=f"law form (default {default_law or 'power; saturating with --frontier'}). {LAW_HELP}")
    p.add_argument("--group-by", default=None, metavar="COLS",
                   help="fit one law per group, e.g. at,synthetic_data (paper aliases accepted)")
    p.add_argument("--exclude-below", type=float, default=None, metavar="Y",
                   help="drop runs whose y is below Y (default: 10 for robust accuracies, i.e. collapsed runs; "
                        "0 keeps them)")
    p.add_argument("--bootstrap", type=int, default=default_bootstrap, metavar="B",
                   help=f"case-resampling bootstrap resamples for the intervals (default {default_bootstrap}; 0: none)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    p.add_argument("--level", type=float, default=0.95, help="interval level (default 0.95)")
    p.add_argument("--frontier", action="store_true",
                   help="fit only the Pareto frontier (best y at or below each x), recomputed in every resample")
    p.add_argument("--map", action="append", default=[], metavar="OLD=NEW",
                   help="rename a column of RUNS (repeatable or comma-separated), e.g. --map flops=train_flops")
    p.add_argument("--jobs", type=int, default=None, help="bootstrap worker processes (default: the idle cores)")
    add_seed_sd_argument(p)


def add_seed_sd_argument(p: argparse.ArgumentParser) -> None:
    from ..scaling.identified import SEED_SD_POINTS

    p.add_argument("--seed-sd", type=float, default=None, metavar="POINTS",
                   help=f"seed-to-seed SD of one run's accuracy that the lack-of-fit test allows beside each point's "
                        f"binomial noise (default: measured from configurations run with several seeds, else "
                        f"{SEED_SD_POINTS:g}, assumed)")


def exclude_threshold(args) -> float | None:
    """``--exclude-below``, or the collapse threshold for robust accuracies by default."""
    from ..schema import COLLAPSE_THRESHOLD_ACC, resolve_column

    if args.exclude_below is not None:
        return args.exclude_below
    return COLLAPSE_THRESHOLD_ACC if resolve_column(args.y).endswith("robust_acc") else None


def check_common(args) -> None:
    from ..errors import UserError

    if args.bootstrap < 0:
        raise UserError(f"invalid --bootstrap {args.bootstrap}: must be >= 0")
    if not (0 < args.level < 1):
        raise UserError(f"invalid --level {args.level}: must be in (0, 1), e.g. 0.95")
    if args.jobs is not None and args.jobs < 1:
        raise UserError(f"invalid --jobs {args.jobs}: must be >= 1")
    if getattr(args, "seed", 0) is not None and getattr(args, "seed", 0) < 0:
        raise UserError(f"invalid --seed {args.seed}: must be >= 0")
    if getattr(args, "exclude_below", None) is not None and not math.isfinite(args.exclude_below):
        raise UserError(f"invalid --exclude-below {args.exclude_below}: must be a finite accuracy in percent, e.g. 10")
    from ..scaling.identified import check_seed_sd

    check_seed_sd(getattr(args, "seed_sd", None), "--seed-sd")


def load_and_fit(args, law: str | None = None):
    """Load RUNS and fit per group from the common arguments -> ``(df, fits, settings dict)``."""
    from ..scaling import load_runs, parse_mapping
    from ..scaling.fit import fit_groups_partial, group_label
    from ..scaling.identified import SEED_SD_POINTS

    check_common(args)
    df = load_runs(args.runs, parse_mapping(args.map))
    law = law or args.law or ("saturating" if args.frontier else "power")
    threshold = exclude_threshold(args)
    # A group too small to fit is reported as not fitted; the others are fitted all the same.
    fits, not_fitted = fit_groups_partial(
        df, args.group_by, law=law, x=args.x, y=args.y, bootstrap=args.bootstrap, seed=args.seed,
        frontier=args.frontier, exclude_below=threshold, level=args.level, n_jobs=args.jobs, seed_sd=args.seed_sd,
        progress=(not getattr(args, "json", False)) and sys.stderr.isatty())
    settings = {"runs": str(args.runs), "n_runs": int(len(df)), "law": law, "y": fits[0].y, "x": fits[0].x,
                "group_by": args.group_by, "exclude_below": threshold, "bootstrap": args.bootstrap,
                "seed": args.seed, "level": args.level, "frontier": args.frontier,
                "seed_sd": SEED_SD_POINTS if args.seed_sd is None else args.seed_sd,
                "seed_sd_assumed": args.seed_sd is None,
                "not_fitted": [{"group": group_label(g), "reason": reason} for g, reason in not_fitted]}
    return df, fits, settings


def describe(settings: dict, fits) -> str:
    """Header lines saying what was fitted."""
    from ..scaling.format import with_unit

    f = fits[0]
    x = f.x if isinstance(f.x, str) else ", ".join(f.x)
    xs = with_unit(x) if isinstance(f.x, str) else x
    excluded = sum(fi.n_excluded for fi in fits)
    lines = [f"law {f.law}: {f.formula}   y = {with_unit(f.y)}, x = {xs}"]
    detail = f"{settings['n_runs']} runs in {settings['runs']}; {sum(fi.n for fi in fits)} fitted"
    if settings.get("exclude_below") is not None:
        detail += f", {excluded} with {f.y} < {settings['exclude_below']:g} excluded"
    if settings["bootstrap"]:
        detail += f"; {settings['bootstrap']} bootstrap resamples, {100 * settings['level']:g}% intervals"
    else:
        detail += "; no bootstrap (no intervals)"
    if any(fi.n_examples is not None for fi in fits):
        value = settings["seed_sd"]
        sd = (f"measured where a configuration ran with several seeds, else {value:g} points (assumed)"
              if settings["seed_sd_assumed"] else f"of {value:g} points (given)")
        detail += f"; lack-of-fit test: each point's binomial noise (its test images) and a seed SD {sd}"
    skipped = [f"not fitted: {n['group']}: {n['reason']}" for n in settings.get("not_fitted", [])]
    return "\n".join(lines + [detail] + skipped)


def run(args) -> int:
    from ..scaling import pairwise_comparisons
    from ..scaling.format import comparisons_table, fits_table, render_table

    df, fits, settings = load_and_fit(args)
    comparisons = pairwise_comparisons(fits)
    if args.json:
        print(json.dumps({**settings, "fits": [f.to_dict() for f in fits],
                          "comparisons": [c.to_dict() for c in comparisons]}, indent=2))
        return 0
    print(describe(settings, fits))
    print()
    headers, rows = fits_table(fits)
    print(render_table(headers, rows, right=[False] + [True] * (len(headers) - 2) + [False]))
    if comparisons:
        print()
        print(f"exponent differences (a - b), {100 * args.level:g}% bootstrap intervals:")
        print(render_table(*comparisons_table(comparisons), right=[False, False, False, True, True, True]))
    failed = [f for f in fits if not f.converged]
    if failed:
        print(f"\n{len(failed)} fit(s) did not converge; their parameters are not shown.", file=sys.stderr)
    return 0


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "fit", help="fit robust accuracy (or cost) vs compute: power / saturating / chinchilla laws",
        description="Fit how a metric (default AutoAttack accuracy, %) grows with compute (default total "
                    "training FLOPs), per group, with case-resampling bootstrap intervals. " + LAW_HELP)
    add_common_arguments(p, default_law=None, default_bootstrap=1000)
    p.add_argument("--json", action="store_true", help="print machine-readable JSON instead of the table")
    p.set_defaults(func=run)
