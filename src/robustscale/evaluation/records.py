"""Evaluation claims on disk: ``eval/<attack>-<eps>.json``, the run's summary.json, the results store.

A claim carries RobustBench's fields (model name, dataset, threat model, eps, clean accuracy,
AutoAttack accuracy, number of examples, attack and version) plus ours (per-stage accuracies,
FLOPs, wall time, energy, cost, checkpoint hash, warnings). All writes are atomic
(``robustscale.rundir.write_json``); summary.json is updated under a file lock so concurrent
evaluations of one run do not lose each other's results.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import json
import warnings
from pathlib import Path
from typing import Any, Iterator, Mapping

import torch

from .. import __version__, rundir
from ..cost import CostModel
from ..intervals import accuracy_interval, accuracy_intervals
from ..schema import HEADLINE_ATTACKS, N_EXAMPLES_ALIASES, TRAINING_CHECK, headline, training_check
from ..store import record_evaluation
from .spec import Attack, EvalSpec

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory locks
    fcntl = None

CLAIM_SCHEMA = "robustscale.eval/1"
COST_KEYS = ("electricity_usd", "electricity_basis", "cloud_usd_low", "cloud_usd_high", "device_type")


def eval_dir(out_dir: str | Path) -> Path:
    return Path(out_dir) / rundir.EVAL_DIR


def claim_path(out_dir: str | Path, spec: EvalSpec) -> Path:
    """``<out_dir>/eval/<label>[-l2]-<eps>.json``, e.g. ``eval/aa-standard-8_255.json``."""
    return eval_dir(out_dir) / f"{spec.file_stem}.json"


def state_path(out_dir: str | Path, spec: EvalSpec) -> Path:
    """The resume state of an evaluation in progress (deleted when it completes)."""
    return eval_dir(out_dir) / f".state-{spec.file_stem}.pt"


def attack_version(spec: EvalSpec) -> str:
    if spec.is_autoattack:
        import pyautoattack

        version = {Attack.AA_STANDARD: "standard", Attack.AA_RAND: "rand"}.get(spec.attack, "standard, apgd-ce only")
        return f"pyautoattack {pyautoattack.__version__} ({version})"
    return f"robustscale {__version__} ({spec.label})"


def build_claim(result: Mapping[str, Any], spec: EvalSpec, model_info: Mapping[str, Any],
                run: Mapping[str, Any] | None = None, price_preset: str = "default") -> dict[str, Any]:
    """The JSON claim of a complete evaluation ``result`` (from :func:`~.core.evaluate`)."""
    claim: dict[str, Any] = {
        "schema": CLAIM_SCHEMA,
        # RobustBench fields
        "model_name": model_info.get("model"), "architecture": model_info.get("model"),
        "dataset": model_info.get("dataset"), "threat_model": spec.threat_model,
        "eps": spec.eps, "eps_text": spec.eps_text, "norm": spec.norm.value,
        "clean_acc": result["clean_acc"], "robust_acc": result["robust_acc"],
    }
    if "autoattack_acc" in result:
        claim["autoattack_acc"] = result["autoattack_acc"]
    claim.update(accuracy_intervals(claim, result["n_examples"]))
    claim.update({
        "n_examples": result["n_examples"], "attack": spec.attack.value, "attack_label": spec.label,
        "attack_version": attack_version(spec), "stage_acc": result["stage_acc"],
        "attack_params": {"steps": spec.steps, "step_size": spec.step_size, "restarts": spec.restarts,
                          "batch_size": spec.batch_size, "seed": spec.seed, "amp": spec.amp.value},
        # compute
        "eval_flops": result["eval_flops"], "forward_images": result["forward_images"],
        "backward_images": result["backward_images"], "forward_flops_per_image": result["forward_flops_per_image"],
        "input_backward_flops_per_image": result["input_backward_flops_per_image"],
        **{k: result.get(k) for k in ("wall_seconds", "device_hours", "device_name", "device_count",
                                      "energy_kwh", "emissions_kg")},
        **_costs(result, price_preset),
        "sessions": result["sessions"],
        # provenance
        "checkpoint": model_info.get("checkpoint"), "checkpoint_sha256": model_info.get("checkpoint_sha256"),
        "weights": model_info.get("weights"), "mean": model_info.get("mean"), "std": model_info.get("std"),
        "run_name": (run or {}).get("name"), "run_dir": (run or {}).get("run_dir"),
        "gradient_check": result.get("gradient_check"), "warnings": list(result.get("warnings") or []),
        "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "robustscale_version": __version__, "torch_version": torch.__version__,
    })
    return claim


def _costs(result: Mapping[str, Any], preset: str) -> dict[str, Any]:
    """Dollars of the evaluation from the compute cost model (measured energy, else estimated)."""
    try:
        model = CostModel.from_yaml(preset=preset)
        device_type = model.device_type_for(result.get("device_name"))
        hours = float(result.get("device_hours") or 0.0)
        energy = result.get("energy_kwh")
        basis = "measured" if energy is not None else "estimated"
        if energy is None:
            energy = model.estimate_energy_kwh(device_type, hours)
        cost = model.cost(device_type, hours, energy)
    except Exception as exc:  # noqa: BLE001  (a price table problem must not lose the result)
        warnings.warn(f"evaluation cost not computed: {exc}", stacklevel=3)
        return dict.fromkeys(COST_KEYS)
    return {"electricity_usd": cost.get("electricity_usd"), "electricity_basis": basis,
            "cloud_usd_low": cost.get("cloud_usd_low"), "cloud_usd_high": cost.get("cloud_usd_high"),
            "device_type": device_type}


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive advisory lock on ``path`` (POSIX; a no-op where fcntl is missing)."""
    if fcntl is None:  # pragma: no cover - Windows
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def update_summary(run_dir: str | Path, claim: Mapping[str, Any], stem: str) -> dict[str, Any]:
    """Attach ``claim`` to ``<run_dir>/summary.json`` and return the new summary.

    Keeps every evaluation under ``evaluations[<stem>]`` and training's own check under ``training_check``
    (first time only), then sets the headline columns (each accuracy with its ``_n_examples`` and ``_ci``,
    ``collapsed``, ``eval_flops``) by ``schema.headline``: the rule the results store follows too.
    """
    run_dir = Path(run_dir)
    path = run_dir / rundir.SUMMARY
    with _locked(eval_dir(run_dir) / ".summary.lock"):
        summary: dict[str, Any] = {}
        if path.is_file():
            try:
                summary = json.loads(path.read_text())
            except ValueError:
                warnings.warn(f"{path} is not valid JSON; rewriting it with the evaluation only", stacklevel=2)
        if not isinstance(summary, dict):
            summary = {}
        if TRAINING_CHECK not in summary:
            summary[TRAINING_CHECK] = training_check(summary)
        if "train_eval_flops" not in summary:
            summary["train_eval_flops"] = summary[TRAINING_CHECK].get("eval_flops") or 0.0
        evaluations = summary.setdefault("evaluations", {})
        evaluations[stem] = {k: claim.get(k) for k in (
            "attack", "attack_label", "eps", "norm", "n_examples", "clean_acc", "robust_acc", "stage_acc",
            "eval_flops", "wall_seconds", "energy_kwh", "checkpoint_sha256", "created_at")}
        evaluations[stem]["claim"] = f"eval/{stem}.json"
        evaluations[stem].update(accuracy_intervals(claim, claim.get("n_examples")))
        values = headline(summary[TRAINING_CHECK], list(evaluations.values()), summary.get("eps"))
        summary.update(values)
        for metric in ("clean_acc", *HEADLINE_ATTACKS):
            n_col = N_EXAMPLES_ALIASES.get(metric, f"{metric}_n_examples")
            ci = accuracy_interval(values[metric], values[n_col])
            summary[f"{metric}_ci"] = None if ci is None else list(ci)
        rundir.write_json(path, summary, mkdir=True)
    return summary


def record_in_store(run_dir: str | Path, claim: Mapping[str, Any], store: str | None = None) -> bool:
    """Record the claim in the results store; True when recorded.

    A store that cannot be reached only warns: the claim is already on disk.
    """
    try:
        record_evaluation(Path(run_dir), dict(claim), store=store)
    except Exception as exc:  # noqa: BLE001
        warnings.warn(f"results store: evaluation of {run_dir} not recorded: {exc}", stacklevel=2)
        return False
    return True
