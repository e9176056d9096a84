"""What an evaluation runs: the attack, its threat model and budget, validated once.

``EvalSpec.create(...)`` turns user values (strings from the CLI, or Python values) into a frozen,
validated spec; every user mistake raises a one-line :class:`~robustscale.errors.UserError`.
The spec also names the evaluation's files (``<label>-<eps>.json``) and keys its resume state.
"""
from __future__ import annotations

import enum
import math
from dataclasses import asdict, dataclass
from typing import Any

from ..config import Amp, Norm, parse_fraction
from ..errors import UserError, choice


class Attack(str, enum.Enum):
    """Evaluation attacks. ``aa-*`` and ``apgd-ce`` come from the official AutoAttack (pyautoattack)."""

    CLEAN = "clean"
    PGD = "pgd"  # ours (robustscale.attacks.pgd), with restarts and any number of steps
    APGD_CE = "apgd-ce"  # AutoAttack's first stage alone (100 iterations, 1 restart by default)
    AA_STANDARD = "aa-standard"  # APGD-CE, APGD-T, FAB-T, Square (Croce & Hein 2020, RobustBench)
    AA_RAND = "aa-rand"  # APGD-CE, APGD-DLR with 20-step EOT, for randomized defenses


# The attacks (stages after the clean pass) each evaluation runs, in AutoAttack's order.
STAGES: dict[Attack, tuple[str, ...]] = {
    Attack.CLEAN: (),
    Attack.PGD: ("pgd",),
    Attack.APGD_CE: ("apgd-ce",),
    Attack.AA_STANDARD: ("apgd-ce", "apgd-t", "fab-t", "square"),
    Attack.AA_RAND: ("apgd-ce", "apgd-dlr"),
}
AUTOATTACK = (Attack.APGD_CE, Attack.AA_STANDARD, Attack.AA_RAND)
DEFAULT_STEPS = {Attack.PGD: 10, Attack.APGD_CE: 100}  # APGD-CE: AutoAttack standard's budget
DEFAULT_EPS = {Norm.LINF: 8 / 255, Norm.L2: 0.5}  # the RobustBench CIFAR threat models
PGD_STEP_FACTOR = 2.5  # step_size = 2.5 * eps / steps (Madry et al. 2018)


def eps_text(eps: float) -> str:
    """``8/255`` when eps is a whole number of 255ths (to 1e-6), else up to 4 significant digits."""
    k = round(eps * 255)
    if k > 0 and abs(eps * 255 - k) < 1e-6:
        return f"{k}/255"
    return f"{eps:.4g}"


@dataclass(frozen=True)
class EvalSpec:
    """A validated evaluation request.

    Attributes:
        attack: the attack (see :class:`Attack`).
        eps: radius in [0,1] pixel units (0 for ``clean``).
        norm: ``linf`` or ``l2``.
        steps: PGD / APGD-CE iterations (None for the others: AutoAttack fixes its budgets).
        step_size: PGD step in pixel units (None for the others).
        restarts: PGD / APGD-CE random restarts (1 for the others).
        batch_size: examples per forward; part of the resume key because AutoAttack's results
            depend on how points are batched (each batch reseeds its RNG).
        seed: seeds PGD's random starts and AutoAttack's attacks.
        amp: autocast dtype for clean / PGD; AutoAttack always runs in float32.
    """

    attack: Attack
    eps: float
    norm: Norm
    steps: int | None
    step_size: float | None
    restarts: int
    batch_size: int
    seed: int
    amp: Amp

    @classmethod
    def create(cls, attack: str | Attack = "pgd", eps: Any = None, norm: str | Norm = "linf",
               steps: int | None = None, step_size: Any = None, restarts: int | None = None,
               batch_size: int = 256, seed: int = 0, amp: str | Amp = "off") -> "EvalSpec":
        """Validate user values; ``None`` means the attack's default. Raises UserError."""
        attack, norm, amp = check_value("attack", attack), check_value("norm", norm), check_value("amp", amp)
        if attack is Attack.CLEAN:
            eps = 0.0
        else:
            eps = DEFAULT_EPS[norm] if eps is None else check_value("eps", eps)
        if attack in DEFAULT_STEPS:
            steps = DEFAULT_STEPS[attack] if steps is None else check_value("steps", steps)
            restarts = 1 if restarts is None else check_value("restarts", restarts)
        else:
            for key, value in (("steps", steps), ("restarts", restarts), ("step_size", step_size)):
                if value is not None:
                    raise UserError(f"--{key.replace('_', '-')} does not apply to attack {attack.value}: "
                                    f"it only sets pgd{' and apgd-ce' if key != 'step_size' else ''}")
            restarts = 1
        if attack is Attack.PGD:
            step_size = PGD_STEP_FACTOR * eps / steps if step_size is None else check_value("step_size", step_size)
        elif step_size is not None:
            raise UserError(f"--step-size does not apply to attack {attack.value}: it only sets pgd")
        batch_size = check_value("batch_size", batch_size)
        if amp is not Amp.OFF and attack in AUTOATTACK:
            raise UserError(f"--amp {amp.value} is refused for {attack.value}: AutoAttack's numbers are float32 "
                            "(reduced precision can mask gradients and inflate robust accuracy); use --amp off")
        return cls(attack, float(eps), norm, steps, step_size, restarts, batch_size, check_value("seed", seed), amp)

    # ------------------------------------------------------------------ names
    @property
    def stages(self) -> tuple[str, ...]:
        return STAGES[self.attack]

    @property
    def is_autoattack(self) -> bool:
        return self.attack in AUTOATTACK

    @property
    def threat_model(self) -> str:
        """RobustBench's spelling: ``Linf`` or ``L2``."""
        return {Norm.LINF: "Linf", Norm.L2: "L2"}[self.norm]

    @property
    def label(self) -> str:
        """Attack with its budget when not the default: ``pgd10``, ``pgd50x5``, ``apgd-ce``, ``aa-standard``."""
        if self.attack is Attack.PGD:
            return f"pgd{self.steps}" + (f"x{self.restarts}" if self.restarts > 1 else "")
        if self.attack is Attack.APGD_CE and (self.steps, self.restarts) != (100, 1):
            return f"apgd-ce{self.steps}" + (f"x{self.restarts}" if self.restarts > 1 else "")
        return self.attack.value

    @property
    def eps_text(self) -> str:
        return eps_text(self.eps)

    @property
    def file_stem(self) -> str:
        """``aa-standard-8_255``, ``pgd10-l2-0.5``, ``clean``: unique per attack, budget, norm and eps."""
        if self.attack is Attack.CLEAN:
            return "clean"
        norm = "" if self.norm is Norm.LINF else f"-{self.norm.value}"
        return f"{self.label}{norm}-{self.eps_text.replace('/', '_')}"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k, v in d.items():
            if isinstance(v, enum.Enum):
                d[k] = v.value
        return d


def check_value(key: str, value: Any) -> Any:
    """One user value of an evaluation, parsed and checked on its own (as :meth:`EvalSpec.create` does
    before it checks the combination): ``attack``, ``eps``, ``norm``, ``steps``, ``step_size``,
    ``restarts``, ``batch_size``, ``seed`` or ``amp``. Raises UserError naming the value."""
    if key in ("attack", "norm", "amp"):
        return choice({"attack": Attack, "norm": Norm, "amp": Amp}[key], value, what=key)
    if key in ("eps", "step_size"):
        number = parse_fraction(value, what=key)
        if not (0 < number <= 1) or not math.isfinite(number):
            example = ", e.g. 8/255" if key == "eps" else ""
            raise UserError(f"invalid {key} {number!r}: must be in (0, 1] pixel units{example}")
        return number
    if key in ("steps", "restarts", "batch_size"):
        number = _int(value, key)
        if number < 1:
            raise UserError(f"invalid {key} {number}: must be >= 1")
        return number
    if key == "seed":
        number = _int(value, key)
        if number < 0:  # torch and AutoAttack take seeds >= 0
            raise UserError(f"invalid seed {number}: must be >= 0")
        return number
    raise ValueError(f"unknown evaluation value {key!r}")


def _int(value: Any, what: str) -> int:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise UserError(f"invalid {what} {value!r}; expected an integer") from None
    if not math.isfinite(number) or number != int(number):
        raise UserError(f"invalid {what} {value!r}; expected an integer")
    return int(number)
