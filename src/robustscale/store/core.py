"""The results store: runs, per-epoch metrics and evaluations in SQLite or PostgreSQL.

``Store`` is safe to use from several processes at once. On SQLite every transaction starts
with ``BEGIN IMMEDIATE`` (writers queue on the database lock instead of failing halfway), the
journal is WAL (readers never block the writer) and a busy timeout makes waiting writers retry;
on PostgreSQL the row being changed is locked ``FOR UPDATE``. Either way a transaction that
still loses a race (a lock timeout, two processes inserting the same new name) is retried.

Commands that only read open the store ``readonly``: SQLite through a ``mode=ro`` URI (so a
store on read-only media or in a folder the user cannot write is still readable), PostgreSQL
with read-only transactions. The store is an index of the run folders, which are the source of
truth: :meth:`Store.sync_run` rebuilds a run's rows from its folder (``store/sync.py``).
"""
from __future__ import annotations

import datetime as dt
import enum
import json
import math
import os
import platform
import socket
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, TypeVar

from sqlalchemy import Connection, create_engine, delete, event, func, select, text, update
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from ..errors import UserError
from ..schema import COLLAPSE_THRESHOLD_ACC, RUN_COLUMNS
from .location import mask_url, resolve_store_url, sqlite_path
from .migrations import check_version, ensure_schema, read_version
from .tables import EPOCH_VALUE_COLUMNS, RUN_VALUE_COLUMNS, STALE, RunStatus, epochs, evaluations, runs

T = TypeVar("T")

LOCAL_SOURCE = "robustscale"
BUSY_TIMEOUT_S = 60.0
STALE_AFTER_S = float(os.environ.get("ROBUSTSCALE_STALE_AFTER_S", 600))  # no heartbeat for this long: stale
# Attacks whose result fills the run's headline columns (the others stay in `evaluations`).
AA_ATTACKS = ("aa-standard", "autoattack", "aa")
PGD_ATTACKS = ("pgd",)
# Columns of `runs` copied out of the config (SQL-filterable identity of the run).
IDENTITY_COLUMNS = ("dataset", "model", "method", "attack_steps", "eps", "norm", "epochs", "seed", "synthetic_data")
_EPS_TOL = 1e-6


class StoreNotFound(UserError):
    """A read-only command was pointed at a store that does not exist (yet)."""


class StoreUnreachable(UserError):
    """The store's server (or file) cannot be reached right now; the run folders are unaffected."""


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


def open_store(url: str | os.PathLike | None = None, *, output_dir: str | os.PathLike | None = None,
               create: bool = True, readonly: bool = False) -> "Store":
    """Open (and create or migrate) the store at ``url`` (see ``resolve_store_url``).

    ``create=False`` refuses to create a SQLite file that does not exist yet; ``readonly=True``
    (reading commands; implies ``create=False``) opens it without ever writing to it.
    Raises UserError for an unreachable server, a missing file, or an unsupported URL.
    """
    resolved = resolve_store_url(url, output_dir)
    if resolved is None:
        raise UserError(f"the results store is disabled (store={url or os.environ.get('ROBUSTSCALE_STORE')!r}); "
                        f"pass --store URL")
    return Store(resolved, create=create and not readonly, readonly=readonly)


class Store:
    """A results store at a SQLAlchemy URL. Methods take and return plain dicts."""

    def __init__(self, url: str, *, create: bool = True, readonly: bool = False):
        self.url = url
        self.display_url = mask_url(url)
        self.readonly = readonly
        create = create and not readonly
        path = self.path = sqlite_path(url)
        self.is_sqlite = url.startswith("sqlite")
        if path is not None:
            if not path.exists():
                if not create:
                    raise StoreNotFound(f"no results store at {path} (file not found); give --store PATH_OR_URL "
                                        f"or run something first")
                try:
                    path.parent.mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    raise UserError(f"cannot create store folder {path.parent}: {exc.strerror}") from None
        self.engine = self._make_engine(url)
        self.create = create
        self.schema_version = self._run(self._init_schema)

    def _init_schema(self, conn: Connection) -> int:
        if not self.create and read_version(conn) is None:
            raise StoreNotFound(f"no results store at {self.display_url} (empty database); give --store "
                                f"PATH_OR_URL or run something first")
        if self.readonly:
            return check_version(conn, self.display_url)
        if conn.dialect.name == "postgresql":
            # Serialise schema creation between processes opening a fresh database at once
            # (SQLite's BEGIN IMMEDIATE already does).
            conn.execute(text("SELECT pg_advisory_xact_lock(7426031)"))
        return ensure_schema(conn, self.display_url)

    # ------------------------------------------------------------------ engine and transactions
    def _make_engine(self, url: str):
        if self.is_sqlite:
            readonly = self.readonly and self.path is not None
            if readonly:
                engine = create_engine("sqlite://", creator=lambda: _connect_sqlite_readonly(self.path))
            else:
                engine = create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_S, "check_same_thread": False})

            @event.listens_for(engine, "connect")
            def _on_connect(dbapi_conn, _record):
                dbapi_conn.isolation_level = None  # the driver must not open transactions; we BEGIN IMMEDIATE
                cur = dbapi_conn.cursor()
                cur.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
                if not readonly:
                    cur.execute("PRAGMA journal_mode = WAL")
                    cur.execute("PRAGMA synchronous = NORMAL")
                cur.execute("PRAGMA foreign_keys = ON")
                cur.close()

            @event.listens_for(engine, "begin")
            def _on_begin(conn):
                conn.exec_driver_sql("BEGIN" if readonly else "BEGIN IMMEDIATE")

            return engine
        connect_args: dict[str, Any] = {"connect_timeout": 10}
        if self.readonly:
            connect_args["options"] = "-c default_transaction_read_only=on"
        try:
            return create_engine(url, pool_pre_ping=True, connect_args=connect_args)
        except Exception as exc:  # noqa: BLE001  (bad URL syntax, missing driver)
            raise UserError(f"cannot use store {self.display_url}: {_first_line(exc)}") from None

    def _run(self, fn: Callable[[Connection], T], *, attempts: int = 8) -> T:
        """Run ``fn(conn)`` in one transaction; retry lost races; unreachable store -> UserError."""
        delay = 0.05
        for attempt in range(attempts):
            try:
                with self.engine.begin() as conn:
                    return fn(conn)
            except IntegrityError:
                if attempt == attempts - 1:
                    raise
            except OperationalError as exc:
                if not _is_transient(exc) or attempt == attempts - 1:
                    if _is_connect_error(exc):
                        raise StoreUnreachable(f"cannot reach store {self.display_url}: {_first_line(exc.orig)}; "
                                               f"{self._reach_hint()}") from None
                    raise UserError(f"store {self.display_url}: {_first_line(exc.orig)}") from None
            except DBAPIError as exc:
                if not _is_transient(exc) or attempt == attempts - 1:
                    raise UserError(f"store {self.display_url}: {_first_line(exc.orig)}") from None
            time.sleep(delay)
            delay = min(delay * 2, 2.0)
        raise AssertionError("unreachable")

    def _reach_hint(self) -> str:
        if self.is_sqlite:
            return "check that the file and its folder are readable (and writable, for commands that record)"
        return "start the server or fix --store / $ROBUSTSCALE_STORE (or pass --store none to record nothing)"

    def close(self) -> None:
        self.engine.dispose()

    def __repr__(self) -> str:
        return f"Store({self.display_url!r})"

    # ------------------------------------------------------------------ writes: run lifecycle
    def start_run(self, cfg, run_dir: str | os.PathLike | None, *, resumed: bool = False, sweep: str | None = None,
                  status: RunStatus = RunStatus.RUNNING) -> None:
        """Record that ``cfg.name`` starts (``running``) or is waiting to start (``queued``).

        A fresh start (``resumed=False``, status running) clears the run's earlier epochs,
        evaluations and results; a resume keeps them. Raises UserError when the name is taken
        by a different config or the run is alive in another process.
        """
        cfg_dict, name, chash = _config_parts(cfg)
        known = _known_hashes(cfg)
        status = RunStatus(status)
        now = utcnow()
        me = process_identity()

        def tx(conn: Connection) -> None:
            row = _select_run(conn, name, lock=True)
            if row is not None:
                _check_same_config(row, name, chash, known)
                if effective_status(row, now) == RunStatus.RUNNING.value and not _same_process(row, me):
                    if status is RunStatus.QUEUED:
                        return
                    raise UserError(f"run {name!r} is already running on {row['host']} (pid {row['pid']}, "
                                    f"heartbeat {_ago(row['heartbeat_at'], now)}); wait for it or pick another name")
                if status is RunStatus.QUEUED and row["status"] == RunStatus.DONE.value:
                    return  # retraining a done run needs an explicit start
            values: dict[str, Any] = {
                "status": status.value, "config_hash": chash, "config": cfg_dict, "source": LOCAL_SOURCE,
                "run_dir": None if run_dir is None else str(Path(run_dir).resolve()),
                **_identity(cfg_dict),
            }
            if sweep is not None:
                values["sweep"] = sweep
            if status is RunStatus.RUNNING:
                values.update(**me, **_versions(), heartbeat_at=now, finished_at=None, error=None)
                if not resumed or row is None or row["started_at"] is None:
                    values["started_at"] = now
            if row is None:
                conn.execute(runs.insert().values(name=name, created_at=now, **values))
                return
            if status is RunStatus.RUNNING and not resumed:
                conn.execute(delete(epochs).where(epochs.c.run_id == row["id"]))
                conn.execute(delete(evaluations).where(evaluations.c.run_id == row["id"]))
                values.update({k: None for k in RUN_VALUE_COLUMNS}, summary=None, epochs_done=0)
            conn.execute(update(runs).where(runs.c.id == row["id"]).values(**values))

        self._run(tx)

    def set_job(self, name: str, executor: str, job_id: str | None) -> None:
        """Remember which executor job runs ``name`` (so a second sweep does not submit it twice)."""
        self._run(lambda conn: conn.execute(
            update(runs).where(runs.c.name == name).values(executor=executor, job_id=job_id)))

    def heartbeat(self, name: str) -> None:
        """Refresh ``heartbeat_at`` of a running run (the training process calls this periodically)."""
        now = utcnow()
        self._run(lambda conn: conn.execute(
            update(runs).where(runs.c.name == name, runs.c.status == RunStatus.RUNNING.value)
            .values(heartbeat_at=now)))

    def record_epoch(self, name: str, epoch: int, metrics: Mapping[str, Any]) -> None:
        """Store (or replace, on resume) the metrics of one epoch; refresh the heartbeat.

        Compute totals found in ``metrics`` (``wall_seconds``, ``train_flops``, ``device_hours``,
        ``energy_kwh``, ``train_images_seen``) update the run row so that ``sweep status`` shows
        what a running run has spent so far; its status is unchanged.
        """
        metrics = _jsonable(dict(metrics))
        now = utcnow()

        def tx(conn: Connection) -> None:
            row = _select_run(conn, name, lock=True)
            if row is None:
                raise UserError(f"no run named {name!r} in store {self.display_url}; record_run_start first")
            conn.execute(delete(epochs).where(epochs.c.run_id == row["id"], epochs.c.epoch == int(epoch)))
            _insert_epoch(conn, row["id"], epoch, metrics, now)
            n = conn.execute(select(func.count()).select_from(epochs).where(epochs.c.run_id == row["id"])).scalar()
            values: dict[str, Any] = {"epochs_done": int(n)}
            if row["status"] == RunStatus.RUNNING.value:
                values["heartbeat_at"] = now
            if row["status"] != RunStatus.DONE.value:
                for key in ("wall_seconds", "train_flops", "device_hours", "energy_kwh", "train_images_seen"):
                    if metrics.get(key) is not None:
                        values[key] = _coerce_value(key, metrics[key])
            conn.execute(update(runs).where(runs.c.id == row["id"]).values(**values))

        self._run(tx)

    def finish_run(self, name: str, summary: Mapping[str, Any] | None = None, *,
                   status: RunStatus = RunStatus.DONE, error: str | None = None, cfg=None,
                   run_dir: str | os.PathLike | None = None) -> None:
        """Set the final status; with ``done``, write the summary's compute and metrics in the same transaction.

        ``cfg`` lets a run that was never started in this store (e.g. the store was added later)
        be inserted whole.
        """
        status = RunStatus(status)
        summary = _jsonable(dict(summary or {}))
        now = utcnow()

        def tx(conn: Connection) -> None:
            row = _select_run(conn, name, lock=True)
            if row is None:
                if cfg is None:
                    raise UserError(f"no run named {name!r} in store {self.display_url}")
                cfg_dict, _, chash = _config_parts(cfg)
                conn.execute(runs.insert().values(
                    name=name, created_at=now, status=RunStatus.RUNNING.value, config_hash=chash, config=cfg_dict,
                    source=LOCAL_SOURCE, run_dir=None if run_dir is None else str(Path(run_dir).resolve()),
                    started_at=now, **_identity(cfg_dict), **process_identity(), **_versions()))
                row = _select_run(conn, name, lock=True)
            values: dict[str, Any] = {"status": status.value, "finished_at": now, "heartbeat_at": now,
                                      "error": None if status is RunStatus.DONE else error}
            if summary:
                values["summary"] = summary
                flat = _flatten(summary)
                for key in RUN_VALUE_COLUMNS:
                    if key in flat and flat[key] is not None:
                        values[key] = _coerce_value(key, flat[key])
                if isinstance(flat.get("epochs_done"), (int, float)) and not isinstance(flat["epochs_done"], bool):
                    values["epochs_done"] = max(int(flat["epochs_done"]), int(row["epochs_done"] or 0))
            conn.execute(update(runs).where(runs.c.id == row["id"]).values(**values))
            if status is RunStatus.DONE:
                _refresh_headline(conn, row["id"])

        self._run(tx)

    def record_evaluation(self, name: str, claim: Mapping[str, Any]) -> None:
        """Store an evaluation claim (upsert on run, attack, eps, n_examples) and refresh the run's headline.

        The headline columns take the largest complete evaluation at the run's training eps:
        AutoAttack (``aa-standard``) -> ``aa_robust_acc`` / ``aa_n_examples``, ``pgd`` ->
        ``pgd_robust_acc``; ``clean_acc`` from the same evaluation; ``collapsed`` when the
        AutoAttack (else PGD) accuracy is below 10%.
        """
        claim = _jsonable(dict(claim))
        _check_claim(name, claim)
        now = utcnow()

        def tx(conn: Connection) -> None:
            row = _select_run(conn, name, lock=True)
            if row is None:
                raise UserError(f"no run named {name!r} in store {self.display_url}")
            _upsert_evaluation(conn, row["id"], claim, now)
            _refresh_headline(conn, row["id"])

        self._run(tx)

    def sync_run(self, cfg, run_dir: str | os.PathLike, *, status: RunStatus, summary: Mapping[str, Any] | None,
                 epoch_rows: Iterable[Mapping[str, Any]] = (), claims: Iterable[Mapping[str, Any]] = (),
                 error: str | None = None) -> str:
        """Make the rows of one run say what its folder says, in one transaction.

        The run row takes ``status``, the config and the summary's compute and metrics; its epochs
        are replaced by ``epoch_rows`` (metrics.jsonl) and ``claims`` (eval/*.json) are upserted.
        Returns ``inserted``, ``updated``, or ``alive`` when another live process owns the run
        (then nothing is changed).
        """
        cfg_dict, name, chash = _config_parts(cfg)
        status = RunStatus(status)
        summary = _jsonable(dict(summary or {}))
        rows = [_jsonable(dict(r)) for r in epoch_rows]
        claims = [_jsonable(dict(c)) for c in claims]
        for claim in claims:
            _check_claim(name, claim)
        now = utcnow()
        me = process_identity()

        def tx(conn: Connection) -> str:
            row = _select_run(conn, name, lock=True)
            if row is not None:
                _check_same_config(row, name, chash)
                if effective_status(row, now) == RunStatus.RUNNING.value and not _same_process(row, me):
                    return "alive"
            values: dict[str, Any] = {
                "status": status.value, "config_hash": chash, "config": cfg_dict, "source": LOCAL_SOURCE,
                "run_dir": str(Path(run_dir).resolve()), "error": None if status is RunStatus.DONE else error,
                "epochs_done": len(rows), "summary": summary or None, "heartbeat_at": None, **_identity(cfg_dict),
            }
            if status is not RunStatus.RUNNING:
                values["finished_at"] = (row or {}).get("finished_at") or now
            flat = _flatten(summary)
            for key in RUN_VALUE_COLUMNS:
                values[key] = _coerce_value(key, flat.get(key))
            if row is None:
                conn.execute(runs.insert().values(name=name, created_at=now, **values))
                row = _select_run(conn, name, lock=True)
                outcome = "inserted"
            else:
                conn.execute(update(runs).where(runs.c.id == row["id"]).values(**values))
                outcome = "updated"
            conn.execute(delete(epochs).where(epochs.c.run_id == row["id"]))
            for r in rows:
                _insert_epoch(conn, row["id"], r["epoch"], r, now)
            for claim in claims:
                _upsert_evaluation(conn, row["id"], claim, now)
            _refresh_headline(conn, row["id"])
            return outcome

        return self._run(tx)

    def import_frame(self, frame, source: str) -> dict[str, int]:
        """Upsert finished runs from a DataFrame in the schema of ``RUN_COLUMNS`` (e.g. a paper's runs).

        Rows are keyed by ``name`` (made from the identity columns when missing); re-importing
        the same frame changes nothing. Columns outside the schema go to ``extra``.
        Returns ``{"inserted": n, "updated": n, "unchanged": n}``.
        """
        records = _frame_records(frame, source)
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
                changed = {k: v for k, v in rec.items() if not _same(old.get(k), v)}
                if changed:
                    conn.execute(update(runs).where(runs.c.id == old["id"]).values(**changed))
                    counts["updated"] += 1
                else:
                    counts["unchanged"] += 1
            return counts

        return self._run(tx)

    def delete_run(self, name: str) -> bool:
        def tx(conn: Connection) -> bool:
            row = _select_run(conn, name)
            if row is None:
                return False
            conn.execute(delete(epochs).where(epochs.c.run_id == row["id"]))
            conn.execute(delete(evaluations).where(evaluations.c.run_id == row["id"]))
            conn.execute(delete(runs).where(runs.c.id == row["id"]))
            return True

        return self._run(tx)

    # ------------------------------------------------------------------ reads
    def get_run(self, name: str, *, details: bool = True) -> dict[str, Any] | None:
        """The run row (with ``epoch_metrics`` and ``evaluations`` lists when ``details``), or None."""
        def tx(conn: Connection):
            row = _select_run(conn, name)
            if row is None:
                return None
            out = dict(row)
            out["effective_status"] = effective_status(row)
            if details:
                out["epoch_metrics"] = [dict(r) for r in conn.execute(
                    select(epochs).where(epochs.c.run_id == row["id"]).order_by(epochs.c.epoch)).mappings()]
                out["evaluations"] = [dict(r) for r in conn.execute(
                    select(evaluations).where(evaluations.c.run_id == row["id"]).order_by(evaluations.c.id)).mappings()]
            return out

        return self._run(tx)

    def list_runs(self, where: Iterable[str] | None = None, *, names: Iterable[str] | None = None,
                  config_hashes: Iterable[str] | None = None) -> list[dict[str, Any]]:
        """All run rows (each with ``effective_status``), filtered by ``where`` expressions (see query.py)."""
        from .query import apply_where

        def tx(conn: Connection):
            stmt = select(runs).order_by(runs.c.id)
            if names is not None:
                stmt = stmt.where(runs.c.name.in_(list(names)))
            if config_hashes is not None:
                stmt = stmt.where(runs.c.config_hash.in_(list(config_hashes)))
            return [dict(r) for r in conn.execute(stmt).mappings()]

        rows = self._run(tx)
        now = utcnow()
        for row in rows:
            row["effective_status"] = effective_status(row, now)
        return apply_where(rows, where or [])

    def runs_frame(self, status: str | None = "done", where: Iterable[str] | None = None):
        """A pandas DataFrame with columns ``schema.RUN_COLUMNS``: what ``fit`` and ``runs export`` use.

        By default only ``done`` runs (the ones whose results are complete); ``status=None`` for all.
        """
        import pandas as pd

        filters = list(where or [])
        if status is not None:
            filters.append(f"status={status}")
        rows = self.list_runs(filters)
        records = [run_record(r) for r in rows]
        frame = pd.DataFrame.from_records(records, columns=list(RUN_COLUMNS))
        return frame

    def evaluation_exists(self, name: str, attack: str, eps: float, n_examples: int | None) -> bool:
        def tx(conn: Connection) -> bool:
            stmt = (select(evaluations.c.id).join(runs, runs.c.id == evaluations.c.run_id)
                    .where(runs.c.name == name, evaluations.c.attack == attack.lower(),
                           func.abs(evaluations.c.eps - float(eps)) < _EPS_TOL, evaluations.c.robust_acc.is_not(None)))
            if n_examples is not None:
                stmt = stmt.where(evaluations.c.n_examples == int(n_examples))
            return conn.execute(stmt.limit(1)).first() is not None

        return self._run(tx)

    def evaluations_of(self, names: Iterable[str]) -> dict[str, list[dict[str, Any]]]:
        names = list(names)

        def tx(conn: Connection):
            out: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
            stmt = (select(runs.c.name, evaluations).join(runs, runs.c.id == evaluations.c.run_id)
                    .where(runs.c.name.in_(names)).order_by(evaluations.c.id))
            for r in conn.execute(stmt).mappings():
                out[r["name"]].append(dict(r))
            return out

        return self._run(tx)


def _connect_sqlite_readonly(path: Path):
    """A ``mode=ro`` connection; ``immutable=1`` when even that cannot open (a WAL store in a read-only folder)."""
    import sqlite3
    from urllib.parse import quote

    uri = f"file:{quote(str(path))}"
    conn = sqlite3.connect(f"{uri}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_S, check_same_thread=False)
    try:
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        return conn
    except sqlite3.OperationalError as exc:
        conn.close()
        if "unable to open" not in str(exc):
            raise
    # A WAL database needs a -shm file beside it, which a read-only folder cannot hold; nobody can
    # write the store there either, so reading it as immutable is exact.
    return sqlite3.connect(f"{uri}?immutable=1", uri=True, timeout=BUSY_TIMEOUT_S, check_same_thread=False)


# ---------------------------------------------------------------------- run records
def run_record(row: Mapping[str, Any]) -> dict[str, Any]:
    """The flat ``RUN_COLUMNS`` record of a run row."""
    out = {}
    for col in RUN_COLUMNS:
        if col == "status":
            out[col] = row.get("effective_status") or row.get("status")
        elif col == "train_images" and row.get(col) is None and isinstance(row.get("summary"), dict):
            out[col] = _flatten(row["summary"]).get("train_images")
        else:
            out[col] = row.get(col)
    return out


def effective_status(row: Mapping[str, Any], now: dt.datetime | None = None,
                     stale_after_s: float | None = None) -> str:
    """The stored status, except ``stale`` for a ``running`` row whose process is gone.

    Gone means: on this host, the recorded process no longer exists; elsewhere, no heartbeat
    for ``stale_after_s`` seconds (``$ROBUSTSCALE_STALE_AFTER_S``, default 600).
    """
    status = row.get("status")
    if status != RunStatus.RUNNING.value:
        return status
    if row.get("host") == socket.gethostname() and row.get("pid"):
        return RunStatus.RUNNING.value if _process_alive(int(row["pid"]), row.get("process_start")) else STALE
    beat = row.get("heartbeat_at")
    limit = STALE_AFTER_S if stale_after_s is None else stale_after_s
    if beat is None or ((now or utcnow()) - beat).total_seconds() > limit:
        return STALE
    return RunStatus.RUNNING.value


def process_identity() -> dict[str, Any]:
    return {"host": socket.gethostname(), "pid": os.getpid(), "process_start": _process_start(os.getpid())}


def _process_start(pid: int) -> str | None:
    """Start time of a process in clock ticks since boot (Linux), so a reused pid is not mistaken for it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _process_alive(pid: int, start: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    if start is not None:
        now_start = _process_start(pid)
        if now_start is not None and now_start != start:
            return False  # the pid was reused by another process
    if Path(f"/proc/{pid}/status").is_file():
        try:
            state = next((ln for ln in Path(f"/proc/{pid}/status").read_text().splitlines()
                          if ln.startswith("State:")), "")
            if "zombie" in state or "\tZ" in state:
                return False
        except OSError:
            pass
    return True


def _same_process(row: Mapping[str, Any], me: Mapping[str, Any]) -> bool:
    return row.get("host") == me["host"] and row.get("pid") == me["pid"]


def _insert_epoch(conn: Connection, run_id: int, epoch: int, metrics: Mapping[str, Any], now: dt.datetime) -> None:
    typed = {k: _float(metrics.get(k)) for k in EPOCH_VALUE_COLUMNS}
    if typed["train_images_seen"] is not None:
        typed["train_images_seen"] = int(typed["train_images_seen"])
    conn.execute(epochs.insert().values(run_id=run_id, epoch=int(epoch), recorded_at=now, metrics=dict(metrics),
                                        **typed))


def _check_claim(name: str, claim: Mapping[str, Any]) -> None:
    if not str(claim.get("attack") or "").strip():
        raise UserError(f"an evaluation claim of {name!r} needs an `attack`")
    if _float(claim.get("eps")) is None or claim.get("n_examples") is None:
        raise UserError(f"evaluation claim for {name!r} lacks eps or n_examples")


def _upsert_evaluation(conn: Connection, run_id: int, claim: Mapping[str, Any], now: dt.datetime) -> None:
    """Insert or replace the evaluation row of (run, attack, eps, n_examples)."""
    attack = str(claim["attack"]).strip().lower()
    eps, n = _float(claim["eps"]), int(claim["n_examples"])
    existing = conn.execute(select(evaluations.c.id).where(
        evaluations.c.run_id == run_id, evaluations.c.attack == attack,
        func.abs(evaluations.c.eps - eps) < _EPS_TOL, evaluations.c.n_examples == n)).scalar()
    values = dict(
        run_id=run_id, attack=attack, eps=eps, norm=claim.get("norm"), n_examples=n,
        clean_acc=_float(claim.get("clean_acc")), robust_acc=_float(_robust_of(claim)),
        per_attack=claim.get("stage_acc") or claim.get("per_attack"),
        eval_flops=_float(claim.get("eval_flops")), wall_seconds=_float(claim.get("wall_seconds")),
        device_hours=_float(claim.get("device_hours")), energy_kwh=_float(claim.get("energy_kwh")),
        created_at=now, claim=dict(claim))
    if existing is None:
        conn.execute(evaluations.insert().values(**values))
    else:
        conn.execute(update(evaluations).where(evaluations.c.id == existing).values(**values))


def _refresh_headline(conn: Connection, run_id: int) -> None:
    """Fill the run's headline metrics from its evaluations (largest complete one per attack)."""
    row = conn.execute(select(runs).where(runs.c.id == run_id)).mappings().one()
    evals = [dict(r) for r in conn.execute(select(evaluations).where(evaluations.c.run_id == run_id)).mappings()]
    run_eps = row["eps"]

    def best(attacks: tuple[str, ...]):
        cands = [e for e in evals if e["attack"] in attacks and e["robust_acc"] is not None
                 and (run_eps is None or abs(e["eps"] - run_eps) < _EPS_TOL)]
        return max(cands, key=lambda e: (e["n_examples"], e["id"])) if cands else None

    aa, pgd = best(AA_ATTACKS), best(PGD_ATTACKS)
    values: dict[str, Any] = {}
    if aa is not None:
        values.update(aa_robust_acc=aa["robust_acc"], aa_n_examples=aa["n_examples"])
    if pgd is not None:
        values["pgd_robust_acc"] = pgd["robust_acc"]
    # Clean accuracy from the evaluation at the run's eps on the most test images, whatever its attack;
    # training's own last evaluation counts too, with its image count (never the latest, if smaller).
    summary = row["summary"] if isinstance(row["summary"], dict) else {}
    flat = _flatten(summary)
    cleans = [(e["n_examples"], 1, e["id"], e["clean_acc"]) for e in evals if e["clean_acc"] is not None
              and (run_eps is None or abs(e["eps"] - run_eps) < _EPS_TOL)]
    train_n = _float(flat.get("eval_images")) or _float(flat.get("eval_subset"))
    if _float(flat.get("clean_acc")) is not None and train_n:
        cleans.append((int(train_n), 0, 0, _float(flat["clean_acc"])))
    if cleans:
        values["clean_acc"] = max(cleans)[3]
    if evals:
        train_eval = _float(flat.get("eval_flops")) or 0.0
        eval_sum = [e["eval_flops"] for e in evals if e["eval_flops"] is not None]
        if eval_sum or train_eval:
            values["eval_flops"] = train_eval + sum(eval_sum)
    robust = values.get("aa_robust_acc", row["aa_robust_acc"])
    if robust is None:
        robust = values.get("pgd_robust_acc", row["pgd_robust_acc"])
    if robust is not None:  # a run the per-epoch check flagged stays collapsed
        values["collapsed"] = bool(robust < COLLAPSE_THRESHOLD_ACC) or row["collapsed_epoch"] is not None
    if values:
        conn.execute(update(runs).where(runs.c.id == run_id).values(**values))


def _frame_records(frame, source: str) -> list[dict[str, Any]]:
    """Rows of an imported frame as `runs` column values (status done)."""
    from ..schema import resolve_column

    frame = frame.rename(columns={c: resolve_column(c) for c in frame.columns})
    table_cols = set(runs.c.keys())
    skip = {"id", "status", "source", "created_at", "started_at", "finished_at", "config", "summary", "extra"}
    records, seen = [], {}
    for i, raw in enumerate(frame.to_dict(orient="records")):
        raw = {k: (None if _isnan(v) else (v.item() if hasattr(v, "item") else v)) for k, v in raw.items()}
        if isinstance(raw.get("synthetic_data"), str):
            raw["synthetic_data"] = raw["synthetic_data"].strip().lower() in ("true", "1", "yes")
        name = raw.get("name") or _import_name(raw, source)
        if name in seen:
            raise UserError(f"two imported rows (#{seen[name]} and #{i}) have the same name {name!r}; nothing imported")
        seen[name] = i
        rec: dict[str, Any] = {"name": str(name), "source": source, "status": RunStatus.DONE.value}
        extra = {}
        for key, value in raw.items():
            if key == "name":
                continue
            if key in table_cols and key not in skip:
                rec[key] = _coerce_value(key, value) if key in RUN_VALUE_COLUMNS else value
            elif key not in skip:
                extra[key] = value
        if rec.get("config_hash") is None:
            import hashlib

            ident = json.dumps({k: raw.get(k) for k in IDENTITY_COLUMNS}, sort_keys=True, default=str)
            rec["config_hash"] = hashlib.sha256(f"{source}:{ident}".encode()).hexdigest()[:16]
        if rec.get("collapsed") is None:
            robust = rec.get("aa_robust_acc")
            rec["collapsed"] = None if robust is None else bool(robust < COLLAPSE_THRESHOLD_ACC)
        rec["extra"] = _jsonable(extra) or None
        records.append(rec)
    return records


def _import_name(raw: Mapping[str, Any], source: str) -> str:
    """``debenedetti2024-wide_resnet28_10-pgd-k5-e110-gen`` from a row's identity columns."""
    parts = [source, str(raw.get("model"))]
    if raw.get("method") is not None:
        parts.append(str(raw["method"]))
    if raw.get("attack_steps") is not None:
        parts.append(f"k{int(raw['attack_steps'])}")
    if raw.get("epochs") is not None:
        parts.append(f"e{int(raw['epochs'])}")
    if raw.get("synthetic_data") is not None:
        parts.append("gen" if raw["synthetic_data"] else "nogen")
    if raw.get("seed") is not None:
        parts.append(f"s{int(raw['seed'])}")
    return "-".join(parts)


# ---------------------------------------------------------------------- helpers
def _select_run(conn: Connection, name: str, lock: bool = False) -> dict[str, Any] | None:
    stmt = select(runs).where(runs.c.name == name)
    if lock and conn.dialect.name == "postgresql":
        stmt = stmt.with_for_update()
    row = conn.execute(stmt).mappings().first()
    return None if row is None else dict(row)


def _check_same_config(row: Mapping[str, Any], name: str, chash: str, known: tuple[str, ...] = ()) -> None:
    if row["source"] != LOCAL_SOURCE:
        raise UserError(f"run name {name!r} is taken by an imported run (source {row['source']}); pick another name")
    if row["config_hash"] is not None and row["config_hash"] not in (chash, *known):
        raise UserError(f"run name {name!r} is already in the store with a different config "
                        f"(hash {row['config_hash']}, this one {chash}); pick another name")


def _config_parts(cfg) -> tuple[dict[str, Any], str, str]:
    from ..config import TrainConfig

    if isinstance(cfg, Mapping):
        cfg = TrainConfig.from_dict(dict(cfg))
    if not cfg.name:
        raise UserError("a run recorded in the store needs a name (TrainConfig.name)")
    return _jsonable(cfg.to_dict()), str(cfg.name), cfg.config_hash()


def _known_hashes(cfg) -> tuple[str, ...]:
    """Every hash a stored row of this run may carry (0.1.0's too: ``TrainConfig.known_hashes``);
    ``start_run`` then rewrites the row with today's."""
    from ..config import TrainConfig

    if isinstance(cfg, Mapping):
        cfg = TrainConfig.from_dict(dict(cfg))
    return cfg.known_hashes()


def _identity(cfg: Mapping[str, Any]) -> dict[str, Any]:
    out = {k: cfg.get(k) for k in IDENTITY_COLUMNS if k != "synthetic_data"}
    out["attack_steps"] = attack_steps_of(cfg.get("method"), cfg.get("attack_steps"))
    out["synthetic_data"] = bool(cfg.get("generated_data"))
    return out


def attack_steps_of(method: Any, steps: Any) -> int | None:
    """The attack steps a method really takes: none for standard training, 1 for FGSM-RS."""
    method = getattr(method, "value", method)
    if method == "standard":
        return None
    if method == "fgsm_rs":
        return 1
    return None if steps is None else int(steps)


def _versions() -> dict[str, Any]:
    from importlib import metadata

    from .. import __version__

    try:
        torch_version = metadata.version("torch")
    except metadata.PackageNotFoundError:
        torch_version = None
    return {"robustscale_version": __version__, "torch_version": torch_version,
            "python_version": platform.python_version()}


def _flatten(summary: Mapping[str, Any]) -> dict[str, Any]:
    """Top-level keys, then keys of nested dicts (``compute``, ``final``...) that are missing or None on top."""
    flat = {k: v for k, v in summary.items() if not isinstance(v, Mapping)}
    for v in summary.values():
        if isinstance(v, Mapping):
            for k2, v2 in _flatten(v).items():
                if flat.get(k2) is None:
                    flat[k2] = v2
    return flat


def _robust_of(claim: Mapping[str, Any]):
    for key in ("robust_acc", "autoattack_acc", "aa_robust_acc", "pgd_robust_acc"):
        if claim.get(key) is not None:
            return claim[key]
    return None


def _coerce_value(key: str, value: Any) -> Any:
    if value is None:
        return None
    type_ = RUN_VALUE_COLUMNS.get(key)
    try:
        from sqlalchemy import Boolean, Float, Integer

        if isinstance(type_, type) and issubclass(type_, Float):
            return _float(value)
        if isinstance(type_, type) and issubclass(type_, Integer):  # BigInteger too
            f = _float(value)
            return None if f is None else int(round(f))
        if isinstance(type_, type) and issubclass(type_, Boolean):
            if isinstance(value, str):
                return value.strip().lower() in ("true", "1", "yes")
            return bool(value)
    except (TypeError, ValueError):
        return None
    return str(value)


def _float(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None if value is None else float(value)
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _isnan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def _jsonable(value: Any) -> Any:
    """A JSON-safe copy: enums -> values, paths -> str, numpy/torch scalars -> numbers, tensors dropped."""
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            j = _jsonable(v)
            if j is not _DROP:
                out[str(k)] = j
        return out
    if isinstance(value, (list, tuple)):
        return [x for x in (_jsonable(v) for v in value) if x is not _DROP]
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (str, bool, int)) or value is None:
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (Path, os.PathLike)):
        return str(value)
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    if hasattr(value, "numel") and hasattr(value, "tolist"):  # torch tensors: scalars kept, arrays dropped
        return _jsonable(value.item()) if value.numel() == 1 else _DROP
    if hasattr(value, "item") and getattr(value, "shape", None) == ():
        return _jsonable(value.item())
    if hasattr(value, "tolist") and getattr(value, "ndim", 1) > 0:  # numpy arrays: small ones kept
        return _jsonable(value.tolist()) if getattr(value, "size", 0) <= 64 else _DROP
    return str(value)


_DROP = object()


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        fa, fb = _float(a), _float(b)
        if fa is None or fb is None:
            return fa is None and fb is None
        return math.isclose(fa, fb, rel_tol=1e-12, abs_tol=0.0)
    return a == b


def _ago(when: dt.datetime | None, now: dt.datetime) -> str:
    if when is None:
        return "never"
    return f"{(now - when).total_seconds():.0f} s ago"


def _first_line(exc: BaseException | None) -> str:
    text_ = str(exc or "").strip().splitlines()
    return text_[0] if text_ else type(exc).__name__


def _is_transient(exc: DBAPIError) -> bool:
    msg = str(exc.orig).lower()
    return any(s in msg for s in ("database is locked", "database table is locked", "could not serialize",
                                  "deadlock detected", "server closed the connection unexpectedly"))


def _is_connect_error(exc: OperationalError) -> bool:
    msg = str(exc.orig).lower()
    return any(s in msg for s in ("connection", "connect", "could not translate host", "unable to open database",
                                  "timeout expired", "no such host", "password authentication", "does not exist",
                                  "role"))
