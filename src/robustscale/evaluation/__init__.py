"""Robustness evaluation: clean accuracy, PGD, and the official AutoAttack, with compute and claims.

Public API::

    evaluate(model, x, y, attack, eps, norm, n_examples, batch_size, seed, ...) -> result dict
    evaluate_checkpoint(checkpoint, model_name, dataset, attack=..., ...)     -> claim dict
    evaluate_run(run_dir, attack="pgd", eps=None, n_examples=None, ...)       -> claim dict
    load_model(checkpoint, model_name=None, dataset=None, ...)                -> (NormalizedModel, info)

Modules: ``spec`` (validated request, file names), ``runner`` (the staged, resumable loop that
mirrors AutoAttack's), ``counting`` (pass counting, gradient-masking check), ``checkpoints``
(ours and timm's formats), ``records`` (claims, summary.json, store), ``api`` (files and runs).
The catastrophic-overfitting check that runs during training lives in ``robustscale.train.collapse``.
"""
from .api import evaluate_checkpoint, evaluate_run
from .checkpoints import file_sha256, load_model, read_checkpoint
from .core import EvaluationWarning, evaluate
from .records import claim_path, state_path, update_summary
from .spec import Attack, EvalSpec, eps_text

__all__ = ["evaluate", "evaluate_checkpoint", "evaluate_run", "load_model", "read_checkpoint", "file_sha256",
           "EvaluationWarning", "Attack", "EvalSpec", "eps_text", "claim_path", "state_path", "update_summary"]
