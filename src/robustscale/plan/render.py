"""The plan as text for people: the law per group, the allocation exponents, then each budget."""
from __future__ import annotations

from ..report.plots import LABELS
from ..scaling.format import fmt, fmt_ci, render_table


def metric_words(y: str) -> str:
    """``"apgd_ce_robust_acc"`` -> ``"APGD-CE robust accuracy"``: the metric a plan predicts, in words."""
    return LABELS.get(y, y.replace("_", " "))


def _ci(value, ci) -> str:
    if value is None:
        return "not identified"
    return fmt_ci(value, tuple(ci) if ci and None not in ci else None)


def _law_lines(g: dict, level: str, status: dict | None) -> list[str]:
    head = f"{g['label']}: {g['n']} runs fitted, {g['n_excluded']} excluded (y < {fmt(g['exclude_below'])})"
    if not g["converged"]:
        return [head, f"  not identified: {g['message']}"]
    lines = [head, f"  {g['formula']}"]
    if status and status["status"] != "ok":  # the rulebook withholds the law's numbers: its reasons instead
        return lines + [f"  {status['status']}: {status['reason']}"]
    cells = []
    for name, value in g["params"].items():
        if name in ("a", "b"):
            continue
        share = g["share_at_bound"].get(name)
        note = f" ({100 * share:.1f}% of refits on a bound)" if share else ""
        cells.append(f"{name} = {_ci(value, g['ci'].get(name))}{note}")
    lines += [f"  {c}" for c in cells]
    lines += [f"  {name}: not identified ({why})" for name, why in g["not_identified"].items()]
    return lines


def _allocation_table(plan: dict) -> str:
    rows = []
    for r in plan["allocation"]:
        a3, a1 = r["approach3"], r["approach1"]  # approach 3 is None where the rulebook rejects the law
        rows.append([r["label"], _ci(a3["a"], a3["a_ci"]), _ci(a3["b"], a3["b_ci"]), _ci(a1["a"], a1["a_ci"]),
                     _ci(a1["b"], a1["b_ci"]), str(a1["n_frontier"])])
    ref = plan["reference"]["bartoldson2024"]
    rows.append(["Bartoldson et al. 2024", fmt(ref["a"]), fmt(ref["b"]), "-", "-", "-"])
    return render_table(["group", "a (approach 3)", "b (approach 3)", "a (approach 1)", "b (approach 1)",
                         "frontier runs"], rows)


def _budget_lines(b: dict, level: str, y: str) -> list[str]:
    lines = [f"budget {b['budget_given']['text']} = {fmt(b['budget_flops'])} FLOPs ({b['extrapolation']})"]
    if not b["identified"]:
        lines.append(f"  optimum: {b.get('status', 'not identified')}: {b['reason']}")
        for g in b["by_group"]:
            c = g.get("conditional")
            if g.get("conditional_reason"):
                lines.append(f"  {g['label']}, conditional plan: {g['conditional_reason']}")
            if c:
                lines.append(f"  {g['label']}, {c['label']}: N = {_ci(c['model_parameters'], None)} parameters, "
                             f"D = {_ci(c['samples_seen'], None)} images ({fmt(c['epochs'])} epochs), "
                             f"k = {_ci(c['attack_steps'], None)}; predicted {metric_words(y)} "
                             f"{_ci(c['predicted_acc'], c['predicted_acc_ci'])} %")
    else:
        on = ", ".join(f"{k} = {fmt(v)}" for k, v in (b.get("on_levels") or {}).items())
        ext = ", ".join(f"{k} {fmt(v)}x outside the runs" for k, v in (b.get("inputs_extrapolation") or {}).items()
                        if v is not None)
        lines.append(f"  optimum ({b['label']}): N* = {_ci(b['model_parameters'], b['model_parameters_ci'])} "
                     f"parameters, D* = {_ci(b['samples_seen'], b['samples_seen_ci'])} images "
                     f"({fmt(b['epochs'])} epochs), k* = {_ci(b['attack_steps'], b['attack_steps_ci'])}")
        lines.append(f"  predicted {metric_words(y)} {_ci(b['predicted_acc'], b['predicted_acc_ci'])} %"
                     + (f"; on observed levels {on}" if on else "") + (f"; {ext}" if ext else ""))
        for g in b["by_group"]:
            if g["label"] != b["label"]:
                lines.append(f"  {g['label']}: " + (f"{_ci(g['predicted_acc'], g['predicted_acc_ci'])} %"
                                                    if g["identified"] else f"{g['status']}: {g['reason']}"))
    if not b["recipes"]:
        lines.append("  no recipe of the zoo fits this budget within the runs' ranges")
        return lines
    rows = []
    for r in b["recipes"]:
        synth = "-" if r["synthetic_data"] is None else ("yes" if r["synthetic_data"] else "no")
        usd = "-" if r["cloud_usd_low"] is None else f"{fmt(r['cloud_usd_low'])}-{fmt(r['cloud_usd_high'])}"
        rows.append([r["model"], r["method"], str(r["attack_steps"]), str(r["epochs"]), synth,
                     _ci(r["predicted_acc"], r["predicted_acc_ci"]), fmt(r["train_flops"]),
                     f"{100 * r['budget_share']:.0f}%", fmt(r["device_hours"]), usd])
    table = render_table(["model", "method", "k", "epochs", "generated", f"predicted [%] ({level})", "FLOPs", "of budget",
                          "device-h", "cloud USD"], rows,
                         right=[False, False, True, True, False, True, True, True, True, True])
    return lines + ["  top recipes:"] + ["    " + t for t in table.splitlines()]


def render_plan(plan: dict) -> str:
    level = f"{100 * plan['level']:g}%"
    cm = plan["compute_model"]
    c_lo, c_hi = cm["flops_per_parameter_range"]
    steps = "; ".join(f"{m} step = {fmt(v['intercept'])} + {fmt(v['per_step'])} k forward passes"
                      for m, v in cm["forward_equivalents"].items())
    out = [f"joint law {plan['law']['formula']}   (y = {metric_words(plan['y'])} [%], N parameters, D samples seen, k attack steps)",
           f"{plan['n_runs']} runs in {plan['source']}; {plan['n_fitted']} fitted, {plan['n_excluded']} with y < "
           f"{fmt(plan['exclude_below'])} excluded (collapsed); {plan['bootstrap']} bootstrap resamples, {level} intervals",
           f"compute ({cm['convention']} convention): forward FLOPs per image = {fmt(cm['flops_per_parameter'])} x N "
           f"({fmt(c_lo)}-{fmt(c_hi)} over {len(cm['architectures'])} architectures); {steps}",
           f"runs' compute {fmt(plan['data_compute_range_flops'][0])}-{fmt(plan['data_compute_range_flops'][1])} FLOPs; "
           f"device-hours from {cm['hours_source']}; device {cm['device_type']}, prices {cm['price_preset']}", ""]
    for g in plan["law"]["groups"]:
        out += _law_lines(g, level, (plan.get("optimum_status") or {}).get(g["label"])) + [""]
    out += [f"allocation exponents N_opt ~ C^a, D_opt ~ C^b ({level} intervals):", _allocation_table(plan), ""]
    for a in plan["approach1"]["groups"]:
        for k in ("a_reason", "b_reason"):
            if a.get(k):
                out.append(f"  approach 1, {a['label']}: {k[0]} not identified ({a[k]})")
    for b in plan["budgets"]:
        out += [""] + _budget_lines(b, level, plan["y"])
    return "\n".join(out)
