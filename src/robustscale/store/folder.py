"""What a run folder says about its run: its config, summary, epochs, evaluation claims and status.

A run folder holds ``config.yaml``, ``metrics.jsonl`` (one JSON object per finished epoch),
``summary.json`` (written when training ends or is interrupted), ``state.pt`` (the resumable
state) and ``eval/*.json`` (evaluation claims). The folder is the source of truth; the store an
index of it (``store/sync.py`` makes the rows match).

Status from the folder: a ``completed`` summary -> done; an ``interrupted`` one, or a
``state.pt`` without a summary (killed) -> interrupted (resumable); a ``diverged`` one -> failed;
nothing resumable -> failed.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import TrainConfig
from ..errors import UserError
from .tables import RunStatus

# Per-epoch check keys of metrics.jsonl: they describe the epoch's check (often on validation images), not
# the run's headline, and are not merged into the summary of a run that stopped before writing one.
_EPOCH_CHECK_KEYS = ("clean_acc", "pgd_robust_acc", "fgsm_robust_acc", "eval_images", "eval_split", "eval_attack",
                     "train_clean_acc", "train_adv_acc", "train_loss", "best")


def config_of(cfg_or_run_dir) -> TrainConfig:
    """The ``TrainConfig`` given, or the one in ``<run_dir>/config.yaml`` (named after the folder if unnamed)."""
    if isinstance(cfg_or_run_dir, TrainConfig):
        return cfg_or_run_dir
    run_dir = Path(cfg_or_run_dir)
    path = run_dir / "config.yaml"
    if not path.is_file():
        raise UserError(f"{run_dir} is not a run folder (no config.yaml)")
    cfg = TrainConfig.from_yaml(path)
    if not cfg.name:
        cfg = cfg.replace(name=run_dir.name)
    if cfg.output_dir is not None and not Path(cfg.output_dir).is_absolute():
        # Relative to where the run started: its store is beside the folder, not under the current directory.
        cfg = cfg.replace(output_dir=str(run_dir.resolve().parent))
    return cfg


def run_dir_of(cfg_or_run_dir, cfg: TrainConfig) -> Path:
    """The run folder: the one given, else ``<output_dir>/<name>`` of the config."""
    if isinstance(cfg_or_run_dir, TrainConfig):
        return Path(cfg.output_dir) / str(cfg.name)
    return Path(cfg_or_run_dir)


def read_summary(run_dir: Path) -> dict | None:
    """``summary.json`` of a run folder; None when missing or unreadable (then the run has no summary)."""
    try:
        data = json.loads((Path(run_dir) / "summary.json").read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


@dataclass
class RunFolder:
    """What one run folder says about its run."""

    path: Path
    cfg: Any  # TrainConfig
    status: RunStatus
    summary: dict[str, Any] | None
    epochs: list[dict[str, Any]] = field(default_factory=list)
    claims: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None

    @property
    def name(self) -> str:
        return str(self.cfg.name)


def read_run_folder(run_dir: str | os.PathLike) -> RunFolder:
    """Parse a run folder; UserError when it is not one (no config.yaml) or a file is unreadable."""
    path = Path(run_dir)
    if not path.is_dir():
        raise UserError(f"run folder not found: {path}")
    cfg = config_of(path)
    summary = _read_json(path / "summary.json")
    epochs = _read_metrics(path / "metrics.jsonl")
    claims = [{**c, "claim_file": p.name} for p, c in ((p, _read_json(p)) for p in sorted((path / "eval").glob("*.json"))
                                                      if not p.name.startswith(".")) if c and c.get("attack")]
    folder = RunFolder(path, cfg, RunStatus.FAILED, summary, epochs, claims)
    done = summary is not None and summary.get("status") == "completed"
    if done:
        folder.status = RunStatus.DONE
    elif summary is not None and summary.get("status") == "diverged":
        folder.status, folder.error = RunStatus.FAILED, str(summary.get("error") or "training diverged")
    elif (path / "state.pt").is_file() or (summary is not None and summary.get("status") == "interrupted"):
        folder.status = RunStatus.INTERRUPTED
        folder.error = f"stopped after epoch {len(epochs)}; resume with: robustscale train --resume {path}"
    else:
        folder.error = "stopped before its first checkpoint (no state.pt, no summary.json)"
    if not done and epochs and (summary is None or (summary.get("epochs_done") or 0) < epochs[-1]["epoch"]):
        # The last epoch row holds the run's cumulative compute; an older summary does not.
        folder.summary = {**(summary or {}), **{k: v for k, v in epochs[-1].items()
                                                if v is not None and k not in _EPOCH_CHECK_KEYS},
                          "epochs_done": epochs[-1]["epoch"]}
    return folder


# ---------------------------------------------------------------------- reading
def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except ValueError as exc:
        raise UserError(f"cannot read {path}: not valid JSON ({exc})") from None
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror}") from None
    return data if isinstance(data, dict) else None


def metrics_rows(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """The rows of a metrics.jsonl as ``(line, row)`` in file order (none when the file is absent). A last
    line cut by a kill mid-write is left out (its epoch did not finish); any other line that is not a JSON
    object is a UserError naming the file and the line. Training (resume) and the store both read through it."""
    if not path.is_file():
        return []
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read {path}: {getattr(exc, 'strerror', None) or 'not UTF-8 text'}") from None
    out = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            row = None
            if i == len(lines) - 1:
                break
        if not isinstance(row, dict):
            raise UserError(f"{path} line {i + 1} is not a JSON object ({line.strip()[:40]!r}); remove or fix that "
                            f"line (one JSON object per epoch)")
        out.append((line, row))
    return out


def _read_metrics(path: Path) -> list[dict[str, Any]]:
    """The epochs of metrics.jsonl, last row per epoch (a resumed epoch is written again)."""
    by_epoch = {row["epoch"]: row for _, row in metrics_rows(path) if isinstance(row.get("epoch"), int)}
    return [by_epoch[e] for e in sorted(by_epoch)]
