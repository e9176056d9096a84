"""What ``train`` and ``evaluate`` call to keep the results store current while they run.

One call per event, each a no-op on non-zero DDP ranks and when the store is disabled
(``store: none`` / ``ROBUSTSCALE_STORE=none``)::

    record_run_start(cfg, run_dir, resumed=resume is not None)   # before training starts
    record_epoch(cfg, epoch, metrics)                               # after each epoch
    record_run_end(cfg, summary)                                    # after summary.json is written
    record_run_end(cfg, status="failed", error="...")               # in the except: of the loop
    record_evaluation(cfg_or_run_dir, claim)                        # after an evaluation claim

``record_run_start`` raises UserError when the store is unreachable or the name is taken by a
different config, so a run fails before doing any work; it also starts a daemon thread that
refreshes the run's heartbeat every ``$ROBUSTSCALE_HEARTBEAT_S`` seconds (default 60) until
``record_run_end``. After that the store never decides a run's fate: a store hiccup during
training (``record_epoch``, heartbeats) or at its end (``record_run_end``) warns once, in one
line that says how to record the run later (``robustscale runs sync RUN_DIR``), and the run goes
on and keeps its exit status. The run folder is the source of truth (see ``store/sync.py``).
The store is ``store=`` if given, else ``cfg.store``, ``$ROBUSTSCALE_STORE``, ``<cfg.output_dir>/runs.db``.
"""
from __future__ import annotations

import os
import threading
import warnings
from pathlib import Path
from typing import Any, Mapping

from .core import Store
from .folder import config_of, read_summary, run_dir_of
from .location import resolve_store_url
from .tables import RunStatus

HEARTBEAT_S = float(os.environ.get("ROBUSTSCALE_HEARTBEAT_S", 60))

_STORES: dict[tuple[int, str], Any] = {}
_HEARTBEATS: dict[str, "_Heartbeat"] = {}
_REQUEUED: set[str] = set()  # runs a submitit checkpoint handed to a requeued job (not failed)
_LOCK = threading.Lock()


class StoreWarning(UserWarning):
    """The store could not be updated; the run goes on."""


_FAILING: set[str] = set()  # runs whose last store update failed (warn once per outage, not per epoch)


def _warn(message: str) -> None:
    warnings.warn(message, StoreWarning, stacklevel=3)


def sync_hint(run_dir: str | os.PathLike | None, store=None, cfg=None) -> str:
    """``robustscale runs sync RUN_DIR [--store URL]``: how to record a run once the store is back.

    Without ``--store``, ``runs sync`` uses the store the run's own config points at.
    """
    where = str(run_dir) if run_dir is not None else "RUN_DIR"
    default = store_url_for(cfg) if cfg is not None else None
    flag = "" if store is None or store.url == default else f" --store {store.display_url}"
    return f"robustscale runs sync {where}{flag}"


def _store_failed(name: str, what: str, exc: Exception, store, run_dir, cfg=None) -> None:
    if name in _FAILING:
        return
    _FAILING.add(name)
    reason = str(exc).split("; ")[0] if str(exc) else type(exc).__name__
    _warn(f"results store: {what} of {name} not recorded ({reason}); the run folder keeps everything; "
          f"record it later with: {sync_hint(run_dir, store, cfg)}")


def _store_ok(name: str) -> None:
    _FAILING.discard(name)


def store_url_for(cfg=None, store: str | os.PathLike | None = None) -> str | None:
    """The store URL a run uses (None when disabled)."""
    value = store if store is not None else getattr(cfg, "store", None)
    output_dir = getattr(cfg, "output_dir", None) if cfg is not None else None
    return resolve_store_url(value, output_dir)


def store_for(cfg=None, store: str | os.PathLike | None = None):
    """The (per-process cached) ``Store`` of a run, or None when recording is disabled."""
    url = store_url_for(cfg, store)
    if url is None:
        return None
    key = (os.getpid(), url)
    with _LOCK:
        if key not in _STORES:
            _STORES[key] = Store(url)
        return _STORES[key]


def record_run_start(cfg, run_dir: str | os.PathLike | None, *, resumed: bool = False,
                     store: str | os.PathLike | None = None, sweep: str | None = None) -> None:
    """Mark ``cfg.name`` running (fresh start clears old results; ``resumed`` keeps epochs)."""
    if not _main_process():
        return
    st = store_for(cfg, store)
    if st is None:
        return
    st.start_run(cfg, run_dir, resumed=resumed, sweep=sweep or os.environ.get("ROBUSTSCALE_SWEEP") or None)
    _REQUEUED.discard(cfg.name)
    _start_heartbeat(st, cfg.name)


def record_epoch(cfg, epoch: int, metrics: Mapping[str, Any], *, store: str | os.PathLike | None = None) -> None:
    """Store one epoch's metrics (dict of numbers; cumulative compute keys update the run row)."""
    if not _main_process():
        return
    st = None
    try:
        st = store_for(cfg, store)
        if st is not None:
            st.record_epoch(cfg.name, epoch, metrics)
            _store_ok(cfg.name)
    except Exception as exc:  # noqa: BLE001  (see module docstring)
        _store_failed(cfg.name, f"epoch {epoch}", exc, st, _default_run_dir(cfg), cfg)


def record_run_end(cfg, summary: Mapping[str, Any] | None = None, *, status: str = "done", error: str | None = None,
                   store: str | os.PathLike | None = None, run_dir: str | os.PathLike | None = None) -> bool:
    """Final status: ``done`` with the summary (compute + metrics), or ``failed`` with an error line.

    A failure caused by a submitit preemption/timeout that requeued the run is recorded as
    ``queued`` (the requeued job resumes it). A store that cannot be reached only warns (one line
    with the ``runs sync`` command that records the run later): the run's outcome is in its folder.
    Returns True when recorded.
    """
    if not _main_process():
        return False
    _stop_heartbeat(cfg.name)
    status = RunStatus(status)
    if status is RunStatus.FAILED and cfg.name in _REQUEUED:
        status, error = RunStatus.QUEUED, "requeued after preemption or timeout"
    if run_dir is None:
        run_dir = (summary or {}).get("run_dir") or _default_run_dir(cfg)
    st = None
    try:
        st = store_for(cfg, store)
        if st is None:
            return False
        st.finish_run(cfg.name, summary, status=status, error=_one_line(error), cfg=cfg, run_dir=run_dir)
    except Exception as exc:  # noqa: BLE001  (a store outage must not turn a finished run into a failure)
        _FAILING.discard(cfg.name)
        _store_failed(cfg.name, f"final status ({status.value})", exc, st, run_dir, cfg)
        return False
    _store_ok(cfg.name)
    return True


def record_evaluation(cfg_or_run_dir, claim: Mapping[str, Any], *, store: str | os.PathLike | None = None) -> None:
    """Store an evaluation claim of a run (``TrainConfig`` or run folder with config.yaml)."""
    if not _main_process():
        return
    cfg = config_of(cfg_or_run_dir)
    st = store_for(cfg, store)
    if st is None:
        return
    if st.get_run(cfg.name, details=False) is None:
        # A run trained before the store existed (or elsewhere): adopt it from its folder.
        run_dir = run_dir_of(cfg_or_run_dir, cfg)
        summary = read_summary(run_dir)
        st.finish_run(cfg.name, summary, status=RunStatus.DONE if summary else RunStatus.FAILED, cfg=cfg,
                      error=None if summary else "no summary.json", run_dir=run_dir)
    st.record_evaluation(cfg.name, claim)


def mark_requeued(name: str) -> None:
    """Called from a submitit checkpoint: the coming failure of this run is a requeue."""
    _REQUEUED.add(name)


# ---------------------------------------------------------------------- heartbeat
class _Heartbeat(threading.Thread):
    def __init__(self, store, name: str, interval: float):
        super().__init__(name=f"robustscale-heartbeat-{name}", daemon=True)
        self.store, self.run_name, self.interval = store, name, interval
        self.stop_event = threading.Event()

    def run(self) -> None:
        while not self.stop_event.wait(self.interval):
            try:
                self.store.heartbeat(self.run_name)
            except Exception as exc:  # noqa: BLE001
                _store_failed(self.run_name, "heartbeat", exc, self.store, None)


def _start_heartbeat(store, name: str) -> None:
    _stop_heartbeat(name)
    if HEARTBEAT_S > 0:
        hb = _Heartbeat(store, name, HEARTBEAT_S)
        _HEARTBEATS[name] = hb
        hb.start()


def _stop_heartbeat(name: str) -> None:
    hb = _HEARTBEATS.pop(name, None)
    if hb is not None:
        hb.stop_event.set()


# ---------------------------------------------------------------------- helpers
def _main_process() -> bool:
    """False on DDP ranks other than 0 (torchrun and submitit set RANK)."""
    try:
        return int(os.environ.get("RANK", "0")) == 0
    except ValueError:
        return True


def _default_run_dir(cfg) -> Path | None:
    if getattr(cfg, "output_dir", None) is None or not getattr(cfg, "name", None):
        return None
    return Path(cfg.output_dir) / str(cfg.name)


def _one_line(text: str | None) -> str | None:
    if text is None:
        return None
    lines = [ln.strip() for ln in str(text).strip().splitlines() if ln.strip()]
    if not lines:
        return str(text)[:2000]
    # A traceback ends with the exception; a message starts with it.
    return (lines[-1] if lines[0].startswith("Traceback") else lines[0])[:2000]
