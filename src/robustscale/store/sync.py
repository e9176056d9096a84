"""Rebuild store rows from run folders: the folder is the source of truth, the store an index of them.

:func:`sync_run_dir` reads a folder (``store/folder.py``) and makes the run's rows match in one
transaction (``robustscale runs sync RUN_DIR...``, ``runs import --from-dirs DIR``): the run row,
its epochs, and its evaluations (one per claim file; the headline by ``schema.headline``, the rule
of the live updates too). :func:`reconcile_stale` does it for every row whose process is gone. A
run still alive in another process is never touched.

The transactions behind ``Store.sync_run`` (:func:`folder_rows_tx`) and ``Store.import_frame``
(:func:`frame_rows_tx`, a DataFrame of finished runs) are here too.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from sqlalchemy import Connection, delete, select, update

from ..errors import UserError
from ..schema import HEADLINE_COLUMNS
from .folder import RunFolder, read_run_folder  # noqa: F401  (RunFolder: importable here, as before)
from .liveness import effective_status, process_identity, same_process, utcnow
from .records import (LOCAL_SOURCE, coerce_value, config_parts, flatten, frame_records, identity, jsonable,
                      same)
from .rows import check_claim, check_same_config, insert_epoch, refresh_headline, select_run, upsert_evaluation
from .tables import RUN_VALUE_COLUMNS, STALE, RunStatus, epochs, evaluations, runs


@dataclass
class SyncResult:
    name: str
    run_dir: str
    outcome: str  # inserted / updated / alive (left alone) / missing (folder gone)
    status: str | None = None
    epochs: int = 0
    evaluations: int = 0

    def line(self) -> str:
        if self.outcome == "alive":
            return f"{self.name}: running in another process; left alone"
        if self.outcome == "missing":
            return f"{self.name}: run folder {self.run_dir} not found; left as it is"
        return (f"{self.name}: {self.status} ({self.outcome}; {self.epochs} epoch(s), "
                f"{self.evaluations} evaluation(s)) from {self.run_dir}")


def sync_run_dir(store, run_dir: str | os.PathLike) -> SyncResult:
    """Make ``store``'s rows of the run in ``run_dir`` match the folder."""
    folder = read_run_folder(run_dir)
    outcome = store.sync_run(folder.cfg, folder.path, status=folder.status, summary=folder.summary,
                             epoch_rows=folder.epochs, claims=folder.claims, error=folder.error)
    return SyncResult(folder.name, str(folder.path), outcome, folder.status.value, len(folder.epochs),
                      len(folder.claims))


def run_dirs_under(root: str | os.PathLike) -> list[Path]:
    """``root`` itself if it is a run folder, else its sub-folders that are (hold a config.yaml)."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"folder not found: {root}")
    if (root / "config.yaml").is_file():
        return [root]
    return sorted(p for p in root.iterdir() if p.is_dir() and (p / "config.yaml").is_file())


def reconcile_stale(store) -> list[SyncResult]:
    """Sync every ``stale`` row (running, process gone) from its run folder."""
    out = []
    for row in store.list_runs([f"status={STALE}"]):
        run_dir = row.get("run_dir")
        if not run_dir or not Path(run_dir).is_dir():
            out.append(SyncResult(row["name"], str(run_dir), "missing"))
            continue
        out.append(sync_run_dir(store, run_dir))
    return out


def sync_all(store, run_dirs: Iterable[str | os.PathLike]) -> list[SyncResult]:
    return [sync_run_dir(store, d) for d in run_dirs]


# ---------------------------------------------------------------------- the transactions
def folder_rows_tx(cfg, run_dir: str | os.PathLike, *, status: RunStatus, summary: Mapping[str, Any] | None,
                   epoch_rows: Iterable[Mapping[str, Any]] = (), claims: Iterable[Mapping[str, Any]] = (),
                   error: str | None = None) -> Callable[[Connection], str]:
    """The transaction of :meth:`Store.sync_run` (bad claims raise UserError here, before it runs)."""
    cfg_dict, name, chash = config_parts(cfg)
    status = RunStatus(status)
    summary = jsonable(dict(summary or {}))
    rows = [jsonable(dict(r)) for r in epoch_rows]
    claims = [jsonable(dict(c)) for c in claims]
    for claim in claims:
        check_claim(name, claim)
    now = utcnow()
    me = process_identity()

    def tx(conn: Connection) -> str:
        row = select_run(conn, name, lock=True)
        if row is not None:
            check_same_config(row, name, chash)
            if effective_status(row, now) == RunStatus.RUNNING.value and not same_process(row, me):
                return "alive"
        values: dict[str, Any] = {
            "status": status.value, "config_hash": chash, "config": cfg_dict, "source": LOCAL_SOURCE,
            "run_dir": str(Path(run_dir).resolve()), "error": None if status is RunStatus.DONE else error,
            "epochs_done": len(rows), "summary": summary or None, "heartbeat_at": None, **identity(cfg_dict),
        }
        if status is not RunStatus.RUNNING:
            values["finished_at"] = (row or {}).get("finished_at") or now
        flat = flatten(summary)
        for key in RUN_VALUE_COLUMNS:
            if key not in HEADLINE_COLUMNS:  # those come from the evaluations, below
                values[key] = coerce_value(key, flat.get(key))
        if row is None:
            conn.execute(runs.insert().values(name=name, created_at=now, **values))
            row = select_run(conn, name, lock=True)
            outcome = "inserted"
        else:
            conn.execute(update(runs).where(runs.c.id == row["id"]).values(**values))
            outcome = "updated"
        conn.execute(delete(epochs).where(epochs.c.run_id == row["id"]))
        for r in rows:
            insert_epoch(conn, row["id"], r["epoch"], r, now)
        # The folder's claims are the run's evaluations: a row whose claim file is gone goes too.
        conn.execute(delete(evaluations).where(evaluations.c.run_id == row["id"]))
        for claim in claims:
            upsert_evaluation(conn, row["id"], claim, now)
        refresh_headline(conn, row["id"])
        return outcome

    return tx


def frame_rows_tx(frame, source: str) -> Callable[[Connection], dict[str, int]]:
    """The transaction of :meth:`Store.import_frame` (a bad frame raises UserError here, before it runs)."""
    records = frame_records(frame, source)
    now = utcnow()
    stats = {"inserted": 0, "updated": 0, "unchanged": 0}

    def tx(conn: Connection) -> dict[str, int]:
        counts = dict.fromkeys(stats, 0)
        existing = {r["name"]: r for r in conn.execute(select(runs).where(
            runs.c.name.in_([rec["name"] for rec in records]))).mappings()}
        for rec in records:
            old = existing.get(rec["name"])
            if old is None:
                conn.execute(runs.insert().values(created_at=now, started_at=None, finished_at=now, **rec))
                counts["inserted"] += 1
                continue
            if old["source"] != source:
                raise UserError(f"run name {rec['name']!r} already exists in the store from source "
                                f"{old['source']!r}; nothing imported")
            changed = {k: v for k, v in rec.items() if not same(old.get(k), v)}
            if changed:
                conn.execute(update(runs).where(runs.c.id == old["id"]).values(**changed))
                counts["updated"] += 1
            else:
                counts["unchanged"] += 1
        return counts

    return tx
