"""Compute accounting: measured FLOPs, wall time, devices, energy (codecarbon) and dollars.

- :func:`measure_step_flops` -> :class:`StepFlops`: FLOPs per image of a training step and its
  parts, measured with ``FlopCounterMode``, next to the 2024 study's analytic convention.
- :class:`ComputeTracker`: context manager for one run's wall time, device-hours and energy.
- :class:`CostModel`: prices from ``prices.yaml`` (presets ``default`` and ``paper-2024``), re-exported from
  :mod:`robustscale.cost` (its home, which imports no torch).
- :func:`summarize_run_compute`: the compute fields every run records.
- :func:`measure_peak_flops`: the device's measured dense-kernel peak; :func:`time_calls`: device timing.
"""
from ..cost import CostModel, DevicePrice, default_flop_rate, load_price_table
from .energy import ComputeTracker, add_summaries, cpu_model_name, detect_device, world_size
from .flops import (StepFlops, analytic_train_step_flops, clear_cache, count_flops, effective_attack_steps,
                    estimate_eval_flops, measure_step_flops)
from .peak import measure_peak_flops
from .summary import RUN_COMPUTE_KEYS, summarize_run_compute
from .timing import synchronize, time_calls

__all__ = ["CostModel", "DevicePrice", "default_flop_rate", "load_price_table", "ComputeTracker", "add_summaries", "cpu_model_name",
           "detect_device", "world_size", "StepFlops", "analytic_train_step_flops", "clear_cache", "count_flops",
           "effective_attack_steps", "estimate_eval_flops", "measure_step_flops", "RUN_COMPUTE_KEYS",
           "summarize_run_compute", "measure_peak_flops", "synchronize", "time_calls"]
