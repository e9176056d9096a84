"""A run resized on GPUs: started on 2 GPUs (NCCL), stopped mid-epoch, resumed on 1 GPU (gradient accumulation),
against the same run on 1 GPU uninterrupted (run by ``benchmarks/gpu_check.sh`` on a machine with >= 2 GPUs).

    python benchmarks/nccl_resize.py [--out DIR]

Tiny synthetic data (robustscale.testing), WRN-16-1, global batch 32 in micro-batches of 16, 2 epochs of 4
updates. Prints one JSON object: whether both runs completed, their FLOPs and images (must be equal), each
session's world size, and the largest weight difference (GPU kernels are not bit-reproducible across
process layouts, so it is reported, not required to be 0). Exits 0 with ``{"skipped": ...}`` on fewer than
2 GPUs, 1 when a check fails.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RECIPE = dict(dataset="fashion_mnist", model="wide_resnet16_1", train_subset=128, batch_size=32, micro_batch_size=16,
              epochs=2, eps=0.1, attack_steps=1, eval_subset=32, eval_attack_steps=2, workers=0, energy=False,
              progress=False, deterministic=True, compile="off", lr_base=0.4, warmup_epochs=0, val_size=32,
              dist_backend="nccl")
# Rank 0 sends itself SIGINT during update 3: both ranks stop after it and save a resumable state.
STOPPING_WORKER = """
import os, signal, sys
from robustscale.cli import main
from robustscale.train.loop import Trainer
original = Trainer._reduce_step
def reduce_step(self, local, counters):
    if counters.num_updates + 1 == 3 and self.dinfo.rank == 0:
        os.kill(os.getpid(), signal.SIGINT)
    return original(self, local, counters)
Trainer._reduce_step = reduce_step
sys.exit(main(sys.argv[1:]))
"""


def _run(argv: list[str], gpus: str) -> subprocess.CompletedProcess:
    path = f"{REPO / 'src'}:{os.environ.get('PYTHONPATH', '')}"
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": gpus, "PYTHONPATH": path}
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=None, help="folder for the runs (default: a temporary one)")
    args = p.parse_args(argv)
    import torch
    import yaml
    from robustscale.testing import write_mnist_like

    if torch.cuda.device_count() < 2:
        print(json.dumps({"skipped": f"needs 2 GPUs, found {torch.cuda.device_count()}"}))
        return 0
    root = Path(args.out or tempfile.mkdtemp(prefix="nccl-resize-"))
    data = write_mnist_like(root / "data", n_train=512, n_test=256)
    config = root / "recipe.yaml"
    config.write_text(yaml.safe_dump({**RECIPE, "data_dir": str(data), "output_dir": str(root / "runs")}))
    worker = root / "stopping_worker.py"
    worker.write_text(STOPPING_WORKER)
    py, report, ok = sys.executable, {}, True
    first = _run([py, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(worker), "train",
                  "--config", str(config), "--name", "resized"], "0,1")
    resized = root / "runs" / "resized"
    second = _run([py, "-m", "robustscale", "train", "--resume", str(resized)], "0")
    ref = _run([py, "-m", "robustscale", "train", "--config", str(config), "--name", "one"], "0")
    for name, proc in (("two_gpus_stopped", first), ("one_gpu_resumed", second), ("one_gpu_reference", ref)):
        report[f"{name}_returncode"] = proc.returncode
        if proc.returncode != 0 and name != "two_gpus_stopped":  # the first session ends by its Ctrl-C
            report[f"{name}_stderr"] = proc.stderr[-2000:]
            ok = False
    try:
        got = json.loads((resized / "summary.json").read_text())
        want = json.loads((root / "runs" / "one" / "summary.json").read_text())
    except (OSError, ValueError) as exc:
        print(json.dumps({**report, "ok": False, "error": f"no summary: {exc}"}))
        return 1
    a = torch.load(resized / "state.pt", map_location="cpu", weights_only=False)["model"]
    b = torch.load(root / "runs" / "one" / "state.pt", map_location="cpu", weights_only=False)["model"]
    diff = max(float((a[k].double() - b[k].double()).abs().max()) for k in a if a[k].is_floating_point())
    report.update({
        "status": got["status"], "world_sizes": [s.get("world_size") for s in got["compute_sessions"]],
        "train_flops": got["train_flops"], "reference_train_flops": want["train_flops"],
        "images_seen": got["train_images_seen"], "reference_images_seen": want["train_images_seen"],
        "max_weight_difference": diff,
    })
    ok = ok and got["status"] == "completed" and report["world_sizes"] == [2, 1] \
        and got["train_flops"] == want["train_flops"] and got["train_images_seen"] == want["train_images_seen"]
    report["ok"] = ok
    print(json.dumps(report))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
