"""Tables of the results store (SQLAlchemy Core; the same DDL on SQLite and PostgreSQL).

Four tables plus a key/value table holding the schema version:

- ``runs``: one row per run, keyed by ``name``. The full resolved ``TrainConfig`` as JSON and
  its ``config_hash``; ``status`` (queued / running / done / failed / interrupted); where and with what it ran
  (host, pid, package versions); timestamps and a ``heartbeat_at`` the training process refreshes;
  every compute field of ``robustscale.schema.RUN_COLUMNS``; the final metrics. Final metrics
  and compute totals are written in the same transaction that sets ``status = 'done'``, so a
  crash leaves a ``running`` or ``failed`` row, never a done row with holes.
- ``epochs``: per-epoch metrics of a run (one row per (run, epoch), rewritten on resume).
- ``evaluations``: one row per (run, attack, eps, n_examples): clean and robust accuracy
  (percent), the per-attack breakdown and the compute the evaluation spent.

- ``leases``: the slots of a pool (a sweep's ``max_parallel``) held by live processes, so that
  concurrent ``sweep run`` of one spec share the cap (``store/leases.py``).

Units are in the column names (``train_flops``, ``energy_kwh``, ``wall_seconds``, ``*_usd``);
accuracies are percentages (0-100); ``eps`` is in [0, 1] pixel units; timestamps are naive UTC.
"""
from __future__ import annotations

import enum

from sqlalchemy import (JSON, BigInteger, Boolean, Column, DateTime, Float, ForeignKey, Index, Integer, MetaData,
                        String, Table, Text, UniqueConstraint)

SCHEMA_VERSION = 4  # bump with a migration in store/migrations.py when a table changes


class RunStatus(str, enum.Enum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    INTERRUPTED = "interrupted"  # stopped by a signal after saving a resumable state


# What `--status` / `status=` accept: the stored statuses, `stale` (see below) and `all`.
def status_choices() -> list[str]:
    return [s.value for s in RunStatus] + [STALE]


# Shown by `runs list` / `sweep status` for a `running` row whose process is gone (not stored).
STALE = "stale"

metadata = MetaData()

meta = Table(
    "robustscale_meta", metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

# Compute and final-metric columns shared with schema.RUN_COLUMNS, with their SQL types.
RUN_VALUE_COLUMNS: dict[str, object] = {
    "model_parameters": BigInteger,
    "train_images": BigInteger,
    "train_images_seen": BigInteger,
    "train_flops": Float,
    "train_flops_per_image": Float,
    "eval_flops": Float,
    "wall_seconds": Float,
    "device_hours": Float,
    "device_name": String(255),
    "device_count": Integer,
    "device_type": String(64),
    "energy_kwh": Float,
    "emissions_kg": Float,
    "electricity_usd": Float,
    "cloud_usd_low": Float,
    "cloud_usd_high": Float,
    "clean_acc": Float,
    "clean_acc_n_examples": Integer,  # the test images behind each headline accuracy
    "pgd_robust_acc": Float,
    "pgd_robust_acc_n_examples": Integer,
    "apgd_ce_robust_acc": Float,
    "apgd_ce_robust_acc_n_examples": Integer,
    "aa_robust_acc": Float,
    "aa_n_examples": Integer,
    "collapsed": Boolean,
    "collapsed_epoch": Integer,  # first epoch the per-epoch check flagged catastrophic overfitting (None: not flagged)
}

runs = Table(
    "runs", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(255), nullable=False, unique=True),
    Column("source", String(64), nullable=False, default="robustscale"),
    Column("status", String(16), nullable=False),
    Column("config_hash", String(64), nullable=True),
    Column("config", JSON, nullable=True),
    Column("sweep", String(255), nullable=True),
    Column("run_dir", Text, nullable=True),
    # identity of what was trained (copied out of the config so SQL can filter on them)
    Column("dataset", String(64)),
    Column("model", String(128)),
    Column("method", String(32)),
    Column("attack_steps", Integer),
    Column("eps", Float),
    Column("norm", String(16)),
    Column("epochs", Integer),
    Column("seed", Integer),
    Column("synthetic_data", Boolean),
    # where and with what
    Column("host", String(255)),
    Column("pid", Integer),
    Column("process_start", String(32)),  # /proc start time: tells a reused pid apart
    Column("executor", String(16)),  # how a sweep submitted it: local / slurm / inline
    Column("job_id", String(64)),  # its submitit job id (Slurm job id, or the local controller's pid)
    Column("robustscale_version", String(32)),
    Column("torch_version", String(64)),
    Column("python_version", String(32)),
    # lifecycle (naive UTC)
    Column("created_at", DateTime, nullable=False),
    Column("started_at", DateTime),
    Column("finished_at", DateTime),
    Column("heartbeat_at", DateTime),
    Column("epochs_done", Integer),
    Column("error", Text),
    *(Column(name, type_) for name, type_ in RUN_VALUE_COLUMNS.items()),
    Column("summary", JSON),  # the training summary as returned by train()
    Column("extra", JSON),  # source-specific fields (e.g. the paper's train_loss)
)
Index("ix_runs_config_hash", runs.c.config_hash)
Index("ix_runs_status", runs.c.status)

epochs = Table(
    "epochs", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", Integer, ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
    Column("epoch", Integer, nullable=False),
    Column("recorded_at", DateTime, nullable=False),
    Column("train_loss", Float),
    Column("train_adv_acc", Float),  # percent, on the examples the loss used
    Column("train_clean_acc", Float),
    Column("clean_acc", Float),  # per-epoch evaluation on cfg.eval_subset test images
    Column("pgd_robust_acc", Float),
    Column("fgsm_robust_acc", Float),  # FGSM on the same images: the collapse check compares the two
    Column("lr", Float),
    Column("images_per_second", Float),
    Column("train_images_seen", BigInteger),  # cumulative, like the next three
    Column("train_flops", Float),
    Column("wall_seconds", Float),
    Column("metrics", JSON),
    UniqueConstraint("run_id", "epoch", name="uq_epochs_run_epoch"),
)

evaluations = Table(
    "evaluations", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", Integer, ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
    Column("attack", String(64), nullable=False),
    Column("eps", Float, nullable=False),
    Column("norm", String(16)),
    Column("n_examples", Integer, nullable=False),
    Column("clean_acc", Float),
    Column("robust_acc", Float),
    Column("per_attack", JSON),
    Column("eval_flops", Float),
    Column("wall_seconds", Float),
    Column("device_hours", Float),
    Column("energy_kwh", Float),
    Column("created_at", DateTime, nullable=False),
    Column("claim", JSON),
    UniqueConstraint("run_id", "attack", "eps", "n_examples", name="uq_evaluations_key"),
)

# Per-epoch metric keys copied into typed columns (the whole dict is kept in `metrics`).
EPOCH_VALUE_COLUMNS = ("train_loss", "train_adv_acc", "train_clean_acc", "clean_acc", "pgd_robust_acc",
                       "fgsm_robust_acc", "lr", "images_per_second", "train_images_seen", "train_flops", "wall_seconds")

# One row per taken slot of a pool (``sweep:<name>``): who holds it (the sweep process and, once submitted,
# its job's process) and when it last said so. A slot whose holders are gone is reclaimed (store/leases.py).
leases = Table(
    "leases", metadata,
    Column("pool", String(255), primary_key=True),
    Column("slot", Integer, primary_key=True),
    Column("run", String(255), nullable=False),
    Column("host", String(255)),
    Column("pid", Integer),
    Column("process_start", String(32)),
    Column("job_pid", Integer),
    Column("job_process_start", String(32)),
    Column("heartbeat_at", DateTime, nullable=False),
    UniqueConstraint("pool", "run", name="uq_leases_pool_run"),
)
