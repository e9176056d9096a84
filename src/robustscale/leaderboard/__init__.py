"""The field's compute ledger: training compute for every RobustBench CIFAR-10 l-inf entry.

Notebook use::

    from robustscale.leaderboard import read_model_info_dir, build_ledger, fit_field
    infos = read_model_info_dir("robustbench/model_info/cifar10/Linf")
    ledger = build_ledger(infos)                 # one row per entry, sorted by AutoAttack accuracy
    fits = fit_field(ledger, bootstrap=1000)     # saturating and power laws on the compute frontier

- :func:`load_recipes`: the curated recipe table (``recipes.yaml``), every fact with its source.
- :func:`read_model_info_dir` / :func:`download_model_info`: RobustBench's model_info JSON files.
- :func:`build_ledger`: entries joined with recipes and training FLOPs [low, high].
- :func:`fit_field`, :func:`field_extrapolations`, :func:`write_leaderboard_report`.
"""
from .compute import DEFAULT_FLOPS_PER_SECOND, ArchFlops, FlopsCache, entry_compute, step_flops, wrn_stage_forward_flops
from .ledger import add_store_runs, build_ledger, export_model_info, export_table
from .model_info import ModelInfo, download_model_info, parse_model_info, read_model_info_dir
from .recipes import Entry, Fact, Phase, RecipeTableError, load_recipes
from .report import field_extrapolations, fit_field, write_leaderboard_report

__all__ = ["DEFAULT_FLOPS_PER_SECOND", "ArchFlops", "FlopsCache", "entry_compute", "step_flops",
           "wrn_stage_forward_flops", "add_store_runs", "build_ledger", "export_model_info", "export_table",
           "ModelInfo", "download_model_info", "parse_model_info", "read_model_info_dir", "Entry", "Fact", "Phase",
           "RecipeTableError", "load_recipes", "field_extrapolations", "fit_field", "write_leaderboard_report"]
