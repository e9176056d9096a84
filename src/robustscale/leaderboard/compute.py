"""Training FLOPs of a recipe: measured forward/backward FLOPs per image x forward-equivalents x samples seen.

Per architecture (and input size) we measure, with ``robustscale.compute.measure_step_flops`` on the
meta device, the forward ``F``, the input-only backward ``Bin`` (an efficient attack step's backward) and
the training backward ``B``. A method's step then costs, per image, **as needed** (robustscale's
efficient step: input-only attack gradients, no redundant forwards; the identities of
``robustscale.compute.flops``, checked against a measured step in the tests):

- standard: ``F + B``
- pgd / fgsm_rs with K steps: ``F (K+1) + K Bin + B`` (fgsm_rs: K = 1)
- trades with K steps: ``F (K+2) + K Bin + 2 B`` (the clean training forward is the KL target)
- plus ``extra_forwards x F`` (a teacher / helper) and ``extra_train_passes x (F + B)`` (AWP, a helper loss).

**As spent** is what the authors' code runs (the implementation facts of ``recipes.py``): each attack
step makes ``attack_forwards`` model calls and back-propagates ``Bx`` = ``Bin`` (``attack_backward:
input``) or ``B`` (``full``: ``loss.backward()`` computes weight gradients too; the first layer's input
gradient it adds is not counted, < 1 % of B for the CIFAR nets); and the code adds
``redundant_forwards x F + redundant_train_passes x (F + B)``:

- pgd: ``F (K a + 1) + K Bx + B``; trades: ``F (K a + 2) + K Bx + 2 B``.

The 2024 study's convention from the same ``F``: ``analytic_train_step_flops`` (3F per pass) plus
``extra_forwards x F + extra_train_passes x 3F`` (a convention of the recipe, the same for both totals).
Architectures that cannot be built here (a WRN with its own stage widths, or an explicit FLOPs value)
use ``Bin = F`` and ``B = 2F``, the convnet ratios (measured within a few percent on our WRNs).
"""
from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import timm
import torch

from ..compute import analytic_train_step_flops, measure_step_flops
from ..config import TrainConfig
from ..errors import UserError
from ..models import check_model_name, wide_resnet
from .recipes import IMPLEMENTATION, METHODS, Entry, Fact, Phase

WRN_NAME = re.compile(r"^wrn-(\d+)-(\d+)$")
DEFAULT_FLOPS_PER_SECOND = 1.0e14  # achieved training FLOP/s per GPU: an A100 at ~1/3 of its 312 TFLOP/s bf16 peak


@dataclass(frozen=True)
class ArchFlops:
    """FLOPs per image of one architecture at one input size: forward, input-only and full backward."""

    label: str
    forward: float
    input_backward: float
    full_backward: float
    params: float | None
    how: str  # "measured (meta)", "conv formula", "explicit"


def wrn_stage_forward_flops(stem: int, widths, blocks, num_classes: int = 10, size: int = 32,
                            in_chans: int = 3) -> float:
    """Forward FLOPs (2 x MACs of convs and the classifier) of a pre-activation CIFAR WRN with per-stage widths.

    Stage i has ``blocks[i]`` basic blocks (two 3x3 convs) at ``widths[i]`` channels; stages 2 and 3
    halve the resolution in their first conv; a block whose input width or stride differs has a
    1x1 projection shortcut. This is the hand formula the tests also use to check measured WRNs.
    """
    flops = 2.0 * size * size * 9 * in_chans * stem
    c_in, res = stem, size
    for i, (w, n) in enumerate(zip(widths, blocks)):
        for j in range(n):
            stride = 2 if (i > 0 and j == 0) else 1
            out_res = res // stride
            flops += 2.0 * out_res * out_res * 9 * c_in * w  # conv1 (strided)
            flops += 2.0 * out_res * out_res * 9 * w * w  # conv2
            if c_in != w or stride != 1:
                flops += 2.0 * out_res * out_res * c_in * w  # 1x1 projection
            c_in, res = w, out_res
    return flops + 2.0 * c_in * num_classes


def wrn_stage_params(stem: int, widths, blocks, num_classes: int = 10, in_chans: int = 3) -> float:
    """Parameters of the same network (convs without bias, BN weight+bias, classifier)."""
    p = 9 * in_chans * stem
    c_in = stem
    for i, (w, n) in enumerate(zip(widths, blocks)):
        for j in range(n):
            p += 9 * c_in * w + 9 * w * w + 2 * c_in + 2 * w
            if c_in != w or (i > 0 and j == 0):
                p += c_in * w
            c_in = w
    return p + 2 * c_in + c_in * num_classes + num_classes


class FlopsCache:
    """Measured architecture FLOPs within one invocation (``measure`` can be swapped in tests)."""

    def __init__(self, measure: Callable[[Any, int, int], ArchFlops] | None = None):
        self._measure = measure or measure_architecture
        self._cache: dict[tuple, ArchFlops] = {}

    def get(self, model_fact: Fact, which: str, input_size: int, num_classes: int) -> ArchFlops:
        """FLOPs of the ``which`` end ("low" / "high") of a model fact."""
        value = getattr(model_fact, which)
        if model_fact.kind == "forward_flops":
            f = float(value)
            return ArchFlops(f"{f / 1e9:.3g} GFLOPs (explicit)", f, f, 2 * f, None, "explicit")
        key = (repr(value), input_size, num_classes)
        if key not in self._cache:
            self._cache[key] = self._measure(value, input_size, num_classes)
        return self._cache[key]


def build_model(spec: Any, num_classes: int):
    """A torch model for a model fact's value (on the current default device); None for formula specs."""
    if isinstance(spec, str):
        m = WRN_NAME.match(spec)
        if m:
            return wide_resnet(int(m.group(1)), int(m.group(2)), num_classes=num_classes)
        check_model_name(spec)
        return timm.create_model(spec, pretrained=False, num_classes=num_classes)
    if isinstance(spec, Mapping) and "timm" in spec:
        check_model_name(spec["timm"])
        return timm.create_model(spec["timm"], pretrained=False, num_classes=num_classes, **(spec.get("kwargs") or {}))
    raise UserError(f"unknown architecture spec {spec!r}")


def measure_architecture(spec: Any, input_size: int, num_classes: int) -> ArchFlops:
    """Measure F, Bin, B per image with the library's step counter (meta device; CPU fallback inside)."""
    if isinstance(spec, Mapping) and "wrn_stages" in spec:
        s = spec["wrn_stages"]
        f = wrn_stage_forward_flops(s["stem"], s["widths"], s["blocks"], num_classes, input_size)
        label = "WRN stages " + "/".join(map(str, s["widths"]))
        return ArchFlops(label, f, f, 2 * f, wrn_stage_params(s["stem"], s["widths"], s["blocks"], num_classes),
                         "conv formula")
    label = spec if isinstance(spec, str) else spec["timm"] + "".join(
        f" {k}={v}" for k, v in (spec.get("kwargs") or {}).items())
    try:
        with torch.device("meta"):
            model = build_model(spec, num_classes)
    except (RuntimeError, NotImplementedError):  # a model whose init needs real tensors
        model = build_model(spec, num_classes)
    params = float(sum(p.numel() for p in model.parameters()))
    cfg = TrainConfig.from_dict({"model": str(label), "method": "pgd", "attack_steps": 1}, source="recipe table")
    step = measure_step_flops(model, cfg, (3, input_size, input_size))
    return ArchFlops(str(label), step.forward_flops, step.input_backward_flops, step.full_backward_flops, params,
                     f"measured ({step.measured_on})")


# ---------------------------------------------------------------------- per-image step cost
def step_flops(arch: ArchFlops, method: str, k: int, extra_forwards: float = 0.0,
               extra_train_passes: float = 0.0, attack_backward: str = "input", attack_forwards: float = 1.0,
               redundant_forwards: float = 0.0, redundant_train_passes: float = 0.0) -> tuple[float, float]:
    """(measured, 2024 convention) FLOPs per training image of one step; the defaults of the
    implementation arguments are robustscale's efficient step (the total *as needed*)."""
    F, Bin, B = arch.forward, arch.input_backward, arch.full_backward
    Bx = {"input": Bin, "full": B}.get(attack_backward)
    if Bx is None:
        raise UserError(f"unknown attack_backward {attack_backward!r}; valid: input, full")
    if method == "standard":
        measured, k = F + B, 0
    elif method in ("pgd", "fgsm_rs"):
        k = 1 if method == "fgsm_rs" else k
        measured = F * (k * attack_forwards + 1) + k * Bx + B
    elif method == "trades":
        measured = F * (k * attack_forwards + 2) + k * Bx + 2 * B
    else:
        raise UserError(f"unknown method {method!r}; valid: {', '.join(METHODS)}")
    analytic = analytic_train_step_flops(method, max(k, 1) if method != "standard" else 0, F)
    measured += (extra_forwards + redundant_forwards) * F + (extra_train_passes + redundant_train_passes) * (F + B)
    analytic += extra_forwards * F + extra_train_passes * 3 * F
    return measured, analytic


@dataclass
class PhaseCompute:
    train_flops: tuple[float, float]  # (low, high), measured convention, as spent by the authors' code
    train_flops_needed: tuple[float, float]  # (low, high), the same recipe on the efficient step
    train_flops_2024: tuple[float, float]
    train_flops_per_image: tuple[float, float]  # training-step FLOPs per image
    forward_flops: tuple[float, float]
    samples: tuple[float, float]
    arch_label: str
    params: float | None


def _ends(fact: Fact) -> list:
    return [fact.low] if fact.low == fact.high else [fact.low, fact.high]


def phase_compute(phase: Phase, cache: FlopsCache) -> PhaseCompute:
    """Low/high compute of a phase: every combination of its range ends, the smallest and largest."""
    size = int(phase.get("input_size").value)
    classes = int(phase.get("num_classes").value)
    model = phase.get("model")
    arch_ends = {w: cache.get(model, w, size, classes) for w in (["low"] if not model.is_range else ["low", "high"])}
    methods = sorted({phase.get("method").low, phase.get("method").high}, key=METHODS.index)
    steps = _ends(phase.facts["attack_steps"]) if "attack_steps" in phase.facts else [0]
    ef = _ends(phase.get("extra_forwards"))
    et = _ends(phase.get("extra_train_passes"))
    if "train_steps" in phase.facts:
        samples = [float(s) * float(b) for s in _ends(phase.get("train_steps")) for b in _ends(phase.get("batch_size"))]
    else:
        samples = [float(e) * float(n) for e in _ends(phase.get("epochs"))
                   for n in _ends(phase.get("images_per_epoch"))]
    impl = [_ends(phase.get(name)) for name in IMPLEMENTATION]
    totals, needed, totals_2024, per_image = [], [], [], []
    for arch, m, k, f, t in itertools.product(arch_ends.values(), methods, steps, ef, et):
        efficient, analytic = step_flops(arch, m, int(k), float(f), float(t))
        for ab, af, rf, rt in itertools.product(*impl):
            spent, _ = step_flops(arch, m, int(k), float(f), float(t), str(ab), float(af), float(rf), float(rt))
            per_image.append(spent)
            totals += [spent * s for s in samples]
        needed += [efficient * s for s in samples]
        totals_2024 += [analytic * s for s in samples]
    arch_lo = arch_ends["low"]
    arch_hi = arch_ends.get("high", arch_lo)
    return PhaseCompute((min(totals), max(totals)), (min(needed), max(needed)),
                        (min(totals_2024), max(totals_2024)),
                        (min(per_image), max(per_image)), (arch_lo.forward, arch_hi.forward),
                        (min(samples), max(samples)), arch_lo.label if not model.is_range else
                        f"{arch_lo.label} .. {arch_hi.label}", arch_lo.params)


@dataclass
class EntryCompute:
    """An entry's training compute; ``None`` ends mean unknown (excluded, no recipe, or unbounded).

    ``train_flops*`` is *as spent* (the authors' code); ``train_flops_needed*`` the same recipe on the
    efficient step; ``train_flops_2024*`` the 2024 study's convention of the recipe."""

    train_flops_low: float | None
    train_flops_high: float | None
    train_flops_needed_low: float | None
    train_flops_needed_high: float | None
    train_flops_2024_low: float | None
    train_flops_2024_high: float | None
    train_flops_per_image: float | None  # training-step FLOPs per image of the dominant phase (point)
    forward_flops: float | None
    samples_seen: float | None
    params: float | None
    arch_label: str

    @property
    def train_flops(self) -> float | None:
        """Point estimate: the value, or the geometric mean of a range; None when unbounded or unknown."""
        return geometric_mid(self.train_flops_low, self.train_flops_high)

    @property
    def train_flops_needed(self) -> float | None:
        return geometric_mid(self.train_flops_needed_low, self.train_flops_needed_high)

    @property
    def train_flops_2024(self) -> float | None:
        return geometric_mid(self.train_flops_2024_low, self.train_flops_2024_high)


def geometric_mid(low: float | None, high: float | None) -> float | None:
    if low is None or high is None or not (low > 0 and high > 0):
        return None
    return low if low == high else math.sqrt(low * high)


def entry_compute(entry: Entry, entries: Mapping[str, Entry], cache: FlopsCache,
                  _seen: tuple[str, ...] = ()) -> EntryCompute | None:
    """Compute of ``entry`` (its phases x members, plus the entry it is based on); None if excluded."""
    if entry.excluded is not None:
        return None
    if entry.name in _seen:
        raise UserError(f"recipe table: based_on cycle through {entry.name}")
    lo = hi = nlo = nhi = lo24 = hi24 = 0.0
    best, fpi, fwd, samples, params, label = -1.0, None, None, None, None, ""
    if entry.based_on is not None:
        base = entry_compute(entries[entry.based_on.value], entries, cache, _seen + (entry.name,))
        lo, hi = base.train_flops_low, base.train_flops_high
        nlo, nhi = base.train_flops_needed_low, base.train_flops_needed_high
        lo24, hi24 = base.train_flops_2024_low, base.train_flops_2024_high
        fpi, fwd, samples = base.train_flops_per_image, base.forward_flops, base.samples_seen
        params, label = base.params, base.arch_label
        best = base.train_flops or -1.0
    members = float(entry.members.value) if entry.members is not None else 1.0
    for phase in entry.phases:
        pc = phase_compute(phase, cache)
        lo += members * pc.train_flops[0]
        hi = None if hi is None else hi + members * pc.train_flops[1]
        nlo += members * pc.train_flops_needed[0]
        nhi = None if nhi is None else nhi + members * pc.train_flops_needed[1]
        lo24 += members * pc.train_flops_2024[0]
        hi24 = None if hi24 is None else hi24 + members * pc.train_flops_2024[1]
        point = geometric_mid(*pc.train_flops)
        if point > best:  # report the dominant phase's architecture and per-image cost
            best, fpi, fwd = point, geometric_mid(*pc.train_flops_per_image), geometric_mid(*pc.forward_flops)
            samples, params, label = geometric_mid(*pc.samples), pc.params, pc.arch_label
    if entry.unbounded_extra:
        hi = nhi = hi24 = None
    if members != 1 and params is not None:
        params *= members
    return EntryCompute(lo, hi, nlo, nhi, lo24, hi24, fpi, fwd, samples, params, label)


def device_hours(train_flops: float | None, flops_per_second: float = DEFAULT_FLOPS_PER_SECOND) -> float | None:
    """GPU-hours at an achieved ``flops_per_second`` per GPU."""
    if train_flops is None:
        return None
    return train_flops / flops_per_second / 3600.0
