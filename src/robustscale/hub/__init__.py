"""Checkpoints the timm way: export a run as a timm-layout folder with a model card, load any such folder.

- :func:`export_run` (``robustscale export RUN_DIR --to DIR``): ``model.safetensors`` + ``config.json``
  (timm's ``pretrained_cfg`` with mean/std) + ``README.md`` (robustness claim with intervals, compute
  bill, recipe), written atomically; ``push_to_hub`` uploads it with huggingface_hub.
- :func:`load_timm_folder`: a [0,1]-pixel model from such a folder (``evaluate --checkpoint DIR``).
- :func:`wilson_interval`, :func:`read_claims`: the card's building blocks.
"""
from .card import read_claims, read_json, render_card, wilson_interval
from .folder import WEIGHTS, ExportWarning, export_run, load_timm_folder, push_folder

__all__ = ["export_run", "load_timm_folder", "push_folder", "read_claims", "read_json",
           "render_card", "wilson_interval", "WEIGHTS", "ExportWarning"]
