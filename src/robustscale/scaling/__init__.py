"""Scaling laws of robust accuracy (or cost) vs compute, with bootstrap uncertainty.

Notebook use::

    from robustscale.scaling import load_paper_runs, fit_groups, compare_exponents, extrapolate
    runs = load_paper_runs("results.csv")            # or the public URL
    fits = fit_groups(runs, ["method", "synthetic_data"], law="saturating",
                      exclude_below=10, bootstrap=1000)
    fits[0].params, fits[0].ci, fits[0].solve_for(60)
    extrapolate(fits, target=75, df=runs)

- :func:`fit_law` / :func:`fit_groups` -> :class:`FitResult` (``predict``, ``solve_for``,
  ``solve_interval``, ``predict_interval``, ``to_dict``).
- :func:`compare_exponents`: difference of exponents of two fits with a bootstrap interval.
- :func:`pareto_frontier`: best y at or below each x.
- :func:`extrapolate`: compute, device-hours, kWh, CO2e and dollars to reach a target.
- :func:`load_runs` (CSV/Parquet/results store/paper table), :func:`load_paper_runs`.
- :func:`fit_joint` / :func:`fit_joint_groups` -> :class:`JointFit`: the joint law in model size,
  samples seen and attack steps, its compute-optimal allocation; :func:`frontier_allocation` (approach 1).
"""
from .allocation import frontier_allocation
from .extrapolate import Extrapolation, extrapolate
from .fit import (ExponentComparison, FitNotConverged, FitResult, compare_exponents, fit_groups, fit_law, group_label,
                  pairwise_comparisons)
from .frontier import frontier_mask, pareto_frontier
from .io import load_runs, parse_mapping
from .joint import ComputeCoefficients, JointFit, fit_joint, fit_joint_groups
from .laws import LAWS, LawName, get_law
from .published_runs import PAPER_URL, load_paper_runs

__all__ = ["fit_law", "fit_groups", "FitResult", "FitNotConverged", "compare_exponents", "ExponentComparison",
           "pairwise_comparisons", "group_label", "pareto_frontier", "frontier_mask", "extrapolate", "Extrapolation",
           "load_runs", "parse_mapping", "load_paper_runs", "PAPER_URL", "LAWS", "LawName", "get_law",
           "fit_joint", "fit_joint_groups", "JointFit", "ComputeCoefficients", "frontier_allocation"]
