"""robustscale.bench: same adversarial examples as the baseline, honest FLOP accounting, rounds, memory, CLI."""
from __future__ import annotations

import copy
import json
import statistics
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import robustscale  # noqa: F401  (registers the models)
from robustscale.bench import (BaselineStep, OursStep, bench_train_step, count_step_flops, format_result,
                               measure_peak_flops, memory_growth, peak_memory, reset_peak_memory, run_rounds)
from robustscale.compute import count_flops
from robustscale.config import TrainConfig
from robustscale.data import dataset_normalization
from robustscale.models import create_model

# compile off: compiling a tiny step costs far more than the step (the auto default is tested below).
TINY = dict(model="wide_resnet16_1", dataset="fashion_mnist", energy=False, compile=False)


def _tiny_model(seed=0):
    torch.manual_seed(seed)
    return create_model("wide_resnet16_1", num_classes=10, in_chans=1, **dataset_normalization("fashion_mnist"))


def _batch(n=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g)


def _both_steps(cfg, seed=3):
    model = _tiny_model()
    ours = OursStep(cfg, copy.deepcopy(model), generator=torch.Generator().manual_seed(seed))
    base = BaselineStep(cfg, copy.deepcopy(model), generator=torch.Generator().manual_seed(seed))
    return ours, base


@pytest.mark.parametrize("method", ["pgd", "fgsm_rs"])
def test_baseline_and_ours_craft_identical_adversarial_examples(method):
    # Same weights, same generator seed, same memory format: the only difference between the two is
    # which gradients autograd computes, so x_adv must agree bit for bit (batch 8: mean vs sum
    # reduction scales gradients by an exact power of two, signs are unchanged).
    cfg = TrainConfig(**TINY, method=method, attack_steps=4, eps=0.1, batch_size=8, channels_last=False)
    ours, base = _both_steps(cfg)
    x, y = _batch()
    out_o, out_b = ours(x, y), base(x, y)
    assert torch.equal(out_o["x_adv"], out_b["x_adv"])
    assert (out_o["x_adv"] - x).abs().max() <= 0.1 + 1e-6
    assert not torch.equal(out_o["x_adv"], x)
    # and the attack is an attack: the loss at x_adv (before the update) exceeds the clean loss
    model = _tiny_model().eval()
    with torch.no_grad():
        assert F.cross_entropy(model(out_b["x_adv"]), y) > F.cross_entropy(model(x), y)
    torch.testing.assert_close(out_o["loss"], out_b["loss"])


def test_channels_last_ours_matches_baseline_within_tolerance():
    # channels-last reorders the convolution arithmetic; a sign can flip only where the input gradient is ~0.
    cfg = TrainConfig(**TINY, attack_steps=3, eps=0.1, batch_size=8, channels_last=True)
    ours, base = _both_steps(cfg)
    x, y = _batch()
    diff = (ours(x, y)["x_adv"] - base(x, y)["x_adv"]).abs()
    assert diff.max() <= 2 * 0.1 + 1e-6  # both inside the eps-ball
    assert (diff < 1e-5).float().mean() > 0.99


def test_l2_baseline_matches_ours():
    cfg = TrainConfig(**TINY, attack_steps=3, eps=0.5, norm="l2", batch_size=8, channels_last=False)
    model = _tiny_model().double()  # float64: the two may differ only by rounding, which float64 keeps tiny
    ours = OursStep(cfg, copy.deepcopy(model), generator=torch.Generator().manual_seed(3))
    base = BaselineStep(cfg, copy.deepcopy(model), generator=torch.Generator().manual_seed(3))
    x, y = _batch()
    x = x.double()
    xo, xb = ours(x, y)["x_adv"], base(x, y)["x_adv"]
    # Same input gradients (the linf test above: bit for bit); only the l2 normalisations are
    # written differently, each within gamma_D = D u of exact (D = 784 pixels), so per step the two
    # directions differ by <= 2 gamma_D + 4u and the iterates by step times that plus 3 roundings.
    # The network's input-gradient map can amplify an earlier step's difference; the tolerance
    # allows 10^3 for that and is still 1e-9 of a step, far below any difference of algorithm.
    u = torch.finfo(torch.float64).eps / 2
    step, d = cfg.resolved_step_size, x[0].numel()
    first_order = cfg.attack_steps * (step * (2 * d * u + 4 * u) + 3 * u)
    torch.testing.assert_close(xo, xb, atol=1e3 * first_order, rtol=0)
    assert (xb - x).flatten(1).norm(dim=1).max() <= 0.5 + 1e-12


def test_flop_accounting_shows_what_the_baseline_wastes():
    # Independent counts of the parts: forward F, training backward B (input detached), full
    # backward with input grad Ball (what loss.backward() does in a baseline attack step), and the
    # input-only backward Bi (ours). PGD-K: ours = (K+1)F + K Bi + B; baseline = (K+2)F + K Ball + B.
    k, n = 3, 2
    cfg = TrainConfig(**TINY, attack_steps=k, eps=0.1, batch_size=n, channels_last=False)
    model, (x, y) = _tiny_model(), _batch(n)
    fwd = count_flops(lambda: model(x))

    def backward(input_grad, weight_grad):
        for p in model.parameters():
            p.requires_grad_(weight_grad)
        xi = x.clone().requires_grad_(input_grad)
        F.cross_entropy(model(xi), y).backward()
        for p in model.parameters():
            p.requires_grad_(True)
            p.grad = None

    b_train = count_flops(lambda: backward(False, True)) - fwd
    b_all = count_flops(lambda: backward(True, True)) - fwd
    b_in = count_flops(lambda: backward(True, False)) - fwd
    ours = count_step_flops(lambda: OursStep(cfg, copy.deepcopy(model)), (1, 28, 28), 10, batch_size=n) * n
    base = count_step_flops(lambda: BaselineStep(cfg, copy.deepcopy(model)), (1, 28, 28), 10, batch_size=n) * n
    assert ours == pytest.approx((k + 1) * fwd + k * b_in + b_train, rel=1e-9)
    assert base == pytest.approx((k + 2) * fwd + k * b_all + b_train, rel=1e-9)
    assert b_all > b_in > 0.5 * fwd  # weight gradients are real work


def test_run_rounds_alternates_order_and_times_each_path():
    calls = []

    def path(name, seconds):
        def step(x, y):
            calls.append(name)
            time.sleep(seconds)
        return step

    x = torch.zeros(4, 1)
    res = run_rounds({"a": path("a", 0.01), "b": path("b", 0.03)}, x, None, steps=2, epochs=3, warmup=1)
    # warm-up a, b; then round 0: a a b b, round 1: b b a a, round 2: a a b b
    assert calls == ["a", "b"] + ["a", "a", "b", "b"] + ["b", "b", "a", "a"] + ["a", "a", "b", "b"]
    for name, per_step in (("a", 0.01), ("b", 0.03)):
        r = res[name]
        assert len(r["seconds"]) == len(r["images_per_second"]) == len(r["peak_memory_bytes"]) == 3
        assert all(s >= 2 * per_step for s in r["seconds"])
        assert r["images_per_second"] == pytest.approx([8 / s for s in r["seconds"]])
        assert r["warmup_seconds"] >= per_step
    ratio = statistics.median(a / b for a, b in zip(res["a"]["images_per_second"], res["b"]["images_per_second"]))
    assert 1.5 < ratio < 3.5


def test_peak_rss_window_sees_an_allocation_and_resets():
    if not reset_peak_memory("cpu"):
        pytest.skip("/proc/self/clear_refs not writable here")
    before = peak_memory("cpu")
    block = np.ones(25_000_000)  # 200 MB, touched
    block[::512] = 2.0
    grown = peak_memory("cpu")
    del block
    reset_peak_memory("cpu")
    after = peak_memory("cpu")
    assert grown - before >= 190e6
    assert after < grown - 150e6


def test_leak_check_flags_a_leaking_step_and_passes_a_clean_one():
    if not reset_peak_memory("cpu"):
        pytest.skip("/proc/self/clear_refs not writable here")
    kept = []

    def leaking(x, y):  # keeps 100 MB per step, like a loop that stores losses with their graphs
        kept.append(np.full(12_500_000, 1.0))

    def clean(x, y):  # uses 100 MB per step and frees it
        np.full(12_500_000, 1.0).sum()

    # RSS is process-wide: time the clean step first, on its own.
    res = run_rounds({"clean": clean}, torch.zeros(1), None, steps=1, epochs=4, warmup=1)
    assert memory_growth(res["clean"]["peak_memory_bytes"]) < 0.05
    res = run_rounds({"leaking": leaking}, torch.zeros(1), None, steps=1, epochs=4, warmup=1)
    assert memory_growth(res["leaking"]["peak_memory_bytes"]) > 0.1
    assert res["leaking"]["rss_bytes"][-1] - res["leaking"]["rss_bytes"][1] >= 190e6  # live memory grows too
    kept.clear()


def test_memory_growth_from_epoch_two():
    assert memory_growth([100, 200, 204, 202]) == pytest.approx(0.02)
    assert memory_growth([500, 200, 200]) == 0.0  # epoch 1 is excluded
    assert memory_growth([100, 200]) is None


def test_peak_probe_is_plausible_for_a_cpu():
    res = measure_peak_flops("cpu", n=256, iters=2, trials=2)
    assert res["dtype"] == "float32" and res["n"] == 256
    assert set(res["candidates"]) == {"matmul 256^3", "conv3x3 channels-last"}
    assert res["peak_flops_per_second"] == max(res["candidates"].values())
    assert 1e8 < res["peak_flops_per_second"] < 1e13


def test_bench_train_step_end_to_end():
    cfg = TrainConfig(**TINY, attack_steps=1, eps=0.1, batch_size=4)
    r = bench_train_step(cfg, steps=1, warmup=0, epochs=3, baseline=True, peak=False)
    json.dumps(r)  # JSON-able
    o, b = r["ours"], r["baseline"]
    assert len(o["images_per_second_epochs"]) == len(b["images_per_second_epochs"]) == 3
    assert r["ratio_rounds"] == pytest.approx([p / q for p, q in zip(o["images_per_second_epochs"],
                                                                     b["images_per_second_epochs"])])
    assert r["ratio"] == pytest.approx(statistics.median(r["ratio_rounds"]))
    assert r["ratio_best"] == pytest.approx(max(o["images_per_second_epochs"]) / max(b["images_per_second_epochs"]))
    assert r["ratio_cpu_time"] == pytest.approx(sum(b["cpu_seconds_epochs"]) / sum(o["cpu_seconds_epochs"]))
    assert o["images_per_second"] == pytest.approx(statistics.median(o["images_per_second_epochs"]))
    assert o["achieved_flops_per_second"] == pytest.approx(o["images_per_second"] * o["flops_per_image"])
    assert b["flops_per_image"] > o["flops_per_image"] > 0
    assert o["peak_memory_bytes"] == max(o["peak_memory_bytes_epochs"]) > 10e6
    assert r["memory_kind"] == "peak_rss" and o["mfu"] is None  # peak=False: no probe, no utilisation
    assert r["memory_flat"] is not None
    text = format_result(r)
    assert "ours/baseline img/s" in text and "baseline" in text and "per epoch" in text


def test_cli_bench_json(cli):
    code, out, err = cli("bench", "--model", "wide_resnet16_1", "--dataset", "fashion_mnist", "--batch-size", "4",
                         "--attack-steps", "1", "--steps", "1", "--warmup", "0", "--epochs", "2", "--no-peak",
                         "--no-channels-last", "--no-compile", "--amp", "bf16", "--json")
    assert code == 0, err
    r = json.loads(out)
    assert r["model"] == "wide_resnet16_1" and r["attack_steps"] == 1 and r["channels_last"] is False
    assert r["amp"] == "bf16" and r["input_size"] == [1, 28, 28]
    assert r["baseline"] is None and r["ours"]["images_per_second"] > 0
    assert r["memory_growth"] is None  # fewer than 3 epochs


@pytest.mark.parametrize("flags, needle", [
    (["--model", "no_such_net"], "no_such_net"),
    (["--method", "trades", "--baseline"], "trades"),
    (["--method", "bogus"], "bogus"),
    (["--batch-size", "0"], "batch"),
    (["--steps", "0"], "steps"),
    (["--amp", "fp16"], "fp16"),
    (["--amp", "fp8"], "fp8"),
    (["--device", "tpu"], "tpu"),
])
def test_cli_bench_user_errors(cli, flags, needle):
    code, out, err = cli("bench", "--model", "wide_resnet16_1", "--dataset", "fashion_mnist", "--batch-size", "2",
                         "--attack-steps", "1", "--no-peak", *flags)
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1 and needle in err
    assert "Traceback" not in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA message")
def test_cli_bench_cuda_without_cuda(cli):
    code, _, err = cli("bench", "--device", "cuda", "--no-peak")
    assert code == 2 and "CUDA is not available" in err


def test_ours_step_follows_train_compile_default():
    """`robustscale bench` times what a long run gets: `compile: auto` compiles (when a C++ compiler exists)."""
    from robustscale.train import have_cpp_compiler

    cfg = TrainConfig(**{**TINY, "compile": "auto"}, attack_steps=1, eps=0.1, batch_size=4)
    ours = OursStep(cfg, _tiny_model())  # torch.compile is lazy: nothing is compiled until a call
    assert ours.compiled is have_cpp_compiler()
    assert hasattr(ours.task.trainable_module, "_orig_mod") is ours.compiled
    eager = OursStep(cfg.replace(compile=False), _tiny_model())
    assert eager.compiled is False and not hasattr(eager.task.trainable_module, "_orig_mod")
