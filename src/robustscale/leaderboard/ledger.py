"""The ledger: RobustBench entries joined with their recipes and training compute, one row per entry.

:func:`build_ledger` returns a DataFrame sorted by AutoAttack accuracy with, per entry, the recipe
status (``sourced``, ``range``, ``no recipe``, ``excluded``), training FLOPs ``[low, high]`` in our
measured convention *as spent* by the authors' code (``train_flops*``, what the frontier and laws use)
and *as needed* on the efficient step (``train_flops_needed*``, with the ``saving`` fraction), the 2024
study's convention, the implementation facts' status, FLOPs per image, samples seen, parameters,
GPU-hours at a stated throughput and every fact with the links of its source (``fact_sources``). :func:`add_store_runs` appends our own evaluated runs; :func:`export_table`
and :func:`export_model_info` write the joined table and RobustBench-style JSON with compute fields.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

import pandas as pd
from tqdm import tqdm

from ..errors import UserError
from ..rundir import atomic_dir, atomic_write
from ..schema import finite_float as _num
from .compute import DEFAULT_FLOPS_PER_SECOND, FlopsCache, device_hours, entry_compute
from .model_info import ModelInfo
from .recipes import Entry, load_recipes
from .sources import entry_sources, paper_links

STATUS_SOURCED, STATUS_RANGE, STATUS_NONE, STATUS_EXCLUDED = "sourced", "range", "no recipe", "excluded"
COMPUTE_FIELDS = ("train_flops", "train_flops_low", "train_flops_high", "train_flops_per_image", "recipe_source")
# Names exported files used before (old name -> today's): read back, never written.
LEGACY_COMPUTE_FIELDS = {"flops_per_image": "train_flops_per_image"}


def recipe_status(entry: Entry | None, entries: Mapping[str, Entry]) -> tuple[str, list[str]]:
    """(status, what is unsourced) of an entry, following ``based_on`` links."""
    if entry is None:
        return STATUS_NONE, []
    if entry.excluded is not None:
        return STATUS_EXCLUDED, [entry.excluded]
    missing = entry.missing_sources()
    if entry.based_on is not None:
        base_status, base_missing = recipe_status(entries[entry.based_on.value], entries)
        missing += [f"{entry.based_on.value}: {m}" for m in base_missing]
        if base_status != STATUS_SOURCED and not base_missing:
            missing.append(f"{entry.based_on.value}: {base_status}")
    return (STATUS_SOURCED if not missing else STATUS_RANGE), missing


def implementation_status(entry: Entry | None, entries: Mapping[str, Entry]) -> tuple[str | None, list[str]]:
    """("code" | "range", implementation facts no source states), following ``based_on``; None: no recipe."""
    if entry is None or entry.excluded is not None:
        return None, []
    missing = entry.implementation_missing()
    if entry.based_on is not None:
        base = implementation_status(entries[entry.based_on.value], entries)[1]
        missing += [f"{entry.based_on.value}: {m}" for m in base]
    return ("code" if not missing else "range"), missing


def fully_verified(entry: Entry, entries: Mapping[str, Entry]) -> bool:
    """Every source of the entry (and of its base) was read by the curator (``verified: true``)."""
    facts = [f for p in entry.phases for f in p.facts.values() if f.sourced]
    ok = all(f.verified for f in facts)
    if entry.based_on is not None:
        ok = ok and fully_verified(entries[entry.based_on.value], entries)
    return ok


def build_ledger(infos: Iterable[ModelInfo], recipes: Mapping[str, Entry] | None = None,
                 cache: FlopsCache | None = None, flops_per_second: float = DEFAULT_FLOPS_PER_SECOND,
                 progress: bool = False):
    """One row per model-info entry, sorted by AutoAttack accuracy (best first)."""
    recipes = load_recipes() if recipes is None else recipes
    cache = cache or FlopsCache()
    infos = list(infos)
    bar = None
    if progress:
        bar = tqdm(total=len(infos), desc="training FLOPs", unit="entry", leave=False, dynamic_ncols=True)
    rows = []
    papers = paper_links(infos)
    for info in infos:
        entry = recipes.get(info.name)
        status, missing = recipe_status(entry, recipes)
        comp = entry_compute(entry, recipes, cache) if status in (STATUS_SOURCED, STATUS_RANGE) else None
        row = _row(info, entry, status, missing, comp, recipes, flops_per_second)
        row["fact_sources"] = entry_sources(entry, papers, info.raw.get("link")) if entry is not None else []
        rows.append(row)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    df = pd.DataFrame(rows)
    return df.sort_values(["aa_robust_acc", "clean_acc"], ascending=False, kind="stable").reset_index(drop=True)


def _row(info: ModelInfo, entry: Entry | None, status: str, missing: list[str], comp, recipes,
         flops_per_second: float) -> dict[str, Any]:
    lo = comp.train_flops_low if comp else None
    hi = comp.train_flops_high if comp else None
    point = comp.train_flops if comp else None
    needed = comp.train_flops_needed if comp else None
    impl, impl_missing = implementation_status(entry, recipes) if comp else (None, [])
    return {
        "name": info.name, "source": "robustbench", "year": info.year, "venue": info.raw.get("venue"),
        "architecture": info.architecture, "model": comp.arch_label if comp else None,
        "model_parameters": comp.params if comp else None,
        "aa_robust_acc": info.aa_robust_acc, "clean_acc": info.clean_acc, "aa_n_examples": 10_000,
        "additional_data": info.raw.get("additional_data"),
        "recipe_status": status, "recipe_verified": bool(entry is not None and status == STATUS_SOURCED
                                                          and fully_verified(entry, recipes)),
        "recipe_unsourced": "; ".join(missing) if status == STATUS_RANGE else None,
        "excluded_reason": missing[0] if status == STATUS_EXCLUDED else None,
        "method_name": (entry.method_name if entry else None),
        "train_flops": point, "train_flops_low": lo, "train_flops_high": hi,
        "train_flops_needed": needed,
        "train_flops_needed_low": comp.train_flops_needed_low if comp else None,
        "train_flops_needed_high": comp.train_flops_needed_high if comp else None,
        "saving": (1.0 - needed / point) if needed and point else None,
        "implementation_status": impl,
        "implementation_unsourced": "; ".join(impl_missing) if impl_missing else None,
        "train_flops_2024": comp.train_flops_2024 if comp else None,
        "train_flops_2024_low": comp.train_flops_2024_low if comp else None,
        "train_flops_2024_high": comp.train_flops_2024_high if comp else None,
        "train_flops_per_image": comp.train_flops_per_image if comp else None,
        "forward_flops": comp.forward_flops if comp else None,
        "train_images_seen": comp.samples_seen if comp else None,
        "device_hours": device_hours(point, flops_per_second),
        "device_hours_low": device_hours(lo, flops_per_second),
        "device_hours_high": device_hours(hi, flops_per_second),
        "recipe_source": " | ".join(entry.sources()) if entry is not None and status != STATUS_EXCLUDED else None,
        "collapsed": info.aa_robust_acc < 10.0,
    }


def add_store_runs(ledger, runs, flops_per_second: float = DEFAULT_FLOPS_PER_SECOND):
    """Append our evaluated runs (a runs frame with ``aa_robust_acc`` and ``train_flops``) to the ledger."""
    if runs is None or len(runs) == 0:
        return ledger
    aa = pd.to_numeric(runs.get("aa_robust_acc"), errors="coerce")
    flops = pd.to_numeric(runs.get("train_flops"), errors="coerce")
    keep = aa.notna() & flops.notna() & (flops > 0)
    rows = []
    for i in runs.index[keep]:
        r = runs.loc[i]
        f = float(flops[i])
        rows.append({"name": str(r.get("name")), "source": "ours", "year": None, "architecture": r.get("model"),
                     "model": r.get("model"), "model_parameters": r.get("model_parameters"),
                     "aa_robust_acc": float(aa[i]), "clean_acc": r.get("clean_acc"),
                     "aa_n_examples": r.get("aa_n_examples"), "recipe_status": "measured",
                     "recipe_verified": True, "method_name": r.get("method"),
                     "train_flops": f, "train_flops_low": f, "train_flops_high": f,
                     "train_flops_per_image": r.get("train_flops_per_image"),
                     "train_images_seen": r.get("train_images_seen"),
                     "device_hours": r.get("device_hours") if pd.notna(r.get("device_hours")) else
                     device_hours(f, flops_per_second), "collapsed": float(aa[i]) < 10.0})
    if not rows:
        return ledger
    out = pd.concat([ledger, pd.DataFrame(rows)], ignore_index=True)
    return out.sort_values(["aa_robust_acc"], ascending=False, kind="stable").reset_index(drop=True)


# ---------------------------------------------------------------------- export
def export_table(ledger, path: str | os.PathLike) -> Path:
    """The joined table as CSV or Parquet (by suffix), written atomically."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".parquet", ".pq"):
        raise UserError(f"invalid --export {path.name!r}: the table is written as .csv or .parquet")
    if not path.parent.is_dir():
        raise UserError(f"folder {path.parent} does not exist (for --export {path.name})")
    if "fact_sources" in ledger.columns:  # a list of dicts per row: one JSON string in a flat file
        ledger = ledger.assign(fact_sources=ledger["fact_sources"].map(
            lambda v: json.dumps(v, default=str) if isinstance(v, list) else None))
    if suffix == ".csv":
        atomic_write(path, lambda tmp: ledger.to_csv(tmp, index=False))
    else:
        atomic_write(path, lambda tmp: ledger.to_parquet(tmp, index=False))
    return path


def model_info_with_compute(info: ModelInfo, row: Mapping[str, Any]) -> dict[str, Any]:
    """RobustBench's model_info fields unchanged, plus the compute fields a RobustBench user could adopt."""
    out = {k: v for k, v in info.raw.items() if k not in LEGACY_COMPUTE_FIELDS}  # an old export, re-exported
    out.update({
        "train_flops": _num(row.get("train_flops")),
        "train_flops_low": _num(row.get("train_flops_low")),
        "train_flops_high": _num(row.get("train_flops_high")),
        "train_flops_per_image": _num(row.get("train_flops_per_image")),
        "recipe_source": row.get("recipe_source"),
        "train_flops_convention": "measured torch.utils.flop_counter (2 x MACs) of forward + attack + backward, "
                                  "as spent by the authors' code",
        "train_flops_needed": _num(row.get("train_flops_needed")),
        "train_flops_2024": _num(row.get("train_flops_2024")),
        "recipe_status": row.get("recipe_status"),
    })
    return out


def exported_compute(data: Mapping[str, Any]) -> dict[str, Any]:
    """The compute fields of one exported ``<name>.json`` (:func:`model_info_with_compute`), old names read as today's.

    Files exported before the rename carry ``flops_per_image``; a file carrying both names keeps today's."""
    out = {k: data.get(k) for k in COMPUTE_FIELDS}
    for old, new in LEGACY_COMPUTE_FIELDS.items():
        if out.get(new) is None and data.get(old) is not None:
            out[new] = data[old]
    return out


def export_model_info(ledger, infos: Iterable[ModelInfo], directory: str | os.PathLike) -> Path:
    """One ``<name>.json`` per RobustBench entry with compute fields, into ``directory`` (created whole)."""
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise UserError(f"--export-model-info {directory} exists and is not a folder")
    if not directory.parent.is_dir():
        raise UserError(f"folder {directory.parent} does not exist (for --export-model-info {directory.name})")
    rows = {r["name"]: r for r in ledger.to_dict("records") if r.get("source") == "robustbench"}
    with atomic_dir(directory) as tmp:  # an existing folder keeps its other files
        for info in infos:
            data = model_info_with_compute(info, rows.get(info.name, {}))
            (tmp / f"{info.name}.json").write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return directory
