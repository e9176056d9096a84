"""A study's laws: fit each family, decide whether the data identify the law, extrapolate, and say it.

Only identified laws (:func:`robustscale.scaling.identified.identify`) carry numbers: their exponent,
asymptote and compute-to-target each with its bootstrap interval, and each target with how far it
reaches beyond the largest run (``identified.reach``: every target beyond it is labelled an extrapolation,
and one beyond the refusal limit is refused with its reason and no number). The others
are listed with the reason. ``fit_records`` is study.json's ``fits``; ``format_study_table`` prints them.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

from ..errors import UserError
from ..scaling import compare_exponents, extrapolate, fit_law
from ..scaling.backtest import backtest
from ..scaling.extrapolate import EXTRAPOLATION_FACTOR
from ..scaling.format import p_text
from ..scaling.identified import BEYOND_REACH, NOT_IDENTIFIED, OK, asymptote, identify
from ..schema import COLLAPSE_THRESHOLD_ACC
from ..schema import finite_float as _num

TARGET_QUANTITIES = ("compute_flops", "device_hours", "energy_kwh", "electricity_usd", "cloud_usd_high")


def family_runs(df, fam, opts):
    """``(runs of family fam, exclude_below)``: a robust accuracy drops collapsed runs unless the study says."""
    sub = df[df["family"] == fam.label] if "family" in df.columns else fam.select(df)
    exclude = opts.exclude_below
    if exclude is None and fam.y.endswith("robust_acc"):
        exclude = COLLAPSE_THRESHOLD_ACC
    return sub, exclude


def study_backtests(df, opts) -> dict[str, dict[str, Any]]:
    """The study's own back-test (``scaling.backtest``, split by compute: fit the cheapest two thirds of each
    family, predict the rest): ``{law: {family: Backtest | reason}}``, a reason where the split leaves too few runs."""
    out: dict[str, dict[str, Any]] = {}
    for law in opts.laws:
        out[law] = {}
        for i, fam in enumerate(opts.fits):
            sub, exclude = family_runs(df, fam, opts)
            try:
                (bt,) = backtest(sub, "compute", laws=[law], x=opts.x, y=fam.y, bootstrap=opts.bootstrap,
                                 seed=opts.seed + 200 + i, exclude_below=exclude, seed_sd=opts.seed_sd)
                bt.group = {"family": fam.label}
                out[law][fam.name] = bt
            except UserError as exc:
                out[law][fam.name] = str(exc)
    return out


def backtest_records(backtests: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """study.json's ``backtests``: one record per law and family (``status``/``reason`` where none ran)."""
    out = []
    for law, fams in backtests.items():
        for name, bt in fams.items():
            out.append({"law": law, "family": name, **(bt.to_dict() if not isinstance(bt, str) else
                                                       {"status": "not back-tested", "reason": bt})})
    return out


def fit_study(df, opts, spec=None, backtests: dict[str, dict[str, Any]] | None = None):
    """Fit every family under every law; compare exponents of identified laws; extrapolate identified ones.

    Returns ``(fits, comparisons, extrapolations)``: ``fits[law][family]`` is a FitResult or the
    UserError that prevented the fit; ``extrapolations[law][target]`` lists Extrapolation objects.
    ``backtests`` (:func:`study_backtests`): each target's label says whether it lies within the reach over
    which the family's back-test held.
    """
    fits: dict[str, dict[str, Any]] = {}
    comparisons: dict[str, Any] = {}
    extrapolations: dict[str, dict[float, list]] = {}
    device_type = opts.device_type or (spec.cost.device_type if spec is not None else None)
    preset = opts.price_preset or (spec.cost.price_preset if spec is not None else "default")
    for law in opts.laws:
        fits[law] = {}
        for i, fam in enumerate(opts.fits):
            sub, exclude = family_runs(df, fam, opts)
            try:
                fit = fit_law(sub, law=law, x=opts.x, y=fam.y, bootstrap=opts.bootstrap, seed=opts.seed + i,
                              exclude_below=exclude, group={"family": fam.label}, seed_sd=opts.seed_sd)
            except UserError as exc:  # too few usable runs in this family: said in the report, the others go on
                fit = exc
            fits[law][fam.name] = fit
        identified = {name: f for name, f in fits[law].items() if not isinstance(f, Exception) and identify(f).ok}
        comparisons[law] = None
        if opts.compare and all(n in identified for n in opts.compare):
            comparisons[law] = compare_exponents(*(identified[n] for n in opts.compare), name=None)
        reaches = {name: _reach_of((backtests or {}).get(law, {}).get(name)) for name in identified}
        extrapolations[law] = {t: [extrapolate(f, t, df, device_type=device_type, price_preset=preset,
                                               backtested_reach=reaches[name])[0] for name, f in identified.items()]
                               for t in opts.targets}
    return fits, comparisons, extrapolations


def _reach_of(bt) -> float | None:
    return bt.reach() if bt is not None and not isinstance(bt, str) and bt.status == OK else None


def _target_record(ex) -> dict[str, Any]:
    """A target's record: ``status`` (``ok``, or the rulebook's ``beyond reach`` with its ``reason``), ``reachable``,
    and for a solved, reachable target the compute with its interval, factor and ``reach`` label."""
    refused = ex.status == BEYOND_REACH
    rec: dict[str, Any] = {"target": ex.target, "status": ex.status, "reason": ex.status_reason or None,
                           "reachable": bool(ex.reachable and not refused),
                           "share_reachable": _num(ex.share_reachable)}
    if ex.solved and ex.reachable:
        point, lo, hi = ex.values["compute_flops"]
        rec.update(compute_flops=_num(point), compute_flops_ci=[_num(lo), _num(hi) if hi != math.inf else "inf"],
                   factor_vs_largest_run=_num(ex.factor), extrapolation=bool(ex.is_extrapolation), reach=ex.reach)
        for q in TARGET_QUANTITIES[1:]:
            if q in ex.values:
                rec[q] = _num(ex.values[q][0])
    return rec


def fit_records(df, opts, fits, extrapolations) -> list[dict[str, Any]]:
    """study.json's ``fits``: per family and law the status, reason, runs, x range, and (identified only)
    parameters, intervals, asymptote and targets. Each fitted point is listed with its ``n_examples``."""
    out = []
    for law, fams in fits.items():
        for fam in opts.fits:
            fit = fams[fam.name]
            rec: dict[str, Any] = {"family": fam.name, "label": fam.label, "law": law, "y": fam.y, "x": opts.x}
            if isinstance(fit, Exception):
                rec.update(status=NOT_IDENTIFIED, reason=str(fit), n=int((df["family"] == fam.label).sum()),
                           x_min=None, x_max=None, params={}, ci={}, asymptote=None, targets=[], points=[])
                out.append(rec)
                continue
            ident = identify(fit)
            rec.update(ident.to_dict(), n=fit.n, x_min=_num(fit.x_range[0]), x_max=_num(fit.x_range[1]),
                       points=_points(df, fit, fam.y))
            if ident.ok:
                rec.update(params={k: _num(v) for k, v in fit.params.items()},
                           ci={k: [_num(lo), _num(hi)] for k, (lo, hi) in fit.ci.items()},
                           asymptote=asymptote(fit),
                           targets=[_target_record(ex) for t, exs in extrapolations[law].items()
                                    for ex in exs if ex.group == fit.label])
            else:
                rec.update(params={}, ci={}, asymptote=None, targets=[])
            out.append(rec)
    return out


def _points(df, fit, y: str) -> list[dict[str, Any]]:
    rows = df.loc[fit.fitted_index]
    n_col = f"{y}_n_examples"
    return [{"name": str(r["name"]), "x": _num(r[fit.x]), "y": _num(r[y]),
             "n_examples": int(r[n_col]) if n_col in rows.columns and r[n_col] == r[n_col] and r[n_col] is not None
             else None} for _, r in rows.iterrows()]


def comparison_records(opts, comparisons) -> list[dict[str, Any]]:
    out = []
    for law, comp in comparisons.items():
        if comp is not None:
            out.append({"law": law, "a": opts.compare[0], "b": opts.compare[1], "exponent": comp.name,
                        "diff": _num(comp.diff), "ci": [_num(comp.low), _num(comp.high)],
                        "p_value": _num(comp.p_value), "n_bootstrap": comp.n})
    return out


# ---------------------------------------------------------------------- the terminal table
def asymptote_text(asym: dict[str, Any] | None) -> str:
    """``78.1 [70.2, 90.3]``, ``100 (assumed)`` for a law that fixes it, ``none (unbounded)`` for one without."""
    asym = asym or {}
    if asym.get("value") is None:
        return "none (unbounded)"
    if asym.get("assumed"):
        return f"{_g(asym['value'])} (assumed by the law)"
    return _ci(asym["value"], asym.get("ci"))


def _g(v, spec=".3g") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if v == "inf" or v == math.inf:
        return "inf"
    return format(v, spec)


def _ci(point, ci, spec=".3g") -> str:
    if point is None:
        return "-"
    return f"{_g(point, spec)} [{_g(ci[0], spec)}, {_g(ci[1], spec)}]" if ci else _g(point, spec)


def format_study_table(records: Sequence[dict[str, Any]], comparisons: Sequence[dict[str, Any]] = ()) -> str:
    """Per law and family: runs, exponent [95% CI], asymptote [95% CI], then one line per target with the
    compute [95% CI] and its factor over the largest run. Laws that are not identified get one line with
    the reason (no numbers); free text never widens the columns."""
    headers = ["law", "family", "runs", "exponent [95% CI]", "asymptote % [95% CI]", "target", "FLOPs [95% CI]",
               "x largest run"]
    body: list[list[str]] = []
    free: dict[int, str] = {}
    for r in records:
        lead = [r["law"], r["family"], str(r.get("n", "-"))]
        if r["status"] != OK:
            free[len(body)] = f"{r['status']}: {r.get('reason') or ''}".rstrip(": ")
            body.append(lead + [""] * 5)
            continue
        exp_name = "alpha"
        head = lead + [_ci(r["params"].get(exp_name), r["ci"].get(exp_name)), asymptote_text(r.get("asymptote"))]
        targets = r.get("targets") or [None]
        for i, t in enumerate(targets):
            cells = head if i == 0 else [""] * len(head)
            if t is None:
                body.append(cells + ["-", "-", "-"])
            elif t.get("status") == BEYOND_REACH:
                free[len(body)] = f"refused: {t.get('reason')}"
                body.append(cells + [f"{t['target']:g}%", "", ""])
            elif not t["reachable"]:
                share = t.get("share_reachable")
                free[len(body)] = f"not reachable" + (f" ({100 * share:.0f}% of resampled laws reach it)"
                                                      if share is not None else "")
                body.append(cells + [f"{t['target']:g}%", "", ""])
            else:
                label = "x" + _g(t["factor_vs_largest_run"]) + (" extrapolation" if t["extrapolation"] else "")
                label = t.get("reach") or label
                body.append(cells + [f"{t['target']:g}%", _ci(t["compute_flops"], t["compute_flops_ci"], ".2e"),
                                     label])
    for c in comparisons:
        free[len(body)] = (f"difference of exponents ({c['a']} - {c['b']}): {c['diff']:+.3g} "
                           f"[{c['ci'][0]:+.3g}, {c['ci'][1]:+.3g}], {p_text(c['p_value'], c.get('n_bootstrap', 0))}")
        body.append([c["law"], "comparison", ""] + [""] * 5)
    return _render(headers, body, free)


def _render(headers: list[str], body: list[list[str]], free: dict[int, str]) -> str:
    def kept(j: int, row: list[str]) -> int:
        if j not in free:
            return len(row)
        return 6 if row[5] else 3  # a target line keeps its target column; others keep law/family/runs

    widths = [max([len(h)] + [len(row[i]) for j, row in enumerate(body) if i < kept(j, row)])
              for i, h in enumerate(headers)]
    out = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip()]
    for j, row in enumerate(body):
        k = kept(j, row)
        line = "  ".join(c.ljust(w) for c, w in zip(row[:k], widths[:k]))
        out.append((line + ("  " + free[j] if j in free else "")).rstrip())
    return "\n".join(out)


__all__ = ["fit_study", "study_backtests", "backtest_records", "fit_records", "comparison_records", "format_study_table", "asymptote_text",
           "EXTRAPOLATION_FACTOR"]
