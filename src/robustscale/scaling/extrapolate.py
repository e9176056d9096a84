"""What would a target robust accuracy cost? Solve each fitted law for the target and convert the
compute into device-hours, energy, emissions and dollars.

Compute (FLOPs) -> device-hours, one of (in this order of precedence):

1. ``flops_per_second``: an achieved training throughput in FLOP/s per device, given by the user:
   ``device_hours = FLOPs / flops_per_second / 3600``.
2. ``throughput``: images per second per device, given by the user, times the group's median
   training FLOPs per image (``train_flops_per_image``, else ``train_flops / train_images_seen``):
   ``device_hours = FLOPs / (throughput * flops_per_image) / 3600``.
3. otherwise the group's own runs: the median of ``device_hours / train_flops`` over the runs
   that were fitted (the hardware and efficiency of the runs, carried to the target).

Device-hours -> energy, emissions and dollars go through ``robustscale.cost.CostModel``:
``energy_kwh = CostModel.estimate_energy_kwh(device_type, device_hours)`` (IT energy, the device's
power draw x hours), ``emissions_kg = CostModel.emissions_kg(energy_kwh)`` and
``CostModel.cost(device_type, device_hours, energy_kwh)`` for electricity and cloud rental.
Every conversion is linear in compute, so the bootstrap interval of the compute maps to intervals
of all other quantities.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import numpy as np
import pandas as pd

from ..cost import CostModel
from ..errors import UserError
from ..schema import finite_float as _num
from .fit import FitResult
from .identified import BEYOND_REACH, MAX_EXTRAPOLATION, OK, identify, reach

# Kept for callers of the old name: the one refusal limit lives in identified (MAX_EXTRAPOLATION).
EXTRAPOLATION_FACTOR = MAX_EXTRAPOLATION
QUANTITIES = ("compute_flops", "device_hours", "energy_kwh", "emissions_kg", "electricity_usd", "cloud_usd_low",
              "cloud_usd_high")


@dataclass
class Extrapolation:
    """Cost of reaching ``target`` under one group's fitted law.

    ``values[q] = (point, low, high)`` for each quantity in :data:`QUANTITIES`; ``low``/``high``
    are NaN without bootstrap, ``high`` is ``inf`` when too many resampled laws never reach the
    target. ``reachable`` is False when the target is above the fitted asymptote (``y_max``);
    ``share_reachable`` is the share of bootstrap laws that reach it. ``status`` is the law's identification
    (``identified.identify``): only an ``ok`` law is solved; for any other the extrapolation carries the status
    and its ``status_reason`` and no numbers. A target whose compute lies beyond the rulebook's refusal limit
    (``identified.MAX_EXTRAPOLATION`` x the largest fitted run) gets the status ``beyond reach`` and no numbers
    either; ``reach`` is its label on the one extrapolation scale (``identified.reach``), ``backtested_reach``
    the compute factor over which a back-test of the source held (None: not back-tested).
    """

    group: str
    law: str
    target: float
    y: str
    converged: bool
    message: str = ""
    status: str = "ok"
    status_reason: str = ""
    reachable: bool = False
    share_reachable: float = float("nan")
    asymptote: tuple[float, float, float] = (float("inf"), float("nan"), float("nan"))
    values: dict[str, tuple[float, float, float]] = field(default_factory=dict)
    largest_run_flops: float = float("nan")
    conversion: str = ""
    device_type: str = ""
    price_preset: str = ""
    optimal_split: dict[str, float] = field(default_factory=dict)
    reach: str = ""
    backtested_reach: float | None = None

    @property
    def factor(self) -> float:
        """Solved compute / the largest fitted run's compute."""
        point = self.values.get("compute_flops", (float("nan"),))[0]
        return point / self.largest_run_flops if self.largest_run_flops else float("nan")

    @property
    def solved(self) -> bool:
        """The law was solved for the target (it converged and the data identify it)."""
        return self.converged and self.status == OK

    @property
    def is_extrapolation(self) -> bool:
        """The solved compute lies beyond the largest fitted run (every such target is labelled, ``reach``)."""
        return self.solved and self.reachable and self.factor > 1

    def summary(self) -> str:
        """One line for people."""
        if not self.converged:
            return f"{self.group}: fit did not converge ({self.message})"
        if self.status == BEYOND_REACH:
            return f"{self.group}: {self.target:g}% refused: {self.status_reason}"
        if not self.solved:
            return f"{self.group}: not extrapolated, the law's status is {self.status} ({self.status_reason})"
        if not self.reachable:
            y_max, lo, hi = self.asymptote
            share = "" if math.isnan(self.share_reachable) else \
                f"; reachable in {100 * self.share_reachable:.1f}% of bootstrap fits"
            ci = "" if math.isnan(lo) else f" [{lo:.1f}, {hi:.1f}]"
            return (f"{self.group}: {self.target:g}% not reachable under this law (asymptote {y_max:.1f}%{ci}{share})")
        c = self.values["compute_flops"]
        return f"{self.group}: {c[0]:.3g} FLOPs ({self.reach})"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["values"] = {k: {"point": _num(v[0]), "low": _num(v[1]), "high": _num(v[2]),
                           "high_is_infinite": bool(v[2] == math.inf)} for k, v in self.values.items()}
        d["asymptote"] = {"point": _num(self.asymptote[0]), "low": _num(self.asymptote[1]),
                          "high": _num(self.asymptote[2])}
        d["share_reachable"] = _num(self.share_reachable)
        d["largest_run_flops"] = _num(self.largest_run_flops)
        d["factor_vs_largest_run"] = _num(self.factor)
        d["extrapolation"] = self.is_extrapolation
        d["optimal_split"] = {k: _num(v) for k, v in self.optimal_split.items()}
        return d


def _median_ratio(df, rows, num: str, den: str) -> float:
    if df is None or num not in df.columns or den not in df.columns:
        return float("nan")
    part = df.loc[rows] if rows is not None else df
    a = pd.to_numeric(part[num], errors="coerce").to_numpy(float)
    b = pd.to_numeric(part[den], errors="coerce").to_numpy(float)
    ok = np.isfinite(a) & np.isfinite(b) & (a > 0) & (b > 0)
    return float(np.median(a[ok] / b[ok])) if ok.any() else float("nan")


def hours_per_flop(fit: FitResult, df=None, flops_per_second: float | None = None,
                   throughput: float | None = None) -> tuple[float, str]:
    """Device-hours per FLOP for ``fit``'s group and a description of where it came from."""
    if flops_per_second is not None:
        if not flops_per_second > 0:
            raise UserError(f"invalid --flops-per-second {flops_per_second!r}: must be > 0")
        return 1.0 / (flops_per_second * 3600.0), f"achieved {flops_per_second:.3g} FLOP/s per device (given)"
    rows = fit.fitted_index if df is not None else None
    if throughput is not None:
        if not throughput > 0:
            raise UserError(f"invalid --throughput {throughput!r}: must be > 0 images/s")
        fpi = float("nan")
        if df is not None and "train_flops_per_image" in df.columns:
            fpi = float(np.nanmedian(np.asarray(df.loc[rows, "train_flops_per_image"], float))) \
                if len(rows) else float("nan")
        if not (fpi > 0):
            fpi = _median_ratio(df, rows, "train_flops", "train_images_seen")
        if not (fpi > 0):
            raise UserError("--throughput needs train_flops_per_image (or train_flops and train_images_seen) "
                            "in the runs table; or give --flops-per-second")
        return (1.0 / (throughput * fpi * 3600.0),
                f"{throughput:g} images/s per device x median {fpi:.3g} FLOPs per image of the group's runs")
    ratio = _median_ratio(df, rows, "device_hours", "train_flops")
    if not (ratio > 0):
        raise UserError("the runs table has no device_hours to convert FLOPs into hours; give --throughput "
                        "IMG_PER_S or --flops-per-second FLOPS")
    return ratio, f"median device_hours/train_flops of the group's runs ({ratio:.3g} h/FLOP)"


def default_device_type(df, cost_model) -> str:
    """Device type of the runs (most common ``device_name``), else the generic ``gpu``."""
    if df is not None and "device_name" in df.columns:
        names = df["device_name"].dropna().astype(str)
        if len(names):
            return cost_model.device_type_for(names.mode().iloc[0])
    return "gpu"


def check_target(target: float, y: str, error_law: bool = False) -> float:
    """``target`` as a float a law of ``y`` can be solved for, else UserError saying why.

    Accuracies (``*_acc``, and whatever an error law models) are percentages: a target must be
    in (0, 100). Other quantities are fitted in log space: a target must be > 0.
    """
    target = float(target)
    if not math.isfinite(target):
        raise UserError(f"invalid --target {target!r}: must be a finite number")
    if error_law or str(y).endswith("_acc"):
        if not 0 < target < 100:
            raise UserError(f"invalid --target {target:g}: {y} is an accuracy in percent, so a target must be "
                            f"in (0, 100), e.g. 75")
    elif target <= 0:
        raise UserError(f"invalid --target {target:g}: the laws are fitted in log space, so a target of {y} "
                        f"must be > 0")
    return target


def extrapolate(fits: FitResult | Sequence[FitResult], target: float, df=None, *,
                flops_per_second: float | None = None, throughput: float | None = None,
                device_type: str | None = None, price_preset: str = "default", prices_path=None,
                cost_model=None, backtested_reach: float | None = None) -> list[Extrapolation]:
    """Compute and cost of reaching ``target`` (in y units, e.g. 75 for 75% AA) for each fit.

    ``df`` is the runs table the fits came from (for the hours-per-FLOP conversion of each group;
    see the module docstring). ``cost_model`` defaults to
    ``CostModel.from_yaml(prices_path, preset=price_preset)``. ``backtested_reach``: the compute factor over
    which a back-test of these runs held (``robustscale backtest``), for the labels.
    """
    fits = [fits] if isinstance(fits, FitResult) else list(fits)
    for f in fits:
        target = check_target(target, f.y, error_law=f._law is not None and f._law.error_law)
    cost_model = cost_model or CostModel.from_yaml(prices_path, preset=price_preset)
    device_type = device_type or default_device_type(df, cost_model)
    cost_model.price(device_type)  # UserError listing the valid device types
    out = []
    for fit in fits:
        ex = Extrapolation(group=fit.label, law=fit.law, target=target, y=fit.y, converged=fit.converged,
                           message=fit.message, device_type=device_type, price_preset=cost_model.preset,
                           largest_run_flops=fit.x_range[1], backtested_reach=backtested_reach)
        out.append(ex)
        ident = identify(fit)
        ex.status, ex.status_reason = ident.status, ident.reason
        if not fit.converged:
            continue
        # The conversion's inputs are checked for every law (a missing column is the user's to fix either way).
        h_per_flop, conversion = hours_per_flop(fit, df, flops_per_second, throughput)
        if not ident.ok:  # a target read off a law the data do not carry is not a prediction
            continue
        if fit._law.error_law:
            y_max = fit.params.get("y_max", float("inf"))
            lo, hi = fit.ci.get("y_max", (float("nan"), float("nan")))
            ex.asymptote = (y_max, lo, hi)
        solved = fit.solve_interval(target)
        ex.reachable = math.isfinite(solved["x"])
        ex.share_reachable = solved["share_reachable"]
        if not ex.reachable:
            continue
        where = reach(solved["x"] / ex.largest_run_flops, "the largest fitted run's compute",
                      backtested=backtested_reach)
        ex.reach = where.label
        if where.refused:  # a number this far out is not a prediction: the reason instead
            ex.status, ex.status_reason = BEYOND_REACH, f"the target's compute lies {where.label}"
            continue
        ex.conversion = conversion
        for i, c in enumerate((solved["x"], solved["low"], solved["high"])):
            vals = _costs(c, h_per_flop, device_type, cost_model)
            for q in QUANTITIES:
                prev = ex.values.get(q, (float("nan"),) * 3)
                ex.values[q] = tuple(vals[q] if j == i else prev[j] for j in range(3))
        if fit.law == "chinchilla":
            N, D = fit.optimal_split([solved["x"]])
            ex.optimal_split = {"model_parameters": float(N[0]), "train_images_seen": float(D[0])}
    return out


def _costs(flops: float, h_per_flop: float, device_type: str, cost_model) -> dict[str, float]:
    if not math.isfinite(flops):  # NaN (no bootstrap) or inf (upper bound: not reached by enough resamples)
        return {q: flops for q in QUANTITIES}
    hours = flops * h_per_flop
    energy = cost_model.estimate_energy_kwh(device_type, hours)
    cost = cost_model.cost(device_type, hours, energy)
    return {"compute_flops": flops, "device_hours": hours, "energy_kwh": energy,
            "emissions_kg": cost_model.emissions_kg(energy), "electricity_usd": cost["electricity_usd"],
            "cloud_usd_low": cost["cloud_usd_low"], "cloud_usd_high": cost["cloud_usd_high"]}
