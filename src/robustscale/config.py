"""The run configuration: one dataclass resolved once from YAML + CLI overrides.

``TrainConfig`` is flat so that every key maps 1:1 to a CLI flag (``--attack-steps 5`` or
``--attack_steps 5``) and to a sweep axis. It is written unchanged to ``config.yaml`` of the
run and to the results store. Units: ``eps`` / ``step_size`` in [0,1] pixel units,
learning rates per 256 images (``lr_base``), fractions in [0,1]. Every construction path
(``TrainConfig(...)``, ``from_dict``, ``from_yaml``, ``replace``) coerces and validates in
``__post_init__``: ``TrainConfig(lr_base=1)`` equals ``TrainConfig.from_dict({"lr_base": "1"})``
and ``TrainConfig(epochs=0)`` raises UserError.

Run identity (``TrainConfig.config_hash``): what ``sweep run`` skips finished runs by, what
``--resume`` checks ``state.pt`` against and what names a default run folder. Two configs that
train the same way have the same hash. It is a sha256 of a canonical form (:data:`HASH_VERSION`
included) that keeps only the fields in :data:`HASHED_FIELDS`, and of those only the ones this
config reads (``attack_steps`` is dropped for ``method: standard``) and that differ from their
default (so a new field with a default changes no existing hash).

**Adding a field**: declare it below AND name it in exactly one of :data:`HASHED_FIELDS` (with
the condition under which training reads it) or :data:`UNHASHED_FIELDS`; importing this module
fails otherwise. Never change the default of a hashed field (runs recorded under the old default
would take the new one): add a field instead, or bump HASH_VERSION and keep the old scheme as a
lookup (tests/test_config_hash.py pins the defaults and a few hashes). 0.1.0 hashed every field
but a few: :func:`legacy_config_hash_v1`; :meth:`TrainConfig.matches_hash` accepts both.
"""
from __future__ import annotations

import dataclasses
import difflib
import enum
import hashlib
import json
import math
import typing
from dataclasses import dataclass, field, fields
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Iterable

import yaml

from .errors import UserError, choice


class Method(str, enum.Enum):
    STANDARD = "standard"
    PGD = "pgd"
    TRADES = "trades"
    FGSM_RS = "fgsm_rs"
    N_FGSM = "n_fgsm"  # de Jorge et al. 2022: noise U[-k eps, k eps], one step, no projection
    GRAD_ALIGN = "grad_align"  # Andriushchenko & Flammarion 2020: FGSM + lambda (1 - gradient cosine)


class Norm(str, enum.Enum):
    LINF = "linf"
    L2 = "l2"


class OnCollapse(str, enum.Enum):
    """What training does when the per-epoch check flags catastrophic overfitting."""

    WARN = "warn"  # one line with the epoch and both accuracies; training goes on
    STOP = "stop"  # the same line, then training ends there, keeping its checkpoints


class Amp(str, enum.Enum):
    OFF = "off"
    BF16 = "bf16"
    FP16 = "fp16"


class Compile(str, enum.Enum):
    """``torch.compile`` of the model: ``auto`` compiles where it pays back its warm-up (see
    ``robustscale.train.should_compile``); ``on`` / ``off`` force it. YAML/CLI also accept true/false."""

    AUTO = "auto"
    ON = "on"
    OFF = "off"


class Select(str, enum.Enum):
    """Which checkpoint a run reports: ``best`` on the selection split by the method's metric, or ``last``."""

    BEST = "best"
    LAST = "last"


class SelectSplit(str, enum.Enum):
    """Where ``select: best`` measures: ``val`` (held out from training) or ``test`` (explicit, labelled)."""

    VAL = "val"
    TEST = "test"


class Tracker(str, enum.Enum):
    """The experiment trackers ``log_to`` may name (``robustscale.trackers`` runs them)."""

    WANDB = "wandb"
    MLFLOW = "mlflow"
    TENSORBOARD = "tensorboard"


_COMPILE_ALIASES = {"true": "on", "yes": "on", "1": "on", "false": "off", "no": "off", "0": "off"}


def parse_fraction(value: Any, what: str = "value") -> float:
    """Parse ``0.031``, ``"8/255"`` or ``8/255`` (YAML gives a string) into a float."""
    if isinstance(value, bool):
        raise UserError(f"invalid {what} {value!r}; expected a number like 0.031 or 8/255")
    if isinstance(value, (int, float)):
        return float(value)
    try:
        return float(Fraction(str(value).strip()))
    except OverflowError:
        raise UserError(f"invalid {what} {value!r}: out of range") from None
    except (ValueError, ZeroDivisionError):
        raise UserError(f"invalid {what} {value!r}; expected a number like 0.031 or 8/255") from None


def parse_tracker_names(names: Iterable[str] | str | None) -> list[str]:
    """``["WandB", "mlflow"]`` or ``"wandb,mlflow"`` -> ``["wandb", "mlflow"]`` (order kept, duplicates
    dropped); an unknown name raises UserError listing the valid ones."""
    if names is None:
        return []
    if isinstance(names, str):
        names = names.split(",")
    out: list[str] = []
    for name in names:
        if str(name).strip():
            value = choice(Tracker, name, what="log_to tracker").value
            if value not in out:
                out.append(value)
    return out


# timm scheduler names usable with a per-step schedule (``plateau`` needs a metric: not offered).
SCHEDULERS = ("cosine", "tanh", "step", "multistep", "poly", "wsd", "rsqrt", "constant", "none")

# timm optimizer names that are torch.optim.SGD with momentum (``nesterov`` picks the variant).
SGD_OPTS = ("sgd", "momentum")

# One-step methods and their default step, in units of eps (``step_size`` overrides it).
SINGLE_STEP_DEFAULT_STEP = {Method.FGSM_RS: 1.25, Method.N_FGSM: 1.0, Method.GRAD_ALIGN: 1.0}

# ---------------------------------------------------------------------------------------------- identity
# 1: 0.1.0 (every field but a few, defaults included; see legacy_config_hash_v1). 2: the explicit field list
# (never released). 3: the same list, after what a default config trains changed (a validation split carved
# from the training images picks the checkpoint; `opt: sgd` is classical momentum with weight decay on every
# parameter; warm-up is a prefix of the schedule): a run recorded under 2 trained differently, so no lookup.
HASH_VERSION = 3

_ADVERSARIAL = (Method.PGD, Method.TRADES, Method.FGSM_RS, Method.N_FGSM, Method.GRAD_ALIGN)
_MULTI_STEP = (Method.PGD, Method.TRADES)  # fgsm_rs takes one step of its own size


def _always(cfg: "TrainConfig") -> bool:
    return True


def _for(*methods: Method) -> Callable[["TrainConfig"], bool]:
    return lambda cfg: cfg.method in methods


def _val_check(cfg: "TrainConfig") -> bool:
    """The per-epoch check runs on the validation split (select_split val, val_size not 0)."""
    return cfg.select_split is SelectSplit.VAL and cfg.val_size != 0


def _pgd_eval(cfg: "TrainConfig") -> bool:
    return (cfg.eval_subset > 0 or _val_check(cfg)) and cfg.eval_attack_steps > 0


# The fields that change what a run trains or records, each with when training reads it: a field
# not read by this config (or equal to its default) stays out of the hash.
HASHED_FIELDS: dict[str, Callable[["TrainConfig"], bool]] = {
    "seed": _always,  # initial weights, data order, subsets, attack starts
    "model": _always,
    "drop_rate": _always,
    "dataset": _always,
    "train_subset": _always,
    "augment": _always,
    "input_size": _always,  # imagefolder only (validated)
    "generated_data": _always,  # the path as given: the same file under another path hashes apart
    "generated_fraction": lambda cfg: bool(cfg.generated_data),
    "cutmix_alpha": _always,
    "mixup_alpha": _always,
    "method": _always,
    # eps / norm: the training attack's threat model, and that of the per-epoch PGD evaluation
    "eps": lambda cfg: cfg.method in _ADVERSARIAL or _pgd_eval(cfg),
    "norm": lambda cfg: cfg.method in _ADVERSARIAL or _pgd_eval(cfg),
    "attack_steps": _for(*_MULTI_STEP),
    "step_size": _for(*_ADVERSARIAL),
    "step_size_factor": lambda cfg: cfg.method in _MULTI_STEP and cfg.step_size is None,
    "random_start": _for(Method.PGD),  # fgsm_rs always starts at random, trades at x + 0.001 N(0, 1)
    "attack_bn_eval": _for(*_ADVERSARIAL),
    "eps_warmup_epochs": _for(*_ADVERSARIAL),
    "trades_beta": _for(Method.TRADES),
    "nfgsm_k": _for(Method.N_FGSM),
    "grad_align_lambda": _for(Method.GRAD_ALIGN),
    # The collapse check: `stop` ends training early, and the thresholds decide the recorded collapsed_epoch.
    "on_collapse": _always,
    "collapse_ratio": _always,
    "collapse_gap": _always,
    "epochs": _always,
    "warmup_epochs": _always,
    "batch_size": _always,  # global: the same run on 1 or 8 GPUs
    "opt": _always,
    "momentum": _always,
    "weight_decay": _always,
    "lr_base": lambda cfg: cfg.lr is None,  # an explicit lr overrides the scaling rule
    "lr": _always,
    "sched": _always,
    "min_lr": _always,
    "label_smoothing": _always,
    "clip_grad": _always,
    "ema_decay": _always,  # EMA weights are what best/last.safetensors hold
    "amp": _always,  # bf16 / fp16 change the arithmetic of every step, and can change the outcome
    # The per-epoch evaluation picks best.safetensors and fills the run's per-epoch accuracies.
    "eval_subset": _always,
    "eval_attack_steps": lambda cfg: cfg.eval_subset > 0 or _val_check(cfg),
    "eval_step_size_factor": _pgd_eval,
    # Checkpoint selection: the validation split is carved out before the training subset is drawn.
    "val_size": _always,
    "select": _always,
    "select_split": _always,
    "nesterov": lambda cfg: cfg.opt.lower() in SGD_OPTS,
    "weight_decay_1d": lambda cfg: cfg.weight_decay > 0,
}

# Fields that place, name, speed up or price a run without changing what it trains or records.
UNHASHED_FIELDS = (
    "name", "output_dir", "data_dir", "download", "workers",  # where things are
    "test_subset",  # read by nothing yet (the per-epoch evaluation takes eval_subset)
    "channels_last", "compile", "eval_batch_size",  # speed: same arithmetic up to float reassociation
    "deterministic",  # bitwise-reproducible kernels: the same recipe
    "energy", "country", "price_preset", "device_type",  # compute accounting
    "log_every", "progress",  # display
    "log_to", "log_to_required",  # experiment trackers: copies of the record elsewhere
)

# Kept for callers that take "where and how" from a new config and "what" from a saved one (resume).
NON_SEMANTIC_KEYS = UNHASHED_FIELDS

# 0.1.0's fields and hash exclusions, frozen: its hash covered every field except these keys.
V1_FIELDS = (
    "name", "output_dir", "seed", "model", "drop_rate", "dataset", "data_dir", "download", "train_subset",
    "test_subset", "augment", "input_size", "generated_data", "generated_fraction", "cutmix_alpha", "mixup_alpha",
    "workers", "method", "eps", "norm", "attack_steps", "step_size", "step_size_factor", "random_start",
    "attack_bn_eval", "eps_warmup_epochs", "trades_beta", "epochs", "warmup_epochs", "batch_size", "opt",
    "momentum", "weight_decay", "lr_base", "lr", "sched", "min_lr", "label_smoothing", "clip_grad", "ema_decay",
    "amp", "channels_last", "compile", "deterministic", "eval_subset", "eval_attack_steps", "eval_batch_size",
    "eval_step_size_factor", "energy", "country", "price_preset", "device_type", "log_every", "progress",
)
V1_NON_SEMANTIC_KEYS = ("name", "output_dir", "data_dir", "download", "workers", "energy", "log_every",
                        "store", "progress")


# How a config trains exactly as 0.1.0 did: no validation split (and 0.1.0's unstratified subset), selection
# on the per-epoch test check, timm's Nesterov SGD without weight decay on 1-d parameters. Only such a config
# (and no warm-up, whose shape changed) may take a run 0.1.0 recorded as its own.
V1_TRAINING = {"val_size": 0, "select_split": "test", "nesterov": True, "weight_decay_1d": False}


def legacy_config_hash_v1(cfg_dict: dict[str, Any]) -> str:
    """The hash 0.1.0 gave a config: sha256 of the sorted JSON of every 0.1.0 field outside its
    exclusion list, first 16 hex digits. ``cfg_dict``: a stored config (0.1.0's field set) or a
    ``to_dict()`` of today's (fields added since are ignored)."""
    data = {k: (v.value if isinstance(v, enum.Enum) else v) for k, v in cfg_dict.items()
            if k in V1_FIELDS and k not in V1_NON_SEMANTIC_KEYS}
    blob = json.dumps(data, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


@dataclass
class AttackConfig:
    """What a training-time attack needs. Derived from ``TrainConfig.attack_config()``."""

    eps: float
    steps: int
    step_size: float
    norm: Norm = Norm.LINF
    random_start: bool = True
    trades_beta: float = 6.0
    nfgsm_k: float = 2.0
    grad_align_lambda: float = 0.2


@dataclass
class TrainConfig:
    # --- identity and output
    name: str | None = None
    output_dir: str = "runs"
    seed: int = 0
    # --- model (any timm name; ours are registered on `import robustscale`)
    model: str = "wide_resnet16_2"
    drop_rate: float = 0.0
    # --- data
    dataset: str = "cifar10"
    data_dir: str | None = None
    download: bool = False
    train_subset: int | None = None
    test_subset: int | None = None
    augment: bool = True
    input_size: int | None = None  # image side for `imagefolder` datasets (None: 224); others have a fixed size
    generated_data: str | None = None  # .npz with `image` (N,H,W,C uint8) and `label`
    generated_fraction: float = 0.7  # share of every batch drawn from generated data
    cutmix_alpha: float = 0.0
    mixup_alpha: float = 0.0
    workers: int = 2
    # --- method and attack (pixel units)
    method: Method = Method.PGD
    eps: float = 8 / 255
    norm: Norm = Norm.LINF
    attack_steps: int = 10
    step_size: float | None = None  # None: step_size_factor * eps / attack_steps
    step_size_factor: float = 2.5  # 2.5 (Madry et al. default) or 1.5 (the 2024 study)
    random_start: bool = True
    attack_bn_eval: bool = True  # BN in eval mode while crafting the attack
    eps_warmup_epochs: int = 0  # linear eps ramp over the first N epochs
    trades_beta: float = 6.0
    nfgsm_k: float = 2.0  # n_fgsm noise U[-k eps, k eps] (0: none); its step is step_size, default eps
    grad_align_lambda: float = 0.2  # grad_align weight (0.2: the authors' CIFAR-10 value at eps 8/255)
    # --- optimisation (timm factories)
    epochs: int = 10
    warmup_epochs: int = 0
    batch_size: int = 128  # global batch (all ranks)
    opt: str = "sgd"
    momentum: float = 0.9
    nesterov: bool = False  # Nesterov momentum for opt sgd / momentum (timm's `sgd` alone would switch it on)
    weight_decay: float = 5e-4
    weight_decay_1d: bool = True  # decay BatchNorm weights and biases too; false: timm train.py's default
    lr_base: float = 0.1  # per 256 images; lr = lr_base * batch_size / 256
    lr: float | None = None  # explicit lr overrides the scaling rule
    sched: str = "cosine"
    min_lr: float = 0.0
    label_smoothing: float = 0.0
    clip_grad: float | None = None
    ema_decay: float | None = None  # e.g. 0.995; None disables weight EMA
    # --- speed
    amp: Amp = Amp.OFF
    channels_last: bool = True
    compile: Compile = Compile.AUTO  # auto: on CUDA, and on CPU for runs long enough to repay the warm-up
    deterministic: bool = False
    # --- per-epoch evaluation
    eval_subset: int = 1000  # first N test images
    eval_attack_steps: int = 10
    eval_batch_size: int = 256
    eval_step_size_factor: float = 2.5  # per-epoch PGD-k step: factor * eps / k
    # --- checkpoint selection (robustscale.data.splits): validation images carved from the training split
    val_size: int | None = None  # None: min(1000, train images // 10); 0: no validation split
    select: Select = Select.BEST  # best: by selection_metric on select_split each epoch; last: the final weights
    select_split: SelectSplit = SelectSplit.VAL  # test: selection on test images (the 2024 study's way; labelled)
    # catastrophic overfitting: flagged at the first epoch whose PGD accuracy is below collapse_ratio x its
    # FGSM accuracy (or x the best PGD accuracy so far) and more than collapse_gap points under it
    on_collapse: OnCollapse = OnCollapse.WARN
    collapse_ratio: float = 0.5
    collapse_gap: float = 10.0  # percentage points (a guard against the eval subset's sampling noise)
    # --- compute accounting
    energy: bool = True
    country: str = "USA"
    price_preset: str = "default"
    device_type: str | None = None  # key in prices.yaml; None: detected
    log_every: int = 50  # progress-bar refresh, in steps
    progress: bool = True  # tqdm bars (rank 0 only)
    # --- experiment trackers (robustscale.trackers; rank 0 only): wandb, mlflow, tensorboard
    log_to: list[str] = field(default_factory=list)  # YAML list, or --log-to wandb,mlflow
    log_to_required: bool = False  # a tracker that cannot start stops the run (default: one warning)

    def __post_init__(self):
        # Every construction path coerces the same way (ints, floats, enums, "8/255") and validates.
        for f in fields(self):
            setattr(self, f.name, _coerce(f.name, f, getattr(self, f.name)))
        self.validate()
        self.log_to = parse_tracker_names(self.log_to)

    # ------------------------------------------------------------------ derived values
    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else self.lr_base * self.batch_size / 256

    @property
    def resolved_step_size(self) -> float:
        if self.step_size is not None:
            return self.step_size
        return self.step_size_factor * self.eps / max(self.attack_steps, 1)

    @property
    def selection_metric(self) -> str:
        """What ``select: best`` maximises: clean accuracy for standard training, PGD accuracy otherwise."""
        return "clean_acc" if self.method is Method.STANDARD else "pgd_robust_acc"

    def attack_config(self, eps: float | None = None) -> AttackConfig:
        eps = self.eps if eps is None else eps
        scale = eps / self.eps if self.eps > 0 else 0.0
        if self.method in SINGLE_STEP_DEFAULT_STEP:  # one step; fgsm_rs 1.25 eps (Wong et al.), others eps
            default = SINGLE_STEP_DEFAULT_STEP[self.method] * eps
            steps, step = 1, (self.step_size * scale if self.step_size is not None else default)
        else:
            steps, step = self.attack_steps, self.resolved_step_size * scale
        return AttackConfig(eps=eps, steps=steps, step_size=step, norm=self.norm,
                            random_start=self.random_start, trades_beta=self.trades_beta, nfgsm_k=self.nfgsm_k,
                            grad_align_lambda=self.grad_align_lambda)

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            out[f.name] = v.value if isinstance(v, enum.Enum) else v
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "config") -> "TrainConfig":
        known = [f.name for f in fields(cls)]  # in declaration order, for the message
        kwargs = {}
        for key, value in (data or {}).items():
            norm_key = str(key).replace("-", "_")
            if norm_key not in known:
                raise UserError(f"unknown key {key!r} in {source}; valid keys: {', '.join(known)}")
            kwargs[norm_key] = value
        return cls(**kwargs)

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: dict[str, Any] | None = None) -> "TrainConfig":
        data = load_yaml(path)
        data.update(overrides or {})
        return cls.from_dict(data, source=str(path))

    def replace(self, **changes) -> "TrainConfig":
        data = self.to_dict()
        data.update(changes)
        return TrainConfig.from_dict(data)

    # ------------------------------------------------------------------ identity
    def identity(self) -> dict[str, Any]:
        """The canonical form the hash is taken of: hashed fields this config reads, off their default."""
        out = {}
        for name, reads in HASHED_FIELDS.items():
            value = getattr(self, name)
            if value != _DEFAULTS[name] and reads(self):
                out[name] = value.value if isinstance(value, enum.Enum) else value
        return out

    def config_hash(self) -> str:
        """The run's identity: what it trains and records, not where or how fast. 16 hex chars."""
        blob = json.dumps({"hash_version": HASH_VERSION, "config": self.identity()}, sort_keys=True,
                          separators=(",", ":"), allow_nan=False)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def known_hashes(self) -> tuple[str, ...]:
        """``config_hash()``, then the hash 0.1.0 gave this run when 0.1.0 trained it the same way (see
        :data:`V1_TRAINING`). Lookups of stored runs accept either."""
        current = self.config_hash()
        return (current, legacy_config_hash_v1(self.to_dict())) if self.trains_like_v1() else (current,)

    def trains_like_v1(self) -> bool:
        """Does this config train exactly what 0.1.0 trained from the same (0.1.0) fields?"""
        for f in fields(self):
            if f.name in V1_FIELDS:
                continue
            want = V1_TRAINING.get(f.name, _DEFAULTS[f.name])
            value = getattr(self, f.name)
            value = value.value if isinstance(value, enum.Enum) else value
            unread = (f.name == "nesterov" and self.opt.lower() not in SGD_OPTS) or \
                (f.name == "weight_decay_1d" and self.weight_decay == 0)
            if value != want and not unread:
                return False
        # 0.1.0 picked a standard run's best epoch by PGD accuracy whenever it measured one.
        pgd_picked_standard = self.method is Method.STANDARD and self.eval_attack_steps > 0 and self.eps > 0
        return self.warmup_epochs == 0 and not pgd_picked_standard

    def matches_hash(self, stored: str | None) -> bool:
        """Is ``stored`` (a store row's, summary.json's or state.pt's ``config_hash``) this run's?"""
        return stored is not None and stored in self.known_hashes()

    def _validate_single_step(self, bad) -> None:
        """The N-FGSM / GradAlign knobs and the catastrophic-overfitting thresholds."""
        if not (math.isfinite(self.nfgsm_k) and self.nfgsm_k >= 0):
            bad("nfgsm_k", "must be a finite number >= 0 (noise U[-k eps, k eps]; 0: none; de Jorge et al.: 2)")
        if not (math.isfinite(self.grad_align_lambda) and self.grad_align_lambda >= 0):
            bad("grad_align_lambda", "must be a finite number > 0 (0.2 at CIFAR-10 8/255)")
        if self.method is Method.GRAD_ALIGN and self.grad_align_lambda == 0:
            bad("grad_align_lambda", "must be > 0 for method grad_align (0 leaves plain FGSM, which collapses)")
        if not (0 < self.collapse_ratio < 1):
            bad("collapse_ratio", "must be in (0, 1), e.g. 0.5")
        if not (0 < self.collapse_gap <= 100):
            bad("collapse_gap", "must be in (0, 100] percentage points")

    def validate(self) -> None:
        """Raise UserError on values no run can use."""
        def bad(key, why):
            raise UserError(f"invalid {key} {getattr(self, key)!r}: {why}")

        if not (0 <= self.eps <= 1):
            bad("eps", "must be in [0, 1] pixel units (e.g. 8/255)")
        if self.method is not Method.STANDARD and self.eps <= 0:
            bad("eps", f"must be > 0 for method {self.method.value}")
        if self.attack_steps < 1:
            bad("attack_steps", "must be >= 1")
        if self.step_size is not None and not (0 < self.step_size <= 1):
            bad("step_size", "must be in (0, 1] pixel units")
        if self.step_size_factor <= 0:
            bad("step_size_factor", "must be > 0")
        if self.trades_beta < 0:
            bad("trades_beta", "must be >= 0")
        if not (0 <= self.generated_fraction < 1):
            bad("generated_fraction", "must be in [0, 1)")
        if self.epochs < 1:
            bad("epochs", "must be >= 1")
        if self.warmup_epochs < 0 or self.warmup_epochs >= max(self.epochs, 1) and self.warmup_epochs > 0:
            bad("warmup_epochs", f"must be in [0, epochs={self.epochs})")
        if self.batch_size < 1:
            bad("batch_size", "must be >= 1")
        if self.lr is not None and not (self.lr > 0 and math.isfinite(self.lr)):
            bad("lr", "must be a positive finite number")
        if not (self.lr_base > 0 and math.isfinite(self.lr_base)):
            bad("lr_base", "must be a positive finite number")
        if self.ema_decay is not None and not (0 < self.ema_decay < 1):
            bad("ema_decay", "must be in (0, 1)")
        if not (0 <= self.label_smoothing < 1):
            bad("label_smoothing", "must be in [0, 1)")
        for key in ("train_subset", "test_subset", "input_size"):
            v = getattr(self, key)
            if v is not None and v < 1:
                bad(key, "must be >= 1")
        if self.eval_subset < 0:
            bad("eval_subset", "must be >= 0 (0 disables per-epoch evaluation)")
        if self.eps_warmup_epochs < 0:
            bad("eps_warmup_epochs", "must be >= 0")
        if self.input_size is not None and str(self.dataset).lower() != "imagefolder":
            bad("input_size", f"only applies to dataset imagefolder ({self.dataset} has a fixed image size)")
        if self.method in SINGLE_STEP_DEFAULT_STEP and self.norm is not Norm.LINF:
            bad("norm", f"{self.method.value} is an l-inf attack; use method pgd for l2")
        self._validate_single_step(bad)
        if self.step_size is not None and self.step_size > 2 * self.eps and self.method is not Method.STANDARD:
            bad("step_size", f"is more than twice eps={self.eps:g}: every step would jump across the eps-ball")
        if self.sched not in SCHEDULERS:
            bad("sched", f"valid: {', '.join(SCHEDULERS)}")
        if not (0 <= self.momentum < 1):
            bad("momentum", "must be in [0, 1)")
        if self.nesterov and self.opt.lower() not in SGD_OPTS:
            bad("nesterov", f"applies to opt {' / '.join(SGD_OPTS)} only, not {self.opt!r}")
        if not (self.weight_decay >= 0 and math.isfinite(self.weight_decay)):
            bad("weight_decay", "must be >= 0")
        if not (self.min_lr >= 0 and math.isfinite(self.min_lr)):
            bad("min_lr", "must be >= 0")
        if self.clip_grad is not None and not (self.clip_grad > 0):
            bad("clip_grad", "must be > 0 (or null to disable)")
        if self.mixup_alpha < 0 or self.cutmix_alpha < 0:
            bad("mixup_alpha" if self.mixup_alpha < 0 else "cutmix_alpha", "must be >= 0 (0 disables it)")
        if not (0 <= self.drop_rate < 1):
            bad("drop_rate", "must be in [0, 1)")
        if self.workers < 0:
            bad("workers", "must be >= 0")
        if self.eval_attack_steps < 0:
            bad("eval_attack_steps", "must be >= 0 (0: clean accuracy only)")
        if self.eval_batch_size < 1:
            bad("eval_batch_size", "must be >= 1")
        if self.eval_step_size_factor <= 0:
            bad("eval_step_size_factor", "must be > 0")
        self._validate_selection(bad)
        if self.log_every < 1:
            bad("log_every", "must be >= 1")
        if self.seed < 0:
            bad("seed", "must be >= 0")
        if self.name is not None and (not self.name.strip() or "/" in self.name or self.name in (".", "..")):
            bad("name", "must be a non-empty folder name without '/'")

    def _validate_selection(self, bad) -> None:
        """The validation split fits the training subset; ``select: best`` has a split and a metric to use."""
        if self.val_size is not None and self.val_size < 0:
            bad("val_size", "must be >= 0 (0: no validation split; null: min(1000, 10% of the training images))")
        if self.val_size and self.train_subset is not None and self.val_size > self.train_subset:
            bad("val_size", f"is larger than the training subset (train_subset {self.train_subset}); "
                            f"use at most {self.train_subset}, or null for the default")
        if self.select is Select.LAST:
            return
        where = f"select best on {self.select_split.value}"
        if self.select_split is SelectSplit.VAL and self.val_size == 0:
            bad("val_size", f"leaves {where} nothing to measure; set val_size > 0, select last, "
                            f"or select_split test")
        if self.select_split is SelectSplit.TEST and self.eval_subset == 0:
            bad("eval_subset", f"leaves {where} nothing to measure; set eval_subset > 0 or select last")
        if self.method is not Method.STANDARD and self.eval_attack_steps == 0:
            bad("eval_attack_steps", f"cannot produce {self.selection_metric}, the metric {where} uses "
                                     f"for method {self.method.value}; set eval_attack_steps >= 1 or select last")


_DEFAULTS = {f.name: f.default_factory() if f.default is dataclasses.MISSING else f.default
             for f in fields(TrainConfig)}


def _check_identity_tables() -> None:
    """Every field is hashed or not, by decision (see the module docstring): fail at import otherwise."""
    names = list(_DEFAULTS)
    undecided = [n for n in names if (n in HASHED_FIELDS) == (n in UNHASHED_FIELDS)]
    unknown = [n for n in (*HASHED_FIELDS, *UNHASHED_FIELDS) if n not in _DEFAULTS]
    if undecided or unknown:
        raise TypeError(f"robustscale.config: name every TrainConfig field in exactly one of HASHED_FIELDS / "
                        f"UNHASHED_FIELDS (undecided or in both: {undecided}; not a field: {unknown})")


_check_identity_tables()


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise UserError(f"cannot parse YAML {path}: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise UserError(f"config {path} must be a mapping of keys to values, got {type(data).__name__}")
    return data


# Other tools' names for our flags, suggested when one of them is given.
_FLAG_SYNONYMS = {"learning_rate": "lr", "num_epochs": "epochs", "arch": "model", "architecture": "model",
                  "steps": "attack_steps", "pgd_steps": "attack_steps", "bs": "batch_size"}


def parse_overrides(tokens: list[str]) -> dict[str, Any]:
    """``["--attack-steps", "5", "--amp=bf16", "--compile"]`` -> ``{"attack_steps": "5", ...}``.

    A flag with no value (followed by another flag or nothing) means ``true``.
    """
    out: dict[str, Any] = {}
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if not tok.startswith("--"):
            raise UserError(f"unexpected argument {tok!r}; overrides look like --key value")
        key, eq, value = tok[2:].partition("=")
        if not eq:
            if i + 1 < len(tokens) and not tokens[i + 1].startswith("--"):
                value, i = tokens[i + 1], i + 1
            else:
                value = "true"
        out[key.replace("-", "_")] = value
        i += 1
    known = [f.name for f in fields(TrainConfig)]
    for key in out:  # blame the flag here, not the YAML file the overrides are merged into later
        if key not in known:
            close = ([_FLAG_SYNONYMS[key]] if key in _FLAG_SYNONYMS else []) + \
                [c for c in difflib.get_close_matches(key, known, n=3, cutoff=0.5) if c != _FLAG_SYNONYMS.get(key)]
            hint = f"did you mean {', '.join('--' + c.replace('_', '-') for c in close)}? " if close else ""
            raise UserError(f"unknown flag --{key.replace('_', '-')} (no TrainConfig key {key}); {hint}valid: "
                            f"{', '.join('--' + k.replace('_', '-') for k in known)}")
    return out


_TYPE_HINTS: dict[str, Any] = {}  # TrainConfig's resolved field types (get_type_hints is slow: cache it)


def _coerce(key: str, f: dataclasses.Field, value: Any) -> Any:
    """Coerce a YAML/CLI value to the field's declared type, with a one-line error."""
    hint = (_TYPE_HINTS or _TYPE_HINTS.update(typing.get_type_hints(TrainConfig)) or _TYPE_HINTS)[f.name]
    args = typing.get_args(hint)
    optional = type(None) in args
    if typing.get_origin(hint) is list:  # log_to: a YAML list, or "a,b" from the command line
        if value is None:
            return []
        items = value.split(",") if isinstance(value, str) else value if isinstance(value, (list, tuple)) else None
        if items is None:
            raise UserError(f"invalid {key} {value!r}; expected a list like [wandb, mlflow] or wandb,mlflow")
        return [str(v).strip() for v in items if str(v).strip()]
    base = next((a for a in args if a is not type(None)), hint) if args else hint
    if value is None or (optional and isinstance(value, str) and value.strip().lower() in ("none", "null", "")):
        if optional:
            return None
        raise UserError(f"invalid {key} {value!r}: a value is required")
    if base is Compile and str(value).strip().lower() in _COMPILE_ALIASES:
        value = _COMPILE_ALIASES[str(value).strip().lower()]
    if isinstance(base, type) and issubclass(base, enum.Enum):
        if isinstance(value, bool):  # YAML 1.1 reads a bare `off` / `on` as a boolean
            value = "on" if value else "off"
        return choice(base, value, what=key)
    if base is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("true", "1", "yes", "on"):
            return True
        if text in ("false", "0", "no", "off"):
            return False
        raise UserError(f"invalid {key} {value!r}; expected true or false")
    if base is float:
        number = parse_fraction(value, what=key)
        if not math.isfinite(number):
            raise UserError(f"invalid {key} {value!r}: must be a finite number")
        return number
    if base is int:
        try:
            number = parse_fraction(value, what=key)
        except UserError:
            raise UserError(f"invalid {key} {value!r}; expected an integer") from None
        if number != int(number):
            raise UserError(f"invalid {key} {value!r}; expected an integer")
        return int(number)
    if base is str:
        return str(value)
    return value
