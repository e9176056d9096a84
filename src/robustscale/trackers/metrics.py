"""What a tracker logs: nested records flattened to ``a/b`` keys, their finite numbers, and the claims' numbers."""
from __future__ import annotations

import math
from typing import Any, Iterable, Mapping

__all__ = ["flatten", "numeric_items", "claim_metrics"]


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


def claim_metrics(claims: Iterable[Mapping[str, Any]]) -> dict[str, float]:
    """``eval/<attack>-<eps>/<field>`` numbers of evaluation claims (accuracies, n, eps, compute)."""
    out: dict[str, float] = {}
    for claim in claims:
        # file_stem: the claim file's name (eval/<file_stem>.json), added by robustscale.rundir.read_claims
        stem = claim.get("file_stem") or claim.get("attack_label") or claim.get("attack")
        fields = {k: claim.get(k) for k in ("clean_acc", "robust_acc", "autoattack_acc", "n_examples", "eps",
                                            "eval_flops", "wall_seconds", "device_hours", "energy_kwh",
                                            "emissions_kg", "cloud_usd_low", "cloud_usd_high")}
        fields.update({f"stage_acc/{k}": v for k, v in (claim.get("stage_acc") or {}).items()})
        out.update({f"eval/{stem}/{k}": v for k, v in numeric_items(fields).items()})
    return out
