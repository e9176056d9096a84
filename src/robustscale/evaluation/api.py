"""Evaluate a checkpoint file or a run folder and write the claim next to it."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .. import rundir
from ..config import TrainConfig
from ..data import load_eval_tensors
from ..errors import UserError, check_writable_dir
from ..trackers import log_run_records
from .checkpoints import load_model, load_timm_folder
from .core import evaluate
from .records import build_claim, claim_path, eval_dir, record_in_store, state_path, update_summary
from .spec import EvalSpec

CHECKPOINTS = rundir.CHECKPOINTS


def _evaluate_model(model, info: dict, spec: EvalSpec, out_dir: Path, *, n_examples: int | None,
                    data_dir: str | None, download: bool, progress: bool, energy: bool, max_batches: int | None,
                    run: dict | None, price_preset: str, resume: bool) -> dict[str, Any]:
    """Load the first N test images, evaluate, and write the claim (when complete)."""
    x, y = load_eval_tensors(info["dataset"], n_examples, data_dir, download)
    if x.shape[1] != info["in_chans"]:
        raise UserError(f"dataset {info['dataset']} has {x.shape[1]}-channel images but the checkpoint's model "
                        f"takes {info['in_chans']}")
    # Before any compute is spent: the claim and the resume state go there.
    check_writable_dir(eval_dir(out_dir), "the evaluation folder", "the claim and its resume state go there: "
                       "make it writable, or for a checkpoint pass --output-dir")
    resume_file = state_path(out_dir, spec)
    if not resume and resume_file.is_file():
        resume_file.unlink()
    result = evaluate(model, x, y, spec=spec, state_path=resume_file, state_key=info["checkpoint_sha256"],
                      max_batches=max_batches, progress=progress, energy=energy, model_name=info["model"])
    out = {k: v for k, v in result.items() if k not in ("clean_flags", "robust_flags")}
    if not result["complete"]:
        out["state_path"] = str(resume_file)
        return out
    claim = build_claim(result, spec, info, run, price_preset=price_preset)
    path = rundir.write_json(claim_path(out_dir, spec), claim, mkdir=True)
    claim["claim_path"] = str(path)
    claim["complete"] = True
    return claim


def evaluate_checkpoint(checkpoint: str | Path, model_name: str | None = None, dataset: str | None = None, *,
                        attack: str = "pgd", eps: Any = None, norm: str = "linf", steps: int | None = None,
                        step_size: Any = None, restarts: int | None = None, n_examples: int | None = None,
                        batch_size: int = 256, seed: int = 0, amp: str = "off", data_dir: str | None = None,
                        download: bool = False, num_classes: int | None = None, use_ema: bool | None = None,
                        output_dir: str | Path | None = None, device: str | None = None, progress: bool = False,
                        energy: bool = True, max_batches: int | None = None, resume: bool = True,
                        price_preset: str = "default") -> dict[str, Any]:
    """Evaluate a checkpoint file (ours or timm's) or a timm-layout folder (``robustscale export``'s, or any with
    mean/std in its config.json); the claim goes to ``<output_dir or its folder>/eval/``.

    Returns the claim (``complete=True``), or for a run stopped by ``max_batches`` the partial result
    (``complete=False`` and ``state_path``; call again to continue).
    """
    dev = resolve_device(device)
    spec = EvalSpec.create(attack, eps, norm, steps, step_size, restarts, batch_size, seed, amp)
    if Path(checkpoint).is_dir():  # a timm-layout folder (config.json + model.safetensors); eval/ goes inside
        model, info = load_timm_folder(checkpoint, model_name, dataset, num_classes=num_classes)
        default_out = Path(checkpoint).resolve()
    else:
        model, info = load_model(checkpoint, model_name, dataset, num_classes=num_classes, use_ema=use_ema)
        default_out = Path(checkpoint).resolve().parent
    model = model.to(dev)
    out_dir = Path(output_dir) if output_dir is not None else default_out
    return _evaluate_model(model, info, spec, out_dir, n_examples=n_examples, data_dir=data_dir, download=download,
                           progress=progress, energy=energy, max_batches=max_batches, run=None,
                           price_preset=price_preset, resume=resume)


def evaluate_run(run_dir: str | Path, attack: str = "pgd", eps: Any = None, n_examples: int | None = None, *,
                 norm: str | None = None, steps: int | None = None, step_size: Any = None,
                 restarts: int | None = None, batch_size: int = 256, seed: int = 0, amp: str = "off",
                 checkpoint: str = "best", data_dir: str | None = None, download: bool | None = None,
                 device: str | None = None, progress: bool = False, energy: bool | None = None,
                 max_batches: int | None = None, resume: bool = True, store: str | None = None) -> dict[str, Any]:
    """Evaluate a training run folder; returns the claim.

    ``eps`` / ``norm`` default to the run's training threat model; ``checkpoint`` is ``best``
    (falls back to ``last``) or ``last``. The claim is written to ``<run_dir>/eval/<attack>-<eps>.json``,
    attached to ``<run_dir>/summary.json`` (pgd_robust_acc / aa_robust_acc / aa_n_examples) and
    recorded in the results store (``store`` URL, else the run's, if the store module is present).
    """
    dev = resolve_device(device)
    run_dir = Path(run_dir)
    cfg_path = run_dir / rundir.CONFIG
    if not cfg_path.is_file():
        raise UserError(f"not a run directory (no config.yaml): {run_dir}")
    if checkpoint not in CHECKPOINTS:
        raise UserError(f"unknown checkpoint {checkpoint!r}; valid: {', '.join(CHECKPOINTS)}")
    cfg = TrainConfig.from_yaml(cfg_path)
    spec = EvalSpec.create(attack, cfg.eps if eps is None else eps, norm or cfg.norm, steps, step_size, restarts,
                           batch_size, seed, amp)
    path = rundir.checkpoint_path(run_dir, checkpoint)
    model, info = load_model(path, cfg.model, cfg.dataset)
    model = model.to(dev)
    run = {"name": cfg.name or run_dir.name, "run_dir": str(run_dir)}
    claim = _evaluate_model(model, info, spec, run_dir, n_examples=n_examples,
                            data_dir=data_dir if data_dir is not None else cfg.data_dir,
                            download=cfg.download if download is None else download, progress=progress,
                            energy=cfg.energy if energy is None else energy, max_batches=max_batches, run=run,
                            price_preset=cfg.price_preset, resume=resume)
    if claim.get("complete"):
        update_summary(run_dir, claim, spec.file_stem)
        record_in_store(run_dir, claim, store=store)
        if cfg.log_to:  # the run's experiment trackers get the claim too (the same W&B / MLflow runs)
            log_run_records(run_dir, cfg)
    return claim


def resolve_device(device: str | None):
    """``--device`` as a torch device that exists here (UserError naming it and the valid ones)."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise UserError(f"invalid device {device!r}; e.g. cpu, cuda, cuda:1") from None
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise UserError(f"--device {device} requested but CUDA is not available here (no CUDA GPU); "
                            f"use --device cpu (or leave --device out)")
        if dev.index is not None and dev.index >= count:
            raise UserError(f"--device {device} does not exist; valid: cpu, "
                            f"{', '.join(f'cuda:{i}' for i in range(count))}")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"--device {device} requested but MPS is not available here; use --device cpu")
    elif dev.type not in ("cpu", "mps"):
        raise UserError(f"unsupported --device {device!r}; valid: cpu, cuda, cuda:N")
    return dev
