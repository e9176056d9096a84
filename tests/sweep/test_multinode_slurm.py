"""A sweep whose runs each span two Slurm nodes: the submitit parameters and the sbatch script it produces,
checked without a cluster (an ``sbatch`` stand-in records the script and answers with a job id)."""
from __future__ import annotations

import stat
from pathlib import Path

import pytest

from robustscale.errors import UserError
from robustscale.sweep import load_spec
from robustscale.sweep.runner import run_sweep, slurm_parameters
from robustscale.store import open_store

from .test_local import tiny_spec

TWO_NODES = {"partition": "gpu", "nodes": 2, "gpus_per_node": 4, "cpus_per_task": 8, "mem_gb": 200,
             "timeout_min": 600, "array_parallelism": 4, "sbatch": {"account": "robust"}}


def test_two_node_spec_gives_one_rank_per_gpu_on_both_nodes(tmp_path, mnist_like_dir):
    spec = load_spec(tiny_spec(tmp_path, mnist_like_dir, name="big", executor=TWO_NODES))
    assert slurm_parameters(spec.executor, spec.name) == {
        "name": "rs-big", "timeout_min": 600, "nodes": 2, "tasks_per_node": 4, "gpus_per_node": 4,
        "slurm_partition": "gpu", "cpus_per_task": 8, "mem_gb": 200, "slurm_array_parallelism": 4,
        "slurm_signal_delay_s": 120, "slurm_additional_parameters": {"account": "robust"}}
    # A per-job GPU count splits over the nodes; CPU-only nodes (gloo) ask for no GPU.
    spec = load_spec(tiny_spec(tmp_path, mnist_like_dir, name="tot", executor={"nodes": 2, "gpus_per_job": 16}))
    params = slurm_parameters(spec.executor, spec.name)
    assert (params["nodes"], params["gpus_per_node"], params["tasks_per_node"]) == (2, 8, 8)
    spec = load_spec(tiny_spec(tmp_path, mnist_like_dir, name="cpu",
                               executor={"nodes": 3, "gpus_per_node": 0, "tasks_per_node": 2}))
    params = slurm_parameters(spec.executor, spec.name)
    assert (params["nodes"], params["tasks_per_node"]) == (3, 2) and "gpus_per_node" not in params


def test_a_two_node_run_is_priced_on_all_its_gpus(tmp_path, mnist_like_dir):
    from robustscale.sweep import estimate_runs

    one = load_spec(tiny_spec(tmp_path, mnist_like_dir, name="one", executor={"gpus_per_node": 4}))
    two = load_spec(tiny_spec(tmp_path, mnist_like_dir, name="two", executor=TWO_NODES))
    bills = [estimate_runs(s, s.runs[:1], throughput=1000.0)[0] for s in (one, two)]
    assert (bills[0].device_count, bills[1].device_count) == (4, 8)
    assert bills[0].images_seen == bills[1].images_seen  # the same run: same global batch, same images
    # The given throughput is per job: the same training wall time on twice the GPUs; the spec's evaluation
    # runs on one device either way.
    train_hours = [b.device_hours - (b.eval_device_hours or 0.0) for b in bills]
    assert bills[0].eval_device_hours == bills[1].eval_device_hours
    assert train_hours[1] == pytest.approx(2 * train_hours[0], rel=1e-12)


@pytest.mark.parametrize("executor,needle", [
    ({"nodes": 0}, "invalid executor.nodes 0: must be >= 1"),
    ({"nodes": 2, "gpus_per_job": 3}, "gpus_per_job 3 does not split over 2 nodes"),
    ({"nodes": 2, "gpus_per_job": 8, "gpus_per_node": 2}, "gpus_per_job 8 != gpus_per_node 2 x nodes 2"),
    ({"nodes": 2, "gpus_per_node": 2, "tasks_per_node": 4}, "4 tasks per node for 2 GPU(s) per node"),
])
def test_bad_node_layouts_fail_before_anything_is_recorded(tmp_path, mnist_like_dir, executor, needle):
    spec = load_spec(tiny_spec(tmp_path, mnist_like_dir, name="bad", executor=executor))
    with pytest.raises(UserError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        run_sweep(spec, executor="slurm", log=lambda line: None, progress=False)
    assert not (tmp_path / "out" / "runs.db").exists()


def test_nodes_need_the_slurm_executor(tmp_path, mnist_like_dir):
    spec = load_spec(tiny_spec(tmp_path, mnist_like_dir, name="loc", executor={"nodes": 2}))
    with pytest.raises(UserError, match="executor.nodes 2 needs --executor slurm"):
        run_sweep(spec, executor="local", log=lambda line: None, progress=False)


def test_two_node_sweep_submits_a_two_node_array(tmp_path, mnist_like_dir, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    # sbatch keeps the script and answers as Slurm does; srun only has to exist (submitit looks for it).
    for name, body in (("sbatch", f'cp "$1" {tmp_path}/submitted.sh\necho "Submitted batch job 4242"'),
                       ("srun", "exit 1")):
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod((bin_dir / name).stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}:{Path('/usr/bin')}:{Path('/bin')}")
    spec = load_spec(tiny_spec(tmp_path, mnist_like_dir, name="big", executor=TWO_NODES))
    result = run_sweep(spec, executor="slurm", wait=False, log=lambda line: None, progress=False)
    assert result["submitted"] == 4
    script = (tmp_path / "submitted.sh").read_text()
    for line in ("#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=4", "#SBATCH --gpus-per-node=4",
                 "#SBATCH --cpus-per-task=8", "#SBATCH --mem=200GB", "#SBATCH --partition=gpu",
                 "#SBATCH --account=robust", "#SBATCH --array=0-3%4", "#SBATCH --signal=USR2@120"):
        assert line in script, line
    assert "srun" in script  # one task per rank on every node, each joining the run's process group
    rows = open_store(tmp_path / "out" / "runs.db", create=False).list_runs()
    assert sorted(r["job_id"] for r in rows) == [f"4242_{i}" for i in range(4)]
    assert {r["status"] for r in rows} == {"queued"} and {r["executor"] for r in rows} == {"slurm"}
