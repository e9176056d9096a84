"""One sweep run as a submitit job: train (or resume) it, evaluate it, record both in the store.

:class:`RunJob` is what every executor submits (submitit's local and Slurm executors, or a
plain call). It is a ``submitit.helpers.Checkpointable``: on preemption or timeout submitit
calls :meth:`RunJob.checkpoint`, which returns a ``DelayedSubmission`` of the same run; the
requeued job finds ``state.pt`` in the run folder and resumes from the last finished epoch.
A job is idempotent: a run already trained is only evaluated, one already evaluated is skipped.
With several tasks per job (``gpus_per_job > 1`` on Slurm) each task is one DDP rank:
submitit's ``TorchDistributedEnvironment`` exports RANK / WORLD_SIZE / MASTER_ADDR and
``train`` joins the process group; only rank 0 writes to the store and evaluates.

Under the local executor SIGTERM (sent by the sweep, forwarded by submitit's controller) means
"stop": it takes the path of a Ctrl-C in training (finish the step, save a resumable state) and
the run is recorded ``interrupted``; the job then ends normally with that status. (On Slurm
SIGTERM keeps submitit's meaning: it precedes a preemption, which requeues the job.)
"""
from __future__ import annotations

import json
import os
import signal
import threading
import traceback
from dataclasses import fields
from pathlib import Path
from typing import Any

import submitit
import torch

from ..config import TrainConfig
from ..evaluation import evaluate_run
from ..store import mark_requeued, record_evaluation, record_run_end, record_run_start, store_for
from ..train import train


_ENV_KEYS = ("ROBUSTSCALE_STORE", "ROBUSTSCALE_SWEEP")


class RunJob(submitit.helpers.Checkpointable):
    """``RunJob(cfg_dict, store_url, evaluation, sweep)()`` -> result dict (name, status, summary, claim)."""

    def __init__(self, cfg: dict[str, Any], store_url: str | None, evaluation: dict[str, Any] | None = None,
                 sweep: str | None = None, threads: int | None = None):
        self.cfg = dict(cfg)
        self.store_url = store_url
        self.evaluation = dict(evaluation) if evaluation else None
        self.sweep = sweep
        self.threads = threads  # CPU threads for torch (None: Slurm's allocation, else torch's default)

    @property
    def name(self) -> str:
        return str(self.cfg["name"])

    def __repr__(self) -> str:
        return f"RunJob({self.name!r})"

    # ------------------------------------------------------------------ submitit entry point
    def __call__(self) -> dict[str, Any]:
        saved = {k: os.environ.get(k) for k in _ENV_KEYS}
        local = os.environ.get("SUBMITIT_EXECUTOR") == "local" and threading.current_thread() is threading.main_thread()
        if local:
            signal.signal(signal.SIGTERM, _stop_like_ctrl_c)
        try:
            return self._run()
        except KeyboardInterrupt:
            if not local:
                raise
            # Stopped by the sweep: recorded as interrupted already; end the job cleanly with that status.
            return {"name": self.name, "status": "interrupted", "error": "interrupted by the sweep; resumable"}
        finally:  # an inline (in-process) job leaves the caller's environment as it was
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value

    def _run(self) -> dict[str, Any]:
        self._export_environment()
        cfg = TrainConfig.from_dict(self.cfg)
        run_dir = Path(cfg.output_dir) / cfg.name
        store = store_for(cfg, self.store_url)
        row = store.get_run(cfg.name, details=False) if store is not None else None
        finished = _finished_summary(run_dir, cfg)
        trained = finished is not None
        if trained and _rank() == 0 and (row is None or row["status"] != "done"):
            # Training ended but the job died before recording it: adopt the summary on disk.
            record_run_end(cfg, finished, store=self.store_url, run_dir=run_dir)
        result: dict[str, Any] = {"name": cfg.name, "run_dir": str(run_dir), "trained_now": not trained}
        if not trained:
            resume = run_dir if (run_dir / "state.pt").is_file() else None
            result["resumed"] = resume is not None
            record_run_start(cfg, run_dir, resumed=resume is not None, store=self.store_url, sweep=self.sweep)
            try:
                summary = train(cfg, resume=resume)
            except BaseException as exc:  # noqa: BLE001  (recorded, then re-raised: submitit reports it)
                stopped = isinstance(exc, KeyboardInterrupt)
                record_run_end(cfg, status="interrupted" if stopped else "failed", error=_error_line(exc),
                               store=self.store_url, run_dir=run_dir)
                raise
            if _rank() == 0:
                status = summary.get("status", "completed")
                if status != "completed":  # an interrupted run returns after saving its state
                    final = "interrupted" if status == "interrupted" else "failed"
                    record_run_end(cfg, summary, status=final, error=f"training {status}", store=self.store_url,
                                   run_dir=run_dir)
                    result.update(status=final, error=f"training {status}")
                    return result
                record_run_end(cfg, summary, store=self.store_url, run_dir=run_dir)
            result["summary"] = summary
        if self.evaluation and _rank() == 0:
            result["claim"] = self._evaluate(cfg, run_dir, store)
        result["status"] = "done"
        return result

    def checkpoint(self, *args: Any, **kwargs: Any) -> submitit.helpers.DelayedSubmission:
        """Preempted or timed out: resubmit this run; the new job resumes from ``state.pt``."""
        mark_requeued(self.name)
        return submitit.helpers.DelayedSubmission(
            RunJob(self.cfg, self.store_url, self.evaluation, self.sweep, self.threads), *args, **kwargs)

    # ------------------------------------------------------------------ pieces
    def _export_environment(self) -> None:
        """Store and sweep for train's hooks; DDP variables when the job has several tasks."""
        if self.store_url is not None:
            os.environ["ROBUSTSCALE_STORE"] = self.store_url
            if "store" in {f.name for f in fields(TrainConfig)}:
                self.cfg["store"] = self.store_url
        if self.sweep:
            os.environ["ROBUSTSCALE_SWEEP"] = self.sweep
        threads = self.threads or int(os.environ.get("SLURM_CPUS_PER_TASK", "0") or 0)
        if threads:  # parallel jobs on one machine must not each start one thread per core
            torch.set_num_threads(threads)
        try:
            env = submitit.JobEnvironment()
        except RuntimeError:  # called outside submitit (a plain call)
            return
        if env.num_tasks > 1:
            submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)

    def _evaluate(self, cfg: TrainConfig, run_dir: Path, store) -> dict[str, Any] | None:
        opts = dict(self.evaluation)
        eps = opts.get("eps")
        if eps is None:
            opts["eps"] = eps = cfg.eps
        if store is not None and store.evaluation_exists(cfg.name, opts["attack"], eps, opts.get("n_examples")):
            return None
        claim = evaluate_run(run_dir, **opts, store=self.store_url)
        if claim.get("complete", True):
            record_evaluation(cfg, claim, store=self.store_url)  # evaluate_run records too; this is idempotent
        return {k: claim.get(k) for k in ("attack", "eps", "n_examples", "clean_acc", "robust_acc")}


def _finished_summary(run_dir: Path, cfg: TrainConfig) -> dict[str, Any] | None:
    """The run's summary.json if it records a completed training of this very config."""
    try:
        summary = json.loads((run_dir / "summary.json").read_text())
    except (OSError, ValueError):
        return None
    if summary.get("status") == "completed" and cfg.matches_hash(summary.get("config_hash")):
        return summary
    return None


def _stop_like_ctrl_c(signum, frame) -> None:
    """SIGTERM -> whatever SIGINT does now: training's graceful stop, else KeyboardInterrupt.

    SIGINT itself stays blocked in local jobs (the sweep blocks it when it submits them), so a
    terminal Ctrl-C reaches the sweep only and each job is stopped exactly once.
    """
    handler = signal.getsignal(signal.SIGINT)
    if callable(handler):
        handler(signal.SIGINT, frame)
    else:
        raise KeyboardInterrupt


def _rank() -> int:
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


def _error_line(exc: BaseException) -> str:
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted; resumable from its last checkpoint"
    if isinstance(exc, SystemExit):
        return f"exited (code {exc.code})"
    text = str(exc).strip().splitlines()
    where = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
    at = f" at {Path(where.filename).name}:{where.lineno}" if where is not None else ""
    return f"{type(exc).__name__}{at}: {text[0] if text else ''}"[:2000]
