"""Concrete recipes under a budget: a zoo model, a whole number of epochs, attack steps, and the
group's generated-data setting, with the joint law's predicted accuracy and its interval.

For each architecture of the zoo (within the extrapolation limit of the runs' model sizes) and
each attack-step count (whole numbers across the runs' range when k follows a law, else the
observed values): when samples seen follow a law, the most epochs the budget pays for
(``floor(budget / (step FLOPs per image x images per epoch))``); when they are levels, each
observed epoch count the budget covers. A recipe's FLOPs are exactly the compute model's FLOPs
per image of its step (what ``robustscale flops`` reports in the measured convention) x samples seen.
"""
from __future__ import annotations

import math

import numpy as np

from ..schema import finite_float as _num
from ..scaling.joint import D_COL, K_COL, N_COL, JointFit, Role


def _k_values(fit: JointFit) -> list[int]:
    if fit.roles[K_COL] is Role.POWER:
        lo, hi = fit.range(K_COL)
        return list(range(int(math.ceil(lo)), int(math.floor(hi)) + 1))
    return [int(v) for v in fit.values[K_COL]]


def _n_ok(fit: JointFit, n: float, limit: float) -> bool:
    if fit.roles[N_COL] is Role.POWER:
        lo, hi = fit.range(N_COL)
        return lo / limit <= n <= hi * limit
    return any(np.isclose(n, v, rtol=1e-9, atol=0) for v in fit.values[N_COL])


def _candidates(fit: JointFit, budget: float, ctx) -> list[dict]:
    compute, epoch_images, limit = ctx["compute"], ctx["epoch_images"], ctx["limit"]
    method = ctx["meta"][fit.label]["method"]
    d_lo, d_hi = fit.range(D_COL)
    rows = []
    for arch in ctx["candidates"]:
        if not _n_ok(fit, arch.parameters, limit):
            continue
        for k in _k_values(fit):
            step = compute.step_flops(arch.name, method, k)
            if fit.roles[D_COL] is Role.POWER:
                epochs = int(budget // (step * epoch_images))
                options = [epochs] if epochs >= 1 and d_lo / limit <= epochs * epoch_images <= d_hi * limit else []
            else:
                options = [int(round(v / epoch_images)) for v in fit.values[D_COL]
                           if step * v <= budget * (1 + 1e-12)]
            for epochs in options:
                seen = epochs * epoch_images
                rows.append({"model": arch.name, "same_as": list(arch.same_as), "model_parameters": arch.parameters,
                             "method": method, "attack_steps": k, "epochs": epochs, "samples_seen": seen,
                             "train_flops_per_image": step, "train_flops": step * seen})
    return rows


def recipes_for(fit: JointFit, budget: float, df, ctx) -> list[dict]:
    """Every recipe of ``fit``'s group that the budget pays for, with predictions and costs (unsorted)."""
    rows = _candidates(fit, budget, ctx)
    if not rows:
        return []
    x = {N_COL: np.array([r["model_parameters"] for r in rows], float),
         D_COL: np.array([r["samples_seen"] for r in rows], float),
         K_COL: np.array([r["attack_steps"] for r in rows], float)}
    acc, lo, hi = fit.predict(x)
    costs, dev, hpf = ctx["costs"], ctx["device_type"], ctx["hpf"]
    synthetic = ctx["meta"][fit.label]["synthetic_data"]
    out = []
    for r, a, l, h in zip(rows, acc, lo, hi):
        if not np.isfinite(a):  # off the observed levels
            continue
        hours = r["train_flops"] * hpf if hpf is not None else None
        energy = costs.estimate_energy_kwh(dev, hours) if hours is not None else None
        bill = costs.cost(dev, hours, energy) if hours is not None else {}
        out.append({**r, "synthetic_data": None if synthetic is None else bool(synthetic), "group": fit.label,
                    "predicted_acc": float(a), "predicted_acc_ci": [_num(l), _num(h)],
                    "budget_share": r["train_flops"] / budget, "device_hours": hours, "energy_kwh": energy,
                    "electricity_usd": bill.get("electricity_usd"), "cloud_usd_low": bill.get("cloud_usd_low"),
                    "cloud_usd_high": bill.get("cloud_usd_high"),
                    "inputs_extrapolation": {N_COL: outside_factor(r["model_parameters"], *fit.range(N_COL)),
                                             D_COL: outside_factor(r["samples_seen"], *fit.range(D_COL))}})
    return out


def outside_factor(x: float, lo: float, hi: float) -> float | None:
    """How far ``x`` lies outside ``[lo, hi]`` (a factor > 1); None inside."""
    return x / hi if x > hi else (lo / x if x < lo else None)
