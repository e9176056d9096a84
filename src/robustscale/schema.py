"""The flat run record: one row per run, what `runs export` writes and `fit` reads.

Units are in the names; accuracies are percentages (0-100), each with the number of test images it was
measured on (``<metric>_n_examples``; AutoAttack's is ``aa_n_examples``). ``collapsed`` flags runs whose
AutoAttack accuracy fell below 10% or whose reported checkpoint the per-epoch check flagged (catastrophic
overfitting; ``collapsed_epoch`` is the first flagged epoch, also of a run that recovered), which analyses
mark rather than drop.
"""
from __future__ import annotations

import math

RUN_COLUMNS: tuple[str, ...] = (
    "name", "source", "status", "config_hash", "dataset", "model", "model_parameters",
    "method", "attack_steps", "eps", "norm", "epochs", "synthetic_data",
    "train_images", "train_images_seen",
    "train_flops", "train_flops_per_image", "eval_flops",
    "wall_seconds", "device_hours", "device_name", "device_count",
    "energy_kwh", "emissions_kg", "electricity_usd", "cloud_usd_low", "cloud_usd_high",
    "clean_acc", "clean_acc_n_examples", "pgd_robust_acc", "pgd_robust_acc_n_examples",
    "apgd_ce_robust_acc", "apgd_ce_robust_acc_n_examples", "aa_robust_acc", "aa_n_examples",
    "collapsed", "collapsed_epoch",
)

# Test images behind each headline accuracy. AutoAttack's column predates the `<metric>_n_examples` rule.
N_EXAMPLES_ALIASES: dict[str, str] = {"aa_robust_acc": "aa_n_examples"}

# What a run trains, but for its seed: runs equal in these (and in compute) are seeds of one configuration.
CONFIG_COLUMNS: tuple[str, ...] = ("dataset", "model", "method", "attack_steps", "eps", "norm", "epochs",
                                   "synthetic_data", "train_images", "train_images_seen")

# Column names of the 2024 study's results.csv accepted wherever a run column is named.
PAPER_ALIASES: dict[str, str] = {
    "at": "method",
    "at_steps": "attack_steps",
    "eval_acc": "clean_acc",
}

COLLAPSE_THRESHOLD_ACC = 10.0  # percent AutoAttack accuracy


def resolve_column(name: str) -> str:
    """Map a paper alias to our column name (other names pass through)."""
    return PAPER_ALIASES.get(name, name)


def n_examples_column(metric: str, columns) -> str | None:
    """The column of ``columns`` holding the test-image count of ``metric`` (``<metric>_n_examples``, else
    its alias, e.g. ``aa_n_examples``), or None when there is none."""
    for name in (f"{metric}_n_examples", N_EXAMPLES_ALIASES.get(resolve_column(metric))):
        if name is not None and name in columns:
            return name
    return None


def collapsed_at_selected(record) -> bool:
    """Did the per-epoch check flag the run's reported checkpoint (``collapse_at_selected``; a run can recover
    after a flag, and selection can pick an epoch before it)? A record written before that field existed
    counts any flag (``collapsed_epoch``)."""
    if "collapse_at_selected" in record:
        return bool(record["collapse_at_selected"])
    return record.get("collapsed_epoch") is not None


def finite_float(value) -> float | None:
    """A run value as a finite float; None when it is missing, not a number, NaN or infinite (JSON-safe)."""
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None
