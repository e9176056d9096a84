"""``robustscale datasets [NAME]``: list the supported datasets, or load one and describe it."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from ..data import dataset_info, load_dataset
from ..data.info import DATASETS, DatasetName
from ..data.locations import locate
from ..errors import UserError


def run(args: argparse.Namespace) -> int:
    # A file is a mistake; a missing folder is what --download fills (and, without it, the dataset's own
    # "not found ... --download" line says where it looked).
    if args.data_dir is not None and Path(args.data_dir).expanduser().exists() \
            and not Path(args.data_dir).expanduser().is_dir():
        raise UserError(f"--data-dir {args.data_dir}: not a folder; give the folder that holds the dataset files")
    if args.name is None:
        if args.download:
            raise UserError("--download needs a dataset NAME (e.g. robustscale datasets cifar10 --download)")
        rows = list_datasets(args.data_dir)
        if args.json:
            print(json.dumps(rows, indent=2))
        else:
            _print_list(rows)
        return 0
    report = describe_dataset(args.name, args.data_dir, args.download, args.input_size)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print_report(report)
    return 0


def list_datasets(data_dir=None) -> list[dict]:
    """One dict per supported dataset: static facts plus ``found`` / ``location`` (no loading)."""
    rows = []
    for key, info in DATASETS.items():
        where = locate(key, data_dir)
        rows.append({
            "name": key.value,
            "num_classes": info.num_classes,
            "input_size": list(info.input_size) if info.input_size else None,
            "train_size": info.train_size,
            "test_size": info.test_size,
            "found": where is not None,
            "location": str(where) if where else None,
            "description": info.description,
        })
    return rows


def describe_dataset(name: str, data_dir=None, download: bool = False, input_size: int | None = None) -> dict:
    """Load both splits of ``name`` and summarise them (sizes, shape, classes, per-class counts)."""
    info = dataset_info(name)
    splits, counts, shape, classes, root, first_error = {}, {}, None, None, None, None
    for split in ("train", "test"):
        try:
            ds = load_dataset(info.name, split, data_dir, download, input_size=input_size)
        except UserError as exc:
            # An image folder may hold only train/ or only val/; every other dataset needs both splits.
            if info.name is not DatasetName.IMAGEFOLDER:
                raise
            splits[split], first_error = None, first_error or exc
            continue
        splits[split] = len(ds)
        counts[split] = torch.bincount(ds.targets, minlength=len(ds.classes)).tolist()
        shape, classes, root = list(ds.image_shape), list(ds.classes), str(ds.root)
    if root is None:
        raise first_error
    return {
        "name": info.name.value,
        "location": root,
        "splits": splits,
        "image_shape": shape,
        "num_classes": len(classes),
        "classes": classes,
        "class_counts": counts,
        "description": info.description,
    }


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in [header, *rows]]
    return "\n".join(lines)


def _print_list(rows: list[dict]) -> None:
    def fmt(v):
        return "-" if v is None else f"{v:,}" if isinstance(v, int) else str(v)

    table = [[r["name"], fmt(r["num_classes"]) if r["num_classes"] else "folder",
              "x".join(map(str, r["input_size"])) if r["input_size"] else "-",
              fmt(r["train_size"]), fmt(r["test_size"]), "yes" if r["found"] else "no",
              r["location"] or "-", r["description"]] for r in rows]
    print(_table(["name", "classes", "shape (CxHxW)", "train (images)", "test (images)", "found", "location",
                  "description"], table))


def _print_report(r: dict) -> None:
    shown = ", ".join(r["classes"][:12]) + (f", ... ({len(r['classes'])} in all)" if len(r["classes"]) > 12 else "")
    lines = [
        ["dataset", r["name"]],
        ["location", r["location"]],
        *[[f"{s} (images)", "-" if n is None else f"{n:,}"] for s, n in r["splits"].items()],
        ["image shape", "x".join(map(str, r["image_shape"])) + " (CxHxW, float32 in [0,1] when loaded)"],
        ["classes", f"{r['num_classes']}: {shown}"],
    ]
    for split, c in r["class_counts"].items():
        lines.append([f"{split} per class", f"min {min(c):,}, max {max(c):,}"])
    print(_table(["", ""], lines).split("\n", 1)[1])
