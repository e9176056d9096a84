"""timm-layout folders: write one from a run (:func:`export_run`); read any with :func:`load_timm_folder`
(``robustscale.evaluation.checkpoints``, which reads every checkpoint format).

A folder holds ``model.safetensors`` (the inner timm model's state dict), ``config.json`` (written by
timm's own ``save_for_hf``: ``architecture``, ``num_classes``, ``model_args`` and the ``pretrained_cfg``
that timm reads, with ``input_size``, ``mean``, ``std``, ``crop_pct``, ``interpolation``; plus our
``robustscale`` entry: dataset, threat model, weights, epoch, compute, claims, the training config)
and ``README.md``, the model card. It loads with plain timm::

    import robustscale, timm  # robustscale's architectures register in timm on import
    model = timm.create_model("local-dir:DIR", pretrained=True)
    transform = timm.data.create_transform(**timm.data.resolve_data_config({}, model=model))

timm's transform ends with ``Normalize(mean, std)``, so a plain-timm user feeds images in [0, 1]
through it and gets the logits robustscale's [0,1]-pixel model gives (``load_timm_folder`` returns
that model, normalization inside, for attacks in pixel space).
"""
from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

import timm
import torch
from safetensors import safe_open
from timm.models import save_for_hf

from .. import __version__, rundir
from ..compute import RUN_COMPUTE_KEYS
from ..cost import CostModel
from ..data.info import dataset_info
from ..data.transforms import CROP_PCT
from ..errors import UserError
from ..evaluation.checkpoints import file_sha256
from ..evaluation.spec import eps_text
from .card import DEFAULT_LICENSE, render_card

WEIGHTS = ("best", "last", "ema")
FOLDER_FILES = ("model.safetensors", "config.json", "README.md")  # what export writes


class ExportWarning(UserWarning):
    """The export is written, with a caveat (e.g. plain timm cannot load this architecture's weights)."""


# ---------------------------------------------------------------------------------------------- export
def _source_checkpoint(run_dir: Path, weights: str) -> Path:
    """The run's file behind ``weights``; UserError when the run has no such weights."""
    if weights not in WEIGHTS:
        raise UserError(f"unknown weights {weights!r}; valid: {', '.join(WEIGHTS)}")
    if not (run_dir / rundir.CONFIG).is_file():
        raise UserError(f"not a run directory (no config.yaml): {run_dir}")
    have = [w for w in rundir.CHECKPOINTS if rundir.weights_path(run_dir, w).is_file()]
    path = rundir.weights_path(run_dir, "last" if weights == "ema" else weights)  # EMA runs save EMA weights
    if not path.is_file():
        raise UserError(f"run {run_dir} has no {path.name} (weights {weights!r}); available: "
                        f"{', '.join(have) or 'none (the run has not finished an epoch)'}")
    if weights == "ema" and _metadata(path).get("weights") != "ema":
        raise UserError(f"run {run_dir} has no EMA weights (trained without ema_decay); valid here: "
                        f"{', '.join(have)}")
    return path


def _check_target(target: Path, force: bool) -> None:
    if target.exists() and not target.is_dir():
        raise UserError(f"export target {target} exists and is not a folder")
    if target.is_dir() and any(target.iterdir()) and not force:
        raise UserError(f"export target {target} exists and is not empty; pass --force to replace it")


def _metadata(path: Path) -> dict[str, Any]:
    with safe_open(str(path), framework="pt") as fh:
        raw = fh.metadata() or {}
    out = {}
    for k, v in raw.items():
        try:
            out[k] = json.loads(v)
        except ValueError:
            out[k] = v
    return out


def _epoch_check(run_dir: Path, cfg, epoch: Any) -> dict[str, Any] | None:
    """The per-epoch clean / PGD check of ``epoch`` from metrics.jsonl (None if absent)."""
    path = run_dir / rundir.METRICS
    rows = [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()] if path.is_file() else []
    row = next((r for r in rows if str(r.get("epoch")) == str(epoch)), None)
    if row is None or row.get("clean_acc") is None or not row.get("eval_images"):
        return None
    robust = row.get("pgd_robust_acc")
    return {"attack": row.get("eval_attack") or "clean", "dataset": cfg.dataset, "n": int(row["eval_images"]),
            "split": row.get("eval_split") or "test",  # runs written before the validation split checked on test
            "threat": f"{'Linf' if cfg.norm.value == 'linf' else 'L2'}, eps = {eps_text(cfg.eps)}"  # eval: full eps
            if robust is not None else "none (clean)", "clean_acc": row["clean_acc"], "robust_acc": robust}


def _input_shape(cfg, summary: dict | None, in_chans: int) -> tuple[int, int, int]:
    """(C, H, W) the run trained on: measured in summary.json, else the dataset's."""
    shape = ((summary or {}).get("step_flops") or {}).get("input_size")
    if shape:
        return tuple(int(s) for s in shape)
    size = dataset_info(cfg.dataset).input_size or (in_chans, 224, 224)
    side = cfg.input_size
    return (in_chans, side, side) if side else tuple(size)


def _robustscale_entry(cfg, weights: str, meta: dict, summary: dict | None, claims: list[dict]) -> dict[str, Any]:
    keep = ("attack", "attack_version", "threat_model", "eps", "eps_text", "norm", "n_examples", "clean_acc",
            "robust_acc", "dataset", "checkpoint_sha256", "created_at")
    return {
        "run_name": cfg.name, "config_hash": cfg.config_hash(), "dataset": cfg.dataset, "method": cfg.method.value,
        "eps": cfg.eps, "norm": cfg.norm.value, "weights": weights, "weights_kind": meta.get("weights"),
        "epoch": meta.get("epoch"), "robustscale_version": __version__,
        "compute": {k: (summary or {}).get(k) for k in RUN_COMPUTE_KEYS} if summary else None,
        "claims": [{k: c.get(k) for k in keep} for c in claims], "train_config": cfg.to_dict(),
    }


def _timm_reload_matches(folder: Path, inner) -> bool:
    """Whether plain ``timm.create_model("local-dir:...", pretrained=True)`` gives back these weights."""
    try:
        again = timm.create_model(f"local-dir:{folder}", pretrained=True)
    except Exception:  # noqa: BLE001  (an architecture whose entry point bypasses timm's builder)
        return False
    mine, theirs = inner.state_dict(), again.state_dict()
    return mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)


def export_run(run_dir: str | Path, to: str | Path, weights: str = "best", *, force: bool = False,
               push_to_hub: str | None = None, private: bool = False, license: str = DEFAULT_LICENSE) -> dict[str, Any]:
    """Write ``run_dir``'s ``weights`` (best, last or ema) as a timm-layout folder ``to``.

    The folder is written in a temporary sibling and renamed into place, so ``to`` is never half
    written; an existing non-empty ``to`` is replaced only with ``force``. ``push_to_hub``: a Hub repo
    id to upload the folder to afterwards (huggingface_hub; needs network and a token). ``license``: the card's
    Hub license id.
    Returns ``{"path", "weights", "epoch", "source", "timm_loadable", "claims", "pushed"}``.
    """
    run_dir, target = Path(run_dir), Path(to)
    source = _source_checkpoint(run_dir, weights)
    _check_target(target, force)
    cfg, model = rundir.load_run(run_dir, "last" if weights == "ema" else weights)  # source exists: no fallback
    meta = _metadata(source)
    summary = rundir.read_json(run_dir / rundir.SUMMARY)
    if summary is None and (run_dir / rundir.SUMMARY).is_file():  # a card must not say "no summary" of a bad one
        raise UserError(f"cannot read {run_dir / rundir.SUMMARY}: not valid JSON; repair it (or remove it, and "
                        f"the card says the compute was not recorded)")
    sha = file_sha256(source)
    all_claims = rundir.read_claims(run_dir)
    claims = [c for c in all_claims if c.get("checkpoint_sha256") == sha]  # claims about these very weights
    inner = model.model
    mean, std = [float(v) for v in model.mean.flatten()], [float(v) for v in model.std.flatten()]
    shape = _input_shape(cfg, summary, len(mean))
    num_classes = int(model.num_classes)
    crop_pct = CROP_PCT if cfg.dataset == "imagefolder" else 1.0  # fixed-size datasets are fed uncropped
    with rundir.atomic_dir(target, replace=True, mkdir=True) as tmp:
        # timm's own writer, its reader's layout; data_config describes the trained weights (the registry's
        # pretrained_cfg says CIFAR, 3 x 32 x 32), model_args are checked against the model's own.
        save_for_hf(inner, str(tmp), safe_serialization=True,
                    model_args={"num_classes": num_classes, "in_chans": shape[0]},
                    data_config={"input_size": shape, "mean": mean, "std": std, "crop_pct": crop_pct},
                    model_config={"robustscale": _robustscale_entry(cfg, weights, meta, summary, claims)})
        loadable = _timm_reload_matches(tmp, inner)
        check = _epoch_check(run_dir, cfg, meta.get("epoch"))
        card = render_card(cfg=cfg, summary=summary, claims=claims, check=check, weights=weights,
                           epoch=meta.get("epoch"), other_claims=len(all_claims) - len(claims),
                           timm_loadable=loadable, cost_model=CostModel.from_yaml(preset=cfg.price_preset),
                           versions={"robustscale": __version__, "torch": torch.__version__,
                                     "timm": timm.__version__},
                           location=f"hf-hub:{push_to_hub}" if push_to_hub else f"local-dir:{Path(target).resolve()}",
                           license=license)
        (tmp / "README.md").write_text(card)
        mode = (tmp / "config.json").stat().st_mode  # written by open(): the umask's permissions
        os.chmod(tmp / "model.safetensors", mode)  # safetensors writes 0600
    if not loadable:
        warnings.warn(f"plain timm.create_model('local-dir:{target}', pretrained=True) does not load {cfg.model}'s "
                      f"weights; robustscale.hub.load_timm_folder does", ExportWarning, stacklevel=2)
    pushed = push_folder(target, push_to_hub, private=private) if push_to_hub else None
    return {"path": str(target), "weights": weights, "epoch": meta.get("epoch"), "source": str(source),
            "timm_loadable": loadable, "claims": len(claims), "pushed": pushed}


def push_folder(folder: str | Path, repo_id: str, *, private: bool = False) -> str:
    """Upload an exported folder to the Hugging Face Hub (huggingface_hub's own upload); returns the commit URL."""
    try:
        from huggingface_hub import HfApi
    except ImportError:
        raise UserError("--push-to-hub needs huggingface_hub (a timm dependency): pip install huggingface_hub") \
            from None
    api = HfApi()
    try:
        repo = api.create_repo(repo_id, private=private, exist_ok=True)
        info = api.upload_folder(repo_id=repo.repo_id, folder_path=str(folder), commit_message="robustscale export",
                                 allow_patterns=list(FOLDER_FILES))  # not eval/ (claims made on this copy)
    except Exception as exc:  # noqa: BLE001  (no network, no token, no rights: one line, the folder stays)
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UserError(f"push to the Hub repo {repo_id} failed ({reason}); the folder is kept at {folder}") from None
    return str(getattr(info, "commit_url", info))
