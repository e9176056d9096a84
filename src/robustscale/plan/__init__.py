"""Planning under a compute budget: which model size, training length and attack steps maximise
robust accuracy, from the joint law of a table of runs (``robustscale.scaling.joint``).

- :func:`make_plan` -> a JSON-able dict: per budget the continuous optimum with intervals and
  the top concrete recipes from the zoo (``robustscale plan`` prints it).
- :class:`ComputeModel`: FLOPs per image of a training step per (architecture, method, k), in
  the measured convention (``robustscale flops``) or the 2024 study's.
"""
from .compute import CONVENTIONS, Architecture, ComputeModel, zoo_candidates
from .planner import BARTOLDSON_2024, BudgetSpec, make_plan, parse_budgets

__all__ = ["make_plan", "parse_budgets", "BudgetSpec", "ComputeModel", "Architecture", "zoo_candidates",
           "CONVENTIONS", "BARTOLDSON_2024"]
