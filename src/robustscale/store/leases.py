"""Slots of a pool held by live processes: the ``max_parallel`` of a sweep shared by every ``sweep run`` of it.

A sweep takes a slot (``take``) before it starts a job and gives it back (``release``) when the
job ends. A slot names its run (one slot per run and pool, so two sweeps never start the same
run) and its holders: the sweep process, and once submitted the job's process (``attach_job``),
so a job left running by a killed sweep keeps its slot. Slots whose holders are all gone (this
host) or whose heartbeat is older than ``STALE_AFTER_S`` (elsewhere) are reclaimed by the next
``take``. Each function returns a transaction for :meth:`Store._run`; a lost race (two processes
inserting one slot on PostgreSQL) is an IntegrityError, which ``_run`` retries.
"""
from __future__ import annotations

from typing import Any, Callable

from sqlalchemy import Connection, delete, select, update

from .liveness import holder_alive, process_identity, utcnow
from .tables import leases

GO, FULL, BUSY = "go", "full", "busy"  # take: slot taken / all slots held / the run is held by another process


def take_tx(pool: str, limit: int, run: str) -> Callable[[Connection], str]:
    """Take a free slot of ``pool`` (at most ``limit`` held) for ``run``: ``GO``, ``FULL`` or ``BUSY``."""
    me = process_identity()

    def tx(conn: Connection) -> str:
        now = utcnow()
        held = []
        for row in conn.execute(select(leases).where(leases.c.pool == pool)).mappings():
            if holder_alive(row, now):
                held.append(row)
            else:
                conn.execute(delete(leases).where(leases.c.pool == pool, leases.c.slot == row["slot"]))
        if any(r["run"] == run for r in held):
            return BUSY
        if len(held) >= limit:
            return FULL
        slot = min(set(range(limit)) - {r["slot"] for r in held})
        conn.execute(leases.insert().values(pool=pool, slot=slot, run=run, heartbeat_at=now, **me))
        return GO

    return tx


def _mine(pool: str) -> list[Any]:
    me = process_identity()
    return [leases.c.pool == pool, leases.c.host == me["host"], leases.c.pid == me["pid"]]


def attach_job_tx(pool: str, run: str, job_pid: int, job_process_start: str | None) -> Callable[[Connection], None]:
    """Name the job's process as a holder of ``run``'s slot (it outlives a killed sweep)."""
    return lambda conn: conn.execute(update(leases).where(*_mine(pool), leases.c.run == run)
                                     .values(job_pid=int(job_pid), job_process_start=job_process_start))


def release_tx(pool: str, run: str | None = None) -> Callable[[Connection], None]:
    """Give back this process's slot of ``run`` (every slot of this process in ``pool`` when None)."""
    where = _mine(pool) + ([leases.c.run == run] if run is not None else [])
    return lambda conn: conn.execute(delete(leases).where(*where))


def renew_tx(pool: str) -> Callable[[Connection], None]:
    """Refresh the heartbeat of this process's slots (what another host judges them by)."""
    return lambda conn: conn.execute(update(leases).where(*_mine(pool)).values(heartbeat_at=utcnow()))


def held_tx(pool: str) -> Callable[[Connection], list[dict[str, Any]]]:
    """The live slots of ``pool``."""
    def tx(conn: Connection) -> list[dict[str, Any]]:
        now = utcnow()
        rows = conn.execute(select(leases).where(leases.c.pool == pool).order_by(leases.c.slot)).mappings()
        return [dict(r) for r in rows if holder_alive(r, now)]

    return tx
