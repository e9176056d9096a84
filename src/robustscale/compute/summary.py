"""The compute fields every run records: FLOPs, time, devices, energy and dollars, in one dict."""
from __future__ import annotations

from typing import Any, Mapping

from ..cost import CostModel
from .flops import StepFlops

RUN_COMPUTE_KEYS = (
    "train_flops", "train_flops_per_image", "attack_flops_fraction", "eval_flops",
    "wall_seconds", "device_hours", "device_name", "device_count", "device_type",
    "energy_kwh", "emissions_kg", "electricity_usd", "electricity_basis", "cloud_usd_low", "cloud_usd_high",
)


def summarize_run_compute(
    step_flops: StepFlops,
    steps: int,
    images_per_step: int,
    eval_flops: float,
    tracker_summary: Mapping[str, Any],
    cost_model: CostModel,
    device_type: str | None = None,
    images_seen: int | None = None,
) -> dict[str, Any]:
    """The compute record of a run (the compute columns of ``robustscale.schema.RUN_COLUMNS``).

    Args:
        step_flops: ``measure_step_flops(model, cfg, input_size)`` of the run.
        steps: optimizer steps taken (all epochs, this run).
        images_per_step: global batch size (all ranks).
        eval_flops: FLOPs spent on evaluation during the run (0 if none), e.g. from
            ``estimate_eval_flops``.
        tracker_summary: ``ComputeTracker.summary()`` (or ``add_summaries`` of the pieces).
        cost_model: ``CostModel.from_yaml(preset=cfg.price_preset)``.
        device_type: a device type of the price table (``cfg.device_type``); None: mapped from
            the tracker's device name by ``cost_model.device_type_for``.
        images_seen: training images actually processed, all ranks; overrides
            ``steps * images_per_step`` (exact with a last partial batch).
    Returns:
        dict with ``train_flops`` (= train_step_flops per image x images seen), ``train_flops_per_image``,
        ``attack_flops_fraction``, ``eval_flops``, ``wall_seconds``, ``device_hours``, ``device_name``,
        ``device_count``, ``device_type``, ``energy_kwh`` and ``emissions_kg`` (None if not measured),
        ``electricity_usd`` (from the measured energy, else from ``estimate_energy_kwh``, as
        ``electricity_basis`` = "measured" / "estimated"), ``cloud_usd_low``, ``cloud_usd_high``.
    """
    if images_seen is None:
        images_seen = int(steps) * int(images_per_step)
    device_hours = float(tracker_summary.get("device_hours") or 0.0)
    device_name = tracker_summary.get("device_name")
    device_type = device_type or cost_model.device_type_for(device_name)
    energy = tracker_summary.get("energy_kwh")
    if energy is not None:
        cost = cost_model.cost(device_type, device_hours, energy)
        basis = "measured"
    else:
        cost = cost_model.cost(device_type, device_hours, cost_model.estimate_energy_kwh(device_type, device_hours))
        basis = "estimated"
    return {
        "train_flops": float(step_flops.train_step_flops) * images_seen,
        "train_flops_per_image": float(step_flops.train_step_flops),
        "attack_flops_fraction": float(step_flops.attack_flops_fraction),
        "eval_flops": float(eval_flops or 0.0),
        "wall_seconds": float(tracker_summary.get("wall_seconds") or 0.0),
        "device_hours": device_hours,
        "device_name": device_name,
        "device_count": int(tracker_summary.get("device_count") or 0),
        "device_type": device_type,
        "energy_kwh": None if energy is None else float(energy),
        "emissions_kg": None if tracker_summary.get("emissions_kg") is None else float(tracker_summary["emissions_kg"]),
        "electricity_usd": cost["electricity_usd"],
        "electricity_basis": basis,
        "cloud_usd_low": cost["cloud_usd_low"],
        "cloud_usd_high": cost["cloud_usd_high"],
    }
