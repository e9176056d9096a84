"""The run configuration's dataclasses: ``TrainConfig`` (every key a CLI flag, a YAML key and a sweep axis) and
the ``AttackConfig`` it derives. Its identity, validation and value parsing live beside it (identity.py,
validate.py, yaml_io.py); see the package docstring (``robustscale.config``)."""
from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ..errors import UserError
from . import identity as run_identity
from .identity import FIELD_DEFAULTS, check_identity_tables
from .validate import validate
from .vocab import (SINGLE_STEP_DEFAULT_STEP, Amp, Compile, DistBackend, Method, Norm, OnCollapse, Select,
                    SelectSplit, parse_tracker_names)
from .yaml_io import coerce, load_yaml


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
    # timm's EMA warm-up: decay min(ema_decay, 1 - (1 + update)^-2/3), so that a run of a few hundred updates
    # does not keep a share of its first update's weights (0.995^255 = 28% after 256 updates without it)
    ema_warmup: bool = False
    # --- speed
    amp: Amp = Amp.OFF
    channels_last: bool = True
    compile: Compile = Compile.AUTO  # auto: on CUDA, and on CPU for runs long enough to repay the warm-up
    deterministic: bool = False
    # --- processes (robustscale.train.distributed): batch_size = ranks x micro_batch_size x accumulation steps
    micro_batch_size: int | None = None  # images per forward/backward on one rank; None: batch_size / ranks
    dist_backend: DistBackend = DistBackend.AUTO
    # --- per-epoch evaluation
    eval_subset: int = 1000  # first N test images, read only with select_split test
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
            setattr(self, f.name, coerce(TrainConfig, f.name, f, getattr(self, f.name)))
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

    # ------------------------------------------------------------------ identity (robustscale.config.identity)
    def identity(self) -> dict[str, Any]:
        """The canonical form the hash is taken of: hashed fields this config reads, off their default."""
        return run_identity.identity(self)

    def config_hash(self) -> str:
        """The run's identity: what it trains and records, not where or how fast. 16 hex chars."""
        return run_identity.config_hash(self)

    def known_hashes(self) -> tuple[str, ...]:
        """``config_hash()``, then the hash 0.1.0 gave this run when 0.1.0 trained it the same way (see
        :data:`V1_TRAINING`). Lookups of stored runs accept either."""
        return run_identity.known_hashes(self)

    def trains_like_v1(self) -> bool:
        """Does this config train exactly what 0.1.0 trained from the same (0.1.0) fields?"""
        return run_identity.trains_like_v1(self)

    def matches_hash(self, stored: str | None) -> bool:
        """Is ``stored`` (a store row's, summary.json's or state.pt's ``config_hash``) this run's?"""
        return stored is not None and stored in self.known_hashes()

    def validate(self) -> None:
        """Raise UserError on values no run can use (robustscale.config.validate)."""
        validate(self)


FIELD_DEFAULTS.update({f.name: f.default_factory() if f.default is dataclasses.MISSING else f.default
                       for f in fields(TrainConfig)})
check_identity_tables()
