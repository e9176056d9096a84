"""A 4-run CPU sweep on the local executor, killed halfway and finished by a second `sweep run`."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from robustscale.store import open_store

TINY_BASE = {"dataset": "fashion_mnist", "model": "wide_resnet16_1", "train_subset": 128, "epochs": 2,
             "batch_size": 64, "attack_steps": 1, "eps": 0.1, "eval_subset": 32, "eval_attack_steps": 1, "workers": 0,
             "progress": False, "energy": False, "channels_last": False}


def tiny_spec(tmp_path: Path, data_dir: Path, name: str = "tiny", **over) -> Path:
    spec = {"name": name, "base": {**TINY_BASE, "data_dir": str(data_dir)},
            "grid": {"method": ["pgd", "trades"]}, "seeds": 2, "name_template": "{method}-s{seed}",
            "output_dir": str(tmp_path / "out"),
            "evaluation": {"attack": "pgd", "n_examples": 64, "steps": 2, "batch_size": 64},
            "executor": {"max_parallel": 2, "cpus_per_task": 1, "timeout_min": 20}}
    spec.update(over)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def sessions(run_dir: Path) -> int:
    """Training sessions of a run (train appends one per start or resume to env.json)."""
    return len(json.loads((run_dir / "env.json").read_text())["sessions"])


def epochs_logged(run_dir: Path) -> list[int]:
    return [json.loads(line)["epoch"] for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]


def wait_group_gone(pgid: int, timeout: float = 30.0) -> None:
    """Wait until no process of the group is left (SIGKILL is delivered asynchronously)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        left = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                left.append(stat.parent.name)
        if not left:
            return
        time.sleep(0.1)
    raise AssertionError(f"processes of group {pgid} still alive: {left}")


def test_killed_sweep_resumes_without_redoing_finished_runs(cli, tmp_path, mnist_like_dir):
    spec = tiny_spec(tmp_path, mnist_like_dir)
    out = tmp_path / "out"
    db = out / "runs.db"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ROBUSTSCALE_HEARTBEAT_S": "1"}
    env.pop("ROBUSTSCALE_STORE", None)
    driver = subprocess.Popen([sys.executable, "-m", "robustscale", "sweep", "run", str(spec), "--max-parallel", "2",
                               "--no-progress"], env=env, start_new_session=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    # Kill the whole process group (driver, submitit controllers, training jobs) once two runs are
    # done, ideally while a later run has a checkpoint but no summary yet.
    deadline = time.time() + 240
    done: list[str] = []
    try:
        while time.time() < deadline and driver.poll() is None:
            if db.exists():
                try:
                    done = [r["name"] for r in open_store(db, create=False).list_runs(["status=done"])]
                except Exception:  # noqa: BLE001  (the store is being created)
                    done = []
            if len(done) >= 2:
                mid = [d for d in out.iterdir() if d.is_dir() and (d / "state.pt").exists()
                       and not (d / "summary.json").exists()]
                if mid or len(done) >= 3:
                    break
            time.sleep(0.05)
        assert driver.poll() is None, f"the sweep ended before it could be killed:\n{driver.stdout.read()}"
    finally:
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()
        wait_group_gone(driver.pid)
    with_checkpoint = {d.name for d in out.iterdir() if d.is_dir() and (d / "state.pt").exists()
                       and not (d / "summary.json").exists()}
    st = open_store(db, create=False)
    before = {r["name"]: r for r in st.list_runs()}
    finished = [n for n, r in before.items() if r["status"] == "done"
                and st.evaluation_exists(n, "pgd", 0.1, 64)]
    assert 2 <= len(finished) < 4
    # Killed runs are `running` in the store but their processes are gone: stale.
    assert all(r["effective_status"] in ("done", "stale", "queued") for r in before.values()), \
        {n: (r["status"], r["effective_status"], r["pid"]) for n, r in before.items()}
    sessions_before = {n: sessions(out / n) for n in finished}

    code, text, err = cli("sweep", "run", spec, "--max-parallel", "2", "--no-progress")
    assert code == 0, err + text
    assert f"{len(finished)} done" in text and f"{4 - len(finished)} to run" in text

    after = {r["name"]: r for r in st.list_runs()}
    assert sorted(after) == ["pgd-s0", "pgd-s1", "trades-s0", "trades-s1"]
    assert all(r["status"] == "done" for r in after.values())
    for name in after:
        assert st.evaluation_exists(name, "pgd", 0.1, 64), name
        assert epochs_logged(out / name) == [1, 2]
    for name in finished:  # not redone: same start time, one training session, no new evaluation
        assert after[name]["started_at"] == before[name]["started_at"]
        assert sessions(out / name) == sessions_before[name] == 1
    for name in with_checkpoint:  # resumed from the checkpoint of epoch 1, not restarted
        assert sessions(out / name) == 2
        assert after[name]["started_at"] == before[name]["started_at"]

    frame = st.runs_frame()
    assert len(frame) == 4 and frame["pgd_robust_acc"].notna().all() and (frame["train_flops"] > 0).all()

    code, text, _ = cli("sweep", "run", spec, "--no-progress")
    assert code == 0 and "4 done" in text and "0 to run" in text
    code, text, _ = cli("sweep", "status", spec, "--json")
    status = json.loads(text)
    assert code == 0 and status["counts"] == {"done": 4}
    assert status["spent"]["train_flops"] == pytest.approx(float(frame["train_flops"].sum()))
    code, text, _ = cli("sweep", "status", spec)
    assert code == 0 and "4 runs: 4 done" in text and "spent so far" in text


def test_preempted_job_requeues_and_resumes(tmp_path, mnist_like_dir):
    """SIGUSR2 (Slurm's and submitit's preemption/timeout signal) -> checkpoint() -> requeue -> resume."""
    import submitit

    from robustscale.config import TrainConfig
    from robustscale.sweep import RunJob

    out = tmp_path / "out"
    cfg = TrainConfig.from_dict({**TINY_BASE, "data_dir": str(mnist_like_dir), "name": "pre", "output_dir": str(out),
                                 "epochs": 3, "train_subset": 256})
    url = f"sqlite:///{out / 'runs.db'}"
    executor = submitit.LocalExecutor(folder=str(out / ".submitit"))
    executor.update_parameters(timeout_min=20)
    job = executor.submit(RunJob(cfg.to_dict(), url, None, "pre", threads=1))
    deadline = time.time() + 120
    while not (out / "pre" / "state.pt").exists():  # epoch 1 is checkpointed
        assert time.time() < deadline and not job.done(), "no checkpoint appeared"
        time.sleep(0.02)
    st = open_store(out / "runs.db", create=False)
    os.kill(st.get_run("pre", details=False)["pid"], signal.SIGUSR2)
    assert job.result()["status"] == "done"
    row = st.get_run("pre")
    assert row["status"] == "done" and row["epochs_done"] == 3
    assert sessions(out / "pre") == 2  # the requeued job resumed the run
    assert epochs_logged(out / "pre") == [1, 2, 3]  # from the checkpoint: no epoch trained twice
    assert "Caught signal SIGUSR2" in "".join(p.read_text() for p in (out / ".submitit").glob("*_0_log.err"))
