"""The run configuration: one dataclass resolved once from YAML + CLI overrides.

``TrainConfig`` is flat so that every key maps 1:1 to a CLI flag (``--attack-steps 5`` or
``--attack_steps 5``) and to a sweep axis. It is written unchanged to ``config.yaml`` of the
run and to the results store. Units: ``eps`` / ``step_size`` in [0,1] pixel units,
learning rates per 256 images (``lr_base``), fractions in [0,1].
"""
from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import math
import types
import typing
from dataclasses import dataclass, field, fields
from fractions import Fraction
from pathlib import Path
from typing import Any

from .errors import UserError, choice


class Method(str, enum.Enum):
    STANDARD = "standard"
    PGD = "pgd"
    TRADES = "trades"
    FGSM_RS = "fgsm_rs"


class Norm(str, enum.Enum):
    LINF = "linf"
    L2 = "l2"


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


# timm scheduler names usable with a per-step schedule (``plateau`` needs a metric: not offered).
SCHEDULERS = ("cosine", "tanh", "step", "multistep", "poly", "wsd", "rsqrt", "constant", "none")

# Keys that name or place a run but do not change what it computes (excluded from the hash).
NON_SEMANTIC_KEYS = ("name", "output_dir", "data_dir", "download", "workers", "energy", "log_every",
                     "store", "progress")


@dataclass
class AttackConfig:
    """What a training-time attack needs. Derived from ``TrainConfig.attack_config()``."""

    eps: float
    steps: int
    step_size: float
    norm: Norm = Norm.LINF
    random_start: bool = True
    trades_beta: float = 6.0


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
    # --- optimisation (timm factories)
    epochs: int = 10
    warmup_epochs: int = 0
    batch_size: int = 128  # global batch (all ranks)
    opt: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 5e-4
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
    # --- compute accounting
    energy: bool = True
    country: str = "USA"
    price_preset: str = "default"
    device_type: str | None = None  # key in prices.yaml; None: detected
    log_every: int = 50  # progress-bar refresh, in steps
    progress: bool = True  # tqdm bars (rank 0 only)

    def __post_init__(self):
        # Direct construction (``TrainConfig(method="trades")``) gets the same enum members as YAML/CLI.
        if isinstance(self.compile, bool):
            self.compile = Compile.ON if self.compile else Compile.OFF
        elif isinstance(self.compile, str) and not isinstance(self.compile, Compile):
            self.compile = _COMPILE_ALIASES.get(self.compile.strip().lower(), self.compile)
        for key, enum_cls in (("method", Method), ("norm", Norm), ("amp", Amp), ("compile", Compile)):
            setattr(self, key, choice(enum_cls, getattr(self, key), what=key))

    # ------------------------------------------------------------------ derived values
    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else self.lr_base * self.batch_size / 256

    @property
    def resolved_step_size(self) -> float:
        if self.step_size is not None:
            return self.step_size
        return self.step_size_factor * self.eps / max(self.attack_steps, 1)

    def attack_config(self, eps: float | None = None) -> AttackConfig:
        eps = self.eps if eps is None else eps
        scale = eps / self.eps if self.eps > 0 else 0.0
        if self.method is Method.FGSM_RS:  # Wong et al. 2020: one step of 1.25 eps
            steps, step = 1, (self.step_size * scale if self.step_size is not None else 1.25 * eps)
        else:
            steps, step = self.attack_steps, self.resolved_step_size * scale
        return AttackConfig(eps=eps, steps=steps, step_size=step, norm=self.norm,
                            random_start=self.random_start, trades_beta=self.trades_beta)

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            out[f.name] = v.value if isinstance(v, enum.Enum) else v
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "config") -> "TrainConfig":
        known = {f.name: f for f in fields(cls)}
        kwargs = {}
        for key, value in (data or {}).items():
            norm_key = str(key).replace("-", "_")
            if norm_key not in known:
                raise UserError(f"unknown key {key!r} in {source}; valid keys: {', '.join(known)}")
            kwargs[norm_key] = _coerce(norm_key, known[norm_key], value)
        cfg = cls(**kwargs)
        cfg.validate()
        return cfg

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: dict[str, Any] | None = None) -> "TrainConfig":
        data = load_yaml(path)
        data.update(overrides or {})
        return cls.from_dict(data, source=str(path))

    def replace(self, **changes) -> "TrainConfig":
        data = self.to_dict()
        data.update(changes)
        return TrainConfig.from_dict(data)

    def config_hash(self) -> str:
        """Hash of what the run computes (not where it is written). 16 hex chars."""
        data = {k: v for k, v in self.to_dict().items() if k not in NON_SEMANTIC_KEYS}
        blob = json.dumps(data, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

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
        if self.method is Method.FGSM_RS and self.norm is not Norm.LINF:
            bad("norm", "fgsm_rs is an l-inf attack; use method pgd for l2")
        if self.step_size is not None and self.step_size > 2 * self.eps and self.method is not Method.STANDARD:
            bad("step_size", f"is more than twice eps={self.eps:g}: every step would jump across the eps-ball")
        if self.sched not in SCHEDULERS:
            bad("sched", f"valid: {', '.join(SCHEDULERS)}")
        if not (0 <= self.momentum < 1):
            bad("momentum", "must be in [0, 1)")
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
        if self.log_every < 1:
            bad("log_every", "must be >= 1")
        if self.seed < 0:
            bad("seed", "must be >= 0")
        if self.name is not None and (not self.name.strip() or "/" in self.name or self.name in (".", "..")):
            bad("name", "must be a non-empty folder name without '/'")


def load_yaml(path: str | Path) -> dict[str, Any]:
    import yaml

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
            import difflib

            close = ([_FLAG_SYNONYMS[key]] if key in _FLAG_SYNONYMS else []) + \
                [c for c in difflib.get_close_matches(key, known, n=3, cutoff=0.5) if c != _FLAG_SYNONYMS.get(key)]
            hint = f"did you mean {', '.join('--' + c.replace('_', '-') for c in close)}? " if close else ""
            raise UserError(f"unknown flag --{key.replace('_', '-')}; {hint}valid: "
                            f"{', '.join('--' + k.replace('_', '-') for k in known)}")
    return out


_TYPE_HINTS: dict[str, Any] = {}  # TrainConfig's resolved field types (get_type_hints is slow: cache it)


def _coerce(key: str, f: dataclasses.Field, value: Any) -> Any:
    """Coerce a YAML/CLI value to the field's declared type, with a one-line error."""
    hint = (_TYPE_HINTS or _TYPE_HINTS.update(typing.get_type_hints(TrainConfig)) or _TYPE_HINTS)[f.name]
    args = typing.get_args(hint)
    optional = type(None) in args
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
        return parse_fraction(value, what=key)
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
