"""One entry point: ``robustscale <command>``.

Each command lives in ``robustscale.commands.<name>`` and exposes ``add_parser(subparsers)``.

Exit codes: 0 done; 2 a fault the user can fix (a bad value, an unwritable path, a missing
device, an unreachable server: ``UserError``, one line ``error: ...``); 1 a bug (the traceback
is kept); 130 interrupted (Ctrl-C, or SIGTERM where a command handles it). Warnings raised by
robustscale itself print as one ``warning: ...`` line, without Python's source excerpt.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import re
import sys
import warnings

from . import __version__
from .errors import DISK_ERRNOS, UserError, disk_error

# Order is the order shown in --help.
COMMANDS = [
    "models", "datasets", "train", "evaluate", "export", "flops", "bench",
    "fit", "extrapolate", "backtest", "plan", "report", "runs", "sweep", "study", "leaderboard",
]


class Parser(argparse.ArgumentParser):
    """argparse with errors in one line that names the (sub-)command's help: ``robustscale fit: error: ...``."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    """Every command's parser, from ``commands/parsers/<name>.py``, which import nothing heavy.

    This is the CLI's lazy-import mechanism (docs/architecture.md): a command's implementation,
    ``commands/<name>.py``, imports torch, pandas and the library at its top, and is imported by
    :func:`main` only when that command runs; its parser names the function to call
    (``set_defaults(handler="run")``). ``--help``, ``--version`` and every ``<command> --help``
    therefore answer without importing torch or timm.
    """
    parser = Parser(
        prog="robustscale",
        description="How much compute does adversarial robustness cost? Train robust timm models, "
        "count FLOPs/kWh/USD, evaluate with AutoAttack, fit scaling laws.",
    )
    parser.add_argument("--version", action="version", version=f"robustscale {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="<command>")
    for name in COMMANDS:
        importlib.import_module(f"robustscale.commands.parsers.{name}").add_parser(sub)
    return parser


def _subparser(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.ArgumentParser:
    """The innermost parser the command line chose (``runs show`` -> the ``show`` parser), for its errors."""
    chosen = parser
    for dest in ("command", "runs_command", "sweep_command"):
        name = getattr(args, dest, None)
        actions = [a for a in chosen._actions if isinstance(a, argparse._SubParsersAction)]
        if name is None or not actions or name not in actions[0].choices:
            break
        chosen = actions[0].choices[name]
    return chosen


# argparse reads "-1" and "-0.5" as values but "-1e15" or "-inf" as an unknown option ("expected one argument").
_NEGATIVE_NUMBER = re.compile(r"-(\d+\.?\d*|\.\d+)[eE][-+]?\d+|-inf(inity)?|-nan", re.IGNORECASE)


def glue_negative_numbers(argv: list[str]) -> list[str]:
    """``--opt -1e15`` -> ``--opt=-1e15``: the option gets its value and the command's own check says what is
    wrong with it (a negative budget, ...)."""
    out: list[str] = []
    for token in argv:
        prev = out[-1] if out else ""
        if prev.startswith("--") and "=" not in prev and _NEGATIVE_NUMBER.fullmatch(token):
            out[-1] = f"{prev}={token}"
        else:
            out.append(token)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(glue_negative_numbers(sys.argv[1:] if argv is None else list(argv)))
    command = _subparser(parser, args)
    if extra:  # only commands that take `--key value` config overrides (e.g. train) accept unknown flags
        if not getattr(args, "accepts_overrides", False):
            command.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = extra
    if args.command is None or getattr(args, "handler", None) is None:  # no command, or `runs` without an action
        command.print_help()
        return 0
    try:
        with _one_line_warnings():
            handler = getattr(importlib.import_module(f"robustscale.commands.{args.command}"), args.handler)
            return int(handler(args) or 0)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:  # a full, over-quota or read-only disk under any command: one line naming the path
        if exc.errno not in DISK_ERRNOS:
            raise
        err = disk_error(exc if exc.filename else OSError(exc.errno, exc.strerror, "(a file)"))
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `robustscale runs list | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


@contextlib.contextmanager
def _one_line_warnings():
    """Our own warnings as ``warning: <message>`` (they are for the user, not a source excerpt)."""
    previous = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if os.path.abspath(str(filename)).startswith(_PACKAGE_DIR) or category.__module__.startswith("robustscale"):
            from tqdm import tqdm

            tqdm.write(f"warning: {message}", file=file or sys.stderr)  # on its own line, under any progress bar
        else:
            previous(message, category, filename, lineno, file, line)

    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = previous


if __name__ == "__main__":
    raise SystemExit(main())
