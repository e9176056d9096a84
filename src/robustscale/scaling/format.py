"""Text for people: units of columns, compact numbers and aligned tables (used by the CLI and the report)."""
from __future__ import annotations

import math
from typing import Sequence

from .identified import LACK_OF_FIT, identify

# Units by exact column name, then by suffix.
_UNITS = {"train_flops": "FLOPs", "eval_flops": "FLOPs", "train_flops_per_image": "FLOPs/image",
          "model_parameters": "parameters", "train_images_seen": "images", "train_images": "images",
          "device_hours": "device-h", "wall_seconds": "s", "epochs": "epochs", "compute_flops": "FLOPs"}
_SUFFIX_UNITS = (("_acc", "%"), ("_usd", "USD"), ("_kwh", "kWh"), ("_kg", "kg CO2e"), ("_flops", "FLOPs"),
                 ("_seconds", "s"), ("_hours", "h"))


def unit_of(column: str) -> str:
    """``"train_flops"`` -> ``"FLOPs"``, ``"aa_robust_acc"`` -> ``"%"``, unknown -> ``""``."""
    if column in _UNITS:
        return _UNITS[column]
    for suffix, unit in _SUFFIX_UNITS:
        if column.endswith(suffix):
            return unit
    return ""


def with_unit(column: str) -> str:
    unit = unit_of(column)
    return f"{column} [{unit}]" if unit else column


def fmt(value, digits: int = 3) -> str:
    """Compact number: ``0.0562``, ``47.6``, ``3.1e+24``, ``inf``; None/NaN -> ``-``."""
    if value is None:
        return "-"
    try:
        v = float(value)
    except (TypeError, ValueError):
        return str(value)
    if math.isnan(v):
        return "-"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    if v == 0:
        return "0"
    a = abs(v)
    if a >= 1e5 or a < 1e-3:
        return f"{v:.{max(digits - 1, 0)}e}"
    return f"{v:.{digits}g}" if a < 1 else f"{v:.{max(digits, len(str(int(a))))}g}"


def fmt_ci(point, ci: tuple | None = None, digits: int = 3) -> str:
    """``"0.217 [0.005, 0.99]"`` (or just the point without an interval)."""
    if not ci:
        return fmt(point, digits)
    return f"{fmt(point, digits)} [{fmt(ci[0], digits)}, {fmt(ci[1], digits)}]"


def p_text(p: float, n_resamples: int) -> str:
    """``p = 0.03``, or ``p < 0.004`` when no bootstrap resample fell on the other side (a share of 0 of
    ``n_resamples`` says only that p is below the resolution 2 / n of a two-sided bootstrap p-value)."""
    if p != p:
        return "p = -"
    if p == 0 and n_resamples:
        return f"p < {2 / n_resamples:.2g}"
    return f"p = {p:.2g}"


def render_table(headers: Sequence[str], rows: Sequence[Sequence], right: Sequence[bool] | None = None) -> str:
    """Aligned plain-text table: text columns left, numeric-looking columns right."""
    cells = [[str(c) for c in r] for r in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    if right is None:
        right = [i > 0 for i in range(len(headers))]

    def line(values):
        return "  ".join(v.rjust(w) if r else v.ljust(w) for v, w, r in zip(values, widths, right)).rstrip()

    out = [line(headers), line(["-" * w for w in widths])]
    out += [line(r) for r in cells]
    return "\n".join(out)


# Parameters shown per law: (key in FitResult.params, header).
LAW_COLUMNS = {
    "power": (("alpha", "alpha"), ("C", "C")),
    "error-power": (("alpha", "alpha"), ("A", "A")),
    "saturating": (("alpha", "alpha"), ("E", "E [%]"), ("y_max", "max y [%]"), ("A", "A")),
    "chinchilla": (("alpha", "alpha (N)"), ("beta", "beta (D)"), ("gamma", "gamma (C)"), ("E", "E [%]"),
                   ("y_max", "max y [%]"), ("k", "k [FLOPs/(param*image)]")),
}


def _param_cell(key: str, value, ci) -> str:
    if key == "E":  # an irreducible error at the optimiser's floor (1e-6 of the smallest error) is zero
        show = lambda v: "~0" if v is not None and 0 <= v < 1e-3 else fmt(v)  # noqa: E731
        return show(value) + (f" [{show(ci[0])}, {show(ci[1])}]" if ci else "")
    return fmt_ci(value, ci)


def fits_table(fits) -> tuple[list[str], list[list[str]]]:
    """Headers and rows (strings) of a table of fits of ONE law; point [low, high] per parameter."""
    law = fits[0].law
    cols = LAW_COLUMNS[law]
    headers = ["group", "n"] + [h for _, h in cols] + ["R2", "AIC", "note"]

    rows = []
    for f in fits:
        if not f.converged:
            rows.append([f.label, str(f.n)] + ["-"] * len(cols) + ["-", "-", f"did not converge: {f.message}"])
            continue
        ident = identify(f)
        if not ident.shows_parameters:  # a law the data do not pin down: its reasons, never its numbers
            rows.append([f.label, str(f.n)] + ["-"] * len(cols) + ["-", "-", f"{ident.status}: {ident.reason}"])
            continue
        cells = [_param_cell(k, f.params.get(k), f.ci.get(k)) for k, _ in cols]
        note = []
        if ident.status == LACK_OF_FIT:
            note.append(f"lack of fit, a trend not to extrapolate: {ident.reason}")
        elif ident.unchecked:
            note.append("unchecked: no bootstrap")
        if f.n_bootstrap_failed:
            note.append(f"{f.n_bootstrap_failed}/{f.n_bootstrap} resamples unfittable")
        if f.frontier:
            note.append("frontier runs only")
        rows.append([f.label, str(f.n)] + cells + [fmt(f.r2), fmt(f.aic, 4), "; ".join(note)])
    return headers, rows


def comparisons_table(comparisons) -> tuple[list[str], list[list[str]]]:
    headers = ["a", "b", "exponent", "a - b", "95% interval" if not comparisons else
               f"{100 * comparisons[0].level:g}% interval", "p (bootstrap)"]
    rows = [[c.a, c.b, c.name, fmt(c.diff), f"[{fmt(c.low)}, {fmt(c.high)}]",
             f"< {fmt(1 / c.n, 1)}" if c.p_value == 0 and c.n else fmt(c.p_value, 2)] for c in comparisons]
    return headers, rows
