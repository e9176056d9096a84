"""The three trackers, each through its library's public API, imported only when a run starts that tracker.

Each backend has ``start(config, run_name, run_dir, run_id)``, ``log_epoch(metrics, step)``,
``log_summary(summary, claims)``, ``finish(status)`` and ``run_id`` (None if the tracker has none).
What is logged:

- config: W&B ``config``; MLflow params (flattened ``a/b`` keys, text values); TensorBoard text ``config``.
- epochs: every finite number of a metrics.jsonl row, at step = epoch.
- summary: its numbers as ``summary/<key>`` (W&B run summary, MLflow metrics, TensorBoard scalars at the
  last epoch), its text fields as W&B summary / MLflow tags ``robustscale.<key>`` / TensorBoard text, and
  each claim's numbers as ``eval/<attack>-<eps>/<field>``; MLflow also keeps both as JSON artifacts.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from .. import __version__
from .metrics import claim_metrics, flatten, numeric_items

PROJECT = "robustscale"  # W&B project / MLflow experiment unless WANDB_PROJECT / MLFLOW_EXPERIMENT_NAME is set
_MLFLOW_STATUS = {"completed": "FINISHED", "interrupted": "KILLED"}  # anything else: FAILED
_MLFLOW_BATCH = 100  # MLflow's limit of params per log_batch call
_MLFLOW_VALUE_CHARS = 6000  # MLflow's limit of a param value's length


def _texts(summary: dict[str, Any]) -> dict[str, str]:
    return {k: v for k, v in flatten(summary).items() if isinstance(v, str)}


def _last_step(summary: dict[str, Any]) -> int:
    return int(summary.get("epochs_done") or summary.get("epochs") or 0)


class WandbTracker:
    name = "wandb"

    def __init__(self):
        self.run = None
        self.run_id = None

    def start(self, config: dict, run_name: str, run_dir: Path | None, run_id: str | None) -> None:
        import wandb

        directory = os.environ.get("WANDB_DIR") or (str(run_dir) if run_dir is not None else None)
        if directory is not None:
            Path(directory).mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT") or PROJECT, name=run_name, config=config,
                              dir=directory, id=run_id, resume="allow" if run_id else None,
                              reinit="create_new", job_type="train")
        self.run_id = self.run.id

    def log_epoch(self, metrics: dict, step: int) -> None:
        self.run.log(numeric_items(flatten(metrics)), step=step)

    def log_summary(self, summary: dict, claims: list[dict]) -> None:
        values: dict[str, Any] = {f"summary/{k}": v for k, v in numeric_items(flatten(summary)).items()}
        values.update({f"summary/{k}": v for k, v in _texts(summary).items()})
        values.update(claim_metrics(claims))
        self.run.summary.update(values)

    def finish(self, status: str = "completed") -> None:
        if self.run is not None:
            self.run.finish(exit_code=0 if status == "completed" else 1)
            self.run = None


class MlflowTracker:
    name = "mlflow"

    def __init__(self):
        self.client = None
        self.run_id = None

    def start(self, config: dict, run_name: str, run_dir: Path | None, run_id: str | None) -> None:
        from mlflow import MlflowClient
        from mlflow.entities import Param

        self.client = client = MlflowClient()  # MLFLOW_TRACKING_URI, else MLflow's default store
        experiment = os.environ.get("MLFLOW_EXPERIMENT_NAME") or PROJECT
        found = client.get_experiment_by_name(experiment)
        experiment_id = found.experiment_id if found is not None else client.create_experiment(experiment)
        if run_id is not None and self._exists(run_id):  # resume: the same run, params already logged
            self.run_id = run_id
            client.update_run(run_id, status="RUNNING")
            return
        run = client.create_run(experiment_id, run_name=run_name,
                                tags={"robustscale.version": __version__, "robustscale.run_dir": str(run_dir or "")})
        self.run_id = run.info.run_id
        params = [Param(k, str(v)[:_MLFLOW_VALUE_CHARS]) for k, v in flatten(config).items()]
        for i in range(0, len(params), _MLFLOW_BATCH):
            client.log_batch(self.run_id, params=params[i:i + _MLFLOW_BATCH])

    def _exists(self, run_id: str) -> bool:
        try:
            self.client.get_run(run_id)
            return True
        except Exception:  # noqa: BLE001  (MlflowException: a run of another store)
            return False

    def _log_metrics(self, values: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(k, v, now, step) for k, v in values.items()]
        for i in range(0, len(metrics), _MLFLOW_BATCH):
            self.client.log_batch(self.run_id, metrics=metrics[i:i + _MLFLOW_BATCH])

    def log_epoch(self, metrics: dict, step: int) -> None:
        self._log_metrics(numeric_items(flatten(metrics)), step)

    def log_summary(self, summary: dict, claims: list[dict]) -> None:
        from mlflow.entities import RunTag

        step = _last_step(summary)
        values = {f"summary/{k}": v for k, v in numeric_items(flatten(summary)).items()}
        self._log_metrics({**values, **claim_metrics(claims)}, step)
        tags = [RunTag(f"robustscale.{k}", v[:_MLFLOW_VALUE_CHARS]) for k, v in _texts(summary).items()]
        for i in range(0, len(tags), _MLFLOW_BATCH):
            self.client.log_batch(self.run_id, tags=tags[i:i + _MLFLOW_BATCH])
        self.client.log_dict(self.run_id, json.loads(json.dumps(summary, default=str)), "summary.json")
        self.client.log_dict(self.run_id, json.loads(json.dumps(claims, default=str)), "claims.json")

    def finish(self, status: str = "completed") -> None:
        if self.client is not None and self.run_id is not None:
            self.client.set_terminated(self.run_id, _MLFLOW_STATUS.get(status, "FAILED"))
            self.client = None


class TensorBoardTracker:
    name = "tensorboard"
    run_id = None

    def __init__(self):
        self.writer = None
        self.step = 0

    def start(self, config: dict, run_name: str, run_dir: Path | None, run_id: str | None) -> None:
        from torch.utils.tensorboard import SummaryWriter  # needs the tensorboard package

        log_dir = (run_dir / "tensorboard") if run_dir is not None else Path("runs") / run_name
        self.writer = SummaryWriter(log_dir=str(log_dir))
        self.writer.add_text("config", _markdown_json(config), 0)

    def log_epoch(self, metrics: dict, step: int) -> None:
        for key, value in numeric_items(flatten(metrics)).items():
            self.writer.add_scalar(key, value, step)
        self.step = max(self.step, step)
        self.writer.flush()

    def log_summary(self, summary: dict, claims: list[dict]) -> None:
        step = _last_step(summary) or self.step
        values = {f"summary/{k}": v for k, v in numeric_items(flatten(summary)).items()}
        for key, value in {**values, **claim_metrics(claims)}.items():
            self.writer.add_scalar(key, value, step)
        self.writer.add_text("summary", _markdown_json(summary), step)
        if claims:
            self.writer.add_text("claims", _markdown_json(claims), step)
        self.writer.flush()

    def finish(self, status: str = "completed") -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def _markdown_json(data: Any) -> str:
    """JSON in a markdown code block (TensorBoard renders text summaries as markdown)."""
    return "```\n" + json.dumps(data, indent=2, default=str) + "\n```"


BACKENDS = {"wandb": WandbTracker, "mlflow": MlflowTracker, "tensorboard": TensorBoardTracker}
