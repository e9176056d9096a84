"""Sweeps own their children, with real signals and real processes.

One `sweep run --executor local --max-parallel 1` in its own session finds a job left running by
an earlier, SIGKILLed sweep (a live controller process whose sweep is gone), adopts it: nothing
new starts until it ends. Then a Ctrl-C to the whole process group (what a terminal sends) stops
the run being trained: exit 130, no traceback anywhere on the terminal, the run `interrupted`
with a resumable state, and no process of the sweep left.
"""
from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from robustscale.store import open_store
from robustscale.store.core import process_start
from robustscale.sweep import load_spec

TINY = {"dataset": "fashion_mnist", "model": "wide_resnet16_1", "train_subset": 256, "epochs": 4, "batch_size": 32,
        "attack_steps": 1, "eps": 0.1, "eval_subset": 16, "eval_attack_steps": 1, "workers": 0, "progress": False,
        "energy": False, "channels_last": False}


def group_alive(pgid: int) -> list[str]:
    left = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            left.append(stat.parent.name)
    return left


def wait_for(predicate, timeout: float, what: str, proc: subprocess.Popen, log: Path):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        if proc.poll() is not None:
            break
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}; sweep log:\n{log.read_text()}")


def row(db: Path, name: str):
    if not db.exists():
        return None
    try:
        return open_store(db, readonly=True).get_run(name, details=False)
    except Exception:  # noqa: BLE001  (being created)
        return None


def test_sweep_adopts_an_orphan_then_ctrl_c_stops_its_run_cleanly(tmp_path, mnist_like_dir, cli_env):
    if sys.platform != "linux":
        pytest.skip("process checks read /proc")
    spec_path = tmp_path / "sig.yaml"
    spec_path.write_text(yaml.safe_dump({
        "name": "sig", "base": {**TINY, "data_dir": str(mnist_like_dir)}, "seeds": [0, 1],
        "name_template": "s{seed}", "output_dir": str(tmp_path / "out"), "evaluation": None,
        "executor": {"max_parallel": 1, "cpus_per_task": 1, "timeout_min": 20}}))
    spec = load_spec(spec_path)
    db = tmp_path / "out" / "runs.db"
    # What a SIGKILLed sweep leaves: s1 queued in a local job whose controller lives on, its sweep gone.
    controller = subprocess.Popen(["sleep", "600"])
    gone = subprocess.Popen(["true"])
    gone.wait()
    st = open_store(db)
    st.start_run(spec.runs[1].cfg, spec.runs[1].run_dir, status="queued", sweep="sig")
    st.set_job("s1", "local", f"{controller.pid}@{process_start(controller.pid)}:{gone.pid}@1")
    st.close()

    log = tmp_path / "sweep.log"
    with open(log, "w") as fh:
        sweep = subprocess.Popen([sys.executable, "-m", "robustscale", "sweep", "run", str(spec_path), "--no-progress"],
                                 env=cli_env(ROBUSTSCALE_HEARTBEAT_S="1"), start_new_session=True, stdout=fh,
                                 stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: "(adopted)" in log.read_text(), 180, "the sweep to start", sweep, log)
        time.sleep(2.0)  # several polls of the sweep: it must not start s0 beside the adopted job
        assert row(db, "s0")["status"] == "queued" and row(db, "s0")["started_at"] is None
        controller.kill()
        controller.wait()
        orphan_end = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
        running = wait_for(lambda: (r := row(db, "s0")) is not None and r["status"] == "running" and r,
                           240, "s0 to start training", sweep, log)
        assert running["started_at"] >= orphan_end - dt.timedelta(seconds=1)  # max_parallel 1 held
        assert row(db, "s1")["status"] == "failed"  # its job ended without recording anything
        time.sleep(1.0)
        os.killpg(sweep.pid, signal.SIGINT)  # Ctrl-C in a terminal: the whole foreground group
        code = sweep.wait(timeout=180)
    finally:
        controller.kill()
        if sweep.poll() is None:
            os.killpg(sweep.pid, signal.SIGKILL)
    text = log.read_text()
    if code == 1 and "done        s0" in text:
        # A race of this test, not of the sweep: the 4-epoch run ended before Ctrl-C reached it (seen on a
        # fast CPU), so there was nothing left to stop. A longer run does not help: it then outlives the wait.
        pytest.skip("s0 finished before Ctrl-C reached it; nothing to stop")
    assert code == 130, text
    assert "Traceback" not in text and "KeyboardInterrupt" not in text, text
    assert "stopping 1 running job(s)" in text and "1 run(s) stopped and marked interrupted" in text, text
    final = open_store(db, readonly=True).get_run("s0", details=False)
    assert final["status"] == "interrupted", final
    assert (spec.runs[0].run_dir / "state.pt").is_file()  # resumable: the next `sweep run` resumes it
    deadline = time.time() + 30
    while group_alive(sweep.pid) and time.time() < deadline:
        time.sleep(0.2)
    assert not group_alive(sweep.pid), "processes of the sweep are left"
