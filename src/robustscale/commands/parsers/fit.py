"""The parser of ``robustscale fit RUNS`` (built for every start of the CLI: no heavy imports; see cli.py)."""
from __future__ import annotations

import argparse

LAW_CHOICES = ("power", "error-power", "saturating", "chinchilla")
# scaling.identified.SEED_SD_POINTS, which imports numpy; tests/test_cli.py checks they agree.
SEED_SD_POINTS_HELP = 1.0
LAW_HELP = ("power: y = C x^alpha (least squares in log space); error-power: 100 - y = A x^-alpha (least "
            "squares on log error; the error falls towards 0); saturating: 100 - y = E + A x^-alpha "
            "(accuracy saturates at 100 - E; Huber fit on log error); chinchilla: 100 - y = E + A/N^alpha + "
            "B/D^beta with N = model_parameters, D = train_images_seen")


def add_common_arguments(p: argparse.ArgumentParser, default_law: str, default_bootstrap: int) -> None:
    """Arguments shared by fit, extrapolate and report."""
    p.add_argument("runs", metavar="RUNS",
                   help="runs table: .csv/.parquet (schema.RUN_COLUMNS or the 2024 study's results.csv), "
                        "a results store (sqlite:///runs.db, postgresql://..., or a *.db path)")
    p.add_argument("--x", default=None,
                   help="compute column (default train_flops [FLOPs]; chinchilla: model_parameters,train_images_seen)")
    p.add_argument("--y", default=None,
                   help="metric column (default: on a results store, each training method its own metric as a "
                        "study judges it: clean_acc for standard training, for the others the strongest attack's "
                        "robust accuracy measured on enough runs for a law, aa > apgd_ce > pgd; on any other table "
                        "aa_robust_acc [%%])")
    p.add_argument("--law", choices=LAW_CHOICES, default=None,
                   help=f"law form (default: error-power on a results store; otherwise {default_law}; saturating "
                        f"with --frontier). {LAW_HELP}")
    p.set_defaults(law_default=default_law)
    p.add_argument("--group-by", default=None, metavar="COLS",
                   help="fit one law per group, e.g. at,synthetic_data (paper aliases accepted)")
    p.add_argument("--exclude-below", type=float, default=None, metavar="Y",
                   help="drop runs whose y is below Y (default: 10 for robust accuracies, i.e. collapsed runs; "
                        "0 keeps them)")
    p.add_argument("--bootstrap", type=int, default=default_bootstrap, metavar="B",
                   help=f"case-resampling bootstrap resamples for the intervals (default {default_bootstrap}; 0: none)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    p.add_argument("--level", type=float, default=0.95, help="interval level (default 0.95)")
    p.add_argument("--frontier", action="store_true",
                   help="fit only the Pareto frontier (best y at or below each x), recomputed in every resample")
    p.add_argument("--map", action="append", default=[], metavar="OLD=NEW",
                   help="rename a column of RUNS (repeatable or comma-separated), e.g. --map flops=train_flops")
    p.add_argument("--jobs", type=int, default=None, help="bootstrap worker processes (default: the idle cores)")
    add_seed_sd_argument(p)


def add_seed_sd_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed-sd", type=float, default=None, metavar="POINTS",
                   help=f"seed-to-seed SD of one run's accuracy that the lack-of-fit test allows beside each point's "
                        f"binomial noise (default: measured from configurations run with several seeds, else "
                        f"{SEED_SD_POINTS_HELP:g} point, assumed)")


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "fit", help="fit robust accuracy (or cost) vs compute: power / saturating / chinchilla laws",
        description="Fit how a metric (default AutoAttack accuracy, %) grows with compute (default total "
                    "training FLOPs), per group, with case-resampling bootstrap intervals. " + LAW_HELP)
    add_common_arguments(p, default_law="power", default_bootstrap=1000)
    p.add_argument("--json", action="store_true", help="print machine-readable JSON instead of the table")
    p.set_defaults(handler="run")
