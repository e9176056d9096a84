"""Clean / PGD / AutoAttack evaluation and claims (implementation in :mod:`robustscale.evaluation`)."""
from .evaluation import (Attack, EvalSpec, EvaluationWarning, claim_path, eps_text, evaluate, evaluate_checkpoint,
                         evaluate_run, file_sha256, load_model, read_checkpoint, state_path, update_summary)

__all__ = ["evaluate", "evaluate_checkpoint", "evaluate_run", "load_model", "read_checkpoint", "file_sha256",
           "EvaluationWarning", "Attack", "EvalSpec", "eps_text", "claim_path", "state_path", "update_summary"]
