"""The compute model of a recipe: training FLOPs = FLOPs per image of one training step of the
method with k attack steps on the architecture x samples seen.

Conventions (``--flops-convention``):

- ``measured`` (default): the step as ``robustscale flops`` measures it (``measure_step_flops``
  on the meta device, cached on disk by :class:`robustscale.sweep.StepFlopsCache`). Measured at
  k = 1 and k = 2; other k by linearity, since every attack step adds the same forward +
  input-only backward: ``step(k) = step(1) + (k - 1) (step(2) - step(1))`` (equal to a direct
  measurement; tested).
- ``paper-2024``: the 2024 study's ``3F (K+2)`` (PGD), ``3F (K+3)`` (TRADES), ``3F`` (standard),
  ``3F (1+2)`` (FGSM-RS) from the measured forward FLOPs F (``analytic_train_step_flops``).

For the continuous optimum the planner needs FLOPs as a function of N, which the zoo gives only at
its architectures: forward FLOPs per image ~ ``c N``, with ``c`` the geometric mean of F / N over
the candidate architectures (wide ResNets at 32x32: 282-303 FLOPs per parameter, so within a few
percent), and the step as ``r0 + r1 k`` forward passes, the mean over architectures of the
measured ``step(k) / F``. Concrete recipes use each architecture's own measured FLOPs.

Runs that record their ``train_flops`` set the constant instead (:meth:`ComputeModel.calibrate`): each
gives ``c_i = train_flops / ((r0 + r1 k) N D)``, FLOPs per parameter per image per forward-equivalent of
its own step; ``c`` is their geometric mean (the spread is reported) and those runs keep their recorded
FLOPs. The zoo's constant prices only runs that record none, and when the runs' ``c`` and the zoo's
differ by more than :data:`DISAGREEMENT` the plan carries one warning line.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterable

import numpy as np

from ..compute import analytic_train_step_flops
from ..compute.zoo import model_rows
from ..config import TrainConfig
from ..errors import UserError
from ..models import check_model_name, our_models
from ..scaling.joint import ComputeCoefficients
from ..sweep.estimate import StepFlopsCache

CONVENTIONS = ("measured", "paper-2024")
ATTACK_METHODS = ("pgd", "trades")  # methods whose step grows with the attack steps
DISAGREEMENT = 0.20  # runs' FLOPs per parameter vs the zoo's: beyond this relative gap, one warning line


@dataclass(frozen=True)
class Architecture:
    """A zoo model: parameters, forward FLOPs per image, and names with the same two numbers."""

    name: str
    parameters: int
    forward_flops: float
    same_as: tuple[str, ...] = ()


def family(name: str) -> str:
    """``wide_resnet28_10_dm`` -> ``wide_resnet`` (the name up to its first digit)."""
    return re.split(r"\d", str(name), maxsplit=1)[0].rstrip("_")


def zoo_candidates(run_models: Iterable[str], names: Iterable[str] | None = None) -> list[str]:
    """Zoo models for recipes: ``names`` if given, else our models of the runs' families (wide ResNets
    when none of the runs' models is ours)."""
    if names:
        return [check_model_name(n) for n in names]
    ours = our_models()
    fams = {family(m) for m in run_models if m in ours} or {"wide_resnet"}
    return [n for n in ours if family(n) in fams]


@dataclass
class ComputeModel:
    """FLOPs per image of a training step for (architecture, method, k), in one convention."""

    architectures: dict[str, Architecture]
    dataset: str = "cifar10"
    convention: str = "measured"
    cache: object = None
    runs_calibration: dict | None = None  # set by calibrate(): the constant the runs' train_flops give
    _steps: dict = field(default_factory=dict, repr=False)

    @classmethod
    def from_zoo(cls, names: Iterable[str], dataset: str = "cifar10", convention: str = "measured",
                 cache=None) -> "ComputeModel":
        """Parameters and forward FLOPs of ``names`` (``robustscale models``); equal pairs share a row."""
        if convention not in CONVENTIONS:
            raise UserError(f"unknown FLOPs convention {convention!r}; valid: {', '.join(CONVENTIONS)}")
        archs: dict[str, Architecture] = {}
        by_numbers: dict[tuple, str] = {}
        for row in model_rows(list(dict.fromkeys(names)), dataset):
            key = (row["parameters"], row["forward_flops_per_image"])
            if key in by_numbers:  # activations count 0 FLOPs: a _dm variant measures like its twin
                first = archs[by_numbers[key]]
                archs[first.name] = Architecture(first.name, first.parameters, first.forward_flops,
                                                 first.same_as + (row["model"],))
                continue
            by_numbers[key] = row["model"]
            archs[row["model"]] = Architecture(row["model"], int(row["parameters"]),
                                               float(row["forward_flops_per_image"]))
        return cls(archs, dataset, convention, cache if cache is not None else StepFlopsCache())

    def resolve(self, model: str) -> Architecture | None:
        """The architecture row of ``model`` (directly or through ``same_as``), or None."""
        if model in self.architectures:
            return self.architectures[model]
        return next((a for a in self.architectures.values() if model in a.same_as), None)

    def step_flops(self, model: str, method: str, k: int) -> float:
        """Training FLOPs per image of one step (see the module docstring)."""
        arch = self.resolve(model)
        if arch is None:
            raise UserError(f"model {model!r} is not among the planner's architectures: "
                            f"{', '.join(self.architectures)}")
        if self.convention == "paper-2024":
            return float(analytic_train_step_flops(method, int(k), arch.forward_flops))
        if method not in ATTACK_METHODS:
            return self._measured(arch.name, method, 1)
        s1, s2 = self._measured(arch.name, method, 1), self._measured(arch.name, method, 2)
        return s1 + (int(k) - 1) * (s2 - s1)

    def _measured(self, name: str, method: str, k: int) -> float:
        key = (name, method, k)
        if key not in self._steps:
            cfg = TrainConfig.from_dict({"model": name, "dataset": self.dataset, "method": method,
                                         "attack_steps": k}, source="plan")
            self._steps[key] = float(self.cache.get(cfg))
        return self._steps[key]

    def zoo_flops_per_parameter(self) -> tuple[float, float, float]:
        """``(c, min, max)`` of forward FLOPs per image per parameter over the zoo's architectures."""
        ratios = np.array([a.forward_flops / a.parameters for a in self.architectures.values()])
        return float(np.exp(np.mean(np.log(ratios)))), float(ratios.min()), float(ratios.max())

    def flops_per_parameter(self) -> tuple[float, float, float]:
        """``(c, min, max)``: from the runs' recorded FLOPs when :meth:`calibrate` found any, else the zoo's."""
        if self.runs_calibration is not None:
            r = self.runs_calibration
            return r["flops_per_parameter"], r["range"][0], r["range"][1]
        return self.zoo_flops_per_parameter()

    def calibrate(self, methods, steps, params, seen, recorded) -> dict | None:
        """Set ``c`` from the runs' recorded ``train_flops`` (see the module docstring); None if none record it.

        Returns (and keeps) ``{"flops_per_parameter", "range", "n", "zoo_flops_per_parameter", "ratio",
        "warning"}``; ``warning`` is one line when runs and zoo disagree by more than DISAGREEMENT."""
        rec = np.asarray(recorded, float)
        ok = np.isfinite(rec) & (rec > 0) & np.isfinite(np.asarray(params, float)) & np.isfinite(np.asarray(seen, float))
        if not ok.any():
            self.runs_calibration = None
            return None
        self.runs_calibration = None  # the forward-equivalents below use the zoo's step structure only
        cs = []
        for i in np.flatnonzero(ok):
            meth = str(methods[i])
            k = int(steps[i]) if meth in ATTACK_METHODS else 0
            unit = self.coefficients(meth)  # its r0 + r1 k: forward-equivalents of the run's step
            fe = (unit.intercept + unit.per_step * k) * float(params[i]) * float(seen[i])
            cs.append(rec[i] / fe)
        cs = np.array(cs)
        c = float(np.exp(np.mean(np.log(cs))))
        zoo = self.zoo_flops_per_parameter()[0]
        ratio = c / zoo
        warning = None
        if abs(ratio - 1) > DISAGREEMENT:
            warning = (f"warning: the runs' train_flops give {c:.3g} forward FLOPs per parameter per image "
                       f"({cs.min():.3g}-{cs.max():.3g} over {cs.size} runs), {ratio:.3g}x the zoo's {zoo:.3g}: "
                       f"the plan prices compute as the runs recorded it")
        self.runs_calibration = {"flops_per_parameter": c, "range": [float(cs.min()), float(cs.max())],
                                 "n": int(cs.size), "zoo_flops_per_parameter": zoo, "ratio": ratio,
                                 "warning": warning}
        return self.runs_calibration

    def coefficients(self, method: str) -> ComputeCoefficients:
        """``C = (r0 + r1 k) c N D`` for ``method``: r0, r1 the mean over architectures of step(k)/F."""
        c = self.flops_per_parameter()[0]
        r0, r1 = [], []
        for a in self.architectures.values():
            s1 = self.step_flops(a.name, method, 1) / a.forward_flops
            s2 = self.step_flops(a.name, method, 2) / a.forward_flops if method in ATTACK_METHODS else s1
            r1.append(s2 - s1)
            r0.append(s1 - (s2 - s1))
        return ComputeCoefficients(c, float(np.mean(r0)), float(np.mean(r1)))

    def run_flops(self, models, methods, steps, params, seen, recorded=None) -> np.ndarray:
        """Training FLOPs of runs: their recorded ``train_flops`` where given (and calibrated), else in
        this convention, the measured architecture when the run's model is one of ours, else the c N fit."""
        out = np.empty(len(params))
        rec = np.full(len(params), np.nan) if recorded is None or self.runs_calibration is None \
            else np.asarray(recorded, float)
        for i, (m, meth, k, n, d) in enumerate(zip(models, methods, steps, params, seen)):
            k = 0 if meth not in ATTACK_METHODS else int(k)
            if np.isfinite(rec[i]) and rec[i] > 0:
                out[i] = rec[i]
            elif self.resolve(str(m)) is not None:
                out[i] = self.step_flops(str(m), meth, max(k, 1)) * float(d)
            else:
                out[i] = float(self.coefficients(meth).flops(n, d, k))
        return out

    def to_dict(self, methods: Iterable[str]) -> dict:
        c, lo, hi = self.flops_per_parameter()
        coefs = {m: self.coefficients(m) for m in methods}
        return {"convention": self.convention, "dataset": self.dataset, "flops_per_parameter": c,
                "flops_per_parameter_range": [lo, hi],
                "flops_per_parameter_source": "runs' train_flops" if self.runs_calibration else "zoo",
                "runs_calibration": self.runs_calibration,
                "forward_equivalents": {m: {"intercept": v.intercept, "per_step": v.per_step} for m, v in coefs.items()},
                "architectures": [{"model": a.name, "same_as": list(a.same_as), "parameters": a.parameters,
                                   "forward_flops_per_image": a.forward_flops} for a in self.architectures.values()]}
