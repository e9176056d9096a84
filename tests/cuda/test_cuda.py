"""The GPU paths, checked on a real GPU: `pytest -m cuda` (benchmarks/gpu_check.sh runs them first).

Every test here is marked ``cuda`` and skips without CUDA, so the normal suite on a CPU machine only
collects them. They use tiny models and data so the whole module runs in well under a minute on a GPU.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import robustscale  # noqa: F401  (registers the models in timm)
from robustscale.config import TrainConfig

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

REPO = Path(__file__).resolve().parents[2]
TINY = dict(dataset="fashion_mnist", model="wide_resnet16_1", train_subset=128, batch_size=32, epochs=2, eps=0.1,
            attack_steps=2, eval_subset=32, eval_attack_steps=2, workers=0, energy=False, progress=False,
            lr_base=0.4, warmup_epochs=0)


def _cfg(tmp_path: Path, data_dir: Path, **kw) -> TrainConfig:
    return TrainConfig.from_dict({**TINY, "data_dir": str(data_dir), "output_dir": str(tmp_path), **kw})


def _batch(n=16, c=1, side=28, seed=0, device="cuda"):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, c, side, side, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    return x.to(device), y.to(device)


def _model(name="wide_resnet16_1", device="cuda"):
    from robustscale.data import dataset_info
    from robustscale.models import create_model

    info = dataset_info("fashion_mnist")
    torch.manual_seed(0)
    return create_model(name, 10, info.in_chans, mean=info.mean, std=info.std).to(device)


@pytest.mark.parametrize("amp", ["off", "bf16", "fp16"])
def test_training_run_in_each_precision(tmp_path, mnist_like_dir, amp):
    """A 2-epoch PGD-2 run on the GPU in fp32/bf16/fp16: finite loss every epoch, the run recorded on cuda."""
    from robustscale.train import train

    summary = train(_cfg(tmp_path, mnist_like_dir, name=f"amp-{amp}", amp=amp, compile="off"))
    rows = [json.loads(r) for r in (tmp_path / f"amp-{amp}" / "metrics.jsonl").read_text().splitlines()]
    assert summary["status"] == "completed" and len(rows) == 2
    assert all(math.isfinite(r["train_loss"]) for r in rows)
    env = json.loads((tmp_path / f"amp-{amp}" / "env.json").read_text())["sessions"][-1]
    assert env["device"].startswith("cuda")


def test_attack_computes_only_input_gradients_on_gpu():
    """PGD on the GPU leaves every parameter's .grad untouched and stays inside the eps-ball and [0,1]."""
    from robustscale.attacks import pgd

    model = _model().eval()
    x, y = _batch()
    eps = 0.1
    x_adv = pgd(model, x, y, eps=eps, step_size=0.025, steps=5)
    assert x_adv.device.type == "cuda"
    assert all(p.grad is None for p in model.parameters())
    assert (x_adv - x).abs().max().item() <= eps + 1e-6  # one float32 ulp of values <= 1
    assert x_adv.min().item() >= 0 and x_adv.max().item() <= 1


def test_channels_last_matches_nchw_on_gpu():
    """Channels-last is a memory layout, not a different function: logits agree to float32 accumulation noise.

    Tolerance: cuDNN picks different kernels (summation orders) per layout; for sums of ~K=9*C*... terms the
    relative error is bounded by ~K * 2^-24 per layer; with TF32 off and 13 layers this is < 1e-4 of the
    logit scale.
    """
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    model = _model().eval()
    x, _ = _batch(n=32)
    with torch.no_grad():
        a = model(x)
        b = model.to(memory_format=torch.channels_last)(x.contiguous(memory_format=torch.channels_last))
    scale = a.abs().max().item()
    assert (a - b).abs().max().item() <= 1e-4 * max(scale, 1.0)


def test_compile_on_cuda_matches_eager_within_noise_floor(tmp_path, mnist_like_dir):
    """`compile: on` trains the same model as eager on CUDA. The yardstick is the distance between two eager
    runs that differ only in memory layout (a change that is pure rounding): compiled must be no farther."""
    from safetensors.torch import load_file

    from robustscale.train import should_compile, train

    assert should_compile(_cfg(tmp_path, mnist_like_dir), "cuda")[0], "auto must compile on CUDA"
    common = dict(epochs=1, attack_steps=1, deterministic=True)
    train(_cfg(tmp_path, mnist_like_dir, name="eager", compile="off", channels_last=False, **common))
    train(_cfg(tmp_path, mnist_like_dir, name="eager-cl", compile="off", channels_last=True, **common))
    train(_cfg(tmp_path, mnist_like_dir, name="compiled", compile="on", channels_last=False, **common))

    def dist(a, b):
        wa, wb = load_file(str(tmp_path / a / "last.safetensors")), load_file(str(tmp_path / b / "last.safetensors"))
        keys = [k for k in wa if wa[k].is_floating_point()]
        return math.sqrt(sum(float((wa[k] - wb[k]).double().pow(2).sum()) for k in keys))

    floor = dist("eager", "eager-cl")
    assert dist("eager", "compiled") <= max(3 * floor, 1e-3)


def test_resume_on_gpu_is_bit_exact(tmp_path, mnist_like_dir, monkeypatch):
    """A Ctrl-C after epoch 1, then --resume: the weights equal an uninterrupted deterministic run's on the GPU
    (CUDA RNG state saved and restored)."""
    from safetensors.torch import load_file

    from robustscale.tasks import PGDTask
    from robustscale.train import train

    common = dict(deterministic=True, compile="off")
    train(_cfg(tmp_path, mnist_like_dir, name="full", **common))
    original, calls = PGDTask.forward, {"n": 0}

    def forward(self, x, y):  # 128 images / 32 = 4 steps per epoch: call 5 is epoch 2's first step
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return original(self, x, y)

    monkeypatch.setattr(PGDTask, "forward", forward)
    with pytest.raises(KeyboardInterrupt):
        train(_cfg(tmp_path, mnist_like_dir, name="cut", **common))
    monkeypatch.undo()
    train(None, resume=tmp_path / "cut")
    a, b = load_file(str(tmp_path / "full" / "last.safetensors")), load_file(str(tmp_path / "cut" / "last.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_nccl_ddp_one_process_smoke(tmp_path, mnist_like_dir):
    """`torchrun --nproc_per_node 1` initialises NCCL and finishes a 1-epoch run."""
    if not torch.distributed.is_nccl_available():
        pytest.skip("this torch build has no NCCL")
    import yaml

    cfg = _cfg(tmp_path, mnist_like_dir, name="ddp", epochs=1, compile="off")
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg.to_dict()))
    env = {**os.environ, "PYTHONPATH": str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "1", "--master_port",
                           "29517", "-m", "robustscale", "train", "--config", str(tmp_path / "cfg.yaml")],
                          env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "ddp" / "summary.json").read_text())
    assert summary["status"] == "completed"


class _Float64(torch.nn.Module):
    """Computes in float64 behind a float32 interface: pyautoattack casts its inputs to float32, so the
    precision has to live inside the model."""

    def __init__(self, model):
        super().__init__()
        self.model = model.double()

    def forward(self, x):
        return self.model(x.double()).float()


def test_autoattack_on_gpu_matches_cpu_per_example():
    """AutoAttack standard with the model in float64 on the GPU and on the CPU: the same examples stay robust.

    pyautoattack draws its random starts on the CPU and moves them, so both devices attack from the same
    points; float64 removes the float32 rounding that could flip a borderline example between devices. The
    official pyautoattack on the GPU must also agree per example with ours on the GPU (same seed, model)."""
    from pyautoattack import AutoAttack

    from robustscale.evaluation import evaluate

    torch.manual_seed(0)
    tiny = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3, stride=2), torch.nn.ReLU(), torch.nn.Conv2d(8, 16, 3, stride=2),
                               torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(16 * 6 * 6, 10))
    model = _Float64(tiny).eval()
    x, y = _batch(n=24, device="cpu")
    with torch.no_grad():
        y = model(x).argmax(1)  # every example starts correct, so every stage has work to do
    eps = 0.02
    flags = {}
    for device in ("cpu", "cuda"):
        res = evaluate(model.to(device), x.to(device), y.to(device), attack="aa-standard", eps=eps, batch_size=24,
                       seed=0, flops=False)
        flags[device] = res["robust_flags"].cpu().tolist()
    assert flags["cpu"] == flags["cuda"]
    m = model.to("cuda")
    for p in m.parameters():
        p.requires_grad_(True)  # as a user hands a model to pyautoattack
    aa = AutoAttack(m, norm="Linf", eps=eps, version="standard", seed=0, device="cuda")
    x_adv, _ = aa.run_standard_evaluation(x.cuda(), y.cuda(), batch_size=24)
    with torch.no_grad():
        official = (m(x_adv).argmax(1) == y.cuda()).cpu().tolist()
    assert official == flags["cuda"]
