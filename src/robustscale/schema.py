"""The flat run record: one row per run, what `runs export` writes and `fit` reads.

Units are in the names; accuracies are percentages (0-100), each with the number of test images it was
measured on (``<metric>_n_examples``; AutoAttack's is ``aa_n_examples``). ``collapsed`` flags runs whose
AutoAttack accuracy fell below 10% or whose reported checkpoint the per-epoch check flagged (catastrophic
overfitting; ``collapsed_epoch`` is the first flagged epoch, also of a run that recovered), which analyses
mark rather than drop.
"""
from __future__ import annotations

import math

RUN_COLUMNS: tuple[str, ...] = (
    "name", "source", "status", "config_hash", "dataset", "model", "model_parameters",
    "method", "attack_steps", "eps", "norm", "epochs", "synthetic_data",
    "train_images", "train_images_seen",
    "train_flops", "train_flops_per_image", "eval_flops",
    "wall_seconds", "device_hours", "device_name", "device_count",
    "energy_kwh", "emissions_kg", "electricity_usd", "cloud_usd_low", "cloud_usd_high",
    "clean_acc", "clean_acc_n_examples", "pgd_robust_acc", "pgd_robust_acc_n_examples",
    "apgd_ce_robust_acc", "apgd_ce_robust_acc_n_examples", "aa_robust_acc", "aa_n_examples",
    "collapsed", "collapsed_epoch",
)

# Test images behind each headline accuracy. AutoAttack's column predates the `<metric>_n_examples` rule.
N_EXAMPLES_ALIASES: dict[str, str] = {"aa_robust_acc": "aa_n_examples"}

# What a run trains, but for its seed: runs equal in these (and in compute) are seeds of one configuration.
CONFIG_COLUMNS: tuple[str, ...] = ("dataset", "model", "method", "attack_steps", "eps", "norm", "epochs",
                                   "synthetic_data", "train_images", "train_images_seen")

# Column names of the 2024 study's results.csv accepted wherever a run column is named.
PAPER_ALIASES: dict[str, str] = {
    "at": "method",
    "at_steps": "attack_steps",
    "eval_acc": "clean_acc",
}

COLLAPSE_THRESHOLD_ACC = 10.0  # percent AutoAttack accuracy


def resolve_column(name: str) -> str:
    """Map a paper alias to our column name (other names pass through)."""
    return PAPER_ALIASES.get(name, name)


def n_examples_column(metric: str, columns) -> str | None:
    """The column of ``columns`` holding the test-image count of ``metric`` (``<metric>_n_examples``, else
    its alias, e.g. ``aa_n_examples``), or None when there is none."""
    for name in (f"{metric}_n_examples", N_EXAMPLES_ALIASES.get(resolve_column(metric))):
        if name is not None and name in columns:
            return name
    return None


def collapsed_at_selected(record) -> bool:
    """Did the per-epoch check flag the run's reported checkpoint (``collapse_at_selected``; a run can recover
    after a flag, and selection can pick an epoch before it)? A record written before that field existed
    counts any flag (``collapsed_epoch``)."""
    if "collapse_at_selected" in record:
        return bool(record["collapse_at_selected"])
    return record.get("collapsed_epoch") is not None


def finite_float(value) -> float | None:
    """A run value as a finite float; None when it is missing, not a number, NaN or infinite (JSON-safe)."""
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


# ---------------------------------------------------------------------- the headline rule
# Attacks whose robust accuracy is a headline column (the others stay with their evaluation only).
HEADLINE_ATTACKS: dict[str, tuple[str, ...]] = {
    "pgd_robust_acc": ("pgd",),
    "apgd_ce_robust_acc": ("apgd-ce",),  # AutoAttack's first stage alone: what studies fit on
    "aa_robust_acc": ("aa-standard", "autoattack", "aa"),
}
HEADLINE_COLUMNS: tuple[str, ...] = (
    "clean_acc", "clean_acc_n_examples", "pgd_robust_acc", "pgd_robust_acc_n_examples",
    "apgd_ce_robust_acc", "apgd_ce_robust_acc_n_examples", "aa_robust_acc", "aa_n_examples", "collapsed",
    "eval_flops")
CLEAN_ATTACK = "clean"  # recorded at eps 0: a clean accuracy holds at every eps
EPS_TOL = 1e-6  # eps values are fractions like 8/255 written as floats: equal to well within this
TRAINING_CHECK = "training_check"  # summary.json's copy of training's own test-set check (see training_check)
_CHECK_KEYS = ("clean_acc", "clean_acc_n_examples", "pgd_robust_acc", "pgd_robust_acc_n_examples",
               "collapsed_epoch", "collapse_at_selected")


def training_check(summary) -> dict:
    """Training's own test-set check of its reported checkpoint, as training wrote it into summary.json.

    ``evaluate`` rewrites the summary's headline from the rule below, so it keeps training's values under
    ``training_check`` first; this returns that copy when present, else the summary's top-level fields.
    ``eval_flops`` is training's per-epoch checking (``train_eval_flops`` once ``evaluate`` has added its own).
    A summary written before the ``<metric>_n_examples`` fields counts ``eval_images`` (else ``eval_subset``).
    """
    summary = summary if isinstance(summary, dict) else {}
    kept = summary.get(TRAINING_CHECK)
    if isinstance(kept, dict):
        return dict(kept)
    out = {k: summary.get(k) for k in _CHECK_KEYS if k in summary}
    # Before the `_n_examples` fields (and the validation split) the check ran on `eval_images` test images.
    legacy_n = next((summary[k] for k in ("eval_images", "eval_subset")
                     if isinstance(summary.get(k), int) and summary[k] > 0), None)
    for metric in ("clean_acc", "pgd_robust_acc"):
        if f"{metric}_n_examples" not in summary and finite_float(out.get(metric)) is not None:
            out[f"{metric}_n_examples"] = legacy_n
    flops = summary.get("train_eval_flops", summary.get("eval_flops"))
    out["eval_flops"] = finite_float(flops)
    return out


def headline(training, evaluations, run_eps) -> dict:
    """The run's headline columns (:data:`HEADLINE_COLUMNS`) from training's check and its evaluations.

    The one rule behind the store's live updates, ``runs sync``, the store's migrations and summary.json:

    - each robust accuracy (PGD, APGD-CE, AutoAttack) is that attack's evaluation at the run's eps on the
      most test images; without a PGD evaluation, PGD's is training's own test-set check (its PGD-k);
    - the clean accuracy is, of every evaluation at the run's eps and every ``clean`` one (eps 0: it holds at
      every eps), and training's own check, the one on the most test images;
    - a tie in images goes to the later evaluation (its ``created_at``), then to the attack name: the same
      evaluations give the same headline in whatever order they are read;
    - ``collapsed``: AutoAttack's accuracy (else APGD-CE's, else PGD's) below ``COLLAPSE_THRESHOLD_ACC``, or
      the per-epoch check flagged the reported checkpoint; None when neither is known;
    - ``eval_flops``: training's checking plus every evaluation.

    ``training`` is :func:`training_check` of the summary (or None); ``evaluations`` are mappings with
    ``attack``, ``eps``, ``n_examples``, ``clean_acc``, ``robust_acc``, ``eval_flops`` and ``created_at``.
    """
    training = training or {}
    evals = [e for e in evaluations if e.get("n_examples") is not None]
    eps = finite_float(run_eps)

    def at_eps(e) -> bool:
        e_eps = finite_float(e.get("eps"))
        return eps is None or (e_eps is not None and abs(e_eps - eps) < EPS_TOL)

    def rank(e) -> tuple:
        return int(e["n_examples"]), 1, str(e.get("created_at") or ""), str(e.get("attack") or "")

    def pick(cands: list[tuple[tuple, float, int]]):
        return max(cands, key=lambda c: c[0]) if cands else (None, None, None)

    def from_training(metric: str) -> list[tuple[tuple, float, int | None]]:
        # A summary that does not say on how many images keeps its value (never lose a figure), ranked last.
        value, n = finite_float(training.get(metric)), training.get(f"{metric}_n_examples")
        n = int(n) if n else None
        return [((n or 0, 0, "", ""), value, n)] if value is not None else []

    out: dict = {}
    for metric, attacks in HEADLINE_ATTACKS.items():
        cands = [(rank(e), finite_float(e["robust_acc"]), int(e["n_examples"])) for e in evals
                 if str(e.get("attack") or "").lower() in attacks and finite_float(e.get("robust_acc")) is not None
                 and at_eps(e)]
        if metric == "pgd_robust_acc" and not cands:  # a PGD evaluation's attack is the one asked for
            cands = from_training(metric)
        _, out[metric], out[N_EXAMPLES_ALIASES.get(metric, f"{metric}_n_examples")] = pick(cands)
    cleans = [(rank(e), finite_float(e["clean_acc"]), int(e["n_examples"])) for e in evals
              if finite_float(e.get("clean_acc")) is not None
              and (str(e.get("attack") or "").lower() == CLEAN_ATTACK or at_eps(e))]
    _, out["clean_acc"], out["clean_acc_n_examples"] = pick(cleans + from_training("clean_acc"))
    robust = next((out[m] for m in ("aa_robust_acc", "apgd_ce_robust_acc", "pgd_robust_acc") if out[m] is not None),
                  None)
    flagged = collapsed_at_selected(training)
    out["collapsed"] = (robust < COLLAPSE_THRESHOLD_ACC or flagged) if robust is not None else (True if flagged else None)
    spent = [finite_float(e.get("eval_flops")) for e in evaluations]
    parts = [f for f in [finite_float(training.get("eval_flops")), *spent] if f is not None]
    out["eval_flops"] = sum(parts) if parts else None
    return {k: out[k] for k in HEADLINE_COLUMNS}
