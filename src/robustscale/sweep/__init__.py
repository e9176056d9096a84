"""Sweeps: expand a spec into validated runs, price them, run them locally or on Slurm.

- :func:`load_spec` (YAML) -> :class:`SweepSpec` with ``.runs`` (:class:`PlannedRun`: name, TrainConfig, axes).
- :func:`estimate_runs` -> per-run FLOPs, device-hours, energy and dollars (the bill before it starts).
- :func:`run_sweep` (executor ``local`` / ``slurm`` / ``inline``) -> submits what is not done.
- :func:`sweep_states` -> where each run stands in the store (``sweep status``).
- :class:`RunJob`: the submitit job of one run (train or resume, evaluate, record).
"""
from .estimate import RunEstimate, StepFlopsCache, estimate_runs, images_seen, totals
from .job import RunJob
from .runner import EXECUTORS, RunState, check_collisions, open_sweep_store, run_sweep, sweep_states
from .spec import CostOptions, EvaluationOptions, ExecutorOptions, PlannedRun, SweepSpec, build_spec, load_spec

__all__ = ["load_spec", "build_spec", "SweepSpec", "PlannedRun", "EvaluationOptions", "ExecutorOptions",
           "CostOptions", "estimate_runs", "RunEstimate", "StepFlopsCache", "images_seen", "totals", "run_sweep",
           "sweep_states", "check_collisions", "open_sweep_store", "RunState", "EXECUTORS", "RunJob"]

