"""The store fails without taking runs with it; a read-only store still reads; folders rebuild rows.

- A store on a read-only mount: `runs list/show/export`, `fit` and `sweep status` read it; writing
  `-o` into a read-only folder is one line, exit 2 (no traceback, no file).
- A real PostgreSQL stopped mid-run with pg_ctl: epochs and the final status only warn, once,
  in one line naming `runs sync`; after a restart `runs sync RUN_DIR` makes the row done.
- `runs import --from-dirs` / `runs sync` rebuild done, interrupted and failed runs from their
  folders, idempotently; a stale row is reconciled from its folder.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import yaml

from robustscale.config import TrainConfig
from robustscale.store import open_store, record_epoch, record_run_end, record_run_start


def make_cfg(out: Path, name: str, **kw) -> TrainConfig:
    base = dict(name=name, output_dir=str(out), model="wide_resnet16_1", dataset="fashion_mnist", eps=0.1,
                attack_steps=2, epochs=2, energy=False)
    return TrainConfig(**{**base, **kw})


def epoch_row(epoch: int, seconds_per_epoch: float = 10.0) -> dict:
    """A metrics.jsonl row (cumulative compute, as training writes it)."""
    return {"epoch": epoch, "train_loss": 2.0 / epoch, "clean_acc": 40.0 + epoch, "pgd_robust_acc": 20.0 + epoch,
            "train_images_seen": 256 * epoch, "train_flops": 1e12 * epoch, "wall_seconds": seconds_per_epoch * epoch,
            "device_hours": seconds_per_epoch * epoch / 3600, "eval_images": 16}


def summary(cfg: TrainConfig, epochs: int, status: str = "completed") -> dict:
    return {"name": cfg.name, "status": status, "config_hash": cfg.config_hash(), "train_flops": 1e12 * epochs,
            "wall_seconds": 10.0 * epochs, "device_hours": 10.0 * epochs / 3600, "energy_kwh": 1e-4 * epochs,
            "train_images_seen": 256 * epochs, "clean_acc": 40.0 + epochs, "pgd_robust_acc": 20.0 + epochs,
            "epochs_done": epochs, "eval_images": 16}


def write_run(out: Path, name: str, *, epochs: int = 0, done: bool = False, state: bool = False,
              claim: dict | None = None, **kw) -> Path:
    """A run folder as training leaves it: config.yaml, metrics.jsonl, [state.pt], [summary.json], [eval/]."""
    cfg = make_cfg(out, name, **kw)
    run_dir = out / name
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict()))
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(epoch_row(e)) + "\n" for e in range(1, epochs + 1)))
    if state:
        (run_dir / "state.pt").write_bytes(b"resumable")
    if done:
        (run_dir / "summary.json").write_text(json.dumps(summary(cfg, epochs)))
    if claim:
        (run_dir / "eval").mkdir()
        (run_dir / "eval" / f"{claim['attack']}.json").write_text(json.dumps(claim))
    return run_dir


AA = {"attack": "aa-standard", "eps": 0.1, "n_examples": 100, "clean_acc": 44.0, "robust_acc": 21.0,
      "eval_flops": 1e10}


# ---------------------------------------------------------------------- read-only store
def test_read_only_store_is_read_and_unwritable_outputs_are_one_line(ro_mounts, run_cli_many, cli, tmp_path):
    out = tmp_path / "ro"
    for i in range(4):
        write_run(out, f"r{i}", epochs=2, done=True, claim={**AA, "robust_acc": 20.0 + 3 * i}, seed=i)
        d = out / f"r{i}"
        s = json.loads((d / "summary.json").read_text())
        (d / "summary.json").write_text(json.dumps({**s, "train_flops": 1e12 * 4 ** i}))
    code, _, err = cli("runs", "import", "--from-dirs", out)
    assert code == 0, err
    db = out / "runs.db"
    assert not (out / "runs.db-wal").exists()  # closed cleanly: the hardest case for a read-only open

    results = run_cli_many([
        ["runs", "list", "--store", db], ["runs", "show", "r2", "--store", db],
        ["runs", "export", "--store", db, "-o", tmp_path / "runs.csv"], ["fit", db, "--bootstrap", "0"],
        ["runs", "export", "--store", db, "-o", out / "x.csv"],
        ["report", tmp_path / "runs.csv", "-o", out / "report.html", "--bootstrap", "0"],
    ], ro=(out,))
    (c1, o1, e1), (c2, o2, e2), (c3, o3, e3), (c4, o4, e4) = results[:4]
    assert c1 == 0 and "4 runs (4 done)" in o1, e1
    assert c2 == 0 and "run r2" in o2, e2
    assert c3 == 0 and "wrote 4 runs" in o3, e3
    assert c4 == 0 and "4 fitted" in o4, e4
    for code, _, err in results[4:]:
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and "Read-only file system" in lines[0], err
        assert str(out) in lines[0] and "Traceback" not in err
    assert sorted(p.name for p in out.iterdir()) == ["r0", "r1", "r2", "r3", "runs.db"]


# ---------------------------------------------------------------------- PostgreSQL outage
def test_postgres_stopped_mid_run_only_warns_and_runs_sync_recovers(stoppable_postgres, tmp_path, cli, monkeypatch):
    url = stoppable_postgres.new_database()
    monkeypatch.setenv("ROBUSTSCALE_STORE", url)
    out = tmp_path / "runs"
    run_dir = write_run(out, "pg-run")
    cfg = TrainConfig.from_yaml(run_dir / "config.yaml")
    record_run_start(cfg, run_dir)
    record_epoch(cfg, 1, epoch_row(1))
    stoppable_postgres.stop()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        record_epoch(cfg, 2, epoch_row(2))
        record_epoch(cfg, 3, epoch_row(3))  # still down: no second warning for the same outage
        (run_dir / "metrics.jsonl").write_text("".join(json.dumps(epoch_row(e)) + "\n" for e in (1, 2, 3)))
        (run_dir / "summary.json").write_text(json.dumps(summary(cfg, 3)))
        assert record_run_end(cfg, summary(cfg, 3)) is False  # never raises: the run is done in its folder
    messages = [str(w.message) for w in caught]
    assert len(messages) == 2 and all("\n" not in m for m in messages), messages
    assert "epoch 2 of pg-run not recorded" in messages[0] and "cannot reach store" in messages[0]
    assert "final status (done) of pg-run not recorded" in messages[1]
    assert f"robustscale runs sync {run_dir}" in messages[1]

    stoppable_postgres.start()
    store = open_store(url)
    assert store.get_run("pg-run")["epochs_done"] == 1
    code, out_text, err = cli("runs", "sync", run_dir)  # the store from the run's own config
    assert code == 0 and "pg-run: done (updated; 3 epoch(s)" in out_text, err
    row = store.get_run("pg-run")
    assert row["status"] == "done" and row["epochs_done"] == 3
    assert [e["epoch"] for e in row["epoch_metrics"]] == [1, 2, 3]
    assert row["wall_seconds"] == 30.0 and row["train_flops"] == 3e12


def test_cli_prints_store_warnings_as_one_line(tmp_path, capsys):
    from robustscale.cli import _one_line_warnings
    from robustscale.store.hooks import StoreWarning

    with _one_line_warnings():
        warnings.warn("results store: epoch 2 of r not recorded", StoreWarning)
    err = capsys.readouterr().err
    assert err == "warning: results store: epoch 2 of r not recorded\n"


# ---------------------------------------------------------------------- rebuilding from folders
def test_import_from_dirs_rebuilds_every_kind_of_run_and_reconciles_stale_rows(cli, tmp_path):
    out = tmp_path / "runs"
    write_run(out, "finished", epochs=2, done=True, claim=AA)
    write_run(out, "killed", epochs=1, state=True, seed=1)
    write_run(out, "early", seed=2)
    (out / ".submitit").mkdir()  # not a run folder: ignored
    db = out / "runs.db"
    for attempt in range(2):  # idempotent
        code, text, err = cli("runs", "import", "--from-dirs", out, "--store", db, "--json")
        assert code == 0, err
        got = {r["name"]: r for r in json.loads(text)}
        assert set(got) == {"finished", "killed", "early"}
        assert got["finished"]["outcome"] == ("inserted" if attempt == 0 else "updated")
    st = open_store(db)
    rows = {r["name"]: r for r in st.list_runs()}
    assert {n: r["status"] for n, r in rows.items()} == {"finished": "done", "killed": "interrupted", "early": "failed"}
    fin = st.get_run("finished")
    assert len(fin["epoch_metrics"]) == 2 and fin["aa_robust_acc"] == 21.0 and fin["aa_n_examples"] == 100
    assert fin["clean_acc"] == 44.0 and fin["train_flops"] == 2e12 and len(fin["evaluations"]) == 1
    assert rows["killed"]["wall_seconds"] == 10.0 and "--resume" in rows["killed"]["error"]

    # A row left `running` by a process that is gone: `runs sync` (no folders) reconciles it.
    cfg = TrainConfig.from_yaml(out / "killed" / "config.yaml")
    st.start_run(cfg, out / "killed", resumed=True)
    from sqlalchemy import update

    from robustscale.store.tables import runs

    with st.engine.begin() as conn:  # as if its process had died: a pid that cannot exist
        conn.execute(update(runs).where(runs.c.name == "killed").values(pid=2 ** 22 + 1, process_start="1"))
    assert st.get_run("killed")["effective_status"] == "stale"
    (out / "killed" / "summary.json").write_text(json.dumps(summary(cfg, 2)))
    code, text, err = cli("runs", "sync", "--output-dir", out)
    assert code == 0 and "killed: done" in text, err
    assert st.get_run("killed")["status"] == "done"
    code, text, err = cli("runs", "sync", "--output-dir", out)
    assert code == 0 and "no stale runs" in text

    # A folder whose config differs from the row of the same name is refused, naming it.
    other = tmp_path / "other"
    write_run(other, "finished", epochs=1, done=True, model="wide_resnet16_2", output_dir=str(out))
    code, text, err = cli("runs", "sync", other / "finished", "--store", db)
    assert code == 2 and "different config" in err and len(err.strip().splitlines()) == 1
