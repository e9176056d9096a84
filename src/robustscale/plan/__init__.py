"""Planning under a compute budget: which model size, training length and attack steps maximise
robust accuracy, from the joint law of a table of runs (``robustscale.scaling.joint``).

- :func:`make_plan` -> a JSON-able dict: per budget the continuous optimum with intervals and
  the top concrete recipes from the zoo (``robustscale plan`` prints it).
- :func:`plan_family`: one family's plan, as a study's "what to run next" and ``plan`` on its store make it.
- :class:`ComputeModel`: FLOPs per image of a training step per (architecture, method, k), in
  the measured convention (``robustscale flops``) or the 2024 study's.
"""
from .compute import CONVENTIONS, Architecture, ComputeModel, zoo_candidates
from .planner import BARTOLDSON_2024, FAMILY_BOOTSTRAP, BudgetSpec, make_plan, parse_budgets, plan_family

__all__ = ["make_plan", "plan_family", "FAMILY_BOOTSTRAP", "parse_budgets", "BudgetSpec", "ComputeModel", "Architecture", "zoo_candidates",
           "CONVENTIONS", "BARTOLDSON_2024"]
