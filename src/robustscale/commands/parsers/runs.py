"""The parser of ``robustscale runs`` (built for every start of the CLI: no heavy imports; see cli.py)."""
from __future__ import annotations

import argparse


PAPER_SOURCE = "debenedetti2024"


EXPORT_FORMATS = ("csv", "parquet", "json")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "runs", help="list, show, export and import runs of the results store",
        description="The results store keeps every run (config, status, compute, metrics), its epochs and its "
        "evaluations. Default store: <output-dir>/runs.db (SQLite); --store or $ROBUSTSCALE_STORE for another "
        "file or a postgresql:// URL.")
    rsub = p.add_subparsers(dest="runs_command", metavar="<action>")

    def common(q: argparse.ArgumentParser) -> None:
        q.add_argument("--store", default=None, help="store URL or .db path (default: $ROBUSTSCALE_STORE, "
                       "else <output-dir>/runs.db)")
        q.add_argument("--output-dir", default="runs", help="where the default runs.db lives (default: runs)")

    q = rsub.add_parser("list", help="table of runs (all statuses), filtered by --where",
                        description="List runs with status, method, compute and accuracies (percent).")
    common(q)
    q.add_argument("--where", action="append", default=[], metavar="EXPR",
                   help="filter like method=pgd, epochs>=100, model=a,b, status=done, name~wrn (repeatable; AND)")
    q.add_argument("--json", action="store_true", help="print JSON records instead of the table")
    q.set_defaults(handler="run_list")

    q = rsub.add_parser("show", help="one run: config, status, compute, epochs, evaluations",
                        description="Print one run of the store: its config, status, compute (FLOPs, time, energy, "
                        "cost), its per-epoch checks and its evaluations with their image counts and intervals.")
    common(q)
    q.add_argument("name", help="run name")
    q.add_argument("--json", action="store_true", help="print JSON instead of text")
    q.set_defaults(handler="run_show")

    q = rsub.add_parser("export", help="write runs as CSV, Parquet or JSON with the run-record columns (for fit)",
                        description="Write one row per run with the columns of robustscale.schema.RUN_COLUMNS, "
                        "ready for `robustscale fit`. Only done runs unless --status says otherwise.")
    common(q)
    q.add_argument("-o", "--output", required=True, help="output file (.csv, .parquet or .json)")
    q.add_argument("--format", choices=EXPORT_FORMATS, default=None,
                   help="file format (default: from the file suffix; csv for a file without one)")
    q.add_argument("--where", action="append", default=[], metavar="EXPR", help="filter (see `runs list`)")
    q.add_argument("--status", default="done", help="only runs with this status (queued, running, done, failed, "
                   "interrupted, stale); 'all' for every run (default: done)")
    q.add_argument("--json", action="store_true", help="print a JSON note of what was written")
    q.set_defaults(handler="run_export")

    q = rsub.add_parser("sync", help="rebuild store rows from run folders (after a store outage, or stale rows)",
                        description="Read each RUN_DIR (config.yaml, metrics.jsonl, summary.json, eval/*.json) and "
                        "make its rows in the store match: done, interrupted (resumable) or failed. Without "
                        "RUN_DIR, every stale row (running, but its process is gone) is reconciled from its folder. "
                        "A run alive in another process is left alone.")
    q.add_argument("run_dirs", nargs="*", metavar="RUN_DIR", help="run folders (default: the stale rows' folders)")
    q.add_argument("--store", default=None, help="store URL or .db path (default: the one each run's config "
                   "uses: its store, $ROBUSTSCALE_STORE, else <output_dir>/runs.db)")
    q.add_argument("--output-dir", default="runs", help="without RUN_DIR: where the default runs.db lives")
    q.add_argument("--json", action="store_true", help="print JSON records instead of lines")
    q.set_defaults(handler="run_sync")

    q = rsub.add_parser("import", help="add or refresh the runs of folders of run folders (--from-dirs)",
                        description="Sync every run folder under each DIR into the store (see `runs sync`).")
    q.add_argument("--from-dirs", action="append", required=True, metavar="DIR",
                   help="a folder of run folders (or one run folder); repeatable")
    q.add_argument("--store", default=None, help="store URL or .db path (default: the one each run's config uses)")
    q.add_argument("--json", action="store_true", help="print JSON records instead of lines")
    q.set_defaults(handler="run_import_dirs")

    q = rsub.add_parser("import-paper", help="import the 2024 study's 319 runs (source debenedetti2024; idempotent)",
                        description="Load the published results of Debenedetti et al. 2024 through "
                        "robustscale.scaling.load_paper_runs and upsert them as done runs with source "
                        f"{PAPER_SOURCE}. Running it again changes nothing.")
    common(q)
    src = q.add_mutually_exclusive_group()
    src.add_argument("--path", default=None, help="the study's results.csv")
    src.add_argument("--url", default=None, help="URL of the study's results.csv")
    q.add_argument("--json", action="store_true", help="print the counts as JSON")
    q.set_defaults(handler="run_import_paper")

    p.set_defaults(handler=None)
