"""The per-epoch check: clean, PGD-k and FGSM accuracy on the fixed eval subset, sharded over ranks.

FGSM (one step of eps from the clean image) runs on the same images as PGD: the pair is what the
catastrophic-overfitting detector (``robustscale.train.collapse.detect_collapse``) compares.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..attacks import fgsm, pgd
from ..config import TrainConfig
from .distributed import Dist, all_reduce_

__all__ = ["EpochEval", "evaluate_subset"]


@dataclass(frozen=True)
class EpochEval:
    """Accuracies (percent) of one per-epoch check on ``images`` test images; None where not run."""

    clean_acc: float
    pgd_robust_acc: float | None
    fgsm_robust_acc: float | None
    images: int


def evaluate_subset(model, x_eval, y_eval, cfg: TrainConfig, dinfo: Dist, autocast) -> EpochEval:
    """Clean, PGD-k and FGSM accuracy on this rank's shard of the eval subset, reduced over ranks."""
    k = cfg.eval_attack_steps
    attacked = k > 0 and cfg.eps > 0
    device = dinfo.device
    idx = torch.arange(dinfo.rank, len(x_eval), dinfo.world)
    gen = torch.Generator(device=device).manual_seed(cfg.seed + 7919 * (dinfo.rank + 1))
    counts = torch.zeros(4, dtype=torch.float64, device=device)  # clean, pgd, fgsm, images
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(idx), cfg.eval_batch_size):
            sel = idx[start:start + cfg.eval_batch_size]
            x = x_eval[sel].to(device, non_blocking=True)
            y = y_eval[sel].to(device, non_blocking=True)
            if cfg.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast, torch.no_grad():
                counts[0] += (model(x).argmax(1) == y).sum()
            if attacked:
                with autocast:
                    x_adv = pgd(model, x, y, cfg.eps, cfg.eval_step_size_factor * cfg.eps / k, k,
                                norm=cfg.norm.value, generator=gen)
                    x_fgsm = fgsm(model, x, y, cfg.eps, norm=cfg.norm.value)
                    with torch.no_grad():
                        counts[1] += (model(x_adv).argmax(1) == y).sum()
                        counts[2] += (model(x_fgsm).argmax(1) == y).sum()
            counts[3] += len(sel)
    finally:
        model.train(was_training)
    all_reduce_(counts, dinfo)
    n = int(counts[3].item())

    def pct(i: int) -> float:
        return 100.0 * counts[i].item() / max(n, 1)

    return EpochEval(clean_acc=pct(0), pgd_robust_acc=pct(1) if attacked else None,
                     fgsm_robust_acc=pct(2) if attacked else None, images=n)
