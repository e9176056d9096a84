"""The run folder: its file names, atomic writes, weights, and loading a run back.

A training run is a folder ``<output_dir>/<name>/``::

    config.yaml        the resolved TrainConfig (round-trips through TrainConfig.from_yaml)
    env.json           versions, host, devices, command line (one entry per session)
    metrics.jsonl      one JSON object per epoch
    last.safetensors   weights after the last epoch  } the inner timm model's state dict (timm key names);
    best.safetensors   weights of the best epoch     } model name, dataset, mean/std in the metadata
    state.pt           everything needed to resume
    summary.json       the run record (robustscale.schema columns + details)
    eval/              evaluation claims ``<attack>-<eps>.json`` (robustscale.evaluation.records)

Optional files are read back with :func:`read_json` (None when absent), the claims with :func:`read_claims`.
Every file of the package is written through :func:`atomic_write` (a temp file in the same folder,
then ``os.replace``), so a crash never leaves a half-written file; whole folders (exports,
downloads) through :func:`atomic_dir`.
"""
from __future__ import annotations

import contextlib
import enum
import json
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator

from safetensors import safe_open
from safetensors.torch import load_file, save_file

from . import __version__
from .config import TrainConfig
from .data.info import dataset_info, dataset_normalization
from .errors import UserError
from .models import create_model

__all__ = ["CONFIG", "ENV", "METRICS", "STATE", "SUMMARY", "EVAL_DIR", "CHECKPOINTS", "weights_path",
           "checkpoint_path", "read_config", "read_json", "read_claims", "atomic_write", "atomic_dir", "write_text",
           "write_bytes", "write_json", "json_default", "dumps", "inner_model", "save_weights", "load_weights", "load_state_dict", "load_run",
           "build_model"]

CONFIG = "config.yaml"
ENV = "env.json"
METRICS = "metrics.jsonl"
STATE = "state.pt"
SUMMARY = "summary.json"
EVAL_DIR = "eval"
CHECKPOINTS = ("best", "last")


# ---------------------------------------------------------------------- paths
def weights_path(run_dir: str | Path, which: str) -> Path:
    """``<run_dir>/<which>.safetensors`` (``which``: best or last)."""
    return Path(run_dir) / f"{which}.safetensors"


def checkpoint_path(run_dir: str | Path, checkpoint: str = "best") -> Path:
    """The weights file of ``checkpoint`` (``best`` falls back to ``last``); UserError when there is none."""
    if checkpoint not in CHECKPOINTS:
        raise UserError(f"unknown checkpoint {checkpoint!r}; valid: {', '.join(CHECKPOINTS)}")
    path = weights_path(run_dir, checkpoint)
    if not path.is_file():
        path = weights_path(run_dir, "last")
    if not path.is_file():
        raise UserError(f"run {run_dir} has no checkpoint yet (no best/last.safetensors)")
    return path


def read_config(run_dir: str | Path) -> TrainConfig:
    """The run's TrainConfig (from config.yaml); UserError when ``run_dir`` is not a run folder."""
    path = Path(run_dir) / CONFIG
    if not path.is_file():
        raise UserError(f"not a run directory (no config.yaml): {run_dir}")
    return TrainConfig.from_yaml(path)


def read_json(path: str | Path) -> Any:
    """The JSON in ``path``, or None when the file is absent or not JSON (optional run files)."""
    path = Path(path)
    try:
        return json.loads(path.read_text()) if path.is_file() else None
    except ValueError:
        return None


def read_claims(run_dir: str | Path) -> list[dict[str, Any]]:
    """The evaluation claims of a run (``eval/*.json``), each with ``file_stem`` (its file's name)."""
    claims = []
    for path in sorted((Path(run_dir) / EVAL_DIR).glob("*.json")):
        claim = read_json(path)  # None: not a claim (a half-copied file); the card lists what can be read
        if isinstance(claim, dict) and claim.get("clean_acc") is not None:
            claims.append({**claim, "file_stem": path.stem})
    return claims


# ---------------------------------------------------------------------- atomic writes
def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | Path, write: Callable[[str], Any], *, mkdir: bool = False) -> Path:
    """Call ``write(tmp)`` on a temp file beside ``path``, then ``os.replace`` it onto ``path``.

    Readers see the old file or the new one, never half of one; the temp file is removed on failure.
    ``mkdir``: create the parent folders first.
    """
    path = Path(path)
    if mkdir:
        path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual permissions
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


@contextlib.contextmanager
def atomic_dir(path: str | Path, *, replace: bool = False, mkdir: bool = False) -> Iterator[Path]:
    """``with atomic_dir(path) as tmp:`` fill ``tmp``, a temporary sibling folder; on success it becomes ``path``.

    A new ``path`` appears whole or not at all: if the block raises, ``tmp`` is removed and ``path``
    is untouched. An existing ``path`` is swapped whole with ``replace`` (the old folder is moved
    aside, then removed; put back if the swap fails), else the entries of ``tmp`` are moved into it
    one by one, replacing entries of the same name and keeping the others. ``mkdir``: create the
    parent folders first.
    """
    path = Path(path)
    if mkdir:
        path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex[:8]}.tmp"
    tmp.mkdir()  # not mkdtemp (0700): the folder gets the usual permissions, it is often meant to be shared
    try:
        yield tmp
        if not path.exists():
            os.replace(tmp, path)
        elif replace:
            _swap_dir(tmp, path)
        else:
            for entry in sorted(tmp.iterdir()):
                os.replace(entry, path / entry.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _swap_dir(tmp: Path, target: Path) -> None:
    """Rename ``tmp`` to ``target``; the existing ``target`` is moved aside first and removed after."""
    old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
    os.replace(target, old / "x")
    try:
        os.replace(tmp, target)
    except BaseException:
        os.replace(old / "x", target)  # put the previous folder back
        raise
    finally:
        shutil.rmtree(old, ignore_errors=True)


def write_bytes(path: str | Path, data: bytes, *, mkdir: bool = False) -> Path:
    return atomic_write(path, lambda tmp: Path(tmp).write_bytes(data), mkdir=mkdir)


def write_text(path: str | Path, text: str, *, mkdir: bool = False) -> Path:
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"), mkdir=mkdir)


def json_default(value: Any):
    """JSON for what ``json`` cannot encode: enums by value, NumPy/torch scalars and arrays as lists or
    numbers, anything else (paths, dates) as its string."""
    if isinstance(value, enum.Enum):
        return value.value
    if hasattr(value, "tolist"):  # numpy arrays and scalars, torch tensors
        return value.tolist()
    return str(value)


def dumps(obj: Any, **kwargs) -> str:
    return json.dumps(obj, default=json_default, **kwargs)


def write_json(path: str | Path, data: Any, *, indent: int | None = 2, mkdir: bool = False) -> Path:
    """``data`` as JSON (with :func:`json_default`) plus a newline, atomically."""
    return write_text(path, dumps(data, indent=indent) + "\n", mkdir=mkdir)


# ---------------------------------------------------------------------- weights
def inner_model(model):
    """The timm model inside NormalizedModel (checkpoints use its key names)."""
    return getattr(model, "model", model)


def save_weights(path: str | Path, model, cfg, **metadata: Any) -> None:
    """Save ``model``'s inner timm state dict to safetensors, with model/dataset/mean/std in the metadata.

    ``timm.create_model(meta["model"], num_classes=..., in_chans=...).load_state_dict(load_file(path))``
    works without robustscale; inputs must then be normalized with ``meta["mean"]`` / ``meta["std"]``.
    """
    state = {k: v.detach().to("cpu").contiguous() for k, v in inner_model(model).state_dict().items()}
    mean = getattr(model, "mean", None)
    std = getattr(model, "std", None)
    meta = {
        "format": "pt", "model": cfg.model, "dataset": cfg.dataset, "method": cfg.method.value,
        "eps": repr(cfg.eps), "norm": cfg.norm.value, "config_hash": cfg.config_hash(),
        "num_classes": str(getattr(inner_model(model), "num_classes", "")),
        "mean": json.dumps([float(m) for m in mean.flatten()]) if mean is not None else "",
        "std": json.dumps([float(s) for s in std.flatten()]) if std is not None else "",
        "robustscale_version": __version__,
    }
    meta.update({k: v if isinstance(v, str) else dumps(v) for k, v in metadata.items()})
    atomic_write(path, lambda tmp: save_file(state, tmp, metadata=meta))


def load_state_dict(model, state, source: str, model_name: str) -> None:
    """Load ``state`` into ``model`` strictly, stripping ``model.`` when that is what matches.

    Raises UserError naming the first few missing / unexpected / mis-shaped keys.
    """
    own = model.state_dict()
    candidates = [dict(state)]
    if any(k.startswith("model.") for k in state):
        candidates.append({k[len("model."):] if k.startswith("model.") else k: v for k, v in state.items()})
    best = min(candidates, key=lambda sd: len(set(own) ^ set(sd)))
    missing = [k for k in own if k not in best]
    unexpected = [k for k in best if k not in own]
    shapes = [f"{k} {tuple(best[k].shape)} vs {tuple(own[k].shape)}" for k in own
              if k in best and tuple(best[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        parts = []
        for what, keys in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatch", shapes)):
            if keys:
                more = f" (+{len(keys) - 3} more)" if len(keys) > 3 else ""
                parts.append(f"{what} {', '.join(keys[:3])}{more}")
        raise UserError(f"checkpoint {source} does not match model {model_name}: {'; '.join(parts)}")
    model.load_state_dict(best, strict=True)


def load_weights(path: str | Path, model) -> dict[str, str]:
    """Load a checkpoint written by :func:`save_weights` into ``model`` (NormalizedModel or timm model);
    returns the metadata (str -> str)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata() or {}
    inner = inner_model(model)
    load_state_dict(inner, load_file(str(path)), str(path), meta.get("model") or type(inner).__name__)
    return meta


def load_run(run_dir: str | Path, checkpoint: str = "best"):
    """``(TrainConfig, model)`` of a finished or interrupted run; the model takes [0,1] pixels, eval mode, CPU.

    ``checkpoint``: ``"best"`` (highest per-epoch PGD accuracy; falls back to ``last`` if absent) or ``"last"``.
    """
    run_dir = Path(run_dir)
    if checkpoint not in CHECKPOINTS:
        raise UserError(f"unknown checkpoint {checkpoint!r}; valid: {', '.join(CHECKPOINTS)}")
    cfg = read_config(run_dir)
    path = checkpoint_path(run_dir, checkpoint)
    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata() or {}
    info = dataset_info(cfg.dataset)
    num_classes = int(meta.get("num_classes") or info.num_classes or 10)
    in_chans = len(json.loads(meta["mean"])) if meta.get("mean") else info.in_chans
    model = build_model(cfg, num_classes, in_chans)
    load_weights(path, model)
    return cfg, model.eval()


def build_model(cfg, num_classes: int, in_chans: int):
    """The untrained model of run config ``cfg`` (a NormalizedModel with the dataset's mean/std, and
    ``cfg.drop_rate``)."""
    kwargs = {"drop_rate": cfg.drop_rate} if cfg.drop_rate > 0 else {}
    return create_model(cfg.model, num_classes=num_classes, in_chans=in_chans, **dataset_normalization(cfg.dataset),
                        **kwargs)
