"""Evaluate a classifier: clean accuracy, then robust accuracy under an attack, with its compute.

Three entry points, from tensors to a run folder:

- :func:`evaluate` (model, x, y, ...) -> result dict (accuracies in percent, per-stage accuracies,
  passes, FLOPs, time, energy, warnings);
- :func:`evaluate_checkpoint` (model name, checkpoint file, dataset, ...) -> claim dict, written to
  ``<checkpoint dir>/eval/<attack>-<eps>.json``;
- :func:`evaluate_run` (run folder, ...) -> claim dict, written to ``<run_dir>/eval/<attack>-<eps>.json``
  and attached to ``<run_dir>/summary.json`` and the results store.

The model always runs in eval mode on [0,1] pixels (normalization inside the model), with its
parameters' ``requires_grad`` off (attacks need input gradients only; the FLOP accounting counts
input-only backwards).
"""
from __future__ import annotations

import hashlib
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..attacks import input_grad_only
from ..compute import ComputeTracker, add_summaries, measure_step_flops
from ..config import Method, TrainConfig
from ..errors import UserError
from .counting import AutocastModel, PassCounter, gradient_check, masking_warning
from .runner import load_state, run_stages, save_state
from .spec import Attack, EvalSpec


class EvaluationWarning(UserWarning):
    """Something that makes a robustness number unreliable (gradient masking, stale state, ...)."""


def evaluate(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    attack: str | Attack = "pgd",
    eps: Any = None,
    norm: str = "linf",
    n_examples: int | None = None,
    batch_size: int = 256,
    seed: int = 0,
    *,
    steps: int | None = None,
    step_size: Any = None,
    restarts: int | None = None,
    amp: str = "off",
    state_path: str | Path | None = None,
    state_key: str | None = None,
    max_batches: int | None = None,
    progress: bool = False,
    energy: bool = False,
    flops: bool = True,
    model_name: str | None = None,
    spec: EvalSpec | None = None,
) -> dict[str, Any]:
    """Clean and robust accuracy of ``model`` on the first ``n_examples`` of ``(x, y)``.

    Args:
        model: classifier taking (N, C, H, W) pixels in [0,1], returning (N, K) logits; put in eval
            mode for the evaluation (its mode is restored afterwards).
        x, y: images float32 (N, C, H, W) in [0,1] and labels int64 (N,), any device.
        attack: ``clean``, ``pgd``, ``apgd-ce``, ``aa-standard`` or ``aa-rand``.
        eps: radius in pixel units (float or ``"8/255"``); None: 8/255 (linf) or 0.5 (l2).
        norm: ``linf`` or ``l2``.
        n_examples: first N examples (None: all). batch_size: examples per batch.
        seed: seeds PGD's random starts and AutoAttack.
        steps, step_size, restarts: PGD (defaults 10, 2.5 eps/steps, 1) / APGD-CE (100, -, 1) budget.
        amp: ``off``, ``bf16`` or ``fp16`` autocast for clean / PGD (refused for AutoAttack).
        state_path: resume file; progress is saved there after every batch and a rerun with the same
            key (model, data, spec) continues from it. It is deleted when the evaluation completes.
        state_key: identifies the model in the resume key (e.g. the checkpoint's SHA-256); default: a
            hash of the model's state dict.
        max_batches: stop after this many batches in this call (the result has ``complete=False``).
        progress: tqdm bars (per stage, with the running accuracy) on stderr.
        energy: measure energy with codecarbon (otherwise ``energy_kwh`` is None).
        flops: measure FLOPs per image and report ``eval_flops``.
        spec: a ready :class:`EvalSpec` (overrides attack ... amp).
    Returns:
        dict with ``clean_acc`` and ``robust_acc`` (percent; robust = None for ``clean``),
        ``autoattack_acc`` (AutoAttack versions), ``stage_acc`` (accuracy after each stage, in order),
        ``n_examples``, ``complete``, ``forward_images``, ``backward_images``, ``eval_flops``,
        ``wall_seconds`` / ``device_hours`` / ``energy_kwh`` ... (all sessions), ``warnings``,
        ``gradient_check`` and the per-example ``clean_flags`` / ``robust_flags`` (bool tensors).
    """
    if spec is None:
        spec = EvalSpec.create(attack, eps, norm, steps, step_size, restarts, batch_size, seed, amp)
    x, y = _select(x, y, n_examples)
    n = x.shape[0]
    state_path = Path(state_path) if state_path is not None else None
    key = None
    if state_path is not None:
        key = {"model": state_key or state_dict_sha256(model), "data": tensors_sha256(x, y), "n": n,
               **spec.to_dict()}
    state, note = load_state(state_path, key, n)
    session_warnings: list[str] = [note] if note else []
    resumed = state["sessions"] > 0

    was_training = model.training
    model.eval()
    # Channels-last convolutions, as in training: AutoAttack on WRN-16-2 (20 Fashion-MNIST images, 2-core
    # CPU) took 61-63 s instead of 69-70 s, same results. The caller's memory format is restored after.
    restore_format = _set_channels_last(model)
    counter = PassCounter(AutocastModel(model, spec.amp) if spec.amp.value != "off" else model)
    device = _device_of(model)

    def before_attacks(st: dict) -> None:
        """Once per evaluation, after the clean pass: the gradient-masking check on one batch."""
        idx = st["clean_correct"].nonzero().flatten()[:spec.batch_size]
        if idx.numel() == 0:
            idx = torch.arange(min(n, spec.batch_size))
        check = gradient_check(counter, x[idx].to(device), y[idx].to(device))
        st["gradient_check"] = check
        msg = masking_warning(check)
        if msg and msg not in st["warnings"]:
            st["warnings"].append(msg)

    warnings_before = list(state["warnings"])
    tracker = ComputeTracker(energy=energy, device=device)
    try:
        with input_grad_only(model), tracker:
            run_stages(counter, spec, x, y, state, state_path=state_path, max_batches=max_batches,
                       progress=progress, on_before_attacks=before_attacks)
    except BaseException:
        # Ctrl-C / preemption: keep the finished batches and the time spent, for the rerun.
        state["sessions"] += 1
        state["compute"].append(tracker.summary())
        save_state(state_path, state)
        raise
    finally:
        model.train(was_training)
        if restore_format:
            model.to(memory_format=torch.contiguous_format)
    state["sessions"] += 1
    state["compute"].append(tracker.summary())
    complete = state["stage"] > len(spec.stages)
    if not complete:
        save_state(state_path, state)
    elif state_path is not None and state_path.is_file():
        state_path.unlink()

    for msg in session_warnings + [w for w in state["warnings"] if w not in warnings_before]:
        warnings.warn(msg, EvaluationWarning, stacklevel=2)

    compute = add_summaries(*state["compute"])
    per_image = _flops_per_image(model, tuple(x.shape[1:]), model_name) if flops else None
    eval_flops = None
    if per_image is not None:
        eval_flops = state["forward_images"] * per_image[0] + state["backward_images"] * per_image[1]
    clean_acc = 100.0 * state["clean_correct"].sum().item() / n if "clean" in state["stage_acc"] else None
    robust_acc = None
    if complete and spec.attack is not Attack.CLEAN:
        robust_acc = 100.0 * state["robust"].sum().item() / n
    result = {
        "attack": spec.attack.value, "attack_label": spec.label, "eps": spec.eps, "eps_text": spec.eps_text,
        "norm": spec.norm.value, "threat_model": spec.threat_model, "steps": spec.steps,
        "step_size": spec.step_size, "restarts": spec.restarts, "batch_size": spec.batch_size, "seed": spec.seed,
        "amp": spec.amp.value, "n_examples": n, "complete": complete,
        "clean_acc": clean_acc, "robust_acc": robust_acc,
        "stage_acc": {k: v for k, v in state["stage_acc"].items() if k != "clean"},
        "forward_images": state["forward_images"], "backward_images": state["backward_images"],
        "forward_flops_per_image": per_image[0] if per_image else None,
        "input_backward_flops_per_image": per_image[1] if per_image else None,
        "eval_flops": eval_flops, **compute,
        "sessions": state["sessions"], "resumed": resumed,
        "gradient_check": state["gradient_check"], "warnings": list(state["warnings"]) + session_warnings,
        "clean_flags": state["clean_correct"].clone(), "robust_flags": state["robust"].clone(),
    }
    if spec.is_autoattack and spec.attack is not Attack.APGD_CE:
        result["autoattack_acc"] = robust_acc
    return result


# ---------------------------------------------------------------------- helpers
def _select(x: torch.Tensor, y: torch.Tensor, n: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    if x.dim() != 4 or y.dim() != 1 or x.shape[0] != y.shape[0]:
        raise ValueError(f"expected x (N, C, H, W) and y (N,), got {tuple(x.shape)} and {tuple(y.shape)}")
    if n is None:
        return x, y.long()
    if isinstance(n, bool) or int(n) != n or n < 1:
        raise UserError(f"invalid n_examples {n!r}: must be an integer >= 1")
    if n > x.shape[0]:
        raise UserError(f"n_examples {n} is larger than the {x.shape[0]} examples given")
    return x[:int(n)], y[:int(n)].long()


def _set_channels_last(model: nn.Module) -> bool:
    """Put 4-D parameters in channels-last; True when they were not already (restore them after)."""
    conv_weights = [p for p in model.parameters() if p.dim() == 4]
    if not conv_weights or all(p.is_contiguous(memory_format=torch.channels_last) for p in conv_weights):
        return False
    model.to(memory_format=torch.channels_last)
    return True


def _device_of(model: nn.Module) -> torch.device:
    for t in model.parameters():
        return t.device
    return torch.device("cpu")


def state_dict_sha256(model: nn.Module) -> str:
    """Hash of a model's tensors (names, shapes, bytes): a stand-in for a checkpoint's hash."""
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def tensors_sha256(*tensors: torch.Tensor) -> str:
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _flops_per_image(model: nn.Module, input_size: tuple, model_name: str | None) -> tuple[float, float] | None:
    """(forward, input-only backward) FLOPs per image, measured by robustscale.compute."""
    try:
        step = measure_step_flops(model, TrainConfig(model=model_name or type(model).__name__,
                                                     method=Method.STANDARD), input_size)
    except Exception as exc:  # noqa: BLE001  (accounting must not lose a finished evaluation)
        warnings.warn(f"could not measure FLOPs per image ({type(exc).__name__}: {exc}); eval_flops is null",
                      EvaluationWarning, stacklevel=3)
        return None
    return float(step.forward_flops), float(step.input_backward_flops)
