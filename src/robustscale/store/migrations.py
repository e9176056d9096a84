"""Schema versions of the results store and the migrations between them.

The version lives in ``robustscale_meta`` (key ``schema_version``). ``Store`` creates a fresh
store at :data:`~robustscale.store.tables.SCHEMA_VERSION`, upgrades an older one by running
``MIGRATIONS[v]`` for every ``v`` from its version up (each takes a connection inside the open
transaction and moves the schema from ``v`` to ``v + 1``), and refuses a newer one.

To change a table: edit ``tables.py``, bump ``SCHEMA_VERSION`` and add the step here, e.g.::

    def _v1_to_v2(conn):
        conn.exec_driver_sql("ALTER TABLE runs ADD COLUMN gpu_memory_gb FLOAT")

    MIGRATIONS = {1: _v1_to_v2}
"""
from __future__ import annotations

from typing import Callable

from sqlalchemy import Connection, select

from ..errors import UserError
from .rows import refresh_headline
from .tables import SCHEMA_VERSION, leases, meta, metadata, runs


def _v1_to_v2(conn: Connection) -> None:
    """The per-epoch catastrophic-overfitting check: runs.collapsed_epoch and epochs.fgsm_robust_acc."""
    conn.exec_driver_sql("ALTER TABLE runs ADD COLUMN collapsed_epoch INTEGER")
    conn.exec_driver_sql("ALTER TABLE epochs ADD COLUMN fgsm_robust_acc FLOAT")


def _v2_to_v3(conn: Connection) -> None:
    """The test images behind each headline accuracy (runs.clean_acc_n_examples, pgd_robust_acc_n_examples) and
    APGD-CE's headline (apgd_ce_robust_acc with its count), filled from each run's evaluations (and training's
    own test-set check) as the headline is."""
    for column, sql_type in (("clean_acc_n_examples", "INTEGER"), ("pgd_robust_acc_n_examples", "INTEGER"),
                             ("apgd_ce_robust_acc", "FLOAT"), ("apgd_ce_robust_acc_n_examples", "INTEGER")):
        conn.exec_driver_sql(f"ALTER TABLE runs ADD COLUMN {column} {sql_type}")
    for (run_id,) in conn.execute(select(runs.c.id).where(runs.c.status == "done")).all():
        refresh_headline(conn, run_id)


def _v3_to_v4(conn: Connection) -> None:
    """Slots of a sweep's max_parallel shared by concurrent sweeps (the leases table)."""
    leases.create(conn, checkfirst=True)


MIGRATIONS: dict[int, Callable[[Connection], None]] = {1: _v1_to_v2, 2: _v2_to_v3, 3: _v3_to_v4}

VERSION_KEY = "schema_version"


def read_version(conn: Connection) -> int | None:
    """The stored schema version, or None for an empty database."""
    if not conn.dialect.has_table(conn, meta.name):
        if conn.dialect.has_table(conn, "runs"):
            raise UserError("the database has a `runs` table but no robustscale_meta table: not a robustscale store")
        return None
    value = conn.execute(select(meta.c.value).where(meta.c.key == VERSION_KEY)).scalar_one_or_none()
    return None if value is None else int(value)


def ensure_schema(conn: Connection, where: str) -> int:
    """Create the tables of an empty store or migrate an older one; return the version now stored."""
    version = read_version(conn)
    if version is None:
        metadata.create_all(conn)
        conn.execute(meta.insert().values(key=VERSION_KEY, value=str(SCHEMA_VERSION)))
        return SCHEMA_VERSION
    if version > SCHEMA_VERSION:
        raise UserError(f"store {where} has schema version {version}, newer than this robustscale understands "
                        f"({SCHEMA_VERSION}); upgrade robustscale")
    while version < SCHEMA_VERSION:
        step = MIGRATIONS.get(version)
        if step is None:
            raise UserError(f"store {where} has schema version {version} and no migration to "
                            f"{version + 1} exists; valid versions: {', '.join(map(str, range(1, SCHEMA_VERSION + 1)))}")
        step(conn)
        version += 1
        conn.execute(meta.update().where(meta.c.key == VERSION_KEY).values(value=str(version)))
    return version


def check_version(conn: Connection, where: str) -> int:
    """The version of a store opened read-only: it must be this robustscale's (nothing can be migrated)."""
    version = read_version(conn)
    if version is None:
        raise UserError(f"no results store at {where} (empty database)")
    if version > SCHEMA_VERSION:
        raise UserError(f"store {where} has schema version {version}, newer than this robustscale understands "
                        f"({SCHEMA_VERSION}); upgrade robustscale")
    if version < SCHEMA_VERSION:
        raise UserError(f"store {where} has schema version {version} and needs a migration to {SCHEMA_VERSION}, "
                        f"which a read-only open cannot do; run a recording command on it once where it is "
                        f"writable (e.g. robustscale runs sync RUN_DIR --store ...)")
    return version
