"""``robustscale fit RUNS``: fit how robust accuracy (or cost) grows with compute, with bootstrap intervals."""
from __future__ import annotations

import json
import math
import sys

from ..errors import UserError
from ..scaling import load_runs, pairwise_comparisons, parse_mapping
from ..scaling.fit import CHINCHILLA_X, DEFAULT_X, fit_groups_partial, group_label
from ..scaling.format import comparisons_table, fits_table, render_table, with_unit
from ..scaling.identified import EXTRA_RUNS, SEED_SD_POINTS, check_seed_sd
from ..scaling.io import check_fit_columns, is_store_source, resolve_columns
from ..schema import COLLAPSE_THRESHOLD_ACC, resolve_column


DEFAULT_Y = "aa_robust_acc"  # --y of a table that is not a results store (the 2024 study's results.csv, ...)
ROBUST_METRICS = ("aa_robust_acc", "apgd_ce_robust_acc", "pgd_robust_acc")  # the strongest attack first


def exclude_threshold(args, y: str | None = None) -> float | None:
    """``--exclude-below``, or the collapse threshold for robust accuracies by default."""
    if args.exclude_below is not None:
        return args.exclude_below
    return COLLAPSE_THRESHOLD_ACC if resolve_column(y or args.y or DEFAULT_Y).endswith("robust_acc") else None


def family_metrics(df) -> dict[str, str]:
    """``{method: metric}``: what each training method of a results store is judged by when ``--y`` is not
    given, as a study judges its families: clean accuracy for standard training; for the others the strongest
    attack's robust accuracy measured on enough runs for a two-parameter law, else the one on the most runs."""
    enough = 2 + EXTRA_RUNS + 1  # a law needs more than its parameters + EXTRA_RUNS runs
    out = {}
    for method, part in df.groupby("method", sort=True):
        if method == "standard":
            out[method] = "clean_acc"
            continue
        counts = {m: int(part[m].notna().sum()) if m in part.columns else 0 for m in ROBUST_METRICS}
        out[method] = next((m for m in ROBUST_METRICS if counts[m] >= enough),
                           max(ROBUST_METRICS, key=lambda m: counts[m]))
    return out


def default_law(args, on_store: bool) -> str:
    """--law when not given: error-power on a results store (the law a study fits, identified on few runs),
    saturating with --frontier, else the command's own default."""
    if args.law:
        return args.law
    if args.frontier:
        return "saturating"
    return "error-power" if on_store else getattr(args, "law_default", None) or "power"


def fit_runs(args, df, law: str, on_store: bool):
    """Fit ``df`` under ``law`` -> ``(fits, not_fitted)``. Without --y on a results store, each training method
    with its own metric (:func:`family_metrics`), one law per method (or per --group-by within it)."""
    common = dict(law=law, x=args.x, bootstrap=args.bootstrap, seed=args.seed, frontier=args.frontier,
                  level=args.level, n_jobs=args.jobs, seed_sd=args.seed_sd,
                  progress=(not getattr(args, "json", False)) and sys.stderr.isatty())
    families = family_metrics(df) if args.y is None and on_store and "method" in df.columns else {}
    ys = [resolve_column(args.y)] if args.y else list(families.values()) or [DEFAULT_Y]
    xs = resolve_columns(args.x) or [DEFAULT_X, *CHINCHILLA_X]
    check_fit_columns(df, ys + xs, accuracies=ys)  # text, inf or fractions: refused before any fit
    if len(families) <= 1:  # one metric for all: --y, a plain table, or a store of one training method
        y = args.y or next(iter(families.values()), DEFAULT_Y)
        return fit_groups_partial(df, args.group_by, y=y, exclude_below=exclude_threshold(args, y), **common)
    fits, not_fitted, errors = [], [], []
    for method, y in families.items():
        part = df[df["method"] == method]
        try:
            f, nf = fit_groups_partial(part, args.group_by or "method", y=y, exclude_below=exclude_threshold(args, y),
                                       **common)
        except UserError as exc:  # this family cannot be fitted: said, and the others go on
            not_fitted.append(({"method": method}, str(exc)))
            errors.append(f"method={method} ({y}): {exc}")
            continue
        fits += f
        not_fitted += nf
    if not fits:
        raise UserError("no family could be fitted: " + "; ".join(errors))
    return fits, not_fitted


def check_common(args) -> None:
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

    check_seed_sd(getattr(args, "seed_sd", None), "--seed-sd")


def load_and_fit(args, law: str | None = None):
    """Load RUNS and fit per group from the common arguments -> ``(df, fits, settings dict)``."""
    check_common(args)
    df = load_runs(args.runs, parse_mapping(args.map))
    on_store = is_store_source(str(args.runs))
    law = law or default_law(args, on_store)
    # A group too small to fit is reported as not fitted; the others are fitted all the same.
    fits, not_fitted = fit_runs(args, df, law, on_store)
    ys = list(dict.fromkeys(f.y for f in fits))
    threshold = exclude_threshold(args, ys[0] if len(ys) == 1 else ROBUST_METRICS[0])
    settings = {"runs": str(args.runs), "n_runs": int(len(df)), "law": law, "y": ys[0] if len(ys) == 1 else ys,
                "y_per_group": {f.label: f.y for f in fits}, "x": fits[0].x,
                "group_by": args.group_by, "exclude_below": threshold, "bootstrap": args.bootstrap,
                "seed": args.seed, "level": args.level, "frontier": args.frontier,
                "seed_sd": SEED_SD_POINTS if args.seed_sd is None else args.seed_sd,
                "seed_sd_assumed": args.seed_sd is None,
                "not_fitted": [{"group": group_label(g), "reason": reason} for g, reason in not_fitted]}
    return df, fits, settings


def describe(settings: dict, fits) -> str:
    """Header lines saying what was fitted."""
    f = fits[0]
    x = f.x if isinstance(f.x, str) else ", ".join(f.x)
    xs = with_unit(x) if isinstance(f.x, str) else x
    excluded = sum(fi.n_excluded for fi in fits)
    ys = list(dict.fromkeys(fi.y for fi in fits))
    y_text = f"y = {with_unit(f.y)}" if len(ys) == 1 else \
        "y = each family's own metric (" + "; ".join(f"{fi.label}: {with_unit(fi.y)}" for fi in fits) + ")"
    lines = [f"law {f.law}: {f.formula}   {y_text}, x = {xs}"]
    detail = f"{settings['n_runs']} runs in {settings['runs']}; {sum(fi.n for fi in fits)} fitted"
    if settings.get("exclude_below") is not None:
        detail += f", {excluded} with {f.y if len(ys) == 1 else 'a robust accuracy'} < " \
                  f"{settings['exclude_below']:g} excluded"
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
