"""``robustscale train``: train a (robust) classifier from a YAML recipe plus ``--key value`` overrides."""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from timm.optim import list_optimizers

from ..compute.energy import check_country
from ..config import Amp, TrainConfig, load_yaml, parse_overrides
from ..cost import CostModel
from ..data import check_eval_subset, find_data_root
from ..errors import UserError, one_of
from ..models import check_model_name
from ..store import store_url_for
from ..train import train
from ..train.distributed import batch_plan, launch_world


def resolve_config(args):
    """The TrainConfig the command runs: --config (or the resumed run's config.yaml), then overrides."""
    overrides = parse_overrides(list(args.overrides or []))
    if args.output_dir is not None:
        overrides["output_dir"] = args.output_dir
    if args.name is not None:
        if not args.name.strip():  # an empty value would mean "the default name": say so instead
            raise UserError("--name is empty; give a run folder name, or leave --name out for the default "
                            "<model>-<dataset>-<method><steps>-<hash>")
        overrides["name"] = args.name
    if args.config is not None:
        return TrainConfig.from_yaml(args.config, overrides)
    if args.resume is not None:
        cfg_path = Path(args.resume) / "config.yaml"
        data = load_yaml(cfg_path) if cfg_path.is_file() else None
        if data is None:
            return None  # train() reports the bad run directory
        data.update(overrides)
        return TrainConfig.from_dict(data, source=str(cfg_path))
    return TrainConfig.from_dict(overrides, source="command line")


def check_inputs(cfg) -> None:
    """Every user error ``train`` would meet in its setup, found before it writes anything.

    ``train`` records the run in the store (creating ``<output_dir>/runs.db``) before its setup
    looks at the model, the optimizer, the data and the prices; this runs those checks first, in
    the config's order. (TrainConfig itself has already checked every value on its own.)
    """
    check_model_name(cfg.model)
    check_eval_subset(cfg.dataset, cfg.eval_subset)  # also checks the dataset name
    if cfg.data_dir and not cfg.download and not Path(cfg.data_dir).expanduser().is_dir():
        raise UserError(f"data_dir {cfg.data_dir!r} is not a folder; give the folder holding {cfg.dataset}, "
                        f"or --download to fetch it there")
    if not cfg.download:
        find_data_root(cfg.dataset, cfg.data_dir)
    if cfg.generated_data and not Path(cfg.generated_data).expanduser().is_file():
        raise UserError(f"generated data file not found: {cfg.generated_data}; expected an .npz with arrays "
                        f"image (N,H,W,C uint8) and label (N,)")
    one_of(cfg.opt.lower(), list_optimizers(), "opt")
    batch_plan(cfg.batch_size, launch_world(), cfg.micro_batch_size)  # torchrun's or a Slurm step's processes
    if cfg.amp is Amp.FP16 and not torch.cuda.is_available():
        raise UserError("amp fp16 needs a GPU; use --amp bf16 on CPU")
    if cfg.energy:
        check_country(cfg.country)
    prices = CostModel.from_yaml(preset=cfg.price_preset)
    if cfg.device_type is not None:
        prices.price(cfg.device_type)
    store_url_for(cfg)  # a bad ROBUSTSCALE_STORE URL


def run(args) -> int:
    cfg = resolve_config(args)
    if cfg is not None:
        check_inputs(cfg)
    summary = train(cfg, resume=args.resume)
    if int(os.environ.get("RANK", "0")) != 0:  # torchrun: rank 0 reports
        return 0
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
        return 0
    rows = [("run", summary["run_dir"]), ("status", summary["status"]),
            ("epochs", f"{summary['epochs_done']}/{summary['epochs']}"),
            ("selected", _selected(summary)),
            *_split_accuracies(summary),
            ("train FLOPs", _fmt(summary["train_flops"], ".3e")),
            ("wall time (s)", _fmt(summary["wall_seconds"], ".1f")),
            ("energy (kWh)", _fmt(summary["energy_kwh"], ".4g")),
            ("cloud cost (USD)", f"{_fmt(summary['cloud_usd_low'], '.4g')} - {_fmt(summary['cloud_usd_high'], '.4g')}")]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    return 0


def _selected(summary: dict) -> str:
    split, metric = summary.get("selection_split"), summary.get("selection_metric")
    where = f"best {metric} on {split} images" if split else "the last epoch"
    return f"epoch {summary.get('selected_epoch')} ({where})"


def _split_accuracies(summary: dict) -> list[tuple[str, str]]:
    """The selected epoch's accuracies on the per-epoch check's split, with interval and image count."""
    out = []
    for split in ("val", "test"):
        for metric, label in (("clean_acc", "clean"), ("pgd_robust_acc", "PGD")):
            v = summary.get(f"{split}_{metric}")
            if v is None:
                continue
            lo, hi = summary.get(f"{split}_{metric}_ci") or (None, None)
            n = summary.get(f"{split}_{metric}_n_examples")
            out.append((f"{split} {label} acc (%)", f"{v:.2f} [{_fmt(lo, '.1f')}, {_fmt(hi, '.1f')}] ({n} images)"))
    return out


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)
