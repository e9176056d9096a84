"""``robustscale plan``: for a compute budget, the model size, training length and attack steps that
maximise robust accuracy under the joint law of a table of runs, with intervals and concrete recipes.

On a results store without ``--y``, each training method is planned as a study plans its families
(:func:`robustscale.plan.plan_family`, the computation of the study report's "what to run next"): on its
own metric (:func:`robustscale.commands.fit.family_metrics`), from its own runs and architectures."""
from __future__ import annotations

import json
import sys

from ..errors import UserError
from ..plan import FAMILY_BOOTSTRAP, make_plan, parse_budgets, plan_family
from ..plan.render import metric_words, render_plan
from ..scaling import load_paper_runs, load_runs, parse_mapping
from ..scaling.io import is_store_source
from ..scaling.published_runs import PAPER_URL
from .fit import DEFAULT_Y, check_common, exclude_threshold, family_metrics

PLAIN_BOOTSTRAP = 1000  # --bootstrap on a table that is not a results store


def run(args) -> int:
    budgets = parse_budgets(args.budget_flops, args.budget_gpu_hours, args.budget_usd)
    per_family = bool(args.runs) and args.y is None and is_store_source(str(args.runs))
    if args.bootstrap is None:
        args.bootstrap = FAMILY_BOOTSTRAP if per_family else PLAIN_BOOTSTRAP
    check_common(args)
    if per_family and args.group_by is not None:  # one law per method already; another grouping needs one metric
        raise UserError(f"--group-by {args.group_by} on a results store goes with --y: without it each training "
                        f"method is planned on its own metric, one law per method")
    if args.path and not args.paper_runs:
        raise UserError("--path goes with --paper-runs; for another table use --runs SOURCE")
    if args.paper_runs:
        source = args.path or PAPER_URL
        df = load_paper_runs(source)
    else:
        source = args.runs
        df = load_runs(args.runs, parse_mapping(args.map))
    common = dict(levels=[c for c in args.levels.split(",") if c.strip()], convention=args.flops_convention,
                  models=[m.strip() for m in args.models.split(",") if m.strip()] if args.models else None,
                  top=args.top, bootstrap=args.bootstrap, seed=args.seed, level=args.level, n_jobs=args.jobs,
                  max_extrapolation=args.max_extrapolation,
                  flops_per_second=args.flops_per_second, device_type=args.device_type,
                  price_preset=args.price_preset, prices=args.prices, rental=args.rental,
                  epoch_images=args.epoch_images, progress=(not args.json) and sys.stderr.isatty(),
                  source=str(source))
    if per_family and "method" in df.columns:
        return _print_families(args, df, budgets, common)
    y = args.y or DEFAULT_Y
    plan = make_plan(df, budgets, y=y, group_by=args.group_by, exclude_below=exclude_threshold(args, y),
                     conditional=args.conditional, **common)
    for line in plan.get("warnings", []):  # e.g. the runs' FLOPs per parameter disagree with the zoo's
        print(line, file=sys.stderr)
    if args.json:
        print(json.dumps(plan, indent=2, allow_nan=False))
    else:
        print(render_plan(plan))
    return 0


def _print_families(args, df, budgets, common) -> int:
    records = family_plans(df, budgets, exclude_below=args.exclude_below, **common)
    if not any(r["plan"] for r in records):
        reasons = "; ".join(f"method={r['method']} ({r['y']}): {r['reason']}" for r in records)
        raise UserError(f"no training method of {common['source']} could be planned: "
                        + (reasons or "none is judged on a robust accuracy (give --y)"))
    for r in records:
        for line in (r["plan"] or {}).get("warnings", []):
            print(f"method={r['method']}: {line}", file=sys.stderr)
    if args.json:
        print(json.dumps({"source": common["source"], "y_per_method": family_metrics(df), "families": records},
                         indent=2, allow_nan=False))
        return 0
    blocks = []
    for r in records:
        head = f"method={r['method']}, judged on {metric_words(r['y'])} (this store's metric for it; --y for another)"
        blocks.append(head + "\n" + (render_plan(r["plan"]) if r["plan"] else f"  {r['status']}: {r['reason']}"))
    print("\n\n".join(blocks))
    return 0


def family_plans(df, budgets, exclude_below=None, **common) -> list[dict]:
    """Per training method of a store judged on a robust accuracy: ``{"method", "y", "status", "reason",
    "plan"}``, the plan of :func:`plan_family` (the study's "what to run next"), or why there is none."""
    out = []
    for method, y in family_metrics(df).items():
        if not y.endswith("robust_acc"):  # standard training: nothing to plan against an attack
            continue
        rec = {"method": method, "y": y, "status": "ok", "reason": None, "plan": None}
        try:
            rec["plan"] = plan_family(df[df["method"] == method], budgets, y=y, exclude_below=exclude_below, **common)
        except UserError as exc:  # this family cannot be planned: said, and the others go on
            rec.update(status="not identified", reason=str(exc))
        out.append(rec)
    return out
