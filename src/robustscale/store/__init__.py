"""The results store: every run, epoch and evaluation in SQLite (default) or PostgreSQL.

- :func:`open_store` (URL, path or None -> ``<output_dir>/runs.db``) -> :class:`Store`.
- ``Store.runs_frame()``: done runs as a DataFrame with ``schema.RUN_COLUMNS`` (what ``fit`` reads).
- Hooks for ``train`` / ``evaluate``: :func:`record_run_start`, :func:`record_epoch`,
  :func:`record_run_end`, :func:`record_evaluation` (see ``store/hooks.py``).
"""
from .core import Store, StoreNotFound, effective_status, open_store, run_record
from .hooks import (mark_requeued, record_epoch, record_evaluation, record_run_end, record_run_start, store_for,
                    store_url_for)
from .location import ENV_VAR, is_store_location, mask_url, resolve_store_url
from .tables import SCHEMA_VERSION, STALE, RunStatus

__all__ = ["Store", "StoreNotFound", "open_store", "run_record", "effective_status", "record_run_start", "record_epoch",
           "record_run_end", "record_evaluation", "mark_requeued", "store_for", "store_url_for", "ENV_VAR",
           "is_store_location", "mask_url", "resolve_store_url", "SCHEMA_VERSION", "STALE", "RunStatus"]
