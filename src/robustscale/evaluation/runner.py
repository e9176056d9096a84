"""The staged, resumable evaluation loop: a clean pass, then each attack on the still-robust points.

It follows AutoAttack's own ``run_standard_evaluation`` step by step: the clean pass in batches
of all N points, then for every attack in order, the points still robust when the attack starts,
sorted and cut into batches, each attacked with the attack's seed reset (pyautoattack reseeds
every ``perturb`` call). Our ``aa-standard`` therefore returns exactly what
``AutoAttack(model, version="standard", seed=s).run_standard_evaluation(x, y, batch_size=b)``
returns, while recording per-stage accuracies and saving its progress after every batch, so an
interrupted run continues where it stopped (the result does not depend on the interruption).
PGD runs through the same loop with one generator per (stage, batch), so it resumes exactly too.
"""
from __future__ import annotations

import logging
import math
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn
from tqdm.auto import tqdm

from .. import rundir
from ..attacks import pgd
from .counting import PassCounter
from .spec import Attack, EvalSpec

STATE_VERSION = 1


class _LogCapture(logging.Handler):
    """Collect pyautoattack's logger warnings (randomized / dynamic defense, Square success...)."""

    def __init__(self, sink: list[str]):
        super().__init__(level=logging.WARNING)
        self.sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        msg = f"AutoAttack: {record.getMessage()}"
        if msg not in self.sink:
            self.sink.append(msg)


def build_autoattack(model: nn.Module, spec: EvalSpec, device: torch.device):
    """The official AutoAttack object for ``spec`` (``apgd-ce`` = standard's first stage)."""
    from pyautoattack import AutoAttack
    from pyautoattack.autopgd_base import APGDAttack

    version = "rand" if spec.attack is Attack.AA_RAND else "standard"
    aa = AutoAttack(model, norm=spec.threat_model, eps=spec.eps, version=version, seed=spec.seed, device=device)
    aa.attacks_to_run = list(spec.stages)  # what its checks (e.g. the target-class count) should consider
    if spec.attack is Attack.APGD_CE and (spec.steps, spec.restarts) != (100, 1):
        # Same construction as AutoAttack.__init__'s APGD, with the requested budget.
        aa.apgd = APGDAttack(model, n_restarts=spec.restarts, n_iter=spec.steps, verbose=False, eps=spec.eps,
                             norm=spec.threat_model, eot_iter=1, rho=.75, seed=spec.seed, device=device,
                             logger=aa.logger)
    return aa


def autoattack_perturb(aa, attack: str, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """One batch of one AutoAttack stage, exactly as ``AutoAttack.run_standard_evaluation`` does it."""
    if attack == "apgd-ce":
        aa.apgd.loss = "ce"
        aa.apgd.seed = aa.get_seed()
        return aa.apgd.perturb(x, y)
    if attack == "apgd-dlr":
        aa.apgd.loss = "dlr"
        aa.apgd.seed = aa.get_seed()
        return aa.apgd.perturb(x, y)
    if attack == "fab":
        aa.fab.targeted = False
        aa.fab.seed = aa.get_seed()
        return aa.fab.perturb(x, y)
    if attack == "square":
        aa.square.seed = aa.get_seed()
        return aa.square.perturb(x, y)
    if attack == "apgd-t":
        aa.apgd_targeted.seed = aa.get_seed()
        return aa.apgd_targeted.perturb(x, y)
    if attack == "fab-t":
        aa.fab.targeted = True
        aa.fab.n_restarts = 1
        aa.fab.seed = aa.get_seed()
        return aa.fab.perturb(x, y)
    raise ValueError(f"unknown AutoAttack stage {attack!r}")


def autoattack_checks(aa, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> None:
    """pyautoattack's sanity checks on the first batch (warnings go to its logger)."""
    from pyautoattack import checks

    xb, yb = x[:batch_size].to(aa.device), y[:batch_size].to(aa.device)
    if aa.version != "rand":
        checks.check_randomized(aa.get_logits, xb, yb, bs=batch_size, logger=aa.logger)
    n_cls = checks.check_range_output(aa.get_logits, xb, logger=aa.logger)
    checks.check_dynamic(aa.model, xb, False, logger=aa.logger)
    checks.check_n_classes(n_cls, aa.attacks_to_run, aa.apgd_targeted.n_target_classes,
                           aa.fab.n_target_classes, logger=aa.logger)


def pgd_perturb(model: nn.Module, spec: EvalSpec, x: torch.Tensor, y: torch.Tensor,
                generator: torch.Generator) -> torch.Tensor:
    """PGD with restarts, evaluation-style: a restart only attacks the points no restart has fooled yet."""
    x_adv = x.clone()
    todo = torch.arange(x.shape[0], device=x.device)
    for r in range(spec.restarts):
        cand = pgd(model, x[todo], y[todo], spec.eps, spec.step_size, spec.steps, spec.norm.value,
                   random_start=True, loss="ce", restarts=1, generator=generator)
        if spec.restarts == 1:
            return cand
        with torch.no_grad():
            fooled = model(cand).argmax(1) != y[todo]
        x_adv[todo[fooled]] = cand[fooled]
        todo = todo[~fooled]
        if todo.numel() == 0:
            break
    return x_adv


def _stage_seed(seed: int, stage: int, batch: int) -> int:
    return (seed * 1_000_003 + stage * 10_007 + batch) % (2**63 - 1)


def new_state(key: dict, n: int) -> dict[str, Any]:
    return {
        "version": STATE_VERSION, "key": key, "n": n,
        "clean_correct": torch.zeros(n, dtype=torch.bool), "robust": torch.zeros(n, dtype=torch.bool),
        "stage": 0, "stage_indices": None, "batches_done": 0, "stage_acc": {},
        "forward_images": 0, "backward_images": 0, "sessions": 0,
        "checks_done": False, "gradient_check": None, "warnings": [], "compute": [],
    }


def load_state(path: Path | None, key: dict, n: int) -> tuple[dict, str | None]:
    """The saved state for ``key``, or a fresh one (with a note when a stale file was found)."""
    if path is None or not path.is_file():
        return new_state(key, n), None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001  (a truncated / foreign file: start over, say so)
        return new_state(key, n), f"ignored unreadable resume state {path} ({type(exc).__name__})"
    if not isinstance(state, dict) or state.get("version") != STATE_VERSION or state.get("key") != key:
        return new_state(key, n), (f"ignored resume state {path}: it was made for a different checkpoint, "
                                   "data, attack, eps, batch size or seed")
    return state, None


def save_state(path: Path | None, state: dict) -> None:
    if path is None:
        return
    rundir.atomic_write(path, lambda tmp: torch.save(state, tmp), mkdir=True)


def run_stages(model: PassCounter, spec: EvalSpec, x: torch.Tensor, y: torch.Tensor, state: dict, *,
               state_path: Path | None = None, max_batches: int | None = None, progress: bool = False,
               on_before_attacks: Callable[[dict], None] | None = None) -> dict:
    """Advance ``state`` through the clean pass and ``spec``'s attacks; returns the state.

    Args:
        model: eval-mode :class:`~.counting.PassCounter` (its counts are added to the state).
        x, y: (N, C, H, W) in [0,1] and (N,) int64, on any device (batches move to the model's).
        state: from :func:`load_state`; saved to ``state_path`` after every batch.
        max_batches: stop after this many batches in this call (state saved, ``state["stage"]`` tells
            how far it got); None runs to the end.
        on_before_attacks: called once (per evaluation, not per session) after the clean pass.
    """
    device = _model_device(model)
    stages = ("clean",) + spec.stages
    n = x.shape[0]
    bs = spec.batch_size
    computed = 0
    aa = None
    capture = None
    if spec.is_autoattack:
        aa = build_autoattack(model, spec, device)
        capture = _LogCapture(state["warnings"])
        aa.logger.addHandler(capture)
    last_save = time.perf_counter()
    counted = [model.forward_images, model.backward_images]

    def flush() -> None:
        """Add the passes since the last flush (batches, and the checks between them) to the state."""
        state["forward_images"] += model.forward_images - counted[0]
        state["backward_images"] += model.backward_images - counted[1]
        counted[:] = [model.forward_images, model.backward_images]

    try:
        while state["stage"] < len(stages):
            stage = state["stage"]
            name = stages[stage]
            if state["stage_indices"] is None:
                if stage == 1 and not state["checks_done"]:
                    if on_before_attacks is not None:
                        on_before_attacks(state)
                    if aa is not None:
                        autoattack_checks(aa, x, y, bs)
                    state["checks_done"] = True
                idx = torch.arange(n) if name == "clean" else state["robust"].nonzero().flatten()
                state["stage_indices"], state["batches_done"] = idx, 0
            idx = state["stage_indices"]
            n_batches = math.ceil(idx.numel() / bs)
            bar = tqdm(total=idx.numel(), initial=min(state["batches_done"] * bs, idx.numel()), desc=f"{name:>8}",
                       unit="img", disable=not progress or idx.numel() == 0, file=sys.stderr, dynamic_ncols=True,
                       leave=True)
            try:
                for b in range(state["batches_done"], n_batches):
                    if max_batches is not None and computed >= max_batches:
                        return state
                    bidx = idx[b * bs:(b + 1) * bs]
                    xb, yb = x[bidx].to(device), y[bidx].to(device)
                    with torch.no_grad():
                        if name == "clean":
                            correct = (model(xb).argmax(1) == yb).cpu()
                            state["clean_correct"][bidx] = correct
                            state["robust"][bidx] = correct
                        else:
                            if aa is not None:
                                x_adv = autoattack_perturb(aa, name, xb, yb)
                            else:
                                gen = torch.Generator(device=device).manual_seed(_stage_seed(spec.seed, stage, b))
                                x_adv = pgd_perturb(model, spec, xb, yb, gen)
                            fooled = (model(x_adv).argmax(1) != yb).cpu()
                            state["robust"][bidx[fooled]] = False
                    state["batches_done"] = b + 1
                    flush()
                    computed += 1
                    # Save after every batch, except for fast batches (the clean pass) at most every 10 s.
                    if name != "clean" or time.perf_counter() - last_save > 10 or b + 1 == n_batches:
                        save_state(state_path, state)
                        last_save = time.perf_counter()
                    bar.update(bidx.numel())
                    if name == "clean":  # accuracy so far on the images seen
                        label, acc = "clean", state["clean_correct"][idx[:(b + 1) * bs]].float().mean().item()
                    else:  # robust accuracy of all N, counting points not attacked yet as robust
                        label, acc = "robust", state["robust"].float().mean().item()
                    bar.set_postfix_str(f"{label} acc {100.0 * acc:.2f}%")
            finally:
                bar.close()
            state["stage_acc"][name] = 100.0 * (state["robust"].sum().item() if name != "clean"
                                                else state["clean_correct"].sum().item()) / max(n, 1)
            state["stage"] += 1
            state["stage_indices"], state["batches_done"] = None, 0
            save_state(state_path, state)
        if aa is not None and spec.attack is Attack.AA_STANDARD:
            from pyautoattack import checks

            checks.check_square_sr({k: v / 100 for k, v in state["stage_acc"].items()}, logger=aa.logger)
        return state
    finally:
        flush()
        if capture is not None:
            aa.logger.removeHandler(capture)


def _model_device(model: nn.Module) -> torch.device:
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")
