"""The bill of a sweep before it starts: training FLOPs, device-hours, energy and dollars per run.

- FLOPs: ``measure_step_flops`` of each (model, dataset, method, attack steps) on the meta
  device, cached in memory and in ``$XDG_CACHE_HOME/robustscale/step-flops.json``, times the
  training images the run will see (steps per epoch follow the training sampler: drop-last
  without generated data, ceil with it).
- Time: ``images_seen / throughput`` where the throughput (training images per second of one
  job) is, in order: ``--throughput``, ``--flop-rate`` / FLOPs per image, the spec's
  ``cost.throughput``, then its ``cost.flop_rate``, the median of finished runs of the same family
  (dataset, model, method, attack steps) in the store, or the median FLOP rate (train FLOPs per
  second) of all finished runs in the store, and last the device's figure in the packaged
  ``compute/throughput.yaml`` (measured ``robustscale bench`` speeds; source ``default:<entry>``).
  A FLOP rate carries one measured speed across models and attack steps (img/s does not).
- Evaluation: the spec's ``evaluation`` on ``n_examples`` images, priced at the same FLOP rate from the
  model's measured forward and attack-step (input-gradient) FLOPs: clean ``F``; PGD-K with R restarts
  ``F + R (K A + F)``; APGD-CE ``F + 100 A + F``; AutoAttack standard an upper bound, every image going
  through every stage: ``F + 100 A`` (APGD-CE) ``+ 9 x 100 A`` (APGD-T) ``+ 9 x 100 (A + F)`` (FAB-T)
  ``+ 5000 F`` (Square). Real AutoAttack runs stop attacking an image once it is broken: the bound is
  reached by a model that no attack breaks.
- Device-hours = hours x devices per job; energy = the price table's power x device-hours
  (IT energy); cost from ``CostModel.cost`` (electricity with PUE, cloud rental low/high).
"""
from __future__ import annotations

import json
import math
import os
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable

import torch
from tqdm import tqdm

from .. import __version__
from ..compute import effective_attack_steps, measure_step_flops
from ..config import TrainConfig
from ..cost import CostModel, default_flop_rate
from ..data.info import dataset_info
from ..errors import UserError
from ..evaluation.spec import DEFAULT_STEPS, Attack
from ..models import create_model
from ..rundir import write_text
from .spec import PlannedRun, SweepSpec

CACHE_VERSION = 2  # 2: the forward and attack-step FLOPs beside the training step's

# Passes per image of AutoAttack standard's stages when every image survives to the end (the bound):
# (attack-step passes A, forward passes F). APGD: 100 iterations; APGD-T and FAB-T: 9 target classes each.
AA_STANDARD_PASSES = {"apgd-ce": (100, 1), "apgd-t": (900, 9), "fab-t": (900, 900), "square": (0, 5000)}


@dataclass
class RunEstimate:
    name: str
    train_flops_per_image: float | None
    images_seen: int | None
    train_flops: float | None
    throughput: float | None  # training images per second, one job
    # "given", "given:flop-rate", "spec", "spec:flop-rate", "store:family", "store:flop-rate", "unknown"
    throughput_source: str
    eval_flops: float | None  # the spec's evaluation of this run (AutoAttack: an upper bound)
    eval_device_hours: float | None
    device_count: int
    device_type: str | None
    device_hours: float | None
    energy_kwh: float | None
    electricity_usd: float | None
    cloud_usd_low: float | None
    cloud_usd_high: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


SUM_KEYS = ("train_flops", "eval_flops", "device_hours", "eval_device_hours", "energy_kwh", "electricity_usd",
            "cloud_usd_low", "cloud_usd_high")


def totals(estimates: Iterable[RunEstimate]) -> dict[str, float | None]:
    """Sums over runs; a sum is None when any run's value is unknown."""
    estimates = list(estimates)
    out: dict[str, float | None] = {}
    for key in SUM_KEYS:
        values = [getattr(e, key) for e in estimates]
        out[key] = None if any(v is None for v in values) else float(sum(values))
    out["runs"] = len(estimates)
    return out


def images_seen(cfg: TrainConfig, world_size: int = 1) -> int | None:
    """Training images a run processes over all epochs (all ranks), as the training sampler counts them."""
    n = cfg.train_subset or dataset_info(cfg.dataset).train_size
    if n is None:
        return None
    n = int(n)
    batch = cfg.batch_size
    if cfg.generated_data:
        steps = math.ceil(n / batch)
    else:
        steps = max(1, n // batch)
    return steps * batch * cfg.epochs


class StepFlopsCache:
    """Measured training-step FLOPs per image, per (model, dataset, method, attack steps, bn mode)."""

    def __init__(self, path: Path | None = None):
        self.path = path if path is not None else default_cache_path()
        self.memory: dict[str, dict[str, float]] = {}  # key -> {"train", "forward", "attack_step"} per image
        self._loaded = False

    def key(self, cfg: TrainConfig) -> str:
        steps = effective_attack_steps(cfg)
        return "|".join(map(str, (cfg.model, cfg.dataset, cfg.method.value, steps, cfg.attack_bn_eval, __version__)))

    def _load(self) -> None:
        if self._loaded or self.path is None:
            self._loaded = True
            return
        self._loaded = True
        try:
            data = json.loads(self.path.read_text())
            if data.get("version") == CACHE_VERSION:
                self.memory.update({k: {p: float(x) for p, x in v.items()} for k, v in data.get("entries", {}).items()})
        except (OSError, ValueError, AttributeError):
            pass

    def _save(self) -> None:
        if self.path is None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_text(self.path, json.dumps({"version": CACHE_VERSION, "entries": self.memory}, indent=0,
                                             sort_keys=True))
        except OSError:
            pass  # a read-only home only costs re-measuring next time

    def parts(self, cfg: TrainConfig) -> dict[str, float]:
        """``{"train", "forward", "attack_step"}``: FLOPs per image of the training step and of its parts."""
        self._load()
        key = self.key(cfg)
        if key not in self.memory:
            self.memory[key] = measure_train_step_flops(cfg)
            self._save()
        return self.memory[key]

    def get(self, cfg: TrainConfig) -> float:
        """Training-step FLOPs per image."""
        return self.parts(cfg)["train"]

    def missing(self, cfgs: Iterable[TrainConfig]) -> list[TrainConfig]:
        self._load()
        seen, out = set(), []
        for cfg in cfgs:
            k = self.key(cfg)
            if k not in self.memory and k not in seen:
                seen.add(k)
                out.append(cfg)
        return out


def default_cache_path() -> Path | None:
    if os.environ.get("ROBUSTSCALE_FLOPS_CACHE", "").lower() in ("off", "none", "0"):
        return None
    if os.environ.get("ROBUSTSCALE_FLOPS_CACHE"):
        return Path(os.environ["ROBUSTSCALE_FLOPS_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "robustscale" / "step-flops.json"


def measure_train_step_flops(cfg: TrainConfig) -> dict[str, float]:
    """FLOPs per image of the run's training step, forward pass and attack step (input gradient), from
    ``measure_step_flops`` on the meta device."""
    info = dataset_info(cfg.dataset)
    if info.input_size is None or info.num_classes is None:
        raise UserError(f"cannot estimate FLOPs for dataset {cfg.dataset!r} without its input size; use --no-cost")
    with torch.device("meta"):
        model = create_model(cfg.model, num_classes=info.num_classes, in_chans=info.in_chans,
                             mean=info.mean, std=info.std)
    step = measure_step_flops(model, cfg, info.input_size)
    return {"train": float(step.train_step_flops), "forward": float(step.forward_flops),
            "attack_step": float(step.attack_step_flops)}


def eval_flops_per_image(evaluation, forward: float, attack_step: float) -> float | None:
    """FLOPs per image of ``evaluation`` (the spec's; see the module docstring), None for an attack not priced."""
    if evaluation is None:
        return 0.0
    attack = evaluation.attack
    if attack == "clean":
        return forward
    if attack == "pgd":
        steps = evaluation.steps if evaluation.steps is not None else DEFAULT_STEPS[Attack.PGD]
        restarts = evaluation.restarts or 1
        return forward + restarts * (steps * attack_step + forward)
    if attack == "apgd-ce":
        return forward + DEFAULT_STEPS[Attack.APGD_CE] * attack_step + forward
    if attack == "aa-standard":
        return forward + sum(a * attack_step + f * forward for a, f in AA_STANDARD_PASSES.values())
    return None


def family_key(row_or_cfg) -> tuple:
    get = row_or_cfg.get if isinstance(row_or_cfg, dict) else (lambda k: getattr(row_or_cfg, k))
    method = get("method")
    method = getattr(method, "value", method)
    return (get("dataset"), get("model"), method, int(get("attack_steps") or 0))


def store_throughputs(store) -> tuple[dict[tuple, float], float | None]:
    """Median images/s per family and the median FLOP rate (FLOP/s) of finished runs in ``store``."""
    per_family: dict[tuple, list[float]] = {}
    flop_rates: list[float] = []
    for row in store.list_runs(["status=done", "source=robustscale"]):
        wall = row.get("wall_seconds")
        if not wall or wall <= 0:
            continue
        seen = row.get("train_images_seen")
        if not seen and row.get("train_images") and row.get("epochs"):
            seen = row["train_images"] * row["epochs"]
        if seen:
            per_family.setdefault(family_key(row), []).append(seen / wall)
        if row.get("train_flops"):
            flop_rates.append(row["train_flops"] / wall)
    medians = {k: statistics.median(v) for k, v in per_family.items()}
    return medians, (statistics.median(flop_rates) if flop_rates else None)


def estimate_runs(spec: SweepSpec, runs: list[PlannedRun] | None = None, *, throughput: float | None = None,
                  flop_rate: float | None = None, device_type: str | None = None, price_preset: str | None = None,
                  store=None,
                  cache: StepFlopsCache | None = None, progress: bool = False) -> list[RunEstimate]:
    """The bill of each run (see the module docstring)."""
    runs = spec.runs if runs is None else runs
    cache = cache or StepFlopsCache()
    preset = price_preset or spec.cost.price_preset
    costs = CostModel.from_yaml(spec.cost.price_table, preset=preset)
    gpus = spec.executor.job_gpus  # all nodes of a run's job
    dev_type = device_type or spec.cost.device_type
    if dev_type is not None:
        costs.price(dev_type)  # unknown type -> UserError listing the valid ones
    # (images per second, FLOP/s, source): the first one given wins
    candidates = [(throughput, None, "given"), (None, flop_rate, "given:flop-rate"),
                  (spec.cost.throughput, None, "spec"), (None, spec.cost.flop_rate, "spec:flop-rate")]
    for img_s, flop_s, _ in candidates:
        if img_s is not None and not img_s > 0:
            raise UserError(f"invalid throughput {img_s!r}: must be > 0 images per second")
        if flop_s is not None and not flop_s > 0:
            raise UserError(f"invalid flop rate {flop_s!r}: must be > 0 FLOP/s")
    given_img_s, given_flop_s, given_source = next(
        (c for c in candidates if c[0] is not None or c[1] is not None), (None, None, "unknown"))
    from_store = store is not None and given_source == "unknown"
    family, store_flop_rate = store_throughputs(store) if from_store else ({}, None)

    todo = cache.missing(r.cfg for r in runs)
    if todo:
        bar = _progress(len(todo), progress)
        for cfg in todo:
            cache.get(cfg)
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()

    out = []
    for run in runs:
        cfg = run.cfg
        parts = cache.parts(cfg)
        per_image = parts["train"]
        seen = images_seen(cfg, world_size=max(gpus or 1, 1))
        flops = None if seen is None else per_image * seen
        devices = max(int(gpus if gpus is not None else 0), 1)
        rate, source = None, "unknown"
        if given_img_s is not None:
            rate, source = float(given_img_s), given_source
        elif given_flop_s is not None and per_image:
            rate, source = float(given_flop_s) / per_image, given_source
        elif family_key(cfg) in family:
            rate, source = family[family_key(cfg)], "store:family"
        elif store_flop_rate and per_image:
            rate, source = store_flop_rate / per_image, "store:flop-rate"
        this_type = dev_type or cfg.device_type or ("gpu" if (gpus or 0) > 0 else "cpu")
        default = default_flop_rate(this_type) if rate is None and per_image else None
        if default is not None:
            rate, source = default[0] / per_image, f"default:{default[1]}"
        hours = None if rate is None or seen is None else seen / rate / 3600.0
        # The evaluation runs at the training step's FLOP rate (images/s x FLOPs per image).
        per_eval = eval_flops_per_image(spec.evaluation, parts["forward"], parts["attack_step"])
        n_eval = (spec.evaluation.n_examples or 0) if spec.evaluation is not None else 0
        eval_flops = None if per_eval is None else per_eval * n_eval
        eval_hours = None if eval_flops is None or rate is None else eval_flops / (rate * per_image) / 3600.0
        if hours is not None and eval_hours is not None:
            hours += eval_hours / devices  # one device evaluates; the bill counts device-hours
        device_hours = None if hours is None else hours * devices
        energy = elec = low = high = None
        if device_hours is not None:
            energy = costs.estimate_energy_kwh(this_type, device_hours)
            bill = costs.cost(this_type, device_hours, energy)
            elec, low, high = bill["electricity_usd"], bill["cloud_usd_low"], bill["cloud_usd_high"]
        out.append(RunEstimate(name=run.name, train_flops_per_image=per_image, images_seen=seen, train_flops=flops,
                               throughput=rate, throughput_source=source, eval_flops=eval_flops,
                               eval_device_hours=eval_hours, device_count=devices,
                               device_type=this_type, device_hours=device_hours, energy_kwh=energy,
                               electricity_usd=elec, cloud_usd_low=low, cloud_usd_high=high))
    return out


def _progress(total: int, enabled: bool):
    if not enabled:
        return None
    return tqdm(total=total, desc="measuring step FLOPs", unit="config", leave=False)
