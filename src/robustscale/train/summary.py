"""The run folder's records written by training: config.yaml, env.json, metrics.jsonl, summary.json."""
from __future__ import annotations

import contextlib
import json
import platform
import socket
import sys
import time
from pathlib import Path

import numpy
import timm
import torch
import yaml

from .. import __version__, rundir
from ..config import SINGLE_STEP_DEFAULT_STEP, Method, Select, TrainConfig
from ..intervals import with_interval
from ..schema import RUN_COLUMNS, collapsed_at_selected
from ..store.folder import metrics_rows
from .distributed import Dist

__all__ = ["environment", "write_config_and_env", "append_metrics", "truncate_metrics", "epoch_line",
           "build_summary", "method_attack_steps", "collapse_fields", "selection_record"]

# The compute record's keys that are run columns (robustscale.compute.summarize_run_compute).
_COMPUTE_COLUMNS = ("train_flops", "train_flops_per_image", "eval_flops", "wall_seconds", "device_hours",
                    "device_name", "device_count", "energy_kwh", "emissions_kg", "electricity_usd",
                    "cloud_usd_low", "cloud_usd_high")


def environment(dinfo: Dist) -> dict:
    """Versions, host, device and command line of this session (one entry of env.json)."""
    device_name = torch.cuda.get_device_name(dinfo.device) if dinfo.device.type == "cuda" else platform.processor() \
        or platform.machine()
    return {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "host": socket.gethostname(),
        "platform": platform.platform(), "python": platform.python_version(),
        "robustscale": __version__, "torch": torch.__version__, "timm": timm.__version__,
        "numpy": numpy.__version__, "cuda": torch.version.cuda, "device": str(dinfo.device),
        "device_name": device_name, "world_size": dinfo.world, "threads": torch.get_num_threads(),
        "command": sys.argv,
    }


def write_config_and_env(run_dir: Path, cfg: TrainConfig, dinfo: Dist) -> None:
    """config.yaml (exactly what runs) and env.json (one more session appended)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    rundir.write_text(run_dir / rundir.CONFIG, yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    env_path = run_dir / rundir.ENV
    sessions = []
    if env_path.is_file():
        with contextlib.suppress(Exception):
            sessions = json.loads(env_path.read_text()).get("sessions", [])
    sessions.append(environment(dinfo))
    rundir.write_json(env_path, {"sessions": sessions})


def metrics_lines(run_dir: Path) -> list[tuple[str, dict]]:
    """The rows of the run's metrics.jsonl as ``(line, row)`` (:func:`robustscale.store.folder.metrics_rows`)."""
    return metrics_rows(run_dir / rundir.METRICS)


def append_metrics(run_dir: Path, row: dict) -> None:
    """Add the row of epoch ``row["epoch"]`` to metrics.jsonl (replacing that epoch and later ones)."""
    lines = [ln for ln, old in metrics_lines(run_dir) if old.get("epoch", 0) < row["epoch"]]
    lines.append(rundir.dumps(row))
    rundir.write_text(run_dir / rundir.METRICS, "\n".join(lines) + "\n")


def truncate_metrics(run_dir: Path, epochs_done: int) -> None:
    """Drop metrics.jsonl rows of epochs after ``epochs_done`` (a resume redoes them)."""
    path = run_dir / rundir.METRICS
    if path.is_file():
        rows = metrics_lines(run_dir)
        kept = [ln for ln, row in rows if row.get("epoch", 0) <= epochs_done]
        if len(kept) != sum(1 for ln in path.read_text().splitlines() if ln.strip()):
            rundir.write_text(path, "".join(ln + "\n" for ln in kept))


def epoch_line(cfg: TrainConfig, row: dict) -> str:
    """The one-line report of an epoch's metrics row, for stderr."""
    parts = [f"epoch {row['epoch']}/{cfg.epochs}", f"loss {row['train_loss']:.4f}"]
    if row["train_adv_acc"] is not None:
        parts.append(f"train adv {row['train_adv_acc']:.1f}%")
    if row["train_clean_acc"] is not None:
        parts.append(f"train clean {row['train_clean_acc']:.1f}%")
    split = row.get("eval_split") or "test"
    if row["clean_acc"] is not None:
        parts.append(f"{split} clean {row['clean_acc']:.1f}%")
    if row["pgd_robust_acc"] is not None:
        parts.append(f"{split} pgd{cfg.eval_attack_steps} {row['pgd_robust_acc']:.1f}%")
    if row.get("fgsm_robust_acc") is not None:
        parts.append(f"{split} fgsm {row['fgsm_robust_acc']:.1f}%")
    parts.append(f"{row['images_per_second']:.0f} img/s")
    return " | ".join(parts)


def selection_record(cfg: TrainConfig, split: str | None, counters, selected: dict | None) -> dict:
    """Which checkpoint the run reports and why: ``selected_epoch``, ``selection_split`` (``val``, ``test`` or
    None for ``select: last``), ``selection_metric``, and the selected epoch's accuracies on that split
    (``selection_<metric>`` with ``_n_examples`` and Wilson ``_ci``). ``best.safetensors`` holds that epoch."""
    if cfg.select is Select.LAST or split is None:
        out = {"selected_epoch": counters.epoch if counters.epoch else None, "selection_split": None,
               "selection_metric": "last epoch"}
    else:
        out = {"selected_epoch": counters.best_epoch, "selection_split": split,
               "selection_metric": cfg.selection_metric}
    if split is not None and selected:
        for metric in ("clean_acc", "pgd_robust_acc"):
            if selected.get(metric) is not None:
                rec = with_interval(selected, metric, selected.get("n_examples"))
                out.update({f"{split}_{k}": v for k, v in rec.items()})
    return out


def method_attack_steps(cfg: TrainConfig) -> int:
    """Attack steps the method actually takes (fgsm_rs, n_fgsm, grad_align: 1; standard: 0)."""
    if cfg.method in (Method.PGD, Method.TRADES):
        return cfg.attack_steps
    return 1 if cfg.method in SINGLE_STEP_DEFAULT_STEP else 0


def collapse_fields(cfg: TrainConfig, collapse: dict | None, monitored: bool) -> dict:
    """The catastrophic-overfitting record: the flag's epoch and rule, both accuracies, the thresholds."""
    found = collapse or {}
    return {"collapsed_epoch": found.get("collapsed_epoch"), "collapse_reason": found.get("collapse_reason"),
            "collapse_pgd_robust_acc": found.get("collapse_pgd_robust_acc"),
            "collapse_fgsm_robust_acc": found.get("collapse_fgsm_robust_acc"),
            "collapse_monitored": monitored, "collapse_ratio": cfg.collapse_ratio, "collapse_gap": cfg.collapse_gap,
            "on_collapse": cfg.on_collapse.value}


def build_summary(cfg: TrainConfig, *, status: str, model_parameters: int, train_images: int, counters,
                  compute: dict, clean_acc: float | None, pgd_robust_acc: float | None, n_examples: int | None,
                  details: dict) -> dict:
    """The run record: every ``schema.RUN_COLUMNS`` column in order, then ``details``. ``n_examples``: the test
    images behind ``clean_acc`` / ``pgd_robust_acc``."""
    values = {
        "name": cfg.name, "source": "robustscale", "status": status, "config_hash": cfg.config_hash(),
        "dataset": cfg.dataset, "model": cfg.model, "model_parameters": model_parameters,
        "method": cfg.method.value, "attack_steps": method_attack_steps(cfg),
        "eps": cfg.eps, "norm": cfg.norm.value, "epochs": cfg.epochs,
        "synthetic_data": bool(cfg.generated_data) and cfg.generated_fraction > 0,
        "train_images": train_images, "train_images_seen": counters.images_seen,
        **{k: compute[k] for k in _COMPUTE_COLUMNS},
        "clean_acc": clean_acc, "clean_acc_n_examples": n_examples if clean_acc is not None else None,
        "pgd_robust_acc": pgd_robust_acc, "pgd_robust_acc_n_examples": n_examples if pgd_robust_acc is not None else None,
        "apgd_ce_robust_acc": None, "apgd_ce_robust_acc_n_examples": None,  # from `evaluate` (AutoAttack's APGD-CE)
        # Until AutoAttack runs, collapsed is only known to be True: the reported checkpoint's epoch is flagged.
        "aa_robust_acc": None, "aa_n_examples": None, "collapsed": True if collapsed_at_selected(details) else None,
        "collapsed_epoch": details.get("collapsed_epoch"),
    }
    return {**{col: values[col] for col in RUN_COLUMNS}, **details}
