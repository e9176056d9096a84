"""Run identity: which fields enter a config's hash and when, the hash itself, and 0.1.0's hash of the same run.

See the package docstring (``robustscale.config``) for the rules of adding a field. The functions take the
config object (a ``TrainConfig``) as an argument: this module sits below the dataclass and never imports it.
"""
from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
from typing import Any, Callable

from .vocab import SGD_OPTS, Method, SelectSplit

# ---------------------------------------------------------------------------------------------- identity
# 1: 0.1.0 (every field but a few, defaults included; see legacy_config_hash_v1). 2: the explicit field list
# (never released). 3: the same list, after what a default config trains changed (a validation split carved
# from the training images picks the checkpoint; `opt: sgd` is classical momentum with weight decay on every
# parameter; warm-up is a prefix of the schedule): a run recorded under 2 trained differently, so no lookup.
HASH_VERSION = 3

_ADVERSARIAL = (Method.PGD, Method.TRADES, Method.FGSM_RS, Method.N_FGSM, Method.GRAD_ALIGN)
_MULTI_STEP = (Method.PGD, Method.TRADES)  # fgsm_rs takes one step of its own size


def _always(cfg: Any) -> bool:
    return True


def _for(*methods: Method) -> Callable[[Any], bool]:
    return lambda cfg: cfg.method in methods


def _val_check(cfg: Any) -> bool:
    """The per-epoch check runs on the validation split (select_split val, val_size not 0)."""
    return cfg.select_split is SelectSplit.VAL and cfg.val_size != 0


def _pgd_eval(cfg: Any) -> bool:
    return (cfg.eval_subset > 0 or _val_check(cfg)) and cfg.eval_attack_steps > 0


# The fields that change what a run trains or records, each with when training reads it: a field
# not read by this config (or equal to its default) stays out of the hash.
HASHED_FIELDS: dict[str, Callable[[Any], bool]] = {
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
    "ema_warmup": lambda cfg: cfg.ema_decay is not None,
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
    # How the global batch_size is spread over processes: per-rank micro-batches with gradient accumulation.
    # A run keeps its micro-batch across resumes (BatchNorm statistics are per micro-batch), so the same run
    # may continue on another number of GPUs (robustscale.train.distributed.batch_plan).
    "micro_batch_size", "dist_backend",
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

# TrainConfig's field defaults by name, filled once by robustscale.config.train_config (the dataclass sits above
# this module); a hashed field equal to its default stays out of the hash.
FIELD_DEFAULTS: dict[str, Any] = {}


def identity(cfg: Any) -> dict[str, Any]:
    """The canonical form the hash is taken of: hashed fields ``cfg`` (a TrainConfig) reads, off their default."""
    out = {}
    for name, reads in HASHED_FIELDS.items():
        value = getattr(cfg, name)
        if value != FIELD_DEFAULTS[name] and reads(cfg):
            out[name] = value.value if isinstance(value, enum.Enum) else value
    return out


def config_hash(cfg: Any) -> str:
    """The run's identity: what it trains and records, not where or how fast. 16 hex chars."""
    blob = json.dumps({"hash_version": HASH_VERSION, "config": identity(cfg)}, sort_keys=True,
                      separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def known_hashes(cfg: Any) -> tuple[str, ...]:
    """``config_hash(cfg)``, then the hash 0.1.0 gave this run when 0.1.0 trained it the same way (see
    :data:`V1_TRAINING`). Lookups of stored runs accept either."""
    current = config_hash(cfg)
    return (current, legacy_config_hash_v1(cfg.to_dict())) if trains_like_v1(cfg) else (current,)


def trains_like_v1(cfg: Any) -> bool:
    """Does ``cfg`` train exactly what 0.1.0 trained from the same (0.1.0) fields?"""
    for f in dataclasses.fields(cfg):
        if f.name in V1_FIELDS:
            continue
        want = V1_TRAINING.get(f.name, FIELD_DEFAULTS[f.name])
        value = getattr(cfg, f.name)
        value = value.value if isinstance(value, enum.Enum) else value
        unread = (f.name == "nesterov" and cfg.opt.lower() not in SGD_OPTS) or \
            (f.name == "weight_decay_1d" and cfg.weight_decay == 0)
        if value != want and not unread:
            return False
    # 0.1.0 picked a standard run's best epoch by PGD accuracy whenever it measured one.
    pgd_picked_standard = cfg.method is Method.STANDARD and cfg.eval_attack_steps > 0 and cfg.eps > 0
    return cfg.warmup_epochs == 0 and not pgd_picked_standard


def check_identity_tables() -> None:
    """Every field is hashed or not, by decision (see the package docstring): fail at import otherwise."""
    names = list(FIELD_DEFAULTS)
    undecided = [n for n in names if (n in HASHED_FIELDS) == (n in UNHASHED_FIELDS)]
    unknown = [n for n in (*HASHED_FIELDS, *UNHASHED_FIELDS) if n not in FIELD_DEFAULTS]
    if undecided or unknown:
        raise TypeError(f"robustscale.config: name every TrainConfig field in exactly one of HASHED_FIELDS / "
                        f"UNHASHED_FIELDS (undecided or in both: {undecided}; not a field: {unknown})")
