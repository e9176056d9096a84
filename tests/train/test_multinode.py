"""Runs across processes and nodes, without a GPU or a cluster: gloo on 127.0.0.1.

- two ``torchrun --nnodes 2`` "nodes" of one rank each train what one process with the same global batch
  (in two accumulated micro-batches) trains: the same weights, the same FLOPs;
- a run started on 2 ranks, continued on 1 and finished on 2 (2 -> 1 -> 2) ends where an uninterrupted
  run ends, with an exact compute ledger listing each session's world size; its 2-rank sessions are
  launched the way ``srun`` launches tasks (only Slurm's variables set), so this is also the Slurm path;
- the batch plans, Slurm variables and bad input of multi-process runs.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import robustscale
from robustscale.config import TrainConfig
from robustscale.errors import UserError
from robustscale.train import train
from robustscale.train.loop import Trainer
from robustscale.train.distributed import batch_plan, first_host, launch_rank, launch_world, slurm_environment

SRC = str(Path(robustscale.__file__).parents[1])
# 128 training images, global batch 32: 4 updates per epoch, 8 in all; micro-batches of 16 images.
TINY = dict(dataset="fashion_mnist", model="wide_resnet16_1", train_subset=128, batch_size=32, epochs=2, eps=0.1,
            attack_steps=1, eval_subset=32, eval_attack_steps=2, workers=0, energy=False, progress=False,
            deterministic=True, compile="off", lr_base=0.4, warmup_epochs=0, val_size=32)
MICRO = 16
UPDATES = 8


def _yaml(tmp_path: Path, data_dir: Path) -> Path:
    import yaml

    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump({**TINY, "data_dir": str(data_dir), "output_dir": str(tmp_path / "runs")}))
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "RANK", "WORLD_SIZE", "LOCAL_RANK",
                                                                     "MASTER_", "GROUP_RANK"))}
    return {**env, "OMP_NUM_THREADS": "1", "PYTHONPATH": SRC, **extra}


def _wait(procs: list, ok: bool = True, timeout: float = 400) -> list[str]:
    outs = []
    try:
        for p in procs:
            outs.append(p.communicate(timeout=timeout)[0])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, out in zip(procs, outs):
        assert (p.returncode == 0) == ok, out[-3000:]
    return outs


def _slurm_step(args: list[str], ok: bool = True, world: int = 2) -> list[str]:
    """``world`` tasks on as many "nodes", launched as srun does: only Slurm's variables tell them who they are
    (the rendezvous node from the step's node list; the port pinned to a free one, as a user may)."""
    port = str(_free_port())
    procs = [subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env(
        SLURM_JOB_ID="4242", SLURM_STEP_ID="0", SLURM_STEP_NUM_TASKS=str(world), SLURM_STEP_NUM_NODES=str(world),
        SLURM_PROCID=str(r), SLURM_LOCALID="0", SLURM_NODEID=str(r), SLURM_STEP_NODELIST="127.0.0.1",
        MASTER_PORT=port)) for r in range(world)]
    return _wait(procs, ok)


def _weights(run_dir: Path) -> dict:
    """The run's final state: parameters and BatchNorm buffers (state.pt holds the raw model)."""
    return torch.load(run_dir / "state.pt", weights_only=False)["model"]


def float32_tolerance(reference: dict) -> dict:
    """Per-tensor bound on |w_a - w_b| for two runs that compute the same updates in float32 and may only sum
    the terms of a reduction in another order (an all-reduce of two halves instead of accumulating them in
    place, or a kernel's reduction split differently). The largest reduction of a step is a convolution's
    weight gradient, n = micro-batch x height x width terms; two orders of it differ by at most
    gamma_n = n u / (1 - n u) relative (Higham, Accuracy and Stability, 3.1; u = 2^-24), and each of the
    ``UPDATES`` updates may add that much of the weight it writes (to first order: eight steps are too few
    for the differences to grow).
    """
    n = MICRO * 28 * 28
    u = np.finfo(np.float32).eps / 2
    gamma = n * u / (1 - n * u)
    return {k: UPDATES * gamma * float(v.double().abs().max()) for k, v in reference.items()
            if v.is_floating_point()}


def _assert_same_weights(got: dict, reference: dict) -> None:
    tol = float32_tolerance(reference)
    assert got.keys() == reference.keys()
    for key, bound in tol.items():
        diff = float((got[key].double() - reference[key].double()).abs().max())
        assert diff <= bound, (key, diff, bound)


@pytest.fixture(scope="module")
def single_process(tmp_path_factory, mnist_like_dir):
    """One process, global batch 32 as 2 accumulated micro-batches of 16, uninterrupted."""
    out = tmp_path_factory.mktemp("single")
    cfg = TrainConfig.from_dict({**TINY, "data_dir": str(mnist_like_dir), "output_dir": str(out), "name": "one",
                                 "micro_batch_size": MICRO})
    summary = train(cfg)
    return out / "one", summary


def test_two_gloo_nodes_train_what_one_process_trains(tmp_path, mnist_like_dir, single_process):
    ref_dir, ref = single_process
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1",
           "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), "--node_rank"]
    train_args = ["-m", "robustscale", "train", "--config", str(_yaml(tmp_path, mnist_like_dir)), "--name", "two"]
    procs = [subprocess.Popen(cmd + [str(r)] + train_args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, env=_env()) for r in range(2)]
    _wait(procs)
    run_dir = tmp_path / "runs" / "two"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert (summary["world_size"], summary["nodes"], summary["device_count"]) == (2, 2, 2)
    assert (summary["micro_batch_size"], summary["accumulation_steps"]) == (MICRO, 1)
    assert (ref["world_size"], ref["nodes"], ref["micro_batch_size"], ref["accumulation_steps"]) == (1, 1, MICRO, 2)
    assert summary["config_hash"] == ref["config_hash"]  # the same run, whatever the world size
    assert summary["train_flops"] == ref["train_flops"] and summary["eval_flops"] == ref["eval_flops"]
    assert summary["train_images_seen"] == ref["train_images_seen"] == 2 * 128
    assert summary["optimizer_steps"] == ref["optimizer_steps"] == UPDATES
    _assert_same_weights(_weights(run_dir), _weights(ref_dir))
    # Rank 0 alone wrote the folder: one session in env.json, one metrics row per epoch.
    assert len(json.loads((run_dir / "env.json").read_text())["sessions"]) == 1
    assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == 2


def _stop_at(trainer_cls, update: int):
    """Make rank 0 send itself SIGINT (Ctrl-C, or what a preemption sends) during update ``update``: the ranks agree
    to stop after that update and save a resumable state."""
    original = trainer_cls._reduce_step

    def reduce_step(self, local, counters):
        if counters.num_updates + 1 == update and self.dinfo.rank == 0:
            os.kill(os.getpid(), signal.SIGINT)
        return original(self, local, counters)

    return reduce_step


STOPPING_WORKER = """
import sys
from robustscale.cli import main
from robustscale.train.loop import Trainer
sys.path.insert(0, sys.argv[1])
from test_multinode import _stop_at
Trainer._reduce_step = _stop_at(Trainer, int(sys.argv[2]))
sys.exit(main(sys.argv[3:]))
"""


def test_resume_two_to_one_to_two_ranks(tmp_path, mnist_like_dir, single_process, monkeypatch):
    ref_dir, ref = single_process
    worker = tmp_path / "stopping_worker.py"
    worker.write_text(STOPPING_WORKER)
    config = str(_yaml(tmp_path, mnist_like_dir))
    run_dir = tmp_path / "runs" / "resized"
    # Session 1, 2 ranks: stops after update 3 (epoch 1, step 3 of 4), saving a resumable state (exit != 0).
    _slurm_step([sys.executable, str(worker), str(Path(__file__).parent), "3", "train", "--config", config,
                 "--name", "resized"], ok=False)
    progress = torch.load(run_dir / "state.pt", weights_only=False)["progress"]
    assert (progress["epoch"], progress["step"], progress["num_updates"]) == (0, 3, 3)

    # Session 2, 1 process (2 accumulated micro-batches a step): stops after update 5 (epoch 2, step 1).
    monkeypatch.setattr(Trainer, "_reduce_step", _stop_at(Trainer, 5))
    with pytest.raises(KeyboardInterrupt):
        train(None, resume=run_dir)
    monkeypatch.undo()
    progress = torch.load(run_dir / "state.pt", weights_only=False)["progress"]
    assert (progress["epoch"], progress["step"], progress["num_updates"]) == (1, 1, 5)

    # Session 3, 2 ranks again, launched as srun launches `robustscale train`: runs to the end.
    _slurm_step([sys.executable, "-m", "robustscale", "train", "--resume", str(run_dir)])
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["optimizer_steps"] == UPDATES
    _assert_same_weights(_weights(run_dir), _weights(ref_dir))

    # The ledger: exactly the uninterrupted run's FLOPs, and each session's own world size and time.
    assert summary["train_images_seen"] == ref["train_images_seen"]
    assert summary["train_flops"] == ref["train_flops"] and summary["eval_flops"] == ref["eval_flops"]
    sessions = summary["compute_sessions"]
    assert [(s["session"], s["world_size"], s["accumulation_steps"], s["micro_batch_size"]) for s in sessions] == \
        [(1, 2, 1, MICRO), (2, 1, 2, MICRO), (3, 2, 1, MICRO)]
    assert [s["epochs"] for s in sessions] == [[1, 1], [1, 2], [2, 2]]
    pieces = torch.load(run_dir / "state.pt", weights_only=False)["progress"]["compute_pieces"]
    for p in pieces:  # device-hours are each segment's wall time on its own number of devices
        assert p["device_count"] == p["world_size"]
        assert p["device_hours"] == pytest.approx(p["wall_seconds"] * p["world_size"] / 3600, rel=1e-12)
    assert summary["wall_seconds"] == pytest.approx(sum(p["wall_seconds"] for p in pieces), rel=1e-12)
    assert summary["device_hours"] == pytest.approx(sum(p["device_hours"] for p in pieces), rel=1e-12)
    assert summary["device_hours"] == pytest.approx(sum(s["device_hours"] for s in sessions), rel=1e-12)
    env = json.loads((run_dir / "env.json").read_text())["sessions"]
    assert [e["world_size"] for e in env] == [2, 1, 2]


# ---------------------------------------------------------------------- pieces
@pytest.mark.parametrize("batch,world,micro,expect", [
    (32, 2, None, (16, 1)), (32, 1, 16, (16, 2)), (32, 2, 16, (16, 1)), (512, 8, 32, (32, 2)),
    (512, 16, 32, (32, 1)), (96, 3, 8, (8, 4)),
])
def test_batch_plan(batch, world, micro, expect):
    plan = batch_plan(batch, world, micro)
    assert (plan.micro_batch_size, plan.accumulation) == expect
    assert plan.world * plan.micro_batch_size * plan.accumulation == batch


@pytest.mark.parametrize("batch,world,micro,needle", [
    (32, 3, None, "batch_size 32 is not divisible by the 3 processes; run on 2 or 4 processes"),
    (512, 32, 32, "cannot be split over 32 processes in micro-batches of 32"),  # 16 slots: at most 16 ranks
    (96, 5, 8, "it fits 1, 2, 3, 4, 6, 12 processes"),
])
def test_batch_plan_that_cannot_fit(batch, world, micro, needle):
    with pytest.raises(UserError, match=needle):
        batch_plan(batch, world, micro)


@pytest.mark.parametrize("nodelist,first", [("gpu[07-09,12],cpu3", "gpu07"), ("node5", "node5"),
                                           ("a[2-3]b[10-11],c1", "a2b10"), ("h1,h2", "h1"), ("n[001]", "n001")])
def test_first_host_of_a_slurm_nodelist(nodelist, first):
    assert first_host(nodelist) == first


def test_slurm_environment_of_a_step():
    step = {"SLURM_JOB_ID": "77", "SLURM_STEP_ID": "1", "SLURM_STEP_NUM_TASKS": "8", "SLURM_STEP_NUM_NODES": "2",
            "SLURM_PROCID": "5", "SLURM_LOCALID": "1", "SLURM_NODEID": "1", "SLURM_STEP_NODELIST": "gpu[3-4]"}
    env = slurm_environment(step)
    assert {k: env[k] for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR")} == \
        {"RANK": "5", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "4", "MASTER_ADDR": "gpu3"}
    assert 20000 <= int(env["MASTER_PORT"]) < 60000
    assert slurm_environment({**step, "SLURM_PROCID": "0"})["MASTER_PORT"] == env["MASTER_PORT"]  # all tasks agree
    assert slurm_environment({**step, "MASTER_PORT": "1234"})["MASTER_PORT"] == "1234"
    # A batch script's own process (no step), or a one-task step, is not a rank of a group.
    assert slurm_environment({"SLURM_JOB_ID": "77", "SLURM_NTASKS": "8", "SLURM_PROCID": "0"}) is None
    assert slurm_environment({**step, "SLURM_STEP_NUM_TASKS": "1"}) is None
    assert launch_world(step) == 8 and launch_world({**step, "WORLD_SIZE": "2"}) == 2 and launch_world({}) == 1
    assert launch_rank(step) == 5 and launch_rank({**step, "RANK": "1"}) == 1 and launch_rank({}) == 0


def _cli_yaml(tmp_path: Path, data_dir: Path, **kw) -> str:
    import yaml

    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({**TINY, "data_dir": str(data_dir), "output_dir": str(tmp_path / "out"), **kw}))
    return str(path)


def test_bad_multiprocess_input_is_one_line_exit_2(tmp_path, mnist_like_dir, cli, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "3")
    code, _, err = cli("train", "--config", _cli_yaml(tmp_path, mnist_like_dir))
    assert code == 2 and err.strip() == ("error: batch_size 32 is not divisible by the 3 processes; run on 2 or 4 "
                                         "processes")
    monkeypatch.setenv("WORLD_SIZE", "4")
    code, _, err = cli("train", "--config", _cli_yaml(tmp_path, mnist_like_dir, micro_batch_size=16))
    assert code == 2 and "cannot be split over 4 processes in micro-batches of 16" in err
    assert len(err.strip().splitlines()) == 1
    # NCCL asked for on a node without GPUs: before any process group or file.
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    code, _, err = cli("train", "--config", _cli_yaml(tmp_path, mnist_like_dir, dist_backend="nccl"))
    assert code == 2 and err.startswith("error: dist_backend nccl needs a GPU on every node; node ")
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()  # nothing written


def test_resume_keeps_the_runs_micro_batch(tmp_path, cli, single_process):
    import shutil

    ref_dir, _ = single_process
    run_dir = tmp_path / "one"
    shutil.copytree(ref_dir, run_dir)
    (run_dir / "summary.json").unlink()  # as if killed before it finished: resumable
    code, _, err = cli("train", "--resume", run_dir, "--micro-batch-size", "8")
    assert code == 2 and "resume: micro_batch_size 8 != the run's 16" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("layouts", [[(1, 4), (2, 2), (4, 1)], [(1, 2), (2, 1)]])
@pytest.mark.parametrize("generated", [0, 300])
def test_a_steps_slots_are_the_same_on_any_layout(layouts, generated):
    """Step s of (world, accumulation) = the same micro-batches (images, generated mix, augmentation seed) in the
    same global order, for every layout of the same global batch: ranks in order, each rank's passes in order."""
    from robustscale.data.sampler import MixedBatchSampler

    micro, real = 8, 100
    total = layouts[0][0] * layouts[0][1] * micro

    def global_steps(world: int, accumulation: int) -> list[list[tuple]]:
        keys = []
        for rank in range(world):
            sampler = MixedBatchSampler(real, micro, num_generated=generated, generated_fraction=0.25, rank=rank,
                                        world_size=world, seed=3, accumulation=accumulation)
            sampler.set_epoch(2)
            assert len(sampler) == sampler.steps_per_epoch * accumulation
            keys.append([(k.real.tolist(), k.generated.tolist(), k.seed) for k in sampler])
        steps = len(keys[0]) // accumulation
        return [[slot for rank in range(world) for slot in keys[rank][s * accumulation:(s + 1) * accumulation]]
                for s in range(steps)]

    first = global_steps(*layouts[0])
    assert len(first) == (real // total if not generated else -(-real // total))
    for slot in first[0]:
        assert len(slot[0]) + len(slot[1]) == micro and len(slot[1]) == (2 if generated else 0)
    for layout in layouts[1:]:
        assert global_steps(*layout) == first, layout
