"""Which process owns a running run, and whether it is still alive.

A ``running`` row records its host, pid and the pid's start time (so a reused pid is not
mistaken for it) and a heartbeat; :func:`effective_status` reads it as ``stale`` once the
process is gone (this host) or the heartbeat is too old (elsewhere).
"""
from __future__ import annotations

import datetime as dt
import os
import platform
import socket
from importlib import metadata
from pathlib import Path
from typing import Any, Mapping

from .. import __version__
from .tables import STALE, RunStatus

STALE_AFTER_S = float(os.environ.get("ROBUSTSCALE_STALE_AFTER_S", 600))  # no heartbeat for this long: stale


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


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
        return RunStatus.RUNNING.value if process_alive(int(row["pid"]), row.get("process_start")) else STALE
    beat = row.get("heartbeat_at")
    limit = STALE_AFTER_S if stale_after_s is None else stale_after_s
    if beat is None or ((now or utcnow()) - beat).total_seconds() > limit:
        return STALE
    return RunStatus.RUNNING.value


def holder_alive(row: Mapping[str, Any], now: dt.datetime | None = None) -> bool:
    """Is a lease (``leases`` row) still held? On this host: its sweep process or its job's process is
    alive; elsewhere: a heartbeat within ``STALE_AFTER_S``."""
    if row.get("host") == socket.gethostname():
        procs = ((row.get("pid"), row.get("process_start")), (row.get("job_pid"), row.get("job_process_start")))
        return any(pid and process_alive(int(pid), start) for pid, start in procs)
    beat = row.get("heartbeat_at")
    return beat is not None and ((now or utcnow()) - beat).total_seconds() <= STALE_AFTER_S


def process_identity() -> dict[str, Any]:
    return {"host": socket.gethostname(), "pid": os.getpid(), "process_start": process_start(os.getpid())}


def process_start(pid: int) -> str | None:
    """Start time of a process in clock ticks since boot (Linux), so a reused pid is not mistaken for it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def process_alive(pid: int, start: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    if start is not None:
        now_start = process_start(pid)
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


def same_process(row: Mapping[str, Any], me: Mapping[str, Any]) -> bool:
    return row.get("host") == me["host"] and row.get("pid") == me["pid"]


def versions() -> dict[str, Any]:
    try:
        torch_version = metadata.version("torch")
    except metadata.PackageNotFoundError:
        torch_version = None
    return {"robustscale_version": __version__, "torch_version": torch_version,
            "python_version": platform.python_version()}


def ago(when: dt.datetime | None, now: dt.datetime) -> str:
    if when is None:
        return "never"
    return f"{(now - when).total_seconds():.0f} s ago"
