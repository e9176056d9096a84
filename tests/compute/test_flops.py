"""Measured FLOPs against hand computations from layer shapes, and the decomposition of a real
training step (robustscale.tasks) into forward / input-only backward / full backward."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from robustscale.compute import (StepFlops, analytic_train_step_flops, clear_cache, estimate_eval_flops,
                                 measure_step_flops)
from robustscale.config import TrainConfig
from robustscale.errors import UserError
from robustscale.data import dataset_normalization
from robustscale.models import create_model


def conv_flops(c_in, c_out, k, h_out, w_out):
    """2 FLOPs per multiply-add: every output position of every output channel sums c_in * k * k products."""
    return 2 * c_out * h_out * w_out * c_in * k * k


def linear_flops(n_in, n_out):
    return 2 * n_in * n_out


class TinyNet(nn.Module):
    """conv 3->4 (3x3, pad 1) on 8x8 -> ReLU -> conv 4->6 (3x3, stride 2, pad 1) -> 4x4 -> ReLU -> linear 96->5."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 6, 3, stride=2, padding=1, bias=False)
        self.fc = nn.Linear(6 * 4 * 4, 5)

    def forward(self, x):
        return self.fc(torch.relu(self.conv2(torch.relu(self.conv1(x)))).flatten(1))


# Hand computation for TinyNet on 3x8x8, per image.
C1 = conv_flops(3, 4, 3, 8, 8)  # 13824
C2 = conv_flops(4, 6, 3, 4, 4)  # 6912
L = linear_flops(96, 5)  # 960
FWD = C1 + C2 + L
# Attack backward (gradient w.r.t. the input only): each layer's input gradient costs what its
# forward costs (a transposed conv / matmul of the same size); no weight gradients.
INPUT_BWD = C1 + C2 + L
# Training backward (input detached): every weight gradient (= forward cost each), plus input gradients
# of every layer except the first (nothing upstream of conv1 needs a gradient).
FULL_BWD = (C1 + C2 + L) + (C2 + L)


def cfg(method, steps=3, **kw):
    return TrainConfig(model="tiny", method=method, attack_steps=steps, **kw)


@pytest.mark.parametrize("device", ["meta", "cpu"])
def test_tiny_net_matches_hand_computation(device):
    assert (C1, C2, L) == (13824, 6912, 960)
    s = measure_step_flops(TinyNet(), cfg("standard"), (3, 8, 8), batch_size=2, use_cache=False, device=device)
    assert s.measured_on == device
    assert s.forward_flops == FWD
    assert s.input_backward_flops == INPUT_BWD
    assert s.full_backward_flops == FULL_BWD
    assert s.attack_step_flops == FWD + INPUT_BWD
    assert s.train_step_flops == FWD + FULL_BWD  # standard: forward + training backward
    assert s.analytic_train_step_flops == 3 * FWD
    assert s.attack_flops_fraction == 0.0 and s.attack_steps == 0


@pytest.mark.parametrize("method,k", [("pgd", 3), ("trades", 2), ("fgsm_rs", 1)])
def test_tiny_net_train_step_by_hand(method, k):
    s = measure_step_flops(TinyNet(), cfg(method, steps=k), (3, 8, 8), use_cache=False)
    # PGD / FGSM-RS: K attack steps (forward + input backward), then forward + backward on x_adv.
    # TRADES: clean forward with grad, K attack steps, adversarial forward, backward through both branches.
    expected = {"pgd": (k + 1) * FWD + k * INPUT_BWD + FULL_BWD,
                "fgsm_rs": 2 * FWD + INPUT_BWD + FULL_BWD,
                "trades": (k + 2) * FWD + k * INPUT_BWD + 2 * FULL_BWD}[method]
    assert s.train_step_flops == expected
    assert s.attack_steps == k
    assert s.attack_flops_fraction == pytest.approx(k * (FWD + INPUT_BWD) / expected)


@pytest.mark.parametrize("method,k", [("pgd", 4), ("trades", 3)])
def test_wrn_step_decomposes_into_its_parts(method, k):
    model = create_model("wide_resnet16_1", num_classes=10, **dataset_normalization("cifar10"))
    s = measure_step_flops(model, TrainConfig(model="wide_resnet16_1", method=method, attack_steps=k), (3, 32, 32),
                           use_cache=False)
    f, ib, fb = s.forward_flops, s.input_backward_flops, s.full_backward_flops
    kk = s.attack_steps
    expected = {"pgd": f * (kk + 1) + ib * kk + fb, "fgsm_rs": f * (kk + 1) + ib * kk + fb,
                "trades": f * (kk + 2) + ib * kk + 2 * fb, "standard": f + fb}[method]
    assert s.train_step_flops == pytest.approx(expected, rel=0.01)
    # The forward of WRN-16-1 at 32x32 by hand: stem, then 3 groups of 2 pre-activation blocks
    # (widths 16, 32, 64 at 32, 16, 8 pixels); a 1x1 projection shortcut where the width or stride changes.
    convs = conv_flops(3, 16, 3, 32, 32)
    for c_in, c_out, size in ((16, 16, 32), (16, 32, 16), (32, 64, 8)):
        convs += conv_flops(c_in, c_out, 3, size, size) + conv_flops(c_out, c_out, 3, size, size)  # block 1
        if c_in != c_out:
            convs += conv_flops(c_in, c_out, 1, size, size)
        convs += 2 * conv_flops(c_out, c_out, 3, size, size)  # block 2
    assert f == convs + linear_flops(64, 10)
    assert ib == pytest.approx(f)  # attack backward: input gradients only
    assert fb == pytest.approx(2 * f - conv_flops(3, 16, 3, 32, 32))  # no input gradient for the stem
    assert s.analytic_train_step_flops == analytic_train_step_flops(method, kk, f)


def test_analytic_convention_of_2024_study():
    assert analytic_train_step_flops("standard", 0, 10.0) == 30.0
    assert analytic_train_step_flops("pgd", 10, 10.0) == 3 * 10 * 12
    assert analytic_train_step_flops("trades", 10, 10.0) == 3 * 10 * 13
    assert analytic_train_step_flops("fgsm_rs", 1, 10.0) == 3 * 10 * 3


class TinyBNNet(TinyNet):
    """TinyNet with BatchNorm, to check that measuring leaves running statistics alone."""

    def __init__(self):
        super().__init__()
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x):
        return self.fc(torch.relu(self.conv2(torch.relu(self.bn(self.conv1(x))))).flatten(1))


def test_measurement_leaves_model_untouched_and_meta_equals_cpu():
    torch.manual_seed(0)
    model = TinyBNNet().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    state = torch.random.get_rng_state()
    meta = measure_step_flops(model, cfg("pgd", steps=2), (3, 8, 8), use_cache=False)
    cpu = measure_step_flops(model, cfg("pgd", steps=2), (3, 8, 8), use_cache=False, device="cpu")
    assert meta.measured_on == "meta" and cpu.measured_on == "cpu"
    assert meta.to_dict() | {"measured_on": "cpu"} == cpu.to_dict()
    assert meta.train_step_flops == 3 * FWD + 2 * INPUT_BWD + FULL_BWD  # BatchNorm adds no FLOPs
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters()) and model.training
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's RNG stream is not consumed


def test_cache_and_to_dict():
    clear_cache()
    model = TinyNet()
    a = measure_step_flops(model, cfg("pgd"), (3, 8, 8))
    assert measure_step_flops(model, cfg("pgd"), (3, 8, 8)) is a
    assert measure_step_flops(model, cfg("pgd", steps=4), (3, 8, 8)) is not a
    d = a.to_dict()
    assert json.loads(json.dumps(d)) == d
    assert d["input_size"] == [3, 8, 8]
    assert a.backward_flops == a.full_backward_flops
    assert d["measured_to_analytic"] == pytest.approx(a.train_step_flops / a.analytic_train_step_flops)


def test_eval_flops_estimate():
    s = StepFlops("m", "pgd", 10, (3, 32, 32), forward_flops=10.0, input_backward_flops=10.0,
                  full_backward_flops=20.0, attack_step_flops=20.0, train_step_flops=230.0,
                  attack_flops_fraction=200 / 230, analytic_train_step_flops=360.0)
    assert estimate_eval_flops(s, 100) == 1000.0  # clean forward only
    # clean forward + 2 restarts x (5 attack steps + a scoring forward)
    assert estimate_eval_flops(s, 100, attack_steps=5, restarts=2) == 100 * (10 + 2 * (5 * 20 + 10))


def test_input_size_the_model_cannot_take():
    fixed = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 5))
    with pytest.raises(UserError, match=r"cannot take input size 3x16x16") as info:
        measure_step_flops(fixed, cfg("pgd"), (3, 16, 16), use_cache=False)
    assert "\n" not in str(info.value)
    with pytest.raises(UserError, match="invalid input size"):
        measure_step_flops(fixed, cfg("pgd"), (3, 0, 8))
    with pytest.raises(UserError, match="invalid input size"):
        measure_step_flops(fixed, cfg("pgd"), (8, 8))


# ---------------------------------------------------------------------- CLI
def test_cli_json_matches_api(cli):
    code, out, err = cli("flops", "--model", "wide_resnet16_1", "--method", "trades", "--attack-steps", "2",
                         "--json")
    assert code == 0, err
    data = json.loads(out)
    api = measure_step_flops(create_model("wide_resnet16_1", num_classes=10), TrainConfig(
        model="wide_resnet16_1", method="trades", attack_steps=2), (3, 32, 32), use_cache=False)
    for key in ("forward_flops", "input_backward_flops", "full_backward_flops", "attack_step_flops",
                "train_step_flops", "analytic_train_step_flops", "attack_flops_fraction"):
        assert data[key] == pytest.approx(getattr(api, key), rel=1e-12), key
    assert data["analytic_train_step_flops"] == 3 * data["forward_flops"] * (2 + 3)
    assert data["seconds"] > 0 and data["input_size"] == [3, 32, 32]


def test_cli_table(cli):
    code, out, err = cli("flops", "--model", "wide_resnet16_1", "--method", "pgd", "--attack-steps", "4")
    assert code == 0, err
    assert "GFLOPs/image" in out and "2024 convention 3F(K+2)" in out and "train step, measured" in out
    line = next(l for l in out.splitlines() if l.startswith("train step, measured"))
    # (K+1) F + K F + (2F - stem) for PGD-4: just under 11 F, against the convention's 3F(K+2) = 18 F
    assert 10.9 < float(line.split()[-1]) < 11.0
    line = next(l for l in out.splitlines() if l.startswith("train step, 2024 convention"))
    assert line.split()[-1] == "18.00"


@pytest.mark.parametrize("args,needle", [
    (("--model", "wide_resnet16_1", "--method", "pgdx"), "unknown method 'pgdx'; valid: standard, pgd"),
    (("--model", "no_such_net"), "unknown model 'no_such_net'"),
    (("--model", "wide_resnet16_1", "--attack-steps", "0"), "invalid attack_steps 0"),
    (("--model", "wide_resnet16_1", "--batch-size", "0"), "invalid --batch-size 0"),
    (("--model", "wide_resnet16_1", "--input-size", "3", "0", "32"), "invalid input size 3 0 32"),
    (("--model", "vit_tiny_patch16_224", "--input-size", "3", "32", "32"),
     "model vit_tiny_patch16_224 cannot take input size 3x32x32"),
])
def test_cli_errors(cli, args, needle):
    code, out, err = cli("flops", *args)
    assert code == 2
    assert err.startswith("error: ") and needle in err
    assert err.count("\n") == 1 and "Traceback" not in err
