"""Plain values for the store's rows: summaries flattened, values coerced to column types, JSON-safe copies.

Also the identity of a run (the config columns of ``runs``), the ``RUN_COLUMNS`` record of a
row (:func:`run_record`) and the rows of an imported DataFrame.
"""
from __future__ import annotations

import datetime as dt
import enum
import json
import math
import os
from pathlib import Path
from typing import Any, Mapping

from ..config import TrainConfig
from ..errors import UserError
from ..schema import COLLAPSE_THRESHOLD_ACC, RUN_COLUMNS, TRAINING_CHECK, resolve_column
from ..schema import finite_float as _float
from .tables import RUN_VALUE_COLUMNS, RunStatus, runs

LOCAL_SOURCE = "robustscale"
# Columns of `runs` copied out of the config (SQL-filterable identity of the run).
IDENTITY_COLUMNS = ("dataset", "model", "method", "attack_steps", "eps", "norm", "epochs", "seed", "synthetic_data")


def run_record(row: Mapping[str, Any]) -> dict[str, Any]:
    """The flat ``RUN_COLUMNS`` record of a run row."""
    out = {}
    for col in RUN_COLUMNS:
        if col == "status":
            out[col] = row.get("effective_status") or row.get("status")
        elif col == "train_images" and row.get(col) is None and isinstance(row.get("summary"), dict):
            out[col] = flatten(row["summary"]).get("train_images")
        else:
            out[col] = row.get(col)
    return out


def frame_records(frame, source: str) -> list[dict[str, Any]]:
    """Rows of an imported frame as `runs` column values (status done)."""
    frame = frame.rename(columns={c: resolve_column(c) for c in frame.columns})
    table_cols = set(runs.c.keys())
    skip = {"id", "status", "source", "created_at", "started_at", "finished_at", "config", "summary", "extra"}
    records, seen = [], {}
    for i, raw in enumerate(frame.to_dict(orient="records")):
        raw = {k: (None if _isnan(v) else (v.item() if hasattr(v, "item") else v)) for k, v in raw.items()}
        if isinstance(raw.get("synthetic_data"), str):
            raw["synthetic_data"] = raw["synthetic_data"].strip().lower() in ("true", "1", "yes")
        name = raw.get("name") or _import_name(raw, source)
        if name in seen:
            raise UserError(f"two imported rows (#{seen[name]} and #{i}) have the same name {name!r}; nothing imported")
        seen[name] = i
        rec: dict[str, Any] = {"name": str(name), "source": source, "status": RunStatus.DONE.value}
        extra = {}
        for key, value in raw.items():
            if key == "name":
                continue
            if key in table_cols and key not in skip:
                rec[key] = coerce_value(key, value) if key in RUN_VALUE_COLUMNS else value
            elif key not in skip:
                extra[key] = value
        if rec.get("config_hash") is None:
            import hashlib

            ident = json.dumps({k: raw.get(k) for k in IDENTITY_COLUMNS}, sort_keys=True, default=str)
            rec["config_hash"] = hashlib.sha256(f"{source}:{ident}".encode()).hexdigest()[:16]
        if rec.get("collapsed") is None:
            robust = rec.get("aa_robust_acc")
            rec["collapsed"] = None if robust is None else bool(robust < COLLAPSE_THRESHOLD_ACC)
        rec["extra"] = jsonable(extra) or None
        records.append(rec)
    return records


def _import_name(raw: Mapping[str, Any], source: str) -> str:
    """``debenedetti2024-wide_resnet28_10-pgd-k5-e110-gen`` from a row's identity columns."""
    parts = [source, str(raw.get("model"))]
    if raw.get("method") is not None:
        parts.append(str(raw["method"]))
    if raw.get("attack_steps") is not None:
        parts.append(f"k{int(raw['attack_steps'])}")
    if raw.get("epochs") is not None:
        parts.append(f"e{int(raw['epochs'])}")
    if raw.get("synthetic_data") is not None:
        parts.append("gen" if raw["synthetic_data"] else "nogen")
    if raw.get("seed") is not None:
        parts.append(f"s{int(raw['seed'])}")
    return "-".join(parts)


def config_parts(cfg) -> tuple[dict[str, Any], str, str]:
    if isinstance(cfg, Mapping):
        cfg = TrainConfig.from_dict(dict(cfg))
    if not cfg.name:
        raise UserError("a run recorded in the store needs a name (TrainConfig.name)")
    return jsonable(cfg.to_dict()), str(cfg.name), cfg.config_hash()


def known_hashes(cfg) -> tuple[str, ...]:
    """Every hash a stored row of this run may carry (0.1.0's too: ``TrainConfig.known_hashes``);
    ``start_run`` then rewrites the row with today's."""
    if isinstance(cfg, Mapping):
        cfg = TrainConfig.from_dict(dict(cfg))
    return cfg.known_hashes()


def identity(cfg: Mapping[str, Any]) -> dict[str, Any]:
    out = {k: cfg.get(k) for k in IDENTITY_COLUMNS if k != "synthetic_data"}
    out["attack_steps"] = attack_steps_of(cfg.get("method"), cfg.get("attack_steps"))
    out["synthetic_data"] = bool(cfg.get("generated_data"))
    return out


def attack_steps_of(method: Any, steps: Any) -> int | None:
    """The attack steps a method really takes: none for standard training, 1 for FGSM-RS."""
    method = getattr(method, "value", method)
    if method == "standard":
        return None
    if method == "fgsm_rs":
        return 1
    return None if steps is None else int(steps)


# Nested records of a summary that describe something else than the run as a whole: each evaluation (under
# ``evaluations``) and training's own check (kept by ``evaluate``); never read as the run's values.
_NOT_FLATTENED = ("evaluations", TRAINING_CHECK)


def flatten(summary: Mapping[str, Any]) -> dict[str, Any]:
    """Top-level keys, then keys of nested dicts (``compute``, ``final``...) that are missing or None on top."""
    flat = {k: v for k, v in summary.items() if not isinstance(v, Mapping)}
    for key, v in summary.items():
        if isinstance(v, Mapping) and key not in _NOT_FLATTENED:
            for k2, v2 in flatten(v).items():
                if flat.get(k2) is None:
                    flat[k2] = v2
    return flat


def robust_of(claim: Mapping[str, Any]):
    for key in ("robust_acc", "autoattack_acc", "aa_robust_acc", "pgd_robust_acc"):
        if claim.get(key) is not None:
            return claim[key]
    return None


def coerce_value(key: str, value: Any) -> Any:
    if value is None:
        return None
    type_ = RUN_VALUE_COLUMNS.get(key)
    try:
        from sqlalchemy import Boolean, Float, Integer

        if isinstance(type_, type) and issubclass(type_, Float):
            return _float(value)
        if isinstance(type_, type) and issubclass(type_, Integer):  # BigInteger too
            f = _float(value)
            return None if f is None else int(round(f))
        if isinstance(type_, type) and issubclass(type_, Boolean):
            if isinstance(value, str):
                return value.strip().lower() in ("true", "1", "yes")
            return bool(value)
    except (TypeError, ValueError):
        return None
    return str(value)


def _isnan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def jsonable(value: Any) -> Any:
    """A JSON-safe copy: enums -> values, paths -> str, numpy/torch scalars -> numbers, tensors dropped."""
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            j = jsonable(v)
            if j is not _DROP:
                out[str(k)] = j
        return out
    if isinstance(value, (list, tuple)):
        return [x for x in (jsonable(v) for v in value) if x is not _DROP]
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (str, bool, int)) or value is None:
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (Path, os.PathLike)):
        return str(value)
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    if hasattr(value, "numel") and hasattr(value, "tolist"):  # torch tensors: scalars kept, arrays dropped
        return jsonable(value.item()) if value.numel() == 1 else _DROP
    if hasattr(value, "item") and getattr(value, "shape", None) == ():
        return jsonable(value.item())
    if hasattr(value, "tolist") and getattr(value, "ndim", 1) > 0:  # numpy arrays: small ones kept
        return jsonable(value.tolist()) if getattr(value, "size", 0) <= 64 else _DROP
    return str(value)


_DROP = object()


def same(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        fa, fb = _float(a), _float(b)
        if fa is None or fb is None:
            return fa is None and fb is None
        return math.isclose(fa, fb, rel_tol=1e-12, abs_tol=0.0)
    return a == b
