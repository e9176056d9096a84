"""An evaluation killed with `kill -9` and resumed bills every session: the claim's `sessions` counts the
killed ones, and its wall time is what they saved in the resume state plus the session that finished it."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

STEM = "pgd30-0.1"


def _state(path: Path) -> dict | None:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001  (being replaced, or not there yet: read again)
        return None


def _wall(state: dict) -> float:
    return sum(s["wall_seconds"] for s in state["compute"])


def _run_until(cmd, env, state_path: Path, done_before: int, log: Path) -> dict:
    """Start the evaluation; SIGKILL it once its state shows an attack batch beyond ``done_before``."""
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=fh)
        deadline = time.time() + 240
        while time.time() < deadline and proc.poll() is None:
            st = _state(state_path) if state_path.is_file() else None
            if st is not None and st["stage"] >= 1 and st["stage"] * 1000 + st["batches_done"] > done_before:
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=60)
                break
            time.sleep(0.02)
        else:
            proc.kill()
            pytest.fail(f"the evaluation ended or hung before it could be killed:\n{log.read_text()[-1500:]}")
    st = _state(state_path)
    assert st is not None
    return st


def test_an_evaluation_killed_twice_reports_the_sum_of_its_sessions(tmp_path, mnist_like_dir, cli_env):
    from robustscale.data import dataset_normalization
    from robustscale.models import create_model

    torch.manual_seed(0)
    model = create_model("wide_resnet16_1", num_classes=10, in_chans=1, **dataset_normalization("fashion_mnist"))
    ckpt = tmp_path / "model.pth.tar"
    torch.save({"state_dict": model.model.state_dict()}, ckpt)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "robustscale", "evaluate", "--model", "wide_resnet16_1", "--checkpoint", ckpt,
           "--dataset", "fashion_mnist", "--data-dir", mnist_like_dir, "--attack", "pgd", "--eps", "0.1",
           "--steps", "30", "--n-examples", "160", "--batch-size", "4", "--no-energy", "--output-dir", out,
           "--json", "--no-progress"]
    cmd = [str(c) for c in cmd]
    state_path = out / "eval" / f".state-{STEM}.pt"

    first = _run_until(cmd, cli_env(), state_path, 0, tmp_path / "s1.log")
    second = _run_until(cmd, cli_env(), state_path, first["stage"] * 1000 + first["batches_done"], tmp_path / "s2.log")
    assert first["sessions"] == 1 and second["sessions"] == 2
    assert _wall(second) > _wall(first) > 0  # session 2's segments were added to session 1's

    started = time.perf_counter()
    r = subprocess.run(cmd, env=cli_env(), capture_output=True, text=True, timeout=300)
    third_wall = time.perf_counter() - started
    assert r.returncode == 0, r.stderr[-2000:]
    claim = json.loads(r.stdout)
    assert claim["sessions"] == 3
    # The claim's wall time: the two killed sessions as saved, plus the third (less than its process's life).
    assert _wall(second) < claim["wall_seconds"] < _wall(second) + third_wall
    assert claim["device_hours"] == pytest.approx(claim["wall_seconds"] * claim["device_count"] / 3600, rel=1e-9)
    assert not state_path.exists()
    on_disk = json.loads((out / "eval" / f"{STEM}.json").read_text())
    assert on_disk["sessions"] == 3 and on_disk["wall_seconds"] == claim["wall_seconds"]
