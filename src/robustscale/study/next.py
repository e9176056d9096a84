"""The study report's "what to run next": ``robustscale plan`` on the study's own runs.

For each family fitted on a robust accuracy, the planner (:func:`robustscale.plan.plan_family`, the
joint law ``100 - y = E + A N^-alpha + B D^-beta + G k^-gamma`` with its bootstrap) is asked what to
train at :data:`NEXT_FACTORS` times the family's largest run: model size, samples seen (epochs of the
training set), attack steps, and the predicted accuracy with its interval. Recipes come from the
family's own architectures only: a law fitted on these runs says nothing about other ones. Inputs the
runs do not vary are held at their value (the planner's levels); a family the planner cannot fit is
listed with the reason, never with numbers.
"""
from __future__ import annotations

from typing import Any

from ..errors import UserError
from ..plan import BudgetSpec, plan_family
from ..scaling.format import fmt, fmt_ci, render_table

NEXT_FACTORS = (2.0, 4.0, 10.0)  # budgets: multiples of the family's largest run's compute
NEXT_TOP = 3  # recipes per budget


def next_runs(df, opts, spec=None) -> list[dict[str, Any]]:
    """study.json's ``next``: per robust family ``{"family", "label", "y", "status", "reason", "budgets"}``;
    each budget as in ``robustscale plan --json`` plus ``factor_vs_largest_run``."""
    device_type = opts.device_type or (spec.cost.device_type if spec is not None else None)
    out = []
    for fam in opts.fits:
        if not fam.y.endswith("robust_acc"):
            continue
        sub = df[df["family"] == fam.label] if "family" in df.columns else fam.select(df)
        rec: dict[str, Any] = {"family": fam.name, "label": fam.label, "y": fam.y, "factors": list(NEXT_FACTORS),
                               "status": "ok", "reason": None, "budgets": [], "law": None}
        try:
            if sub.empty or not (sub["train_flops"] > 0).any():
                raise UserError(f"no finished run of family {fam.name} with measured train_flops")
            largest = float(sub["train_flops"].max())
            # the same computation as `robustscale plan --runs <the study's store>` (plan.plan_family)
            plan = plan_family(sub, [BudgetSpec("flops", f * largest) for f in NEXT_FACTORS], y=fam.y,
                               top=NEXT_TOP, bootstrap=opts.bootstrap, seed=opts.seed, device_type=device_type,
                               exclude_below=opts.exclude_below, source=f"study {spec.name if spec else ''}")
        except UserError as exc:
            rec.update(status="not identified", reason=str(exc))
            out.append(rec)
            continue
        law = plan["law"]["groups"][0] if plan["law"]["groups"] else None
        rec["law"] = law
        rec["epoch_images"] = plan["compute_model"]["epoch_images"]
        for factor, b in zip(NEXT_FACTORS, plan["budgets"]):
            b["factor_vs_largest_run"] = factor
            cond = (b.get("by_group") or [{}])[0].get("conditional")
            if not b.get("identified") and cond:  # labelled, never the optimum (identified stays False)
                b["conditional"] = cond
        rec["budgets"] = plan["budgets"]
        if not any(b.get("identified") for b in plan["budgets"]):
            rec.update(status=plan["budgets"][0].get("status", "not identified"), reason=plan["budgets"][0].get("reason"))
        out.append(rec)
    return out


def next_table(records) -> tuple[list[str], list[list[str]]]:
    """The report's table: one row per family and budget (numbers only where the optimum is identified)."""
    def ci(v, c):
        if v is None:
            return "-"
        fixed = not c or None in c or fmt(c[0]) == fmt(c[1]) == fmt(v)  # fixed by the budget (N and k held)
        return fmt_ci(v, None if fixed else tuple(c))

    headers = ["family", "budget [FLOPs]", "x largest run", "model parameters", "samples seen [95% CI]",
               "epochs (of images)",
               "attack steps", "predicted % [95% CI]", "best recipe (model, epochs, steps: predicted %)"]
    rows = []
    for r in records:
        if not r["budgets"]:
            rows.append([r["label"], "-", "-", f"{r['status']}: {r['reason']}", "", "", "", "", ""])
            continue
        for b in r["budgets"]:
            lead = [r["label"], fmt(b["budget_flops"]), fmt(b["factor_vs_largest_run"])]
            if not b.get("identified") and b.get("conditional"):
                c = b["conditional"]
                rows.append(lead + [f"{fmt(c['model_parameters'])} ({c['label']})", ci(c["samples_seen"], None),
                                    f"{fmt(c['epochs'])} (of {fmt(r.get('epoch_images'))})", fmt(c["attack_steps"]),
                                    ci(c["predicted_acc"], c["predicted_acc_ci"]), "-"])
                continue
            if not b.get("identified"):
                rows.append(lead + [f"{b.get('status', 'not identified')}: {b.get('reason')}", "", "", "", "", ""])
                continue
            best = b["recipes"][0] if b.get("recipes") else None
            recipe = (f"{best['model']}, {best['epochs']} epochs, k = {best['attack_steps']}: "
                      f"{ci(best['predicted_acc'], best['predicted_acc_ci'])}") if best else "none within the runs' range"
            rows.append(lead + [fmt(b["model_parameters"]), ci(b["samples_seen"], b["samples_seen_ci"]),
                                f"{fmt(b['epochs'])} (of {fmt(r.get('epoch_images'))})", fmt(b["attack_steps"]),
                                ci(b["predicted_acc"], b["predicted_acc_ci"]), recipe])
    return headers, rows


def format_next_table(records) -> str:
    """The terminal's version: the table without the recipe column, a family's reason on its own line."""
    if not records:
        return ""
    headers, rows = next_table(records)
    keep = [0, 1, 2, 3, 4, 5, 6, 7]
    lines = []
    table_rows = []
    for row in rows:
        if row[4] == "":  # no optimum for this family or budget: say why in one line
            lines.append(f"{row[0]}" + (f" at {row[1]} FLOPs" if row[1] != "-" else "") + f": {row[3]}")
        else:
            table_rows.append([row[i] for i in keep])
    out = ["what to run next (robustscale plan on these runs; beyond the largest run, extrapolations):"]
    if table_rows:
        out.append(render_table([headers[i] for i in keep], table_rows, right=[i > 0 for i in range(len(keep))]))
    return "\n".join(out + lines)


__all__ = ["next_runs", "next_table", "format_next_table", "NEXT_FACTORS"]
