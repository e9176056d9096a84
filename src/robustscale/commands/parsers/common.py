"""Arguments several commands share, so that one concept has one flag name everywhere."""
from __future__ import annotations

import argparse


class _PaperRuns(argparse.Action):
    """``--paper-runs [PATH]``: sets ``paper_runs`` to True and, with PATH, ``path`` (the local results.csv)."""

    def __call__(self, parser, namespace, values, option_string=None):
        namespace.paper_runs = True
        if values is not None:
            namespace.path = values


def add_paper_runs_argument(p, what: str, group=None) -> None:
    """``--paper-runs [PATH]`` (the 2024 study's published results.csv; downloaded without PATH).

    ``--path PATH`` is the older spelling (plan, study), kept as a hidden alias.
    """
    (group or p).add_argument("--paper-runs", nargs="?", default=False, metavar="PATH", action=_PaperRuns,
                   help=f"{what} the 2024 study's published runs: PATH, a local copy of its results.csv "
                        "(default: download the public file)")
    p.add_argument("--path", default=None, help=argparse.SUPPRESS)


def add_flops_per_second_argument(p, default_help: str, *, old_name: str | None = None, dest: str | None = None) -> None:
    """``--flops-per-second FLOPS``: achieved training FLOP/s per device, to turn FLOPs into device-hours."""
    names = ["--flops-per-second"] + ([old_name] if old_name else [])  # the old name: a deprecated alias
    p.add_argument(*names, type=float, default=None, metavar="FLOPS", dest=dest or "flops_per_second",
                   help=f"achieved training FLOP/s per device, in measured FLOPs (the `achieved` figure of "
                        f"`robustscale bench`), to turn FLOPs into device-hours (default: {default_help})")


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends ``(default: X)`` where there is a default to state: not for switches (``--json``) or None."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False or (
                action.nargs == 0 and not isinstance(action, argparse.BooleanOptionalAction)):
            return action.help
        return super()._get_help_string(action)
