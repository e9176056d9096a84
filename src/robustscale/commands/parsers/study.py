"""The parser of ``robustscale study`` (built for every start of the CLI: no heavy imports; see cli.py)."""
from __future__ import annotations

import argparse

from .common import add_paper_runs_argument


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "study", help="run a sweep, evaluate, fit the laws and write the report (or reproduce the 2024 study)",
        description="Run every not-yet-done run of a study spec (a sweep spec with a `study:` section), evaluate "
        "them, fit robust accuracy against training FLOPs and write report.html. With --paper-runs, recompute "
        "the analyses of Debenedetti et al. 2024 from its published runs instead.")
    p.add_argument("spec", nargs="?", help="study spec YAML, e.g. configs/studies/cpu-fashion-mnist.yaml")
    add_paper_runs_argument(p, "reproduce the 2024 study from")
    p.add_argument("--store", help="results store URL or runs.db path (default: the spec's, else <output_dir>/runs.db)")
    p.add_argument("--executor", default="local", help="local (default), inline or slurm")
    p.add_argument("--max-parallel", type=int, default=None, help="runs at once with the local executor")
    p.add_argument("--eval-workers", type=int, default=None,
                   help="processes for the study's extra evaluations (default: the spec's study.eval_workers, else 1)")
    p.add_argument("--bootstrap", type=int, default=None, help="bootstrap resamples (default: the spec's / 1000)")
    p.add_argument("-o", "--output", help="output folder (paper runs: default paper-reproduction/)")
    p.add_argument("--markdown", help="paper runs: also write this markdown page (figures beside it)")
    p.add_argument("--bill", action="store_true",
                   help="print the study's wall-clock bill (training, evaluations, the planned runs; needs "
                        "study.scaling's rates) and exit: nothing runs; exit 2 when it exceeds study.scaling.max_hours")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(handler="run")
