"""Load a classifier from a checkpoint file, ours (safetensors) or timm's (.pth / .pth.tar), or a timm-layout folder.

Accepted layouts (all end up as the INNER timm model's state dict):

- ``*.safetensors`` written by ``robustscale train``: the inner model's tensors; the metadata may
  name ``model``, ``dataset``, ``num_classes``, ``in_chans``, ``mean`` and ``std``.
- ``*.pth`` / ``*.pth.tar`` / ``*.pt``: a bare state dict, or a training checkpoint holding it under
  ``state_dict_ema`` / ``model_ema`` (preferred unless ``use_ema=False``) or ``state_dict`` / ``model``.
- Key prefixes of wrappers are removed: DDP ``module.``, ``torch.compile``'s ``_orig_mod.``, and our
  :class:`~robustscale.models.NormalizedModel`'s ``model.`` (only when that makes the keys match).

- A timm-layout folder (:func:`load_timm_folder`; ``robustscale export`` writes them, the Hub holds
  them): ``config.json`` (architecture, model_args, mean/std) beside ``model.safetensors`` or
  ``pytorch_model.bin``.

Files are read with ``weights_only=True`` (no arbitrary code from pickles; timm's argparse
``args`` entry is allowed, as timm itself does).
"""
from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path
from typing import Any, Mapping

import torch
from safetensors import SafetensorError, safe_open
from timm.models import clean_state_dict

from ..data.info import dataset_info
from ..errors import UserError
from ..models import create_model
from ..rundir import load_state_dict, read_json

EMA_KEYS = ("state_dict_ema", "model_ema")
MODEL_KEYS = ("state_dict", "model")
META_KEYS = ("model", "dataset", "num_classes", "in_chans", "mean", "std")
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")  # what timm / the Hub name a folder's weights


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes (keys resume state, recorded in claims)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def read_checkpoint(path: str | Path, use_ema: bool | None = None) -> tuple[dict, dict[str, Any], str]:
    """``(state_dict, metadata, weights)`` of a checkpoint file; weights is ``"ema"`` or ``"model"``.

    Raises UserError for a missing file or one that holds no state dict.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        try:
            with safe_open(str(path), framework="pt", device="cpu") as fh:
                meta = _parse_meta(fh.metadata() or {})
                state = {k: fh.get_tensor(k) for k in fh.keys()}
        except (SafetensorError, OSError) as exc:
            raise UserError(f"cannot read safetensors checkpoint {path}: {str(exc).splitlines()[0]}") from None
        return _clean(state), meta, ("ema" if meta.get("weights") == "ema" else "model")
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001  (pickle refusals, truncated zip files, not a torch file at all)
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UserError(f"cannot read checkpoint {path} as a PyTorch state dict (weights_only): {reason}") from None
    if not isinstance(obj, Mapping):
        raise UserError(f"checkpoint {path} holds a {type(obj).__name__}, not a state dict")
    weights = "model"
    keys = {None: EMA_KEYS + MODEL_KEYS, True: EMA_KEYS, False: MODEL_KEYS}[use_ema]
    for key in keys:
        if isinstance(obj.get(key), Mapping):
            state, weights = obj[key], ("ema" if key in EMA_KEYS else "model")
            break
    else:
        if use_ema is True:
            raise UserError(f"checkpoint {path} has no EMA weights (keys {', '.join(EMA_KEYS)})")
        state = obj
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        shown = ", ".join(list(map(str, obj.keys()))[:8])
        raise UserError(f"checkpoint {path} holds no tensors; top-level keys: {shown}")
    meta = {k: obj[k] for k in META_KEYS if k in obj and isinstance(obj[k], (str, int, float, list, tuple))}
    return _clean(tensors), meta, weights


def _parse_meta(raw: Mapping[str, str]) -> dict[str, Any]:
    """safetensors metadata is str -> str; values we wrote as JSON are decoded."""
    out: dict[str, Any] = {}
    for k, v in raw.items():
        try:
            out[k] = json.loads(v)
        except (TypeError, ValueError):
            out[k] = v
    if "model_name" in out and "model" not in out:
        out["model"] = out["model_name"]
    return out


def _clean(state: Mapping[str, Any]) -> dict:
    return clean_state_dict(dict(state))


def load_model(checkpoint: str | Path, model_name: str | None = None, dataset: str | None = None,
               num_classes: int | None = None, use_ema: bool | None = None):
    """Build a :class:`~robustscale.models.NormalizedModel` from a checkpoint, in eval mode.

    ``model_name`` / ``dataset`` / ``num_classes`` default to the checkpoint's metadata (our
    safetensors carry them); the dataset gives in_chans, mean and std (metadata mean/std win, as
    they are what the model was trained with).

    Returns:
        ``(model, info)`` with info = ``{"model", "dataset", "num_classes", "in_chans", "mean", "std",
        "checkpoint", "checkpoint_sha256", "weights"}``.
    """
    state, meta, weights = read_checkpoint(checkpoint, use_ema=use_ema)
    model_name = model_name or meta.get("model")
    dataset = dataset or meta.get("dataset")
    if not model_name:
        raise UserError(f"checkpoint {checkpoint} does not name its model; pass --model NAME")
    if not dataset:
        raise UserError(f"checkpoint {checkpoint} does not name its dataset; pass --dataset NAME")
    info = dataset_info(dataset)
    num_classes = num_classes or meta.get("num_classes") or info.num_classes
    if not num_classes:
        raise UserError(f"dataset {info.name.value} does not fix the number of classes; pass --num-classes")
    mean, std = meta.get("mean") or None, meta.get("std") or None
    if mean is None or std is None:
        mean, std = info.mean, info.std
    in_chans = int(meta.get("in_chans") or (len(mean) if meta.get("mean") else info.in_chans))
    model = create_model(model_name, num_classes=int(num_classes), in_chans=in_chans, mean=mean, std=std)
    load_state_dict(model.model, state, str(checkpoint), model_name)
    model.eval()
    return model, {"model": model_name, "dataset": info.name.value, "num_classes": int(num_classes),
                   "in_chans": in_chans, "mean": list(map(float, model.mean.flatten())),
                   "std": list(map(float, model.std.flatten())), "checkpoint": str(checkpoint),
                   "checkpoint_sha256": file_sha256(checkpoint), "weights": weights}


def load_timm_folder(folder: str | Path, model_name: str | None = None, dataset: str | None = None,
                     num_classes: int | None = None):
    """``(model, info)`` from a timm-layout folder (ours, or any with mean/std in its config.json).

    ``model`` is a :class:`~robustscale.models.NormalizedModel` in eval mode taking [0,1] pixels; ``info``
    has the keys of :func:`load_model`'s. The architecture must be a timm model
    (robustscale's included); ``dataset`` defaults to our config's ``robustscale.dataset``.
    """
    folder = Path(folder)
    config = read_json(folder / "config.json")
    if not isinstance(config, dict):
        raise UserError(f"{folder} is not a timm-layout folder (no readable config.json)")
    pretrained = config.get("pretrained_cfg") if isinstance(config.get("pretrained_cfg"), dict) else config
    ours = config.get("robustscale") or {}
    model_name = model_name or config.get("architecture")
    dataset = dataset or ours.get("dataset")
    if not model_name:
        raise UserError(f"{folder}/config.json names no architecture; pass --model NAME")
    if not dataset:
        raise UserError(f"{folder}/config.json does not name its dataset; pass --dataset NAME")
    mean, std = pretrained.get("mean"), pretrained.get("std")
    if not mean or not std:
        raise UserError(f"{folder}/config.json has no mean/std in its pretrained_cfg: the input normalization "
                        f"is unknown")
    args = dict(config.get("model_args") or {})
    num_classes = int(num_classes or args.pop("num_classes", None) or config.get("num_classes")
                      or dataset_info(dataset).num_classes)
    args.pop("num_classes", None)
    in_chans = int(args.pop("in_chans", None) or (pretrained.get("input_size") or [len(mean)])[0])
    weights_file = next((folder / f for f in WEIGHT_FILES if (folder / f).is_file()), None)
    if weights_file is None:
        raise UserError(f"{folder} has no weights file; expected one of {', '.join(WEIGHT_FILES)}")
    state, _, kind = read_checkpoint(weights_file)
    model = create_model(model_name, num_classes=num_classes, in_chans=in_chans, mean=mean, std=std, **args)
    load_state_dict(model.model, state, str(weights_file), model_name)
    model.eval()
    return model, {"model": model_name, "dataset": dataset_info(dataset).name.value, "num_classes": num_classes,
                   "in_chans": in_chans, "mean": list(map(float, model.mean.flatten())),
                   "std": list(map(float, model.std.flatten())), "checkpoint": str(folder),
                   "checkpoint_sha256": file_sha256(weights_file), "weights": ours.get("weights_kind") or kind}
