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

Row values (flattened summaries, coerced columns, JSON-safe copies) live in ``store/records.py``,
the row writes shared with the sync in ``store/rows.py``, process liveness in ``store/liveness.py``.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, TypeVar

from sqlalchemy import Connection, create_engine, delete, event, func, select, text, update
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.pool import NullPool, StaticPool

from ..errors import UserError
from ..schema import CLEAN_ATTACK, EPS_TOL, HEADLINE_COLUMNS, RUN_COLUMNS
from .leases import attach_job_tx, held_tx, release_tx, renew_tx, take_tx
from .liveness import ago, effective_status, process_identity, same_process, utcnow, versions
from .location import mask_url, resolve_store_url, sqlite_path
from .migrations import check_version, ensure_schema, read_version
from .query import apply_where
from .records import (LOCAL_SOURCE, coerce_value, config_parts, flatten, identity, jsonable, known_hashes,
                      run_record)
from .rows import check_claim, check_same_config, insert_epoch, refresh_headline, select_run, \
    upsert_evaluation
from .sync import folder_rows_tx, frame_rows_tx
from .tables import RUN_VALUE_COLUMNS, SCHEMA_VERSION, RunStatus, epochs, evaluations, runs

# Names that lived here before the store was split, kept importable as ``robustscale.store.core.X``.
from .liveness import STALE_AFTER_S, process_alive, process_start  # noqa: F401
from .records import IDENTITY_COLUMNS, attack_steps_of  # noqa: F401
from .rows import AA_ATTACKS, PGD_ATTACKS  # noqa: F401

T = TypeVar("T")

BUSY_TIMEOUT_S = 60.0


class StoreNotFound(UserError):
    """A read-only command was pointed at a store that does not exist (yet)."""


class StoreUnreachable(UserError):
    """The store's server (or file) cannot be reached right now; the run folders are unaffected."""


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
        if self.readonly and self.path is not None and self.schema_version < SCHEMA_VERSION:
            # An older SQLite store read by a command that only reads: migrate a copy in memory, so that it
            # reads as a current store and nothing is written beside the file.
            self.engine.dispose()
            self.engine = self._make_engine(url, memory=_migrated_copy_source(self.path))
            self.schema_version = self._run(lambda conn: ensure_schema(conn, self.display_url))

    def _init_schema(self, conn: Connection) -> int:
        if not self.create and read_version(conn) is None:
            raise StoreNotFound(f"no results store at {self.display_url} (empty database); give --store "
                                f"PATH_OR_URL or run something first")
        if self.readonly:
            version = read_version(conn)
            if self.path is not None and version is not None and version < SCHEMA_VERSION:
                return version  # __init__ reads it through a migrated in-memory copy
            return check_version(conn, self.display_url)
        if conn.dialect.name == "postgresql":
            # Serialise schema creation between processes opening a fresh database at once
            # (SQLite's BEGIN IMMEDIATE already does).
            conn.execute(text("SELECT pg_advisory_xact_lock(7426031)"))
        return ensure_schema(conn, self.display_url)

    # ------------------------------------------------------------------ engine and transactions
    def _make_engine(self, url: str, *, memory=None):
        if self.is_sqlite:
            readonly = self.readonly and self.path is not None
            if memory is not None:  # the one connection to an in-memory copy
                engine = create_engine("sqlite://", creator=lambda: memory, poolclass=StaticPool)
            elif readonly:  # a fresh connection per transaction: each sees the store as it is then
                engine = create_engine("sqlite://", creator=lambda: _connect_sqlite_readonly(self.path),
                                       poolclass=NullPool)
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
        cfg_dict, name, chash = config_parts(cfg)
        known = known_hashes(cfg)
        status = RunStatus(status)
        now = utcnow()
        me = process_identity()

        def tx(conn: Connection) -> None:
            row = select_run(conn, name, lock=True)
            if row is not None:
                check_same_config(row, name, chash, known)
                if effective_status(row, now) == RunStatus.RUNNING.value and not same_process(row, me):
                    if status is RunStatus.QUEUED:
                        return
                    raise UserError(f"run {name!r} is already running on {row['host']} (pid {row['pid']}, "
                                    f"heartbeat {ago(row['heartbeat_at'], now)}); wait for it or pick another name")
                if status is RunStatus.QUEUED and row["status"] == RunStatus.DONE.value:
                    return  # retraining a done run needs an explicit start
            values: dict[str, Any] = {
                "status": status.value, "config_hash": chash, "config": cfg_dict, "source": LOCAL_SOURCE,
                "run_dir": None if run_dir is None else str(Path(run_dir).resolve()),
                **identity(cfg_dict),
            }
            if sweep is not None:
                values["sweep"] = sweep
            if status is RunStatus.RUNNING:
                values.update(**me, **versions(), heartbeat_at=now, finished_at=None, error=None)
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
        metrics = jsonable(dict(metrics))
        now = utcnow()

        def tx(conn: Connection) -> None:
            row = select_run(conn, name, lock=True)
            if row is None:
                raise UserError(f"no run named {name!r} in store {self.display_url}; record_run_start first")
            conn.execute(delete(epochs).where(epochs.c.run_id == row["id"], epochs.c.epoch == int(epoch)))
            insert_epoch(conn, row["id"], epoch, metrics, now)
            n = conn.execute(select(func.count()).select_from(epochs).where(epochs.c.run_id == row["id"])).scalar()
            values: dict[str, Any] = {"epochs_done": int(n)}
            if row["status"] == RunStatus.RUNNING.value:
                values["heartbeat_at"] = now
            if row["status"] != RunStatus.DONE.value:
                for key in ("wall_seconds", "train_flops", "device_hours", "energy_kwh", "train_images_seen"):
                    if metrics.get(key) is not None:
                        values[key] = coerce_value(key, metrics[key])
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
        summary = jsonable(dict(summary or {}))
        now = utcnow()

        def tx(conn: Connection) -> None:
            row = select_run(conn, name, lock=True)
            if row is None:
                if cfg is None:
                    raise UserError(f"no run named {name!r} in store {self.display_url}")
                cfg_dict, _, chash = config_parts(cfg)
                conn.execute(runs.insert().values(
                    name=name, created_at=now, status=RunStatus.RUNNING.value, config_hash=chash, config=cfg_dict,
                    source=LOCAL_SOURCE, run_dir=None if run_dir is None else str(Path(run_dir).resolve()),
                    started_at=now, **identity(cfg_dict), **process_identity(), **versions()))
                row = select_run(conn, name, lock=True)
            values: dict[str, Any] = {"status": status.value, "finished_at": now, "heartbeat_at": now,
                                      "error": None if status is RunStatus.DONE else error}
            if summary:
                values["summary"] = summary
                flat = flatten(summary)
                for key in RUN_VALUE_COLUMNS:
                    if key not in HEADLINE_COLUMNS and flat.get(key) is not None:
                        values[key] = coerce_value(key, flat[key])
                if isinstance(flat.get("epochs_done"), (int, float)) and not isinstance(flat["epochs_done"], bool):
                    values["epochs_done"] = max(int(flat["epochs_done"]), int(row["epochs_done"] or 0))
            conn.execute(update(runs).where(runs.c.id == row["id"]).values(**values))
            refresh_headline(conn, row["id"])

        self._run(tx)

    def record_evaluation(self, name: str, claim: Mapping[str, Any]) -> None:
        """Store an evaluation claim (one row per claim file, ``eval/<attack>-<eps>.json``; a claim without
        its file: per attack, eps and n_examples) and refresh the run's headline by ``schema.headline``."""
        claim = jsonable(dict(claim))
        check_claim(name, claim)
        now = utcnow()

        def tx(conn: Connection) -> None:
            row = select_run(conn, name, lock=True)
            if row is None:
                raise UserError(f"no run named {name!r} in store {self.display_url}")
            upsert_evaluation(conn, row["id"], claim, now)
            refresh_headline(conn, row["id"])

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
        return self._run(folder_rows_tx(cfg, run_dir, status=status, summary=summary, epoch_rows=epoch_rows,
                                        claims=claims, error=error))

    def import_frame(self, frame, source: str) -> dict[str, int]:
        """Upsert finished runs from a DataFrame in the schema of ``RUN_COLUMNS`` (e.g. a paper's runs).

        Rows are keyed by ``name`` (made from the identity columns when missing); re-importing
        the same frame changes nothing. Columns outside the schema go to ``extra``.
        Returns ``{"inserted": n, "updated": n, "unchanged": n}``.
        """
        return self._run(frame_rows_tx(frame, source))

    def delete_run(self, name: str) -> bool:
        def tx(conn: Connection) -> bool:
            row = select_run(conn, name)
            if row is None:
                return False
            conn.execute(delete(epochs).where(epochs.c.run_id == row["id"]))
            conn.execute(delete(evaluations).where(evaluations.c.run_id == row["id"]))
            conn.execute(delete(runs).where(runs.c.id == row["id"]))
            return True

        return self._run(tx)

    # ------------------------------------------------------------------ slots shared by concurrent sweeps
    def take_slot(self, pool: str, limit: int, run: str) -> str:
        """Take one of ``limit`` slots of ``pool`` for ``run``: ``go``, ``full`` or ``busy`` (see store/leases.py)."""
        return self._run(take_tx(pool, int(limit), run))

    def attach_job(self, pool: str, run: str, job_pid: int, job_process_start: str | None) -> None:
        self._run(attach_job_tx(pool, run, job_pid, job_process_start))

    def release_slot(self, pool: str, run: str | None = None) -> None:
        self._run(release_tx(pool, run))

    def renew_slots(self, pool: str) -> None:
        self._run(renew_tx(pool))

    def held_slots(self, pool: str) -> list[dict[str, Any]]:
        return self._run(held_tx(pool))

    # ------------------------------------------------------------------ reads
    def get_run(self, name: str, *, details: bool = True) -> dict[str, Any] | None:
        """The run row (with ``epoch_metrics`` and ``evaluations`` lists when ``details``), or None."""
        def tx(conn: Connection):
            row = select_run(conn, name)
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
        """Does ``name`` have a complete ``attack`` evaluation at ``eps`` (on ``n_examples`` images)? A clean
        one is recorded at eps 0 and holds at every eps: a finished sweep or study does not redo it."""
        attack = attack.lower()

        def tx(conn: Connection) -> bool:
            stmt = (select(evaluations.c.id).join(runs, runs.c.id == evaluations.c.run_id)
                    .where(runs.c.name == name, evaluations.c.attack == attack))
            if attack == CLEAN_ATTACK:
                stmt = stmt.where(evaluations.c.clean_acc.is_not(None))
            else:
                stmt = stmt.where(func.abs(evaluations.c.eps - float(eps)) < EPS_TOL,
                                  evaluations.c.robust_acc.is_not(None))
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


def _migrated_copy_source(path: Path):
    """An in-memory copy of the SQLite store at ``path``, read without writing anything beside it."""
    import sqlite3

    source = _connect_sqlite_readonly(path)
    try:
        memory = sqlite3.connect(":memory:", check_same_thread=False)
        source.backup(memory)
    finally:
        source.close()
    return memory


def _connect_sqlite_readonly(path: Path):
    """A read-only connection that leaves nothing beside the store.

    No ``-wal`` file beside a WAL store means no process has it open and every commit is in the main
    file: that file is read as ``immutable`` (a ``mode=ro`` open would create ``-wal`` and ``-shm`` files
    that a reader cannot remove). Otherwise (a writer is active) ``mode=ro``, which shares its ``-shm``;
    ``immutable=1`` again when even that cannot open (a WAL store in a read-only folder).
    """
    import sqlite3
    from urllib.parse import quote

    uri = f"file:{quote(str(path))}"
    if not Path(f"{path}-wal").exists():
        conn = sqlite3.connect(f"{uri}?immutable=1", uri=True, timeout=BUSY_TIMEOUT_S, check_same_thread=False)
        try:
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
            if not Path(f"{path}-wal").exists():  # still nobody writing: the snapshot is the store
                return conn
        except sqlite3.DatabaseError:
            pass
        conn.close()
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
