"""What the paper reproduction computes: its constants, the result objects, labels and number formats."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from ...scaling.format import fmt, render_table
from ...scaling.identified import MAX_EXTRAPOLATION, identify
from ...schema import finite_float

DEFAULT_TARGETS = (60, 65, 70, 75)
REPORT_TITLE = "Reproducing the 2024 scaling study from its published runs"
PRICE_PRESET = "paper-2024"
LAWS = ("power", "saturating")
LAW_TITLES = {"power": "power law  AA = C·FLOPs^α", "saturating": "saturating law  100 − AA = E + A·FLOPs^−α"}
# The per-group fits: the study's grid factors other than model and attack steps.
GROUP_COLUMNS = ("method", "synthetic_data", "epochs")
PARTIAL_COLLAPSE_ACC = 30.0  # runs above the collapse threshold but this far below the rest are named
BASELINE_ARCH = "wide_resnet28_10"  # the smallest model of the grid: the model-size baseline
METHOD_NAMES = {"pgd": "PGD-AT", "trades": "TRADES"}
SYNTH_COLOR = {False: "#1f77b4", True: "#d62728"}
SYNTH_NAMES = {False: "CIFAR-10 only", True: "+ generated data"}


# ---------------------------------------------------------------------- result
@dataclass
class GroupFit:
    """The fits of one group of runs: ``fits[law]`` is a ``scaling.FitResult``;
    ``extrapolations[law][target]`` a ``scaling.Extrapolation``."""

    key: str
    label: str
    group: dict[str, Any]
    frontier: bool
    fits: dict[str, Any]
    extrapolations: dict[str, dict[float, Any]] = field(default_factory=dict)


@dataclass
class PaperReproduction:
    """What :func:`reproduce_paper` computed.

    ``runs``: the 319 runs in the run schema (plus ``architecture`` and ``activation``).
    ``groups``: the AA-vs-FLOPs fits, in report order. ``electricity``: power-law fit of
    ``electricity_usd`` vs ``train_flops``. ``tables``: the numeric tables behind the report
    (DataFrames), e.g. ``collapse``, ``generated_data_pairs``, ``generated_data_gain``.
    """

    source: str
    runs: Any
    groups: list[GroupFit]
    electricity: Any
    tables: dict[str, Any]
    sections: list  # report.Section s, in order (a report.Sections)
    targets: tuple[float, ...]
    bootstrap: int
    seed: int
    report_path: Path
    markdown_path: Path | None = None
    figure_paths: list[Path] = field(default_factory=list)
    elapsed_seconds: float = float("nan")

    def group(self, key: str) -> GroupFit:
        for g in self.groups:
            if g.key == key:
                return g
        raise KeyError(f"no group {key!r}; groups: {', '.join(g.key for g in self.groups)}")

    def summary_rows(self) -> list[dict[str, Any]]:
        """One dict per (group, law), JSON-safe (None for NaN / infinite bounds).

        Keys: ``group`` (label), ``key``, ``law``, ``n_runs`` (fitted), ``n_excluded`` (collapsed),
        ``converged``, ``message``, ``status`` / ``status_reason`` (``scaling.identified``: the numbers below are
        None for a law that is not identified, and the targets are solved only for an ``ok`` one), ``exponent`` / ``exponent_low`` / ``exponent_high`` (alpha),
        ``asymptote_acc`` / ``_low`` / ``_high`` (100 - E, saturating only), ``r2``; and per target
        T: ``reachable_T``, ``share_reachable_T`` and ``<q>_T`` / ``<q>_T_low`` / ``<q>_T_high`` for q in
        ``compute_flops``, ``device_hours``, ``energy_kwh``, ``electricity_usd``, ``cloud_usd_low``,
        ``cloud_usd_high``. ``<q>_T_high`` is None when the upper bound is infinite (too many
        bootstrap laws never reach T).
        """
        rows = []
        for g in self.groups:
            for law in LAWS:
                fit = g.fits[law]
                ident = identify(fit)
                shown = fit.converged and ident.shows_parameters  # no numbers for a law the data do not carry
                row: dict[str, Any] = {"group": g.label, "key": g.key, "law": law, "n_runs": fit.n,
                                       "n_excluded": fit.n_excluded, "converged": bool(fit.converged),
                                       "message": fit.message, "status": ident.status,
                                       "status_reason": ident.reason or None}
                lo, hi = fit.ci.get("alpha", (math.nan, math.nan)) if shown else (None, None)
                row.update(exponent=finite_float(fit.params.get("alpha") if shown else None),
                           exponent_low=finite_float(lo), exponent_high=finite_float(hi))
                if law == "saturating" and shown:
                    lo, hi = fit.ci.get("y_max", (math.nan, math.nan))
                    row.update(asymptote_acc=finite_float(fit.params.get("y_max")), asymptote_acc_low=finite_float(lo),
                               asymptote_acc_high=finite_float(hi))
                else:
                    row.update(asymptote_acc=None, asymptote_acc_low=None, asymptote_acc_high=None)
                row["r2"] = finite_float(fit.r2) if shown else None
                for t in self.targets:
                    ex = g.extrapolations[law][t]
                    tag = _tag(t)
                    row[f"reachable_{tag}"] = bool(ex.solved and ex.reachable)
                    row[f"share_reachable_{tag}"] = finite_float(ex.share_reachable)
                    row[f"status_{tag}"], row[f"reason_{tag}"] = _target_status(ex)
                    row[f"reach_{tag}"] = ex.reach or None
                    for q in SUMMARY_QUANTITIES:
                        point, low, high = ex.values.get(q, (math.nan, math.nan, math.nan))
                        row[f"{q}_{tag}"] = finite_float(point)
                        row[f"{q}_{tag}_low"] = finite_float(low)
                        row[f"{q}_{tag}_high"] = finite_float(high)
                rows.append(row)
        return rows


SUMMARY_QUANTITIES = ("compute_flops", "device_hours", "energy_kwh", "electricity_usd", "cloud_usd_low",
                      "cloud_usd_high")


def _target_status(ex) -> tuple[str, str | None]:
    """A target's status (the rulebook's: ``ok``, ``not identified``, ``lack of fit``, ``did not converge``,
    ``beyond reach``; or ``not reached``: the law's asymptote lies below it) and the reason."""
    if not ex.solved:
        return ex.status, ex.status_reason or ex.message or None
    if not ex.reachable:
        share = "" if ex.share_reachable != ex.share_reachable else \
            f"; {100 * ex.share_reachable:.0f}% of the bootstrap laws reach it"
        return "not reached", f"the fitted law never gets there{share}"
    return "ok", None


def _tag(target: float) -> str:
    return f"{target:g}"


# ---------------------------------------------------------------------- formatting
def num_text(v, digits: int = 3) -> str:
    """Compact number for tables: ``47.6``, ``3.1e+21``; None/NaN -> ``-``; inf -> ``∞``."""
    if v is not None and isinstance(v, (int, float)) and math.isinf(v):
        return "∞"
    return fmt(v, digits)


def interval_text(point, low, high, digits: int = 3) -> str:
    if low is None or (isinstance(low, float) and math.isnan(low)):
        return num_text(point, digits)
    return f"{num_text(point, digits)} [{num_text(low, digits)}, {num_text(high, digits)}]"


def pct_text(v, digits: int = 1) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.{digits}f}"


def format_summary_table(rows: Sequence[dict[str, Any]]) -> str:
    """Aligned plain-text table of :meth:`PaperReproduction.summary_rows` for the terminal:
    exponent with its interval, asymptote, and the FLOPs (and electricity USD for the last target)
    to reach each target; where there is no number, the target's status (see the legend printed under the
    table)."""
    if not rows:
        return "(no fits)"
    targets = [k[len("reachable_"):] for k in rows[0] if k.startswith("reachable_")]
    headers = ["group", "law", "runs", "alpha [95% CI]", "asymptote AA [%]"]
    headers += [f"FLOPs to {t}% AA" for t in targets]
    if targets:
        headers += [f"GPU-h to {targets[-1]}%", f"electricity to {targets[-1]}% [USD]"]
    body = []
    for r in rows:
        if not r["converged"]:
            cells = [r["group"], r["law"], str(r["n_runs"]), "fit failed", "-"] + ["-"] * len(targets)
            cells += ["-", "-"] if targets else []
            body.append(cells)
            continue
        cells = [r["group"], r["law"], str(r["n_runs"]),
                 interval_text(r["exponent"], r["exponent_low"], r["exponent_high"]),
                 interval_text(r["asymptote_acc"], r["asymptote_acc_low"], r["asymptote_acc_high"])
                 if r["asymptote_acc"] is not None else "-"]
        for t in targets:
            cells.append(num_text(r[f"compute_flops_{t}"]) if r[f"reachable_{t}"] else _target_short(r, t))
        if targets:
            t = targets[-1]
            reach = r[f"reachable_{t}"]
            cells.append(num_text(r[f"device_hours_{t}"]) if reach else "-")
            cells.append(num_text(r[f"electricity_usd_{t}"]) if reach else "-")
        body.append(cells)
    right = [False, False] + [True] * (len(headers) - 2)
    return render_table(headers, body, right) + "\n" + TARGET_LEGEND


# The short cells of a target without a number, and what they mean (printed under the table).
TARGET_SHORT = {"not identified": "not ident.", "lack of fit": "lack of fit", "did not converge": "no fit",
                "beyond reach": "refused", "not reached": "not reached"}
TARGET_LEGEND = ("targets without a number: 'not ident.' the law is not identified and 'lack of fit' the runs "
                 "reject it (scaling.identified; reasons in the report and --json); 'refused' its compute lies beyond "
                 f"the refusal limit of {MAX_EXTRAPOLATION:g}x the largest fitted run; 'not reached (p%)' the law's "
                 "asymptote lies below the target (p: share of bootstrap laws that reach it). A number beyond the "
                 "largest run is an extrapolation (its factor is in the report).")


def _target_short(row, t) -> str:
    status = row.get(f"status_{t}", "not reached")
    cell = TARGET_SHORT.get(status, status)
    share = row.get(f"share_reachable_{t}")
    if status == "not reached" and share is not None:
        cell += f" ({100 * share:.0f}%)"
    return cell


# ---------------------------------------------------------------------- labels
def arch_label(arch: str) -> str:
    """``wide_resnet34_20`` -> ``WRN-34-20``."""
    parts = arch.replace("wide_resnet", "").split("_")
    return "WRN-" + "-".join(parts) if arch.startswith("wide_resnet") else arch


def group_label(group: dict[str, Any]) -> str:
    return (f"{METHOD_NAMES.get(group['method'], group['method'])}, "
            f"{'generated data' if group['synthetic_data'] else 'no generated data'}, {group['epochs']} ep")


def group_key(group: dict[str, Any]) -> str:
    return f"{group['method']}-{'synth' if group['synthetic_data'] else 'nosynth'}-{group['epochs']}ep"

