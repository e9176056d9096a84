"""One self-contained HTML report (inline CSS, figures embedded as base64 PNG).

:func:`write_report` fits the laws, extrapolates to a target and writes the fits table, the
figures and the extrapolation table; callers (e.g. the ``study`` command) add their own
:class:`Section` s (title + HTML or text + a table + figures), which are appended in order.
"""
from __future__ import annotations

import base64
import datetime as dt
import html
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .. import __version__
from ..errors import UserError
from ..rundir import write_text
from ..scaling import extrapolate, fit_groups, pairwise_comparisons
from ..scaling.format import comparisons_table, fits_table, fmt
from ..schema import COLLAPSE_THRESHOLD_ACC, resolve_column
from . import plots
from .markdown import markdown_to_html
from .plots import figure_png, save_figure

CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;
color:#222;line-height:1.45}
h1{font-size:1.6em;margin-bottom:.2em}h2{font-size:1.25em;border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}
h3{font-size:1.05em;margin-top:1.4em}
div.tbl{max-width:100%;overflow-x:auto;margin:.6em 0}
table{border-collapse:collapse;font-size:.85em}
th,td{border:1px solid #ddd;padding:.25em .55em;text-align:right;white-space:nowrap}
th{background:#f4f4f4;white-space:normal;vertical-align:bottom}td.l,th.l{text-align:left}
td.i{white-space:normal;min-width:5em}
td.t{white-space:normal;text-align:left;overflow-wrap:anywhere;max-width:22em}
td.w{white-space:normal;text-align:left;min-width:16em}
tr:nth-child(even) td{background:#fafafa}figure{margin:1em 0}figure img{max-width:100%;border:1px solid #eee}
figcaption{font-size:.85em;color:#555}.meta{color:#666;font-size:.9em}.note{color:#a33}
code{background:#f4f4f4;padding:0 .2em}
"""


@dataclass
class Section:
    """A report section: ``title``, then ``html`` (trusted), ``markdown`` (the constructs of
    :func:`~robustscale.report.markdown.markdown_to_html`) or ``text`` (escaped, blank-line paragraphs),
    a ``table`` (DataFrame, or ``(headers, rows)``), and ``figures`` (Figure, ``(caption, Figure)`` or
    ``(caption, Figure, file_name)``). ``level`` 2 is a section, 3 a sub-section."""

    title: str
    html: str | None = None
    text: str | None = None
    table: Any = None
    figures: list = field(default_factory=list)
    level: int = 2
    markdown: str | None = None
    wrap: tuple = ()  # table columns whose text wraps


class Sections(list):
    """A list of :class:`Section` written block by block, in reading order.

    ``section(title)`` opens a section; ``text(markdown)`` adds prose (in a new untitled sub-section once
    the current one has a table or figures); ``table(df, caption)`` opens a sub-section titled by its
    caption; ``figure(fig, name, caption)`` joins the current (sub-)section.
    """

    def section(self, title: str) -> Section:
        self.append(Section(title, level=2))
        return self[-1]

    def text(self, markdown: str) -> None:
        cur = self[-1]
        if cur.table is not None or cur.figures:
            cur = Section("", level=3)
            self.append(cur)
        cur.markdown = markdown if cur.markdown is None else f"{cur.markdown}\n\n{markdown}"

    def table(self, df, caption: str = "") -> None:
        self.append(Section(caption, table=df, level=3))

    def figure(self, fig, name: str, caption: str) -> None:
        self[-1].figures.append((caption, fig, name))


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:60] or "figure"


def cell_text(value) -> str:
    """A table cell: numbers to 3 significant digits (``scaling.format.fmt``), None/NaN as ``-``."""
    if value is None or isinstance(value, bool):
        return "-" if value is None else str(value)
    if isinstance(value, (int, float)) or hasattr(value, "dtype"):
        try:
            return fmt(float(value)) if not float(value).is_integer() or abs(float(value)) >= 1e5 \
                else str(int(value))
        except (TypeError, ValueError, OverflowError):
            return str(value)
    return str(value)


def table_html(table, wrap: Sequence[int] = ()) -> str:
    """HTML of a DataFrame or ``(headers, rows)``; first column left-aligned, numbers to 3 significant
    digits; columns in ``wrap`` (indices) wrap their text (long reasons) instead of widening the table."""
    if table is None:
        return ""
    if hasattr(table, "columns"):
        headers = [str(c) for c in table.columns]
        rows = list(table.itertuples(index=False))
    else:
        headers, rows = table

    texts = [[cell_text(c) for c in r] for r in rows]
    # A column of text (names, recipes, reasons) is left-aligned and wraps within its cells, so that a table fits
    # the 1,100 px page; numbers stay right-aligned on one line (an interval may move to the next line as a whole).
    # What still does not fit scrolls inside the table's own box (div.tbl).
    text_columns = {i for i in range(len(headers))
                    if sum(1 for r in texts if i < len(r) and r[i] not in ("", "-") and not _NUMBER.match(r[i]))
                    > sum(1 for r in texts if i < len(r) and r[i] not in ("", "-")) / 2}

    def cls(i: int, text: str) -> str:
        if i in wrap:
            return "w"
        if i in text_columns or (len(text) > 24 and not _NUMBER.match(text) and not _INTERVAL.search(text)):
            return "t"  # a reason in a column of numbers ("refused: ...") wraps instead of widening the table
        return "i" if _INTERVAL.search(text) else ("l" if i == 0 else "")

    def cell(text: str) -> str:
        # An interval may go to the next line as a whole: "61.1" / "[58.0, 64.1] (1000)", never "[58.0," / "64.1]".
        return _INTERVAL.sub(lambda m: m.group(0).replace(" ", "\u00a0"), html.escape(text))

    head = "".join(f'<th class="{"l" if i == 0 or i in text_columns or i in wrap else ""}">{html.escape(str(h))}</th>'
                   for i, h in enumerate(headers))
    body = "".join("<tr>" + "".join(f'<td class="{cls(i, t)}">{cell(t)}</td>' for i, t in enumerate(r)) + "</tr>"
                   for r in texts)
    return f'<div class="tbl"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


_INTERVAL = re.compile(r"[\[(][-+~<>=\d.,e%\s]*[\])]")  # "[58.0, 64.1]", "(1000)"; not "(conditional plan, ...)"
_NUMBER = re.compile(r"^[-+~<>=\d.,e%\s\[\]()x/]+$")  # "71.5 [62.2, 72]", "1.2e+19", "3 x 10": not text


def _figures(items: Sequence, plots_dir: Path | None, used: set[str]) -> str:
    out = []
    for item in items:
        if isinstance(item, tuple):
            caption, fig = item[0], item[1]
            name = item[2] if len(item) > 2 else _slug(caption)
        else:
            caption, fig, name = "", item, "figure"
        base, k = name, 2
        while name in used:
            name, k = f"{base}-{k}", k + 1
        used.add(name)
        png = figure_png(fig)
        if plots_dir is not None:
            save_figure(fig, plots_dir, name, png=png)
        data = base64.b64encode(png).decode("ascii")
        cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
        out.append(f'<figure><img alt="{html.escape(caption or name)}" src="data:image/png;base64,{data}">{cap}</figure>')
    return "".join(out)


def render_sections(sections: Sequence[Section], plots_dir: Path | None = None) -> str:
    used: set[str] = set()
    parts = []
    for s in sections:
        h = min(max(s.level, 2), 4)
        parts.append(f"<h{h}>{html.escape(s.title)}</h{h}>")
        if s.html:
            parts.append(s.html)
        if s.markdown:
            parts.append(markdown_to_html(s.markdown))
        if s.text:
            parts.extend(f"<p>{html.escape(p.strip())}</p>" for p in s.text.split("\n\n") if p.strip())
        parts.append(table_html(s.table, s.wrap))
        parts.append(_figures(s.figures, plots_dir, used))
    return "\n".join(parts)


def write_html(out_path: str | Path, title: str, sections: Sequence[Section], subtitle: str = "",
               plots_dir: str | Path | None = None) -> Path:
    """Render ``sections`` into one HTML file at ``out_path`` (atomic write); figures also to ``plots_dir``."""
    out_path = Path(out_path)
    if out_path.exists() and out_path.is_dir():
        raise UserError(f"report path {out_path} is a directory; give a file name like report.html")
    if not out_path.parent.exists():
        raise UserError(f"folder {out_path.parent} does not exist (for report {out_path.name})")
    body = render_sections(sections, Path(plots_dir) if plots_dir else None)
    stamp = dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    doc = (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
           f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>"
           f"<p class=\"meta\">{html.escape(subtitle)}{' &middot; ' if subtitle else ''}generated {stamp} by "
           f"robustscale {__version__}</p>\n{body}\n</body></html>\n")
    return write_text(out_path, doc)


# ---------------------------------------------------------------------- the scaling report
def extrapolation_table(results) -> tuple[list[str], list[list[str]]]:
    headers = ["group", "reachable", "compute [FLOPs]", "interval", "x largest run", "device-hours [h]",
               "energy [kWh]", "CO2e [kg]", "electricity [USD]", "cloud [USD]"]
    rows = []
    for r in results:
        share = "" if r.share_reachable != r.share_reachable else \
            f" (reached in {100 * r.share_reachable:.0f}% of resamples)"
        if not r.converged:
            rows.append([r.group, "fit did not converge"] + ["-"] * 8)
            continue
        if not r.solved:
            rows.append([r.group, f"not extrapolated ({r.status}: {r.status_reason})"] + ["-"] * 8)
            continue
        if not r.reachable:
            y_max = r.asymptote[0]
            why = (f"not reachable: asymptote {fmt(y_max)}" if y_max == y_max and y_max != float("inf")
                   else "not reachable")
            rows.append([r.group, why + share] + ["-"] * 8)
            continue
        v = r.values
        rows.append([r.group, "yes" + share, fmt(v["compute_flops"][0]),
                     f"[{fmt(v['compute_flops'][1])}, {fmt(v['compute_flops'][2])}]", fmt(r.factor),
                     fmt(v["device_hours"][0]), fmt(v["energy_kwh"][0]), fmt(v["emissions_kg"][0]),
                     fmt(v["electricity_usd"][0]),
                     f"{fmt(v['cloud_usd_low'][0])} - {fmt(v['cloud_usd_high'][0])}"])
    return headers, rows


# How each law is fitted, for the report's Method section (only the laws a report fitted are described).
HUBER_FIT = ("fitted Chinchilla-style (Huber loss, delta 1e-3, on log error; log-sum-exp parametrisation; L-BFGS-B "
             "from the best points of a grid of starts, polished by iteratively re-weighted Levenberg-Marquardt)")
LAW_METHODS = {
    "power": "power: y = C x^alpha, least squares of log y on log x.",
    "error-power": "error-power: 100 - y = A x^-alpha (the error falls towards 0), least squares of log(100 - y) "
                   "on log x.",
    "saturating": f"saturating: error = 100 - y = E + A x^-alpha, {HUBER_FIT}.",
    "chinchilla": f"chinchilla: error = E + A/N^alpha + B/D^beta with the compute-optimal split under C = k N D, "
                  f"{HUBER_FIT}.",
}


def method_text(fits_by_law: dict) -> str:
    """The Method section: how each fitted law was fitted, then the bootstrap and the exponent bound."""
    names = [str(law) for law in fits_by_law]
    text = [LAW_METHODS.get(law, f"{law} law.") for law in names]
    text.append("Bootstrap: runs resampled with replacement and every fit redone (the frontier too, for frontier fits).")
    bounded = [law for law in names if law in ("saturating", "chinchilla")]  # the iteratively fitted laws
    if bounded:
        text.append(f"A {' or '.join(bounded)} fit whose exponent runs to its bound (0 or 5) is reported as not "
                    f"converged.")
    return " ".join(text)


def scaling_sections(df, fits_by_law: dict[str, list], target: float | None, extrapolations: dict[str, list],
                     cost: bool = True, settings: dict | None = None) -> list[Section]:
    """The standard sections: data, fits per law (+ comparisons), figures, extrapolation, cost, method."""
    settings = settings or {}
    sections = []
    first = next(iter(fits_by_law.values()))
    y, x = first[0].y, first[0].x
    per_group = sorted({f"{f.label}: {f.y}" for fs in fits_by_law.values() for f in fs})
    y_text = y if len({f.y for fs in fits_by_law.values() for f in fs}) == 1 else \
        "each group its own (" + ", ".join(per_group) + ")"
    n_fitted = {law: sum(f.n for f in fits) for law, fits in fits_by_law.items()}
    intro = (f"{len(df)} runs"
             + (f" from {settings['runs']}" if settings.get("runs") else "")
             + (f"; sources: {', '.join(f'{k} ({v})' for k, v in df['source'].value_counts().items())}"
                if "source" in df.columns and df["source"].notna().any() else "")
             + f". Metric y = {y_text}; compute x = {x if isinstance(x, str) else ', '.join(x)}."
             + (f" Groups by {settings['group_by']}." if settings.get("group_by") else "")
             + (f" Runs with {y} below {fmt(settings['exclude_below'])} are excluded from the fits"
                f" (collapsed runs, hollow markers in the figures)." if settings.get("exclude_below") is not None else "")
             + (f" Intervals: {settings['bootstrap']} case-resampling bootstrap resamples, "
                f"{100 * settings.get('level', 0.95):g}% percentile intervals." if settings.get("bootstrap") else
                " No bootstrap: no intervals."))
    sections.append(Section("Data", text=intro))
    for law, fits in fits_by_law.items():
        comps = pairwise_comparisons(fits)
        note = "" if all(f.converged for f in fits) else \
            '<p class="note">Fits that did not converge are listed with the reason; their parameters are not results.</p>'
        extra = ""
        if comps:
            extra = "<h3>Exponent differences between groups (a - b)</h3>" + table_html(comparisons_table(comps))
        sections.append(Section(f"Fits: {law} law ({fits[0].formula})", html=note + table_html(fits_table(fits)) + extra))
    figures = []
    for law, fits in fits_by_law.items():
        figures.append((f"{law} law: runs, fits and bootstrap bands", plots.plot_scaling(df, fits), f"scaling-{law}"))
    for law, fits in fits_by_law.items():
        if target is not None and any(f.converged for f in fits):
            figures.append((f"{law} law extrapolated to {plots.metric_name(fits)} = {fmt(target)} %",
                            plots.plot_extrapolation(df, fits, target),
                            f"extrapolation-{law}"))
    for law, fits in fits_by_law.items():
        if any(f.converged for f in fits):
            figures.append((f"{law} law residuals", plots.plot_residuals(fits), f"residuals-{law}"))
            exponents = plots.plot_exponents(fits) if any(f.has_bootstrap for f in fits) else None
            if exponents is not None:
                figures.append((f"{law} law exponents with their bootstrap intervals", exponents, f"exponents-{law}"))
    sections.append(Section("Figures", figures=figures))
    if target is not None and extrapolations:
        for law, results in extrapolations.items():
            r0 = results[0] if results else None
            how = (f"Device type {r0.device_type}, price preset {r0.price_preset}. " if r0 else "")
            conv = sorted({r.conversion for r in results if r.conversion})
            text = (f"Compute at which each group's {law} law reaches {plots.metric_name(fits_by_law[law])} = "
                    f"{fmt(target)}{' %' if y.endswith('_acc') else ''}, with its bootstrap interval "
                    f"(inf: too many resampled laws never reach it), and what it would cost. {how}"
                    + (f"Hours from {'; '.join(conv)}." if conv else ""))
            unit = "%" if y.endswith("_acc") else ""
            sections.append(Section(f"Extrapolation to {fmt(target)}{unit}: {law} law", text=text,
                                    table=extrapolation_table(results)))
    if cost and "train_flops" in df.columns:
        cols = [c for c in ("energy_kwh", "electricity_usd") if c in df.columns]
        if cols:
            usable = [c for c in cols if (np.asarray(df[c], float) > 0).sum() >= 3]
            if usable:
                sections.append(Section("Cost of compute", figures=[
                    ("energy and electricity vs training compute (power-law fits over all runs)",
                     plots.plot_cost(df, "train_flops", usable), "cost")]))
    sections.append(Section("Method", text=method_text(fits_by_law)))
    return sections


def write_report(df, out_path: str | Path, sections: Sequence[Section] | None = None, *, fits=None,
                 laws: Sequence[str] = ("power", "saturating"), x=None, y: str = "aa_robust_acc", group_by=None,
                 exclude_below: float | None | str = "auto", bootstrap: int = 200, seed: int = 0, level: float = 0.95,
                 frontier: bool = False, target: float | None = 75.0, device_type: str | None = None,
                 price_preset: str = "default", prices_path=None, flops_per_second: float | None = None,
                 throughput: float | None = None, title: str = "Robust accuracy vs compute",
                 plots_dir: str | Path | None = None, source: str | None = None, include_scaling: bool = True,
                 n_jobs: int | None = None, seed_sd: float | None = None) -> Path:
    """Write the HTML report of ``df`` to ``out_path``; returns the path.

    Fits every law in ``laws`` per group (or uses ``fits``: a list of FitResult of one law, or a
    dict law -> list), extrapolates to ``target`` and adds the figures; then appends
    ``sections`` (e.g. a study's own tables and figures). ``include_scaling=False`` writes only
    ``sections``. ``exclude_below="auto"`` drops collapsed runs (y < 10) for robust accuracies.
    With ``plots_dir`` every figure is also written there as PNG and SVG. ``seed_sd``: see ``fit_law``.
    """
    all_sections: list[Section] = []
    if include_scaling:
        if exclude_below == "auto":
            exclude_below = COLLAPSE_THRESHOLD_ACC if resolve_column(y).endswith("robust_acc") else None
        if fits is None:
            fits_by_law = {law: fit_groups(df, group_by, law=law, x=x, y=y, bootstrap=bootstrap, seed=seed,
                                           frontier=frontier, exclude_below=exclude_below, level=level,
                                           n_jobs=n_jobs, seed_sd=seed_sd)
                           for law in laws}
        elif isinstance(fits, dict):
            fits_by_law = dict(fits)
        else:
            fits_by_law = {fits[0].law: list(fits)}
        extrapolations = {}
        if target is not None:
            for law, fs in fits_by_law.items():
                if any(f.converged for f in fs):
                    extrapolations[law] = extrapolate(fs, target, df, flops_per_second=flops_per_second,
                                                      throughput=throughput, device_type=device_type,
                                                      price_preset=price_preset, prices_path=prices_path)
        settings = {"runs": source, "group_by": group_by if isinstance(group_by, (str, type(None)))
                    else ",".join(group_by), "exclude_below": exclude_below, "bootstrap": bootstrap, "level": level}
        all_sections += scaling_sections(df, fits_by_law, target, extrapolations, settings=settings)
    all_sections += list(sections or [])
    subtitle = f"{len(df)} runs" + (f" from {source}" if source else "")
    return write_html(out_path, title, all_sections, subtitle=subtitle, plots_dir=plots_dir)
