"""The config's closed vocabularies: methods, norms, switches, tracker names, schedulers, and the parsers of
the values a YAML file or a flag gives them (``8/255``, ``wandb,mlflow``)."""
from __future__ import annotations

import enum
from fractions import Fraction
from typing import Any, Iterable

from ..errors import UserError, choice

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


class DistBackend(str, enum.Enum):
    """The torch.distributed backend of a multi-process run: ``auto`` is NCCL where the node has GPUs, else
    gloo; ``nccl`` insists on GPUs on every node (a node without one stops the run before it trains)."""

    AUTO = "auto"
    NCCL = "nccl"
    GLOO = "gloo"


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


COMPILE_ALIASES = {"true": "on", "yes": "on", "1": "on", "false": "off", "no": "off", "0": "off"}


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
