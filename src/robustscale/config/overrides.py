"""Command-line overrides: ``--key value`` tokens to a mapping of TrainConfig keys, an unknown flag blamed
with the closest valid ones."""
from __future__ import annotations

import difflib
from dataclasses import fields
from typing import Any

from ..errors import UserError
from .train_config import TrainConfig

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
            close = ([_FLAG_SYNONYMS[key]] if key in _FLAG_SYNONYMS else []) + \
                [c for c in difflib.get_close_matches(key, known, n=3, cutoff=0.5) if c != _FLAG_SYNONYMS.get(key)]
            hint = f"did you mean {', '.join('--' + c.replace('_', '-') for c in close)}? " if close else ""
            raise UserError(f"unknown flag --{key.replace('_', '-')} (no TrainConfig key {key}); {hint}valid: "
                            f"{', '.join('--' + k.replace('_', '-') for k in known)}")
    return out
