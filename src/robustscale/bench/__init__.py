"""Throughput of the adversarial training step: ours against the way common public code does it.

Adversarial training with a K-step attack costs K+1 forward-backward passes per step. Two
step implementations are timed here on the same synthetic batch (data loading excluded):

- :class:`OursStep`: what ``robustscale train`` runs, the same :class:`robustscale.train.TrainStep`
  (task forward with the attack, backward, gradient clipping, optimizer, scheduler and EMA steps). The
  task of ``robustscale.tasks`` crafts the attack with input-only gradients (``torch.autograd.grad``
  w.r.t. the perturbation, parameters' ``requires_grad`` off: no weight-gradient kernels), runs no
  logging forward, and honours ``amp`` / ``channels_last`` / ``compile`` of the config.
- :class:`BaselineStep`: PGD-AT as widespread public code writes it (e.g. the ``attack_pgd`` of
  Rice et al. 2020, ``train_cifar.py``): every attack step calls ``loss.backward()`` so that
  weight gradients are computed and thrown away, an extra clean forward is spent on logging
  clean accuracy, fp32, NCHW, eager.

Both draw the same random start from the same generator and apply the same projected
sign-gradient update, so given the same weights and seed they produce the same adversarial
examples (see ``tests/bench``); only the cost differs.

:func:`bench_train_step` times them in alternating rounds (one "epoch" of ``steps`` steps per
path per round, the order rotating every round), so that machine noise hits both alike and the
median of the per-round ratios ours/baseline is a robust speed-up figure. It also reports
measured FLOPs per image (``robustscale.compute.measure_step_flops`` for ours,
``FlopCounterMode`` on the baseline step), achieved FLOP/s, utilisation against the device's
measured dense-kernel peak (:func:`robustscale.compute.measure_peak_flops`), and peak memory per
epoch (peak RSS on CPU, ``torch.cuda.max_memory_allocated`` on GPU) with a leak check.

Modules: ``steps`` (the two step implementations, FLOP counting), ``rounds`` (timing, profiling),
``memory`` (peak memory, leak check), ``benchmark`` (``bench_train_step``, ``format_result``).
"""
from ..compute.peak import measure_peak_flops
from .benchmark import bench_train_step, format_result
from .memory import MEMORY_GROWTH_LIMIT, memory_growth, peak_memory, read_rss, reset_peak_memory
from .rounds import profile_step, run_rounds
from .steps import BASELINE_METHODS, BaselineStep, OursStep, count_step_flops

__all__ = ["OursStep", "BaselineStep", "BASELINE_METHODS", "bench_train_step", "run_rounds", "measure_peak_flops",
           "count_step_flops", "profile_step", "format_result", "read_rss", "reset_peak_memory", "peak_memory",
           "memory_growth", "MEMORY_GROWTH_LIMIT"]
