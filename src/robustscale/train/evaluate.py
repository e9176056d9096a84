"""The per-epoch check: clean and PGD-k accuracy on the fixed eval subset, sharded over ranks."""
from __future__ import annotations

from ..config import TrainConfig
from .distributed import Dist, all_reduce_

__all__ = ["evaluate_subset"]


def evaluate_subset(model, x_eval, y_eval, cfg: TrainConfig, dinfo: Dist, autocast) -> tuple[float, float | None, int]:
    """(clean acc %, PGD-k acc % or None, images) on this rank's shard of the eval subset, reduced."""
    import torch

    from ..attacks import pgd

    k = cfg.eval_attack_steps
    device = dinfo.device
    idx = torch.arange(dinfo.rank, len(x_eval), dinfo.world)
    gen = torch.Generator(device=device).manual_seed(cfg.seed + 7919 * (dinfo.rank + 1))
    counts = torch.zeros(3, dtype=torch.float64, device=device)
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
            if k > 0 and cfg.eps > 0:
                with autocast:
                    x_adv = pgd(model, x, y, cfg.eps, cfg.eval_step_size_factor * cfg.eps / k, k,
                                norm=cfg.norm.value, generator=gen)
                    with torch.no_grad():
                        counts[1] += (model(x_adv).argmax(1) == y).sum()
            counts[2] += len(sel)
    finally:
        model.train(was_training)
    all_reduce_(counts, dinfo)
    n = int(counts[2].item())
    clean = 100.0 * counts[0].item() / max(n, 1)
    robust = 100.0 * counts[1].item() / max(n, 1) if k > 0 and cfg.eps > 0 else None
    return clean, robust, n
