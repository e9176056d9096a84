"""What a tracker logs: nested records flattened to ``a/b`` keys, their finite numbers, and the claims' numbers."""
from __future__ import annotations

import math
from typing import Any, Iterable, Mapping

__all__ = ["flatten", "numeric_items", "claim_metrics", "epoch_metrics", "summary_metrics"]


def flatten(data: Mapping[str, Any], prefix: str = "", sep: str = "/") -> dict[str, Any]:
    """Nested dicts -> one level with ``a/b`` keys (lists and scalars are kept as they are)."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{sep}{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            out.update(flatten(value, name, sep))
        else:
            out[name] = value
    return out


def numeric_items(data: Mapping[str, Any]) -> dict[str, float]:
    """The finite numbers of a flat dict as floats (booleans as 0/1); None, text and NaN are left out."""
    out = {}
    for key, value in data.items():
        if isinstance(value, bool):
            out[key] = float(value)
        elif isinstance(value, (int, float)) and math.isfinite(value):
            out[key] = float(value)
    return out


# The per-epoch check's numbers in a metrics.jsonl row; they were measured on the row's `eval_split`.
EPOCH_CHECK_KEYS = ("clean_acc", "pgd_robust_acc", "fgsm_robust_acc", "eval_images")
SPLITS = ("val", "test")


def epoch_metrics(row: Mapping[str, Any]) -> dict[str, float]:
    """A metrics.jsonl row's numbers, the per-epoch check's under its split: ``val/clean_acc`` (``test/...``
    for runs checked on test images, and rows written before the split was recorded), training's as they are."""
    split = row.get("eval_split") or "test"
    return {(f"{split}/{k}" if k in EPOCH_CHECK_KEYS else k): v for k, v in numeric_items(flatten(row)).items()}


def summary_metrics(summary: Mapping[str, Any], config_keys: Iterable[str] = ()) -> dict[str, float]:
    """summary.json's numbers: the headline accuracies (test images) as ``test/<key>``, the selected epoch's
    per-epoch check ``val_*`` / ``test_*`` as ``val/selected/*`` / ``test/selected/*`` (beside the per-epoch series
    ``val/*``), compute and the rest as ``summary/<key>``. Config values the summary repeats (eps, epochs, ...)
    are left out: they are the tracker's params / config already."""
    skip = set(config_keys)
    out = {}
    for key, value in numeric_items(flatten(summary)).items():
        if key in skip:
            continue
        split, _, rest = key.partition("_")
        if split in SPLITS and rest:
            out[f"{split}/selected/{rest}"] = value
        elif key.startswith(("clean_acc", "pgd_robust_acc", "apgd_ce_robust_acc", "aa_robust_acc", "aa_n_examples")):
            out[f"test/{key}"] = value
        else:
            out[f"summary/{key}"] = value
    return out


def claim_metrics(claims: Iterable[Mapping[str, Any]]) -> dict[str, float]:
    """``test/<attack>-<eps>/<field>`` numbers of evaluation claims (accuracies, n, eps, compute): evaluations
    are made on test images."""
    out: dict[str, float] = {}
    for claim in claims:
        # file_stem: the claim file's name (eval/<file_stem>.json), added by robustscale.rundir.read_claims
        stem = claim.get("file_stem") or claim.get("attack_label") or claim.get("attack")
        fields = {k: claim.get(k) for k in ("clean_acc", "robust_acc", "autoattack_acc", "n_examples", "eps",
                                            "eval_flops", "wall_seconds", "device_hours", "energy_kwh",
                                            "emissions_kg", "cloud_usd_low", "cloud_usd_high")}
        fields.update({f"stage_acc/{k}": v for k, v in (claim.get("stage_acc") or {}).items()})
        out.update({f"test/{stem}/{k}": v for k, v in numeric_items(fields).items()})
    return out
