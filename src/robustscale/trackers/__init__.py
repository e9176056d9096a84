"""Experiment trackers: Weights & Biases, MLflow and TensorBoard behind one small interface.

Chosen by ``log_to: [wandb, mlflow, tensorboard]`` (``--log-to wandb,mlflow``); each is an optional
extra (``pip install 'robustscale[wandb]'``). A run logs, on rank 0 only::

    trackers = open_trackers(cfg.log_to, cfg.to_dict(), cfg.name, run_dir, required=cfg.log_to_required)
    trackers.log_epoch(row, step=epoch)          # every metrics.jsonl row
    trackers.log_summary(summary, claims)        # summary.json (every compute field) + evaluation claims
    trackers.finish(status)                      # "completed", "interrupted", "diverged", "failed"

A tracker that is not installed or cannot start gives one warning (:class:`TrackerWarning`) and the run
goes on without it; with ``required=True`` it raises :class:`~robustscale.errors.UserError` instead.
A tracker that fails later (a full disk, a dropped server) warns once and is dropped: a run is never
lost to its logging. Where records go is each library's own setting (``WANDB_MODE``/``WANDB_DIR``/
``WANDB_PROJECT``, ``MLFLOW_TRACKING_URI``/``MLFLOW_EXPERIMENT_NAME``); W&B files default to
``<run_dir>/wandb``, TensorBoard events to ``<run_dir>/tensorboard``. The tracker run ids are kept in
``<run_dir>/trackers.json`` so that ``train --resume`` continues the same W&B and MLflow runs.

This module imports no tracker library (``TrainConfig`` validates names through it).
"""
from __future__ import annotations

import enum
import math
import shutil
import warnings
from pathlib import Path
from typing import Any, Iterable, Mapping

from .. import rundir
from ..errors import UserError, choice

__all__ = ["Tracker", "TrackerWarning", "Trackers", "open_trackers", "log_run_records", "parse_tracker_names",
           "flatten", "numeric_items", "claim_metrics", "IDS_FILE"]

IDS_FILE = "trackers.json"


class Tracker(str, enum.Enum):
    WANDB = "wandb"
    MLFLOW = "mlflow"
    TENSORBOARD = "tensorboard"


class TrackerWarning(UserWarning):
    """A tracker could not start or stopped working; the run goes on without it."""


def parse_tracker_names(names: Iterable[str] | str | None) -> list[str]:
    """``["WandB", "mlflow"]`` or ``"wandb,mlflow"`` -> ``["wandb", "mlflow"]`` (order kept, duplicates
    dropped); an unknown name raises UserError listing the valid ones."""
    if names is None:
        return []
    if isinstance(names, str):
        names = names.split(",")
    out: list[str] = []
    for name in names:
        if str(name).strip():
            value = choice(Tracker, name, what="log_to tracker").value
            if value not in out:
                out.append(value)
    return out


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
    ``val/*``), compute and the rest as ``summary/<key>``. Config values the
    summary repeats (eps, epochs, ...) are left out: they are the tracker's params / config already."""
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
        # file_stem: the claim file's name (eval/<file_stem>.json), added by robustscale.hub.read_claims
        stem = claim.get("file_stem") or claim.get("attack_label") or claim.get("attack")
        fields = {k: claim.get(k) for k in ("clean_acc", "robust_acc", "autoattack_acc", "n_examples", "eps",
                                            "eval_flops", "wall_seconds", "device_hours", "energy_kwh",
                                            "emissions_kg", "cloud_usd_low", "cloud_usd_high")}
        fields.update({f"stage_acc/{k}": v for k, v in (claim.get("stage_acc") or {}).items()})
        out.update({f"test/{stem}/{k}": v for k, v in numeric_items(fields).items()})
    return out


class Trackers:
    """The trackers of one run; every call goes to each of them, and one that fails is dropped."""

    def __init__(self, backends: list, run_dir: Path | None = None, config_keys: Iterable[str] = ()):
        self.backends = backends
        self.run_dir = run_dir
        self.config_keys = set(config_keys)

    @property
    def names(self) -> list[str]:
        return [b.name for b in self.backends]

    def _each(self, what: str, *args) -> None:
        for backend in list(self.backends):
            try:
                getattr(backend, what)(*args)
            except Exception as exc:  # noqa: BLE001  (logging must never stop training)
                warnings.warn(f"log_to {backend.name}: {what} failed ({_one_line(exc)}); no more records go "
                              f"to {backend.name} for this run", TrackerWarning, stacklevel=3)
                self.backends.remove(backend)
                _quietly(backend.finish, "failed")

    def log_epoch(self, metrics: Mapping[str, Any], step: int) -> None:
        """One row of metrics.jsonl (numbers are logged; None and text are skipped) at ``step`` (epoch)."""
        self._each("log_epoch", epoch_metrics(metrics), int(step))

    def log_summary(self, summary: Mapping[str, Any], claims: Iterable[Mapping[str, Any]] = ()) -> None:
        """The run's summary (every compute field) and its evaluation claims."""
        claims = [dict(c) for c in claims]
        numbers = {**summary_metrics(summary, self.config_keys), **claim_metrics(claims)}
        self._each("log_summary", dict(summary), claims, numbers)

    def finish(self, status: str = "completed") -> None:
        self._each("finish", status)
        self.backends = []

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if self.backends:
            self.finish("completed" if exc_type is None else
                        "interrupted" if issubclass(exc_type, KeyboardInterrupt) else "failed")
        return False


def open_trackers(names: Iterable[str], config: Mapping[str, Any], run_name: str, run_dir: str | Path | None = None,
                  *, required: bool = False, rank: int = 0) -> Trackers:
    """Start the named trackers for one run (none on ranks other than 0).

    Args:
        names: tracker names (``Tracker`` values); unknown ones raise UserError.
        config: the resolved config, logged once at the start.
        run_name: the run's name (the W&B / MLflow run name).
        run_dir: the run folder: W&B's files (unless ``WANDB_DIR``), TensorBoard's events and
            ``trackers.json`` (the tracker run ids, to continue them on resume) go there.
        required: raise UserError instead of warning when a tracker cannot start.
    """
    names = parse_tracker_names(list(names))
    run_dir = Path(run_dir) if run_dir is not None else None
    if rank != 0 or not names:
        return Trackers([], run_dir)
    fresh = run_dir is not None and not run_dir.exists()  # a folder a tracker creates is removed if one fails
    from .backends import BACKENDS

    ids = _read_ids(run_dir)
    started = []
    for name in names:
        backend = BACKENDS[name]()
        try:
            backend.start(dict(config), run_name, run_dir, ids.get(name))
        except Exception as exc:  # noqa: BLE001  (ImportError, a bad URI, a refused login...)
            message = f"log_to {name}: not started ({_one_line(exc)})"
            if isinstance(exc, ImportError):
                message += f"; install it with pip install 'robustscale[{name}]'"
            if required:
                for other in started:
                    _quietly(other.finish, "failed")
                if fresh and run_dir.is_dir():  # log_to_required: a run that does not start writes nothing
                    shutil.rmtree(run_dir, ignore_errors=True)
                raise UserError(message + " (log_to_required is true)") from None
            warnings.warn(message + "; the run goes on without it", TrackerWarning, stacklevel=2)
            continue
        started.append(backend)
    if run_dir is not None and started:
        _write_ids(run_dir, {**ids, **{b.name: b.run_id for b in started if b.run_id}})
    return Trackers(started, run_dir, config_keys=config.keys())


def log_run_records(run_dir: str | Path, cfg) -> None:
    """Send a finished run's summary.json and evaluation claims to its trackers (``cfg.log_to``), continuing
    the same W&B / MLflow runs (``trackers.json``): ``evaluate --run`` calls this after each claim."""
    from ..hub import read_claims, read_json

    run_dir = Path(run_dir)
    summary = read_json(run_dir / rundir.SUMMARY) or {}
    with open_trackers(cfg.log_to, cfg.to_dict(), cfg.name or run_dir.name, run_dir) as trackers:
        trackers.log_summary(summary, read_claims(run_dir))
        trackers.finish(summary.get("status") or "completed")


def _read_ids(run_dir: Path | None) -> dict[str, str]:
    from ..hub import read_json

    ids = read_json(run_dir / IDS_FILE) if run_dir is not None else None
    return {str(k): str(v) for k, v in ids.items()} if isinstance(ids, dict) else {}


def _write_ids(run_dir: Path, ids: dict[str, str]) -> None:
    rundir.write_json(run_dir / IDS_FILE, ids, mkdir=True)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _quietly(fn, *args) -> None:
    try:
        fn(*args)
    except Exception:  # noqa: BLE001  (already reported; closing is best effort)
        pass
