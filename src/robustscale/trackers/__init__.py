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

No tracker library is imported until a run starts one. The tracker names (:class:`Tracker`,
:func:`parse_tracker_names`) are the config's vocabulary (``robustscale.config``); they are re-exported here.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Iterable, Mapping

from .. import rundir
from ..config import Tracker, parse_tracker_names
from ..errors import UserError
from .backends import BACKENDS
from .metrics import claim_metrics, flatten, numeric_items

__all__ = ["Tracker", "TrackerWarning", "Trackers", "open_trackers", "log_run_records", "parse_tracker_names",
           "flatten", "numeric_items", "claim_metrics", "IDS_FILE"]

IDS_FILE = "trackers.json"


class TrackerWarning(UserWarning):
    """A tracker could not start or stopped working; the run goes on without it."""


class Trackers:
    """The trackers of one run; every call goes to each of them, and one that fails is dropped."""

    def __init__(self, backends: list, run_dir: Path | None = None):
        self.backends = backends
        self.run_dir = run_dir

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
        self._each("log_epoch", dict(metrics), int(step))

    def log_summary(self, summary: Mapping[str, Any], claims: Iterable[Mapping[str, Any]] = ()) -> None:
        """The run's summary (every compute field) and its evaluation claims."""
        self._each("log_summary", dict(summary), [dict(c) for c in claims])

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
                raise UserError(message + " (log_to_required is true)") from None
            warnings.warn(message + "; the run goes on without it", TrackerWarning, stacklevel=2)
            continue
        started.append(backend)
    if run_dir is not None and started:
        _write_ids(run_dir, {**ids, **{b.name: b.run_id for b in started if b.run_id}})
    return Trackers(started, run_dir)


def log_run_records(run_dir: str | Path, cfg) -> None:
    """Send a finished run's summary.json and evaluation claims to its trackers (``cfg.log_to``), continuing
    the same W&B / MLflow runs (``trackers.json``): ``evaluate --run`` calls this after each claim."""
    run_dir = Path(run_dir)
    summary = rundir.read_json(run_dir / rundir.SUMMARY) or {}
    with open_trackers(cfg.log_to, cfg.to_dict(), cfg.name or run_dir.name, run_dir) as trackers:
        trackers.log_summary(summary, rundir.read_claims(run_dir))
        trackers.finish(summary.get("status") or "completed")


def _read_ids(run_dir: Path | None) -> dict[str, str]:
    ids = rundir.read_json(run_dir / IDS_FILE) if run_dir is not None else None
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
