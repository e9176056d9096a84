"""The run configuration: one dataclass resolved once from YAML + CLI overrides.

``TrainConfig`` is flat so that every key maps 1:1 to a CLI flag (``--attack-steps 5`` or
``--attack_steps 5``) and to a sweep axis. It is written unchanged to ``config.yaml`` of the
run and to the results store. Units: ``eps`` / ``step_size`` in [0,1] pixel units,
learning rates per 256 images (``lr_base``), fractions in [0,1]. Every construction path
(``TrainConfig(...)``, ``from_dict``, ``from_yaml``, ``replace``) coerces and validates in
``__post_init__``: ``TrainConfig(lr_base=1)`` equals ``TrainConfig.from_dict({"lr_base": "1"})``
and ``TrainConfig(epochs=0)`` raises UserError.

Run identity (``TrainConfig.config_hash``): what ``sweep run`` skips finished runs by, what
``--resume`` checks ``state.pt`` against and what names a default run folder. Two configs that
train the same way have the same hash. It is a sha256 of a canonical form (:data:`HASH_VERSION`
included) that keeps only the fields in :data:`HASHED_FIELDS`, and of those only the ones this
config reads (``attack_steps`` is dropped for ``method: standard``) and that differ from their
default (so a new field with a default changes no existing hash).

**Adding a field**: declare it in train_config.py AND name it in exactly one of :data:`HASHED_FIELDS` (with
the condition under which training reads it) or :data:`UNHASHED_FIELDS` (identity.py); importing the package
fails otherwise. Never change the default of a hashed field (runs recorded under the old default
would take the new one): add a field instead, or bump HASH_VERSION and keep the old scheme as a
lookup (tests/test_config_hash.py pins the defaults and a few hashes). 0.1.0 hashed every field
but a few: :func:`legacy_config_hash_v1`; :meth:`TrainConfig.matches_hash` accepts both.

The modules, bottom to top: ``vocab`` (the closed vocabularies and their parsers), ``identity`` (what the hash
covers, the hash, 0.1.0's hash), ``validate`` (values no run can use), ``yaml_io`` (a YAML file, one value's
coercion), ``train_config`` (the dataclasses), ``overrides`` (``--key value`` tokens). Every public name is
re-exported here: callers import from ``robustscale.config``.
"""
from __future__ import annotations

from .identity import (FIELD_DEFAULTS, HASH_VERSION, HASHED_FIELDS, NON_SEMANTIC_KEYS, UNHASHED_FIELDS, V1_FIELDS,
                       V1_NON_SEMANTIC_KEYS, V1_TRAINING, legacy_config_hash_v1)
from .overrides import parse_overrides
from .train_config import AttackConfig, TrainConfig
from .vocab import (COMPILE_ALIASES, SCHEDULERS, SGD_OPTS, SINGLE_STEP_DEFAULT_STEP, Amp, Compile, DistBackend,
                    Method, Norm, OnCollapse, Select, SelectSplit, Tracker, parse_fraction, parse_tracker_names)
from .yaml_io import TYPE_HINTS, load_yaml

__all__ = ["AttackConfig", "TrainConfig", "Method", "Norm", "OnCollapse", "Amp", "Compile", "DistBackend", "Select",
           "SelectSplit", "Tracker", "COMPILE_ALIASES", "SCHEDULERS", "SGD_OPTS", "SINGLE_STEP_DEFAULT_STEP",
           "parse_fraction", "parse_tracker_names", "HASH_VERSION", "HASHED_FIELDS", "UNHASHED_FIELDS",
           "NON_SEMANTIC_KEYS", "V1_FIELDS", "V1_NON_SEMANTIC_KEYS", "V1_TRAINING", "legacy_config_hash_v1",
           "FIELD_DEFAULTS", "TYPE_HINTS", "load_yaml", "parse_overrides"]

# The names config.py gave these tables before it became a package (tests/test_config_hash.py patches them):
# the same dict objects, so a change through either name is seen by the hash and the coercion.
_DEFAULTS = FIELD_DEFAULTS
_TYPE_HINTS = TYPE_HINTS
