"""Read a table of runs (CSV, Parquet, the 2024 study's results.csv, or a results store).

Everything ``fit`` / ``extrapolate`` / ``report`` read goes through :func:`load_runs`, which
returns a DataFrame whose columns follow ``schema.RUN_COLUMNS`` (paper aliases such as ``at``
are renamed to ``method``; other tables are mapped with ``mapping={"old": "new"}``).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Mapping

import pandas as pd

from ..errors import UserError
from ..schema import COLLAPSE_THRESHOLD_ACC, PAPER_ALIASES, resolve_column
from ..store import open_store
from .published_runs import is_paper_table, paper_to_runs

STORE_PREFIXES = ("sqlite://", "postgresql://", "postgresql+psycopg://", "postgres://")


def parse_mapping(items: Iterable[str] | None) -> dict[str, str]:
    """``["old=new", "a=b,c=d"]`` -> ``{"old": "new", "a": "b", "c": "d"}`` (UserError on bad items)."""
    out: dict[str, str] = {}
    for item in items or []:
        for part in str(item).split(","):
            if not part.strip():
                continue
            old, eq, new = part.partition("=")
            if not eq or not old.strip() or not new.strip():
                raise UserError(f"invalid --map {part!r}; expected old=new, e.g. --map flops=train_flops")
            out[old.strip()] = new.strip()
    return out


def is_store_source(source: str) -> bool:
    text = str(source)
    return text.startswith(STORE_PREFIXES) or text.endswith(".db")


def load_runs(source, mapping: Mapping[str, str] | None = None):
    """Runs from ``source`` as a DataFrame in the run schema.

    ``source``: a DataFrame (copied), a ``.csv`` / ``.parquet`` path, the study's ``results.csv``
    (recognised by its columns and converted by :func:`load_paper_runs`), or a results store
    (``sqlite:///...``, ``postgresql://...`` or a ``*.db`` path: ``open_store(url).runs_frame()``).
    ``mapping`` renames columns first (``{"old": "new"}``); then paper aliases (``at`` ->
    ``method``, ...) are applied where our name is absent. A ``collapsed`` column is added from
    ``aa_robust_acc`` when missing.
    """
    if isinstance(source, pd.DataFrame):
        df = source.copy()
    else:
        text = os.fspath(source) if isinstance(source, os.PathLike) else str(source)
        if is_store_source(text):
            df = _load_store(text)
        elif "://" in text:  # a URL of a kind we cannot read: say which, not "file not found"
            scheme = text.split("://", 1)[0]
            raise UserError(f"unsupported runs source scheme {scheme + '://'!r} in {text}; valid: sqlite:///PATH, "
                            f"postgresql://..., a *.db store, or a .csv/.tsv/.parquet file")
        else:
            df = _load_file(Path(text))
    if mapping:
        missing = [old for old in mapping if old not in df.columns]
        if missing:
            raise UserError(f"--map names column(s) {', '.join(missing)} that the table lacks; "
                            f"columns: {', '.join(map(str, df.columns))}")
        df = df.rename(columns=dict(mapping))
    if is_paper_table(df):
        df = paper_to_runs(df)
    renames = {old: new for old, new in PAPER_ALIASES.items() if old in df.columns and new not in df.columns}
    df = df.rename(columns=renames)
    if "collapsed" not in df.columns and "aa_robust_acc" in df.columns:
        aa = pd.to_numeric(df["aa_robust_acc"], errors="coerce")
        df["collapsed"] = (aa < COLLAPSE_THRESHOLD_ACC).where(aa.notna())
    return df


def _load_file(path: Path):
    if not path.exists():
        raise UserError(f"runs table not found: {path}")
    suffix = path.suffix.lower()
    try:
        if suffix in (".csv", ".tsv", ".txt"):
            return pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",")
        if suffix in (".parquet", ".pq"):
            return pd.read_parquet(path)
    except (ValueError, OSError, pd.errors.ParserError) as exc:
        raise UserError(f"cannot read runs table {path}: {str(exc).splitlines()[0]}") from None
    raise UserError(f"unsupported runs table {path.name!r}; valid: .csv, .tsv, .parquet, a *.db store, "
                    f"sqlite:///path or postgresql://URL")


def _load_store(url: str):
    return open_store(url, readonly=True).runs_frame()


def check_fit_columns(df, columns: Iterable[str], accuracies: Iterable[str] = ()) -> None:
    """Refuse a table whose fitted columns hold text (``abc``) or infinities, naming the column and count
    (empty cells are missing values: the fit leaves those rows out and says how many), and accuracies
    given as fractions: every value <= 1 (accuracies are percentages, 0-100; a clean accuracy below 1 %
    is below chance and a robust one below the collapse threshold, so such rows could not be fitted anyway)."""
    import numpy as np
    import pandas as pd

    for col in dict.fromkeys(c for c in columns if c in df.columns):
        raw = df[col]
        values = pd.to_numeric(raw, errors="coerce").astype(float)
        bad = raw.notna() & ~np.isfinite(values)
        if bad.any():
            shown = ", ".join(repr(str(v)) for v in list(dict.fromkeys(raw[bad].astype(str)))[:3])
            raise UserError(f"column {col!r}: {int(bad.sum())} of {len(raw)} value(s) are not finite numbers "
                            f"({shown}); fix them, or empty those cells to leave the rows out")
    for col in dict.fromkeys(c for c in accuracies if c in df.columns):
        values = pd.to_numeric(df[col], errors="coerce").dropna()
        if len(values) and 0 < values.max() <= 1:
            raise UserError(f"column {col!r} looks like fractions (all {len(values)} values <= 1, max "
                            f"{values.max():g}); accuracies are percentages (0-100): multiply the column by 100")


def require_columns(df, columns: Iterable[str], what: str = "runs table") -> None:
    """UserError naming the missing columns and listing the ones that exist."""
    missing = [c for c in columns if c not in df.columns]
    if missing:
        have = ", ".join(map(str, df.columns))
        raise UserError(f"{what} lacks column(s) {', '.join(missing)}; columns: {have} "
                        f"(rename with --map old=new)")


def resolve_columns(names: Iterable[str] | str | None) -> list[str]:
    """``"at,synthetic_data"`` or a list -> our column names (paper aliases resolved)."""
    if names is None:
        return []
    if isinstance(names, str):
        names = [n for n in names.split(",")]
    return [resolve_column(n.strip()) for n in names if n and n.strip()]
