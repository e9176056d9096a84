"""The 2024 study's published runs (Debenedetti et al., results.csv) in our run schema.

Unit conversions (from the study's code and README):

- ``train_flops`` there is TFLOPs per epoch measured in ONE of the 4 GPU processes, so the total
  training FLOPs of a run = ``train_flops * 1e12 * epochs * 4``.
- ``train_electricity_cost`` is USD per epoch = $0.12/kWh x (300 W x 4 GPUs x epoch hours / 1000)
  x PUE 1.58. Total ``electricity_usd`` = per-epoch cost x epochs. From it we back-derive
  ``energy_kwh`` as IT energy (the project's convention: PUE is applied once, in the cost), i.e.
  ``electricity_usd / (0.12 * 1.58)``, and ``device_hours`` (GPU-hours, all 4 GPUs) =
  ``energy_kwh / 0.3 kW``. ``CostModel.from_yaml(preset="paper-2024")`` gives back the same dollars.
- ``train_emissions`` is codecarbon's figure cumulative since the 12-hour job started, not per
  run: kept only as ``emissions_kg_cumulative_unreliable``; ``emissions_kg`` is left empty.
- ``eval_acc`` / ``aa_robust_acc`` (full 10,000-image test set) -> ``clean_acc`` / ``aa_robust_acc``;
  ``pgd40_robust_acc`` (last epoch, ~1,024 images) -> ``pgd_robust_acc``.
- Runs with AutoAttack accuracy below ``schema.COLLAPSE_THRESHOLD_ACC`` are marked ``collapsed``.
"""
from __future__ import annotations

import io
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import UserError, read_text_file
from ..schema import COLLAPSE_THRESHOLD_ACC, RUN_COLUMNS

PAPER_URL = "https://raw.githubusercontent.com/dedeswim/timm-adv-training/main/results.csv"
PAPER_SOURCE = "debenedetti2024"
PAPER_COLUMNS = ("train_flops", "train_electricity_cost", "epochs", "model", "model_parameters",
                 "synthetic_data", "at", "at_steps", "aa_robust_acc", "eval_acc")
PAPER_GPUS = 4  # GPU processes per run
PAPER_USD_PER_KWH = 0.12
PAPER_PUE = 1.58
PAPER_GPU_KW = 0.300
CIFAR10_TRAIN_IMAGES = 50_000
PAPER_GENERATED_IMAGES = 1_000_000  # DDPM-generated CIFAR-10 images mixed in when synthetic_data
PAPER_EPS = 8 / 255
PAPER_AA_EXAMPLES = 10_000


def is_paper_table(df) -> bool:
    """True for the study's results.csv layout (its column names, not yet converted)."""
    return all(c in df.columns for c in PAPER_COLUMNS) and "method" not in df.columns


def load_paper_runs(path_or_url: str | Path = PAPER_URL):
    """The study's runs from a local results.csv or a URL (downloaded only when a URL is given).

    Returns a DataFrame with ``schema.RUN_COLUMNS`` plus ``emissions_kg_cumulative_unreliable``.
    """
    text = str(path_or_url)
    if text.startswith(("http://", "https://")):
        df = pd.read_csv(io.BytesIO(_download(text)))
    else:
        path = Path(text)
        if not path.is_file():
            raise UserError(f"paper runs file not found: {path} (or pass the URL {PAPER_URL})")
        df = pd.read_csv(io.StringIO(read_text_file(path, "CSV")))
    if not is_paper_table(df):
        missing = [c for c in PAPER_COLUMNS if c not in df.columns]
        raise UserError(f"{text} is not the study's results.csv: lacks {', '.join(missing) or 'nothing'}"
                        f"{' and has method' if 'method' in df.columns else ''}; columns: {', '.join(df.columns)}")
    return paper_to_runs(df)


def _download(url: str) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=60) as resp:  # noqa: S310 (user-given URL)
            return resp.read()
    except (urllib.error.URLError, OSError) as exc:
        raise UserError(f"cannot download {url}: {exc}") from None


def _as_bool(series):
    if series.dtype == bool:
        return series
    mapping = {"true": True, "false": False, "1": True, "0": False, "yes": True, "no": False}
    return series.map(lambda v: mapping.get(str(v).strip().lower(), v)).astype(bool)


def paper_to_runs(raw):
    """Convert a results.csv DataFrame (study layout) into the run schema; see the module docstring."""
    epochs = pd.to_numeric(raw["epochs"], errors="coerce")
    synthetic = _as_bool(raw["synthetic_data"])
    electricity = pd.to_numeric(raw["train_electricity_cost"], errors="coerce") * epochs
    energy_it = electricity / (PAPER_USD_PER_KWH * PAPER_PUE)
    device_hours = energy_it / PAPER_GPU_KW
    seen = CIFAR10_TRAIN_IMAGES * epochs
    flops = pd.to_numeric(raw["train_flops"], errors="coerce") * 1e12 * epochs * PAPER_GPUS
    aa = pd.to_numeric(raw["aa_robust_acc"], errors="coerce")
    method = raw["at"].astype(str).str.lower()
    steps = pd.to_numeric(raw["at_steps"], errors="coerce").astype("Int64")
    name = (raw["model"].astype(str) + "_" + method + steps.astype(str) + "_" + epochs.astype("Int64").astype(str)
            + "ep" + np.where(synthetic, "_synth", ""))
    out = pd.DataFrame({
        "name": name,
        "source": PAPER_SOURCE,
        "status": "done",
        "config_hash": None,
        "dataset": "cifar10",
        "model": raw["model"].astype(str),
        "model_parameters": pd.to_numeric(raw["model_parameters"], errors="coerce"),
        "method": method,
        "attack_steps": steps,
        "eps": PAPER_EPS,
        "norm": "linf",
        "epochs": epochs.astype("Int64"),
        "synthetic_data": synthetic,
        "train_images": np.where(synthetic, CIFAR10_TRAIN_IMAGES + PAPER_GENERATED_IMAGES, CIFAR10_TRAIN_IMAGES),
        "train_images_seen": seen,
        "train_flops": flops,
        "train_flops_per_image": flops / seen,
        "eval_flops": np.nan,
        "wall_seconds": device_hours / PAPER_GPUS * 3600.0,
        "device_hours": device_hours,
        "device_name": None,
        "device_count": PAPER_GPUS,
        "energy_kwh": energy_it,
        "emissions_kg": np.nan,
        "electricity_usd": electricity,
        # The study's $0.43-1.46 per GPU-hour range (its cloud-cost columns are not in results.csv).
        "cloud_usd_low": device_hours * 0.43,
        "cloud_usd_high": device_hours * 1.46,
        "clean_acc": pd.to_numeric(raw["eval_acc"], errors="coerce"),
        "clean_acc_n_examples": PAPER_AA_EXAMPLES,  # the full test set, as AutoAttack's
        "pgd_robust_acc": pd.to_numeric(raw.get("pgd40_robust_acc"), errors="coerce")
        if "pgd40_robust_acc" in raw.columns else np.nan,
        "pgd_robust_acc_n_examples": None,  # "~1,024 test images": the study gives no exact count
        "apgd_ce_robust_acc": np.nan, "apgd_ce_robust_acc_n_examples": None,  # not in the study
        "aa_robust_acc": aa,
        "aa_n_examples": PAPER_AA_EXAMPLES,
        "collapsed": aa < COLLAPSE_THRESHOLD_ACC,
        "collapsed_epoch": None,  # the study had no per-epoch collapse check
    })
    out = out[list(RUN_COLUMNS)]
    if "train_emissions" in raw.columns:
        out["emissions_kg_cumulative_unreliable"] = pd.to_numeric(raw["train_emissions"], errors="coerce")
    return out.reset_index(drop=True)
