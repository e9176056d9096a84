"""Catastrophic overfitting caught while it happens, from the per-epoch PGD and FGSM accuracies.

A single-step run that collapses (Wong et al. 2020; Andriushchenko & Flammarion 2020) keeps or even
raises its FGSM accuracy while its PGD accuracy falls to near zero within an epoch or two: the model
has learnt to mask the one gradient step it is trained against. The detector flags the first epoch
where PGD accuracy falls far below

- ``gap``: the FGSM accuracy on the same images (a healthy model's multi-step PGD reads 80-95 % of what
  FGSM reads), or
- ``drop``: the best PGD accuracy of the run so far,

"far" meaning below ``ratio`` times it (default 0.5) *and* more than ``gap`` percentage points below it
(default 10: a guard against sampling noise; on 500 images the standard error of the difference of two
accuracies is at most 3.2 points). A relative rule, because a collapse at a large eps happens at low
accuracies too (Fashion-MNIST, eps 0.3, FGSM-RS: FGSM 31 % above the clean 26 %, PGD-10 5 %).

Both thresholds are stated in the record. It is a pure function of the metrics history, so a resumed
run re-derives the same answer from ``metrics.jsonl``.

A flag says training went through a collapse; it does not say the *reported* checkpoint is collapsed.
A run can recover (PGD-2 on Fashion-MNIST at eps 0.2 was flagged at epoch 2 and ended as the most robust
run of docs/single-step.md), and checkpoint selection can pick an epoch before the collapse.
:func:`flagged_at` applies the same rules at one epoch (the selected one): the run record's ``collapsed``
follows it, and ``collapsed_epoch`` keeps the first flag.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Iterable, Mapping

from ..errors import UserError

__all__ = ["Collapse", "CollapseThresholds", "detect_collapse", "flagged_at"]

PGD_KEY, FGSM_KEY = "pgd_robust_acc", "fgsm_robust_acc"  # the metrics.jsonl columns read


@dataclass(frozen=True)
class CollapseThresholds:
    """Flag when PGD accuracy < ``ratio`` x (FGSM accuracy or best PGD accuracy) and > ``gap`` points below it."""

    ratio: float = 0.5
    gap: float = 10.0

    def __post_init__(self):
        if not (isinstance(self.ratio, (int, float)) and 0 < self.ratio < 1):
            raise UserError(f"invalid collapse_ratio {self.ratio!r}: must be in (0, 1), e.g. 0.5")
        if not (isinstance(self.gap, (int, float)) and 0 < self.gap <= 100):
            raise UserError(f"invalid collapse_gap {self.gap!r}: must be in (0, 100] percentage points")

    def far_below(self, acc: float, reference: float) -> bool:
        return acc < self.ratio * reference and reference - acc > self.gap


@dataclass(frozen=True)
class Collapse:
    """The first collapsed epoch of a run and why."""

    epoch: int
    reason: str  # "gap" or "drop" ("gap" when both hold)
    pgd_robust_acc: float
    fgsm_robust_acc: float | None
    best_pgd_robust_acc: float  # best PGD accuracy up to this epoch
    best_epoch: int
    eval_images: int | None
    thresholds: CollapseThresholds

    def message(self) -> str:
        """One line: the epoch, both accuracies and the rule that fired."""
        fgsm = "n/a" if self.fgsm_robust_acc is None else f"{self.fgsm_robust_acc:.1f}%"
        t = self.thresholds
        if self.reason == "gap":
            why = f"PGD below {t.ratio:g} x FGSM and more than {t.gap:g} points under it"
        else:
            why = (f"PGD below {t.ratio:g} x its best, {self.best_pgd_robust_acc:.1f}% at epoch {self.best_epoch}, "
                   f"and more than {t.gap:g} points under it")
        n = f" on {self.eval_images} images" if self.eval_images else ""
        return (f"catastrophic overfitting at epoch {self.epoch}: PGD {self.pgd_robust_acc:.1f}%, "
                f"FGSM {fgsm}{n} ({why})")

    def to_record(self) -> dict[str, Any]:
        """Flat fields for summary.json and the store."""
        return {"collapsed_epoch": self.epoch, "collapse_reason": self.reason,
                "collapse_pgd_robust_acc": self.pgd_robust_acc, "collapse_fgsm_robust_acc": self.fgsm_robust_acc,
                "collapse_ratio": self.thresholds.ratio, "collapse_gap": self.thresholds.gap}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _acc(row: Mapping[str, Any], key: str, epoch: Any) -> float | None:
    value = row.get(key)
    if value is None:
        return None
    value = float(value)
    if not (math.isfinite(value) and 0 <= value <= 100):
        raise ValueError(f"epoch {epoch}: {key} {value!r} is not an accuracy in [0, 100] percent")
    return value


def _flags(history: Iterable[Mapping[str, Any]], thresholds: CollapseThresholds):
    """``(epoch, Collapse or None)`` for every row of ``history`` that has a PGD accuracy, in order."""
    best, best_epoch = None, None
    for position, row in enumerate(history, start=1):
        epoch = int(row.get("epoch", position))
        pgd_acc = _acc(row, PGD_KEY, epoch)
        if pgd_acc is None:
            continue
        fgsm_acc = _acc(row, FGSM_KEY, epoch)
        if best is None or pgd_acc > best:
            best, best_epoch = pgd_acc, epoch
        gap = fgsm_acc is not None and thresholds.far_below(pgd_acc, fgsm_acc)
        drop = thresholds.far_below(pgd_acc, best)
        found = None
        if gap or drop:
            images = row.get("eval_images")
            found = Collapse(epoch=epoch, reason="gap" if gap else "drop", pgd_robust_acc=pgd_acc,
                             fgsm_robust_acc=fgsm_acc, best_pgd_robust_acc=best, best_epoch=best_epoch,
                             eval_images=int(images) if images else None, thresholds=thresholds)
        yield epoch, found


def detect_collapse(history: Iterable[Mapping[str, Any]],
                    thresholds: CollapseThresholds | None = None) -> Collapse | None:
    """The first epoch of ``history`` flagged as catastrophic overfitting, or None.

    Args:
        history: per-epoch rows in order, as in ``metrics.jsonl``: ``epoch`` (default: the position,
            1-based), ``pgd_robust_acc`` and ``fgsm_robust_acc`` (percent; None or absent where not
            evaluated), optionally ``eval_images``. Rows without a PGD accuracy are skipped; without an
            FGSM accuracy only the ``drop`` rule applies.
        thresholds: see :class:`CollapseThresholds` (default ratio 0.5, gap 10 points).
    """
    for _, found in _flags(history, thresholds or CollapseThresholds()):
        if found is not None:
            return found
    return None


def flagged_at(history: Iterable[Mapping[str, Any]], epoch: int,
               thresholds: CollapseThresholds | None = None) -> bool | None:
    """Do the rules flag ``epoch`` itself (``drop`` against the best PGD accuracy up to it)? None when the
    history has no PGD accuracy at that epoch."""
    for e, found in _flags(history, thresholds or CollapseThresholds()):
        if e == epoch:
            return found is not None
    return None
