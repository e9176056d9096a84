"""The training loop end to end on a tiny learnable Fashion-MNIST-format dataset: run directory, timm-loadable
checkpoints, compute accounting, bit-exact resume after Ctrl-C, DDP on 2 CPU processes, NaN stop, bad input."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import robustscale  # noqa: F401
from robustscale.config import TrainConfig
from robustscale.schema import RUN_COLUMNS
from robustscale.tasks import PGDTask
from robustscale.train import backends as train_module  # where should_compile looks for a compiler
from robustscale.config import Compile
from robustscale.train import (AUTO_COMPILE_MIN_TRAIN_FLOPS, TrainingDiverged, _eps_at, load_run, run_name,
                               should_compile, train)

TINY = dict(dataset="fashion_mnist", model="wide_resnet16_1", train_subset=128, batch_size=32, epochs=2, eps=0.1,
            attack_steps=1, eval_subset=32, eval_attack_steps=2, workers=0, energy=False, progress=False,
            deterministic=True, lr_base=0.4, warmup_epochs=0, val_size=32)


def _cfg(tmp_path: Path, data_dir: Path, **kw) -> TrainConfig:
    return TrainConfig.from_dict({**TINY, "data_dir": str(data_dir), "output_dir": str(tmp_path), **kw})


def _weights(run_dir: Path, which: str = "last") -> dict:
    from safetensors.torch import load_file

    return load_file(str(run_dir / f"{which}.safetensors"))


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory, mnist_like_dir):
    """An uninterrupted deterministic 2-epoch PGD run (shared by several tests)."""
    out = tmp_path_factory.mktemp("runs")
    cfg = _cfg(out, mnist_like_dir, name="ref")
    summary = train(cfg)
    return cfg, out / "ref", summary


def test_run_directory_contents(reference_run):
    cfg, run_dir, summary = reference_run
    assert {p.name for p in run_dir.iterdir()} >= {"config.yaml", "env.json", "metrics.jsonl", "last.safetensors",
                                                  "best.safetensors", "state.pt", "summary.json"}
    assert not [p for p in run_dir.iterdir() if p.name.startswith(".")], "temp files left behind"
    # config.yaml is exactly what ran and round-trips through TrainConfig.
    assert TrainConfig.from_yaml(run_dir / "config.yaml") == cfg
    env = json.loads((run_dir / "env.json").read_text())["sessions"][0]
    assert env["torch"] == torch.__version__ and env["host"]
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    for r in rows:
        assert 0 <= r["clean_acc"] <= 100 and 0 <= r["pgd_robust_acc"] <= r["clean_acc"]
        assert r["train_clean_acc"] is None and 0 <= r["train_adv_acc"] <= 100  # PGD: no free clean logits
        assert r["eval_images"] == 32 and r["eval_split"] == "val" and r["images_per_second"] > 0
    # lr scaled from lr_base per 256 images, cosine to 0 at the last step
    assert rows[-1]["lr"] == pytest.approx(0.0, abs=1e-9)
    on_disk = json.loads((run_dir / "summary.json").read_text())
    assert on_disk == json.loads(json.dumps(summary, default=str))
    assert set(RUN_COLUMNS) <= set(summary)
    assert summary["status"] == "completed" and summary["epochs_done"] == 2 and summary["optimizer_steps"] == 8
    # Selected on the validation split by PGD accuracy (PGD training); test accuracies come from evaluations.
    assert summary["clean_acc"] is None and summary["pgd_robust_acc"] is None
    best = max(rows, key=lambda r: r["pgd_robust_acc"])  # ties: the earlier epoch
    assert summary["best_pgd_robust_acc"] == best["pgd_robust_acc"]
    assert (summary["selected_epoch"], summary["selection_split"], summary["selection_metric"]) == \
        (best["epoch"], "val", "pgd_robust_acc")
    assert summary["val_pgd_robust_acc"] == best["pgd_robust_acc"] and summary["val_clean_acc"] == best["clean_acc"]
    assert summary["val_pgd_robust_acc_n_examples"] == 32
    lo, hi = summary["val_pgd_robust_acc_ci"]
    assert lo <= best["pgd_robust_acc"] <= hi


def test_compute_accounting(reference_run):
    from robustscale.compute import estimate_eval_flops, measure_step_flops
    from robustscale.data import dataset_normalization
    from robustscale.models import create_model

    cfg, run_dir, summary = reference_run
    model = create_model(cfg.model, 10, 1, **dataset_normalization(cfg.dataset))
    step = measure_step_flops(model, cfg, (1, 28, 28))
    assert summary["train_images_seen"] == 2 * 128
    assert summary["train_flops"] == pytest.approx(step.train_step_flops * 256)
    assert summary["train_flops_per_image"] == pytest.approx(step.train_step_flops)
    assert summary["eval_flops"] == pytest.approx(2 * estimate_eval_flops(step, 32, 2, fgsm=True))  # PGD-2 + FGSM
    assert 0 < summary["attack_flops_fraction"] < 1
    assert summary["wall_seconds"] > 0 and summary["device_count"] == 1 and summary["device_name"]
    assert summary["cloud_usd_high"] >= summary["cloud_usd_low"] > 0 and summary["electricity_usd"] > 0
    assert summary["energy_kwh"] is None and summary["emissions_kg"] is None  # energy=False


def test_checkpoints_load_in_plain_timm(reference_run):
    import timm
    from safetensors import safe_open

    cfg, run_dir, _ = reference_run
    with safe_open(str(run_dir / "last.safetensors"), framework="pt") as fh:
        meta = fh.metadata()
    assert meta["model"] == "wide_resnet16_1" and meta["dataset"] == "fashion_mnist" and meta["epoch"] == "2"
    mean, std = json.loads(meta["mean"]), json.loads(meta["std"])
    assert mean == pytest.approx([0.2860]) and std == pytest.approx([0.3530])
    net = timm.create_model(meta["model"], num_classes=int(meta["num_classes"]), in_chans=len(mean))
    net.load_state_dict(_weights(run_dir))  # timm key names, no wrapper prefix
    _, model = load_run(run_dir, "last")
    x = torch.rand(4, 1, 28, 28)
    torch.testing.assert_close(net.eval()((x - mean[0]) / std[0]), model(x))


def _interrupting(monkeypatch, at_call: int, how: str):
    """Make the PGD task's forward interrupt the run at its ``at_call``-th call (1-based)."""
    original = PGDTask.forward
    calls = {"n": 0}

    def forward(self, x, y):
        calls["n"] += 1
        if calls["n"] == at_call:
            if how == "exception":  # a KeyboardInterrupt raised before this step did anything
                raise KeyboardInterrupt
            os.kill(os.getpid(), signal.SIGINT)  # a real Ctrl-C: the step finishes, then the run stops
        return original(self, x, y)

    monkeypatch.setattr(PGDTask, "forward", forward)


@pytest.mark.parametrize("at_call,how", [(5, "exception"), (6, "signal")],
                         ids=["after-epoch-1", "mid-epoch-2-sigint"])
def test_interrupt_then_resume_is_bit_exact(reference_run, tmp_path, mnist_like_dir, monkeypatch, at_call, how):
    cfg, ref_dir, ref_summary = reference_run
    cfg = cfg.replace(output_dir=str(tmp_path), name="cut")
    _interrupting(monkeypatch, at_call, how)
    with pytest.raises(KeyboardInterrupt):
        train(cfg)
    run_dir = tmp_path / "cut"
    state = torch.load(run_dir / "state.pt", weights_only=False)
    expected_step = 0 if how == "exception" else 2  # 4 steps per epoch; SIGINT during call 6 stops after it
    assert (state["progress"]["epoch"], state["progress"]["step"]) == (1, expected_step)
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "interrupted"
    monkeypatch.undo()
    summary = train(None, resume=run_dir)
    assert summary["status"] == "completed" and summary["optimizer_steps"] == 8
    ref, got = _weights(ref_dir), _weights(run_dir)
    assert ref.keys() == got.keys()
    for key in ref:
        assert torch.equal(ref[key], got[key]), key
    ref_rows = (ref_dir / "metrics.jsonl").read_text().splitlines()
    got_rows = (run_dir / "metrics.jsonl").read_text().splitlines()
    for a, b in zip(ref_rows, got_rows, strict=True):
        a, b = json.loads(a), json.loads(b)
        for key in ("train_loss", "train_adv_acc", "clean_acc", "pgd_robust_acc", "lr", "train_flops"):
            assert a[key] == pytest.approx(b[key], rel=1e-6), key


@pytest.mark.parametrize("method,extra", [
    ("trades", {"ema_decay": 0.9, "cutmix_alpha": 1.0, "label_smoothing": 0.1}),
    ("fgsm_rs", {"eps_warmup_epochs": 1, "amp": "bf16", "clip_grad": 1.0}),
    ("standard", {"opt": "adamw", "lr_base": 1e-3, "eval_attack_steps": 0}),
])
def test_methods_and_options_in_the_loop(tmp_path, mnist_like_dir, method, extra):
    cfg = _cfg(tmp_path, mnist_like_dir, method=method, epochs=1, train_subset=64, eval_subset=16, name="m", **extra)
    summary = train(cfg)
    row = json.loads((tmp_path / "m" / "metrics.jsonl").read_text())
    assert summary["status"] == "completed" and summary["method"] == method
    # clean training accuracy only where the clean logits are computed anyway
    assert (row["train_clean_acc"] is not None) == (method in ("trades", "standard"))
    assert (row["train_adv_acc"] is not None) == (method != "standard")
    assert (row["pgd_robust_acc"] is None) == (method == "standard")
    if method == "fgsm_rs":
        assert row["eps"] == pytest.approx(0.1)  # warm-up reached the full eps at the end of epoch 1
    from safetensors import safe_open

    with safe_open(str(tmp_path / "m" / "last.safetensors"), framework="pt") as fh:
        assert fh.metadata()["weights"] == ("ema" if "ema_decay" in extra else "raw")


def test_ema_warmup_follows_timms_warmup_decay(tmp_path, mnist_like_dir):
    """Two updates (w1, w2). timm's EMA copies w1 at the first update; at the second it keeps
    decay x w1 + (1 - decay) x w2 with decay 0.99 (ema_decay), or 1 - 2^(-2/3) = 0.370 with ema_warmup.
    So ema - w2 = decay x (w1 - w2), and the two runs' distances to w2 stand in the ratio 0.370 / 0.99."""
    common = dict(method="standard", epochs=1, train_subset=64, batch_size=32, eval_subset=0, val_size=0,
                  select_split="test", select="last", eval_attack_steps=0)
    weights = {}
    for name, extra in (("plain", {"ema_decay": 0.99}), ("warm", {"ema_decay": 0.99, "ema_warmup": True}),
                        ("raw", {})):
        train(_cfg(tmp_path, mnist_like_dir, name=name, **common, **extra))
        weights[name] = _weights(tmp_path / name)
    key = next(k for k in weights["raw"] if k.endswith("stem.weight"))
    w2 = weights["raw"][key].double()  # EMA does not change training: the same w2 in all three runs
    d_plain = (weights["plain"][key].double() - w2).norm()
    d_warm = (weights["warm"][key].double() - w2).norm()
    # float32 lerp: a few units of 2^-24 of |w| per element, against a distance |w1 - w2| that is far larger
    tol = 8 * 2.0 ** -24 * float(w2.norm()) / float(d_plain)
    assert float(d_plain) > 0
    assert float(d_warm / d_plain) == pytest.approx((1 - 2 ** (-2 / 3)) / 0.99, rel=tol, abs=0)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, mnist_like_dir, monkeypatch, capsys):
    original = PGDTask.forward
    calls = {"n": 0}

    def forward(self, x, y):
        out = original(self, x, y)
        calls["n"] += 1
        if calls["n"] == 6:  # epoch 2, step 2
            out["loss"] = out["loss"] * float("nan")
        return out

    monkeypatch.setattr(PGDTask, "forward", forward)
    cfg = _cfg(tmp_path, mnist_like_dir, name="nan")
    with pytest.raises(TrainingDiverged, match=r"loss became nan at epoch 2 step 2"):
        train(cfg)
    run_dir = tmp_path / "nan"
    from safetensors import safe_open

    with safe_open(str(run_dir / "last.safetensors"), framework="pt") as fh:
        assert fh.metadata()["epoch"] == "1"
    assert all(torch.isfinite(v.float()).all() for v in _weights(run_dir).values())
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "diverged" and "epoch 2 step 2" in summary["error"]


def test_huge_lr_diverges_with_exit_code_2(tmp_path, mnist_like_dir, cli):
    code, out, err = cli("train", "--config", _write_yaml(tmp_path, mnist_like_dir), "--lr", "1e30",
                         "--name", "boom", "--epochs", "1")
    assert code == 2 and err.startswith("error: loss became") and "epoch 1 step" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def _write_yaml(tmp_path: Path, data_dir: Path, **kw) -> str:
    import yaml

    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump({**TINY, "data_dir": str(data_dir), "output_dir": str(tmp_path / "runs"), **kw}))
    return str(path)


@pytest.mark.parametrize("args,needle", [
    (["--eps", "2"], "invalid eps 2.0"),
    (["--eps", "8/0"], "invalid eps"),
    (["--step-size", "-0.1"], "invalid step_size"),
    (["--attack-steps", "0"], "invalid attack_steps 0"),
    (["--attack-steps", "2.5"], "invalid attack_steps"),
    (["--method", "trades", "--trades-beta", "-1"], "invalid trades_beta"),
    (["--generated-fraction", "1.5"], "invalid generated_fraction"),
    (["--lr", "nan"], "invalid lr 'nan'"),
    (["--lr", "1e400"], "invalid lr '1e400': out of range"),
    (["--lr", "-0.1"], "invalid lr -0.1: must be a positive finite number"),
    (["--lr-base", "-1"], "invalid lr_base"),
    (["--method", "madry"], "unknown method 'madry'; valid: standard, pgd, trades, fgsm_rs"),
    (["--method", "fgsm_rs", "--norm", "l2"], "invalid norm"),
    (["--sched", "plateau"], "invalid sched"),
    (["--opt", "sgdd"], "unknown opt 'sgdd'"),
    (["--model", "wide_resnet13_1"], "unknown model 'wide_resnet13_1'"),
    (["--no-such-key", "1"], "unknown flag --no-such-key"),
    (["--eval-subset", "5000", "--select-split", "test"], "asked for 5000 test images"),  # the folder has 256
    (["--eval-subset", "100000"], "invalid eval_subset 100000: fashion_mnist has 10,000 test images"),
    (["--val-size", "1000"], "invalid val_size 1000: is larger than the training subset (train_subset 128)"),
    (["--select", "first"], "select"),
])
def test_bad_input_is_one_line_exit_2(tmp_path, mnist_like_dir, cli, args, needle):
    code, out, err = cli("train", "--config", _write_yaml(tmp_path, mnist_like_dir), *args)
    assert code == 2, err
    assert err.startswith("error: ") and needle in err and len(err.strip().splitlines()) == 1, err


def test_resume_errors(reference_run, tmp_path, mnist_like_dir, cli):
    _, ref_dir, _ = reference_run
    code, _, err = cli("train", "--config", _write_yaml(tmp_path, mnist_like_dir, lr_base=0.3), "--resume", ref_dir)
    assert code == 2 and "different config (lr_base 0.4 != 0.3)" in err and len(err.strip().splitlines()) == 1
    code, _, err = cli("train", "--resume", tmp_path)
    assert code == 2 and "not a resumable run" in err
    # An existing run is never overwritten by a fresh start.
    code, _, err = cli("train", "--config", _write_yaml(tmp_path, mnist_like_dir), "--output-dir",
                       ref_dir.parent, "--name", "ref")
    assert code == 2 and "already holds a run" in err


def test_eps_warmup_is_linear_per_step():
    cfg = TrainConfig(eps=0.1, eps_warmup_epochs=2, epochs=5)
    steps = 10
    assert _eps_at(cfg, 0, 0, steps) == pytest.approx(0.1 / 20)
    assert _eps_at(cfg, 0, 9, steps) == pytest.approx(0.05)
    assert _eps_at(cfg, 1, 9, steps) == pytest.approx(0.1)
    assert _eps_at(cfg, 4, 3, steps) == 0.1
    assert _eps_at(TrainConfig(eps=0.1), 0, 0, steps) == 0.1


def test_run_name_and_yaml_off():
    cfg = TrainConfig.from_dict({"model": "wide_resnet28_10", "method": "trades", "attack_steps": 5,
                                 "amp": False})  # YAML reads a bare `off` as false
    assert run_name(cfg).startswith("wide_resnet28_10-cifar10-trades5-") and cfg.amp.value == "off"
    assert run_name(cfg.replace(output_dir="elsewhere")) == run_name(cfg)  # placement is not identity


def test_ddp_two_cpu_processes(tmp_path, mnist_like_dir):
    """torchrun, 2 gloo ranks: one run dir written by rank 0, metrics reduced over both ranks."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "robustscale", "train", "--config", _write_yaml(tmp_path, mnist_like_dir), "--name", "ddp",
           "--epochs", "1", "--deterministic", "false", "--json"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(robustscale.__file__).parents[1])}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout)["world_size"] == 2  # printed once (rank 0 only)
    run_dir = tmp_path / "runs" / "ddp"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["device_count"] == 2
    assert summary["optimizer_steps"] == 4 and summary["train_images_seen"] == 128  # 2 ranks x 16 per step
    row = json.loads((run_dir / "metrics.jsonl").read_text())
    assert row["eval_images"] == 32  # each rank evaluated half, counts summed
    assert len(torch.load(run_dir / "state.pt", weights_only=False)["rng"]) == 2
    _, model = load_run(run_dir)
    assert model(torch.rand(2, 1, 28, 28)).shape == (2, 10)


@pytest.mark.parametrize("value, expected", [("auto", "auto"), ("true", "on"), (True, "on"), ("on", "on"),
                                             ("false", "off"), (False, "off"), ("0", "off")])
def test_compile_setting_accepts_booleans_and_auto(value, expected):
    assert TrainConfig.from_dict({"compile": value}).compile is Compile(expected)
    assert TrainConfig().compile is Compile.AUTO  # the default


def test_compile_auto_decision(monkeypatch):
    monkeypatch.setattr(train_module, "have_cpp_compiler", lambda: True)
    auto = TrainConfig(method="pgd", attack_steps=10)
    assert should_compile(auto, "cuda", train_flops=1.0)[0] is True  # GPUs always compile
    assert should_compile(auto, "cpu", train_flops=AUTO_COMPILE_MIN_TRAIN_FLOPS * 0.99)[0] is False
    compiled, why = should_compile(auto, "cpu", train_flops=AUTO_COMPILE_MIN_TRAIN_FLOPS)
    assert compiled and "long CPU run" in why
    assert should_compile(auto, "cpu", train_flops=None)[0] is True  # steady state (bench)
    assert should_compile(auto, "mps", train_flops=None)[0] is False
    assert should_compile(auto.replace(compile="on"), "cpu", train_flops=1.0)[0] is True
    assert should_compile(auto.replace(compile="off"), "cuda", train_flops=None)[0] is False
    monkeypatch.setattr(train_module, "have_cpp_compiler", lambda: False)
    compiled, why = should_compile(auto, "cpu", train_flops=None)
    assert not compiled and "no C++ compiler" in why


def test_bad_compile_value_is_one_line_exit_2(tmp_path, mnist_like_dir, cli):
    code, _, err = cli("train", "--config", _write_yaml(tmp_path, mnist_like_dir), "--compile", "sometimes")
    assert code == 2 and err.strip() == "error: unknown compile 'sometimes'; valid: auto, on, off"


def test_compiled_run_matches_eager(reference_run, tmp_path, mnist_like_dir):
    """`compile: on` trains the same model as eager; short runs under `auto` stay eager.

    Not bit-exact: compiled kernels reassociate float sums, and training amplifies such noise (a PGD
    step takes the sign of the input gradient). The yardstick is the same noise from another source:
    eager NCHW vs eager channels-last. Compiled vs eager must stay within a few times that.
    """
    _, _, ref_summary = reference_run
    assert ref_summary["compiled"] is False  # TINY runs are ~1e11 FLOPs: auto keeps them eager
    cfg = _cfg(tmp_path, mnist_like_dir, name="compiled", compile="on", epochs=1, eval_subset=0, augment=False)
    runs = {"compiled": cfg, "eager": cfg.replace(name="eager", compile="off"),
            "nchw": cfg.replace(name="nchw", compile="off", channels_last=False)}
    summaries = {name: train(c) for name, c in runs.items()}
    assert summaries["compiled"]["compiled"] is True and summaries["eager"]["compiled"] is False
    w = {name: _weights(tmp_path / name) for name in runs}

    def distance(a, b):
        return float(torch.cat([(w[a][k].float() - w[b][k].float()).flatten() for k in w[a]]).norm())

    noise = distance("eager", "nchw")
    assert 0 < distance("compiled", "eager") < 4 * noise, (distance("compiled", "eager"), noise)
