"""Compute totals survive real kills: `robustscale train` subprocesses SIGKILLed mid-epoch, at an epoch
boundary and during the final evaluation, then resumed, report the ledger of their checkpoints.

The totals a run reports (summary.json, the store row `runs show` prints) must equal the sum of
the per-epoch ledger figures in metrics.jsonl (each epoch's work counted once, whatever session
did it), and the FLOPs must be those of exactly the images of every epoch. A resume of the
finished run changes nothing. A PostgreSQL store stopped mid-run leaves the run done (exit 0,
summary printed) with one warning line naming `runs sync`, which then records it.
"""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

EPOCHS, TRAIN, BATCH, EVAL = 3, 96, 16, 128
RECIPE = {"dataset": "fashion_mnist", "model": "wide_resnet16_1", "train_subset": TRAIN, "batch_size": BATCH,
          "epochs": EPOCHS, "method": "pgd", "attack_steps": 3, "eps": 0.1, "eval_subset": EVAL,
          "eval_attack_steps": 5, "workers": 0, "energy": False, "progress": True, "channels_last": False,
          "augment": False, "warmup_epochs": 0}
STEPS = TRAIN // BATCH


def recipe(tmp_path: Path, data_dir: Path, **over) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump({**RECIPE, "data_dir": str(data_dir), **over}))
    return path


class Session:
    """One `robustscale train` process; its stderr (progress bars, epoch lines) goes to a file we poll."""

    def __init__(self, args: list, log: Path, env: dict):
        self.log = log
        self.fh = open(log, "w")
        self.proc = subprocess.Popen([sys.executable, "-m", "robustscale", "train", *map(str, args)], env=env,
                                     stdout=subprocess.PIPE, stderr=self.fh, text=True)

    def text(self) -> str:
        return self.log.read_text()

    def wait_for(self, predicate, what: str, timeout: float = 240) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if predicate():
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        raise AssertionError(f"timed out waiting for {what}:\n{self.text()[-2000:]}")

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=60)
        self.fh.close()

    def finish(self, timeout: float = 300) -> tuple[int, str]:
        out, _ = self.proc.communicate(timeout=timeout)
        self.fh.close()
        return self.proc.returncode, out


def metrics(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:  # being replaced: read again
            return []
    return rows


def bar(text: str, epoch: int) -> int | str | None:
    """Where the progress bar of ``epoch`` is: batches done (an int), ``"closed"`` (its steps are over:
    tqdm blanks the line), or None (not started). Not every step is printed (tqdm's mininterval)."""
    head = f"epoch {epoch}/{EPOCHS}:"
    if head not in text:
        return None
    lines = text.rsplit(head, 1)[1].split("\n")
    if any(ln and not ln.strip() for ln in lines[1:]):
        return "closed"
    done = lines[0].split("|")
    return int(done[2].split("/")[0]) if len(done) > 2 and "/" in done[2] else 0


def test_kills_then_resumes_count_every_epoch_once(tmp_path, mnist_like_dir, cli_env, cli):
    out = tmp_path / "runs"
    run_dir = out / "r"
    env = cli_env()
    first = ["--config", recipe(tmp_path, mnist_like_dir), "--output-dir", out, "--name", "r"]
    resume = ["--resume", run_dir]

    # Session 1: killed in the middle of epoch 2 (its epoch-1 checkpoint is kept).
    s = Session(first, tmp_path / "s1.log", env)
    s.wait_for(lambda: len(metrics(run_dir)) == 1 and bar(s.text(), 2) in range(1, STEPS - 1), "epoch 2's steps")
    s.kill()
    assert len(metrics(run_dir)) == 1
    # Session 2: killed at the boundary, as soon as epoch 2's row is written (its state.pt maybe not yet).
    s = Session(resume, tmp_path / "s2.log", env)
    s.wait_for(lambda: len(metrics(run_dir)) == 2, "epoch 2 to end")
    s.kill()
    # Session 3: killed during the final evaluation (epoch 3 trained, its check on 128 images running:
    # ~4x an epoch's compute, so the kill lands in it).
    s = Session(resume, tmp_path / "s3.log", env)
    s.wait_for(lambda: bar(s.text(), 3) == "closed" and "epoch 3/3 |" not in s.text(), "epoch 3's evaluation")
    s.kill()
    assert len(metrics(run_dir)) <= 2, "the kill missed the final evaluation"
    # Session 4 finishes; then resuming the finished run is a no-op that says so.
    code, text = Session(resume, tmp_path / "s4.log", env).finish()
    assert code == 0, (tmp_path / "s4.log").read_text()[-2000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    code, text, err = cli("train", "--resume", run_dir)
    assert code == 0 and "already complete (3/3 epochs); nothing to train" in err, err
    assert json.loads((run_dir / "summary.json").read_text()) == summary  # never a reset

    rows = metrics(run_dir)
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    for key in ("wall_seconds", "device_hours"):
        assert summary[key] > 0
        # float64 sums of a dozen positive terms in another order: equal to ~1e-15 relative
        assert summary[key] == pytest.approx(sum(r[f"ledger_{key}"] for r in rows), rel=1e-12), key
        assert rows[-1][key] == pytest.approx(summary[key], rel=1e-12)  # the last checkpoint's ledger
    assert summary["energy_kwh"] is None and all(r["ledger_energy_kwh"] is None for r in rows)  # energy: false
    assert summary["train_images_seen"] == EPOCHS * TRAIN
    assert summary["train_flops"] == pytest.approx(summary["train_flops_per_image"] * EPOCHS * TRAIN, rel=1e-12)
    sessions = {s["session"]: s for s in summary["compute_sessions"]}
    # Session 1 kept epoch 1; epoch 2 is session 2's (or 3's, if 2 died before its checkpoint); epoch 3 is 4's.
    assert sessions[1]["epochs"] == [1, 1] and rows[0]["sessions"] == [1]
    assert rows[2]["sessions"] == [max(sessions)] and max(sessions) in (3, 4)
    assert sum(s["wall_seconds"] for s in sessions.values()) == pytest.approx(summary["wall_seconds"], rel=1e-12)

    # The store says the same (`runs show`), and its epochs sum to its totals.
    code, text, err = cli("runs", "show", "r", "--store", out / "runs.db", "--json")
    assert code == 0, err
    shown = json.loads(text)
    assert shown["status"] == "done" and shown["epochs_done"] == EPOCHS
    for key in ("wall_seconds", "device_hours", "train_flops"):
        assert shown[key] == pytest.approx(summary[key], rel=1e-12), key
    epochs = [e["metrics"] for e in shown["epoch_metrics"]]
    assert shown["wall_seconds"] == pytest.approx(sum(e["ledger_wall_seconds"] for e in epochs), rel=1e-12)
    code, text, _ = cli("runs", "show", "r", "--store", out / "runs.db")
    assert "sessions:" in text


def test_store_outage_mid_run_keeps_the_run_done(stoppable_postgres, tmp_path, mnist_like_dir, cli_env, cli,
                                                 monkeypatch):
    url = stoppable_postgres.new_database()
    out = tmp_path / "runs"
    run_dir = out / "pg"
    env = cli_env(ROBUSTSCALE_STORE=url)
    # Five epochs: the server is down (pg_ctl stop takes a moment) well before the last one.
    s = Session(["--config", recipe(tmp_path, mnist_like_dir, eval_subset=32, eval_attack_steps=1, epochs=5),
                 "--output-dir", out, "--name", "pg"], tmp_path / "pg.log", env)
    s.wait_for(lambda: len(metrics(run_dir)) == 1, "epoch 1")
    stoppable_postgres.stop()
    code, text = s.finish()
    err = s.text()
    assert code == 0, err[-2000:]
    assert "status" in text and "completed" in text  # the summary is printed
    warns = [ln for ln in err.splitlines() if ln.startswith("warning: results store")]
    assert "Traceback" not in err and "StoreWarning" not in err, err[-2000:]
    assert warns and all("cannot reach store" in w for w in warns), err[-3000:]
    assert f"record it later with: robustscale runs sync {run_dir}" in warns[-1]
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "completed"

    stoppable_postgres.start()
    monkeypatch.setenv("ROBUSTSCALE_STORE", url)
    code, text, err = cli("runs", "sync", run_dir)
    assert code == 0 and "pg: done" in text, err
    from robustscale.store import open_store

    row = open_store(url).get_run("pg")
    assert row["status"] == "done" and [e["epoch"] for e in row["epoch_metrics"]] == [1, 2, 3, 4, 5]


def test_bad_output_and_data_dirs_write_nothing(ro_mounts, run_cli_many, cli_env, tmp_path, mnist_like_dir):
    ro = tmp_path / "ro"
    ro.mkdir()
    db = tmp_path / "elsewhere" / "runs.db"
    results = run_cli_many([
        ["train", "--config", recipe(tmp_path, mnist_like_dir), "--output-dir", ro / "out", "--name", "x",
         "--epochs", "1"],
        ["train", "--config", recipe(tmp_path, mnist_like_dir), "--data-dir", tmp_path / "nope", "--output-dir",
         tmp_path / "out"],
    ], ro=(ro,), env=cli_env(ROBUSTSCALE_STORE=str(db)))
    for (code, out, err), fragment in zip(results, ("cannot write --output-dir", str(tmp_path / "nope"))):
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and fragment in lines[0] and "Traceback" not in err, err
    assert "Read-only file system" in results[0][2]
    assert not db.exists() and not (tmp_path / "out").exists() and not list(ro.iterdir())
