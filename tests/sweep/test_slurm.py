"""A 2-run CPU sweep through `--executor slurm` on a real one-node Slurm cluster (scripts/slurm-local.sh).

CI (.ci/run) installs slurm-wlm + munge and starts the cluster; locally the test starts it itself
when it can (root, binaries present) and stops it afterwards. Otherwise it skips with the reason.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import subprocess
from pathlib import Path

import pytest

from robustscale.store import open_store

from .test_local import tiny_spec

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "slurm-local.sh"


def _process_named(name: str) -> bool:
    for comm in Path("/proc").glob("[0-9]*/comm"):
        try:
            if comm.read_text().strip() == name:
                return True
        except OSError:  # the process just exited
            continue
    return False


def _node_state() -> str:
    controller = _process_named("slurmctld")
    if shutil.which("sinfo") is None or not controller:  # sinfo would retry for seconds
        return ""
    try:
        out = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], capture_output=True, text=True, timeout=3).stdout
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.strip().splitlines()[0] if out.strip() else ""


@pytest.fixture(scope="module")
def slurm_cluster():
    if _node_state() in ("idle", "mixed", "allocated"):
        yield "already running"
        return
    if shutil.which("slurmctld") is None and not Path("/usr/sbin/slurmctld").exists():
        pytest.skip("Slurm is not installed (apt-get install slurm-wlm munge; .ci/run does this)")
    if os.geteuid() != 0:
        pytest.skip("starting a local Slurm cluster needs root")
    r = subprocess.run([str(SCRIPT), "start"], capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        pytest.skip(f"cannot start a one-node Slurm cluster here: {(r.stderr or r.stdout).strip()}")
    try:
        yield "started"
    finally:
        subprocess.run([str(SCRIPT), "stop"], capture_output=True, text=True, timeout=60)


def test_slurm_sweep_runs_both_runs(cli, tmp_path, mnist_like_dir, slurm_cluster):
    spec = tiny_spec(tmp_path, mnist_like_dir, name="slurm", seeds=None, name_template="{method}",
                     executor={"cpus_per_task": 1, "gpus_per_job": 0, "timeout_min": 15, "array_parallelism": 2})
    code, out, err = cli("sweep", "run", spec, "--executor", "slurm", "--no-progress")
    assert code == 0, out + err
    assert "2 to run (slurm)" in out and "2 done, 0 failed" in out
    st = open_store(tmp_path / "out" / "runs.db", create=False)
    rows = {r["name"]: r for r in st.list_runs()}
    assert sorted(rows) == ["pgd", "trades"]
    for name, row in rows.items():
        assert row["status"] == "done" and row["executor"] == "slurm" and row["job_id"]
        assert st.evaluation_exists(name, "pgd", 0.1, 64)
        # The job ran under Slurm: submitit wrote its logs in the array task's folder.
        logs = list((tmp_path / "out" / ".submitit").glob(f"*/{row['job_id']}/{row['job_id']}_0_log.out"))
        assert logs and "Job completed successfully" in logs[0].read_text()
    # One sbatch array with the spec's parallelism limit and CPU count.
    script = next((tmp_path / "out" / ".submitit").glob("*/*/*_submission.sh")).read_text()
    assert "#SBATCH --array=0-1%2" in script and "#SBATCH --cpus-per-task=1" in script
    assert sys.executable in script  # jobs run the driver's Python (the project venv)
    code, out, _ = cli("sweep", "status", spec, "--json")
    assert code == 0 and json.loads(out)["counts"] == {"done": 2}
