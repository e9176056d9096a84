"""``reproduce_paper``: load the published runs, fit, analyse, draw, and write the report."""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Iterable

from ...cost import CostModel
from ...errors import UserError
from ...progress import StageBar
from ...report import write_markdown, write_report
from ...report.plots import save_figure
from ...scaling import extrapolate, fit_law, load_paper_runs
from ...scaling.published_runs import PAPER_URL
from ...schema import COLLAPSE_THRESHOLD_ACC
from .analysis import analysis_tables, group_specs, prepare_runs
from .figures import paper_figures
from .result import DEFAULT_TARGETS, LAWS, PRICE_PRESET, REPORT_TITLE, GroupFit, PaperReproduction
from .sections import paper_sections

__all__ = ["reproduce_paper"]


def reproduce_paper(source: str | Path = PAPER_URL, out_dir: Path | str = "paper-reproduction", *,
                    markdown: Path | str | None = None, figures_dir: Path | str | None = None,
                    bootstrap: int = 1000, seed: int = 0, targets: Iterable[float] = DEFAULT_TARGETS,
                    progress: bool = True, command: str | None = None, level: float = 0.95,
                    n_jobs: int | None = None) -> PaperReproduction:
    """Recompute the 2024 study's analyses from its published runs and write the report.

    Args:
        source: path or URL of the study's ``results.csv`` (downloaded only for a URL).
        out_dir: folder for ``report.html`` (created).
        markdown: also write this markdown page, with PNG figures in ``figures_dir`` (default:
            ``<markdown folder>/figures/paper``) linked relatively.
        figures_dir: write the PNG figures here (also without ``markdown``).
        bootstrap: case resamples per fit (0: no intervals). Group ``i`` (report order) uses
            bootstrap seed ``seed + i`` so the groups' resamples are independent.
        targets: AutoAttack accuracies (%) to extrapolate to.
        command: the command line to state in the markdown (default: this function call).
        n_jobs: bootstrap worker processes (default: all cores).
    Returns:
        :class:`PaperReproduction` (``report_path``, ``summary_rows()``, the tables and fits).
    Raises:
        UserError: missing/invalid source, bootstrap < 0, a target outside (0, 100).
    """
    start = time.perf_counter()
    bootstrap, targets = _check_arguments(bootstrap, targets, level)
    out_dir = Path(out_dir)
    markdown = Path(markdown) if markdown is not None else None
    if markdown is not None and figures_dir is None:
        figures_dir = markdown.parent / "figures" / "paper"
    figures_dir = Path(figures_dir) if figures_dir is not None else None

    steps = ["load"] + [f"fit {law}" for law in LAWS] + ["electricity", "tables", "figures", "write"]
    # Read before the bar is drawn: a missing or bad file is one line of its own, not glued to a bar.
    runs = prepare_runs(load_paper_runs(source))
    if not len(runs):
        raise UserError(f"{source} holds no runs")
    bar = StageBar(steps, "paper reproduction", progress)
    bar.step("load")
    cost_model = CostModel.from_yaml(preset=PRICE_PRESET)
    fit_kw = {"bootstrap": bootstrap, "level": level, "n_jobs": n_jobs, "progress": progress}
    groups = _fit_groups(runs, targets, cost_model, seed, bar, **fit_kw)
    bar.step("electricity")
    electricity, device_hours_fit = _fit_costs(runs, seed + len(groups), **fit_kw)

    bar.step("tables")
    result = PaperReproduction(source=str(source), runs=runs, groups=groups, electricity=electricity,
                               tables=analysis_tables(runs), sections=[], targets=targets, bootstrap=bootstrap, seed=seed,
                               report_path=out_dir / "report.html")
    result.tables["device_hours_fit"] = device_hours_fit
    bar.step("figures")
    figures = paper_figures(result)
    result.sections = paper_sections(result, figures, cost_model, command or _default_command(source, out_dir, markdown,
                                                                                          bootstrap, seed, targets))
    bar.step("write")
    _write(result, out_dir, figures, figures_dir, markdown)
    bar.close()
    result.elapsed_seconds = time.perf_counter() - start
    return result


def _check_arguments(bootstrap, targets, level) -> tuple[int, tuple[float, ...]]:
    bootstrap = int(bootstrap)
    if bootstrap < 0:
        raise UserError(f"invalid bootstrap {bootstrap}: must be >= 0")
    targets = tuple(float(t) for t in targets)
    if not targets:
        raise UserError("no targets given; valid: AutoAttack accuracies in (0, 100), e.g. 60,65,70,75")
    for t in targets:
        if not (0 < t < 100):
            raise UserError(f"invalid target {t:g}: an AutoAttack accuracy target must be in (0, 100) percent")
    if not (0 < level < 1):
        raise UserError(f"invalid level {level}: must be in (0, 1), e.g. 0.95")
    return bootstrap, targets


def _fit_groups(runs, targets, cost_model, seed: int, bar, **fit_kw) -> list[GroupFit]:
    """The AA-vs-FLOPs fits of every group under each law, extrapolated to the targets."""
    specs = group_specs(runs)
    groups = [GroupFit(key, label, group, frontier, {}) for key, label, group, _, frontier in specs]
    for law in LAWS:
        bar.step(f"fit {law}")
        for i, (g, (_, _, _, part, frontier)) in enumerate(zip(groups, specs)):
            g.fits[law] = fit_law(part, law=law, x="train_flops", y="aa_robust_acc", seed=seed + i,
                                  frontier=frontier, exclude_below=COLLAPSE_THRESHOLD_ACC, group=g.group, **fit_kw)
            g.extrapolations[law] = {t: extrapolate(g.fits[law], t, df=runs, cost_model=cost_model,
                                                    device_type="gpu")[0] for t in targets}
    return groups


def _fit_costs(runs, seed: int, **fit_kw):
    """Power laws of electricity cost and GPU-hours vs FLOPs over all runs."""
    electricity = fit_law(runs, law="power", x="train_flops", y="electricity_usd", seed=seed, **fit_kw)
    device_hours = fit_law(runs, law="power", x="train_flops", y="device_hours", seed=seed + 1, **fit_kw)
    return electricity, device_hours


def _write(result: PaperReproduction, out_dir: Path, figures: dict, figures_dir: Path | None,
           markdown: Path | None) -> None:
    """report.html (self-contained), the PNG figures, and the markdown page linking them."""
    out_dir.mkdir(parents=True, exist_ok=True)
    write_report(result.runs, result.report_path, result.sections, include_scaling=False, title=REPORT_TITLE,
                 source=result.source)
    if figures_dir is not None:
        for name, (fig, _) in figures.items():
            result.figure_paths += save_figure(fig, figures_dir, name, formats=("png",))
    if markdown is not None:
        rel = Path(os.path.relpath(figures_dir, markdown.parent)).as_posix()
        write_markdown(markdown, REPORT_TITLE, result.sections, rel)
        result.markdown_path = markdown


def _default_command(source, out_dir, markdown, bootstrap, seed, targets) -> str:
    args = [repr(str(source)), repr(str(out_dir))]
    if markdown is not None:
        args.append(f"markdown={str(markdown)!r}")
    shown = tuple(int(t) if t == int(t) else t for t in targets)
    args += [f"bootstrap={bootstrap}", f"seed={seed}", f"targets={shown}"]
    return f"python -c \"from robustscale.study.paper import reproduce_paper; reproduce_paper({', '.join(args)})\""

