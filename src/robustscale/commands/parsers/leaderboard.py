"""The parser of ``robustscale leaderboard`` (built for every start of the CLI: no heavy imports; see cli.py)."""
from __future__ import annotations

import argparse

from .common import add_flops_per_second_argument, add_paper_runs_argument


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "leaderboard", help="training FLOPs of every RobustBench CIFAR-10 l-inf entry, and the field's law",
        description="Join RobustBench's model_info files with the packaged recipe table (every fact cites its "
        "source; unsourced facts give a compute range), measure training FLOPs per entry (forward, attack and "
        "backward FLOPs per image x samples seen), print the ledger sorted by AutoAttack accuracy and fit a "
        "saturating and a power law to the field's compute frontier, extrapolated to 75 / 80 / 85 %.")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--model-info", metavar="DIR", help="folder of RobustBench model_info/cifar10/Linf/*.json files")
    src.add_argument("--download", action="store_true",
                     help="download the model_info files from RobustBench's GitHub repository (needs network)")
    p.add_argument("--json", action="store_true", help="print JSON (ledger, fits, extrapolations) instead of a table")
    p.add_argument("--report", metavar="DIR", help="write DIR/leaderboard.html and every figure (PNG, SVG) to DIR")
    p.add_argument("--runs", metavar="STORE", help="add our evaluated runs from a results store (or runs table)")
    add_paper_runs_argument(p, "plot on the same axes")
    p.add_argument("--export", metavar="FILE", help="write the joined table as .csv or .parquet")
    p.add_argument("--export-model-info", metavar="DIR",
                   help="write one RobustBench-style model_info JSON per entry with compute fields")
    p.add_argument("--bootstrap", type=int, default=1000,
                   help="bootstrap resamples of the frontier fits (default 1000)")
    p.add_argument("--seed", type=int, default=0)
    add_flops_per_second_argument(p, "1e14, an A100 at ~1/3 of its bf16 peak")
    p.add_argument("--device-type", default="A100-80GB", help="price-table device type for dollars (default A100-80GB)")
    p.add_argument("--jobs", type=int, default=None, help="bootstrap worker processes (default: the idle cores)")
    p.set_defaults(handler="run")
