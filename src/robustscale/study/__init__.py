"""Studies: a sweep, evaluated, fitted and reported in one go.

- :func:`load_study` / :func:`run_study`: ``robustscale study SPEC`` (a sweep spec with a
  ``study:`` section), e.g. the CPU demo ``configs/studies/cpu-fashion-mnist.yaml``.
- :func:`robustscale.study.paper.reproduce_paper`: the 2024 study recomputed from its
  published runs (``robustscale study --paper-runs``).
"""
from .fits import format_study_table
from .run import StudyFit, StudyOptions, StudyResult, check_grid, load_study, run_study

__all__ = ["load_study", "run_study", "check_grid", "StudyOptions", "StudyFit", "StudyResult", "format_study_table"]
