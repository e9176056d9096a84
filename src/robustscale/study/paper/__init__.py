"""Reproduce the 2024 study (Debenedetti et al., "Scaling Compute Is Not All You Need for
Adversarial Robustness") from its 319 published runs.

:func:`reproduce_paper` loads ``results.csv`` (``scaling.load_paper_runs``: total training FLOPs,
device-hours, kWh and USD per run) and recomputes the study's analyses:

1. AutoAttack robust accuracy vs total training FLOPs, one fit per (method, generated data,
   epochs) plus all runs and their Pareto frontier, under the study's power law
   ``AA = C * FLOPs^alpha`` and the saturating law ``100 - AA = E + A * FLOPs^-alpha``
   (asymptote ``100 - E``). Collapsed runs (AA < ``schema.COLLAPSE_THRESHOLD_ACC``) are left out of
   the fits and counted.
2. Electricity cost vs FLOPs (power law; its exponent is 1 when energy is proportional to compute).
3. Collapse (catastrophic overfitting): PGD-40 next to AutoAttack per method / steps / epochs.
4. The effect of generated data, model size and training length: per-level tables and paired
   comparisons (same configuration except the factor).
5. Extrapolation: compute, GPU-hours, energy and dollars to reach each target AA under each law,
   with bootstrap intervals, priced with the ``paper-2024`` preset of ``compute/prices.yaml`` and the
   runs' own GPU-hours per FLOP; "not reachable" where the law never gets there.

Outputs: ``out_dir/report.html`` (self-contained), optionally a markdown page and its PNG figures.
Accuracies are percent (0-100); FLOPs are total training FLOPs of a run (all 4 GPUs).

Modules: ``reproduce`` (:func:`reproduce_paper`), ``analysis`` (per-level tables, paired gains, collapse,
fit groups), ``figures`` (the six figures), ``tables`` (display tables), ``sections`` (the prose, as
``report.Section`` s), ``result`` (constants, :class:`PaperReproduction`, :func:`format_summary_table`).
The HTML and markdown renderers are ``robustscale.report``'s.
"""
from ...scaling.published_runs import PAPER_URL
from .analysis import collapse_table, gain_summary, level_table, paired_gain
from .reproduce import reproduce_paper
from .result import (BASELINE_ARCH, DEFAULT_TARGETS, GROUP_COLUMNS, LAW_TITLES, LAWS, METHOD_NAMES,
                     PARTIAL_COLLAPSE_ACC, PRICE_PRESET, REPORT_TITLE, SUMMARY_QUANTITIES, GroupFit, PaperReproduction,
                     format_summary_table)

__all__ = ["reproduce_paper", "format_summary_table", "PaperReproduction", "GroupFit", "PAPER_URL", "DEFAULT_TARGETS",
           "REPORT_TITLE", "PRICE_PRESET", "LAWS", "LAW_TITLES", "GROUP_COLUMNS", "PARTIAL_COLLAPSE_ACC",
           "BASELINE_ARCH", "METHOD_NAMES", "SUMMARY_QUANTITIES", "level_table", "paired_gain", "gain_summary",
           "collapse_table"]
