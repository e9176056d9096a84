"""Checkpoints the timm way: export a run as a timm-layout folder with a model card, load any such folder.

- :func:`export_run` (``robustscale export RUN_DIR --to DIR``): ``model.safetensors`` + ``config.json``
  (timm's ``pretrained_cfg`` with mean/std) + ``README.md`` (robustness claim with intervals, compute
  bill, recipe), written atomically; ``push_to_hub`` uploads it with huggingface_hub.
- :func:`load_timm_folder`: a [0,1]-pixel model from such a folder (``evaluate --checkpoint DIR``); it lives
  with the other checkpoint readers in ``robustscale.evaluation.checkpoints`` and is re-exported here.
- :func:`wilson_interval`, :func:`render_card`: the card's building blocks; the claims it shows are read by
  ``robustscale.rundir.read_claims`` (re-exported here with ``read_json``).
"""
from ..evaluation.checkpoints import load_timm_folder
from ..rundir import read_claims, read_json
from .card import render_card, wilson_interval
from .folder import WEIGHTS, ExportWarning, export_run, push_folder

__all__ = ["export_run", "load_timm_folder", "push_folder", "read_claims", "read_json",
           "render_card", "wilson_interval", "WEIGHTS", "ExportWarning"]
