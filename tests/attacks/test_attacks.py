"""Training-time attacks against hand-written NumPy references on a linear model (whose input gradient
is known in closed form), plus the input-gradient-only guarantee (parameters' .grad untouched, an
attack step costs less than a training step)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from robustscale.attacks import attack_loss, fgsm_rs, pgd, trades_inner_max, uniform_start

K, C, H, W_ = 5, 1, 4, 4
D = C * H * W_


class Linear(nn.Module):
    """logits = W x + b on flattened pixels: d CE / dx = (softmax(z) - onehot(y)) W."""

    def __init__(self, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.fc = nn.Linear(D, K)
        with torch.no_grad():
            self.fc.weight.copy_(torch.randn(K, D, generator=g, dtype=torch.float64).float())
            self.fc.bias.copy_(torch.randn(K, generator=g, dtype=torch.float64).float())

    def forward(self, x):
        return self.fc(x.flatten(1))


def _softmax(z):
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def _np_model(model):
    Wm = model.fc.weight.detach().double().numpy()
    b = model.fc.bias.detach().double().numpy()
    return Wm, b


def _np_project(x, xa, eps, norm):
    d = xa - x
    if norm == "linf":
        d = np.clip(d, -eps, eps)
    else:
        n = np.linalg.norm(d, axis=1, keepdims=True)
        d = d * np.minimum(1.0, eps / np.maximum(n, 1e-12))
    return np.clip(x + d, 0, 1)


def _np_direction(g, norm):
    if norm == "linf":
        return np.sign(g)
    return g / np.maximum(np.linalg.norm(g, axis=1, keepdims=True), 1e-12)


def _np_pgd(model, x, y, eps, step, steps, norm, start=None):
    Wm, b = _np_model(model)
    x = x.reshape(len(x), -1).astype(np.float64)
    xa = x.copy() if start is None else _np_project(x, x + start.reshape(len(x), -1), eps, norm)
    onehot = np.eye(K)[y]
    for _ in range(steps):
        g = (_softmax(xa @ Wm.T + b) - onehot) @ Wm
        xa = _np_project(x, xa + step * _np_direction(g, norm), eps, norm)
    return xa


def _data(n=16, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, C, H, W_, generator=g), torch.randint(0, K, (n,), generator=g)


@pytest.mark.parametrize("norm,eps,step", [("linf", 0.1, 0.03), ("l2", 0.5, 0.2)])
def test_pgd_matches_numpy_reference(norm, eps, step):
    model, (x, y) = Linear(), _data()
    x_adv = pgd(model, x, y, eps, step, steps=5, norm=norm, random_start=False)
    ref = _np_pgd(model, x.numpy(), y.numpy(), eps, step, 5, norm)
    np.testing.assert_allclose(x_adv.flatten(1).double().numpy(), ref, atol=1e-5)
    delta = (x_adv - x).flatten(1)
    bound = delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)
    assert (bound <= eps + 1e-6).all() and x_adv.min() >= 0 and x_adv.max() <= 1
    # The attack ascends: loss on x_adv above the clean loss for every example.
    assert (attack_loss(model(x_adv), y) > attack_loss(model(x), y)).all()


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_pgd_random_start_is_the_given_generator_draw(norm):
    model, (x, y) = Linear(), _data()
    eps, step = (0.1, 0.03) if norm == "linf" else (0.5, 0.2)
    x_adv = pgd(model, x, y, eps, step, 3, norm=norm, generator=torch.Generator().manual_seed(7))
    start = uniform_start(x, eps, norm, torch.Generator().manual_seed(7)).numpy()
    ref = _np_pgd(model, x.numpy(), y.numpy(), eps, step, 3, norm, start=start)
    np.testing.assert_allclose(x_adv.flatten(1).double().numpy(), ref, atol=1e-5)


def test_uniform_start_distribution():
    x = torch.zeros(20000, 1, 1, 3)
    eps = 0.25
    d = uniform_start(x, eps, "linf", torch.Generator().manual_seed(0)).flatten()
    assert stats.kstest(d.numpy(), stats.uniform(loc=-eps, scale=2 * eps).cdf).pvalue > 1e-3
    # l2: uniform in the 3-ball <=> direction uniform and (r/eps)^3 ~ U(0,1).
    d = uniform_start(x, eps, "l2", torch.Generator().manual_seed(0)).flatten(1).double()
    r = d.norm(dim=1).numpy()
    assert r.max() <= eps + 1e-7
    assert stats.kstest((r / eps) ** 3, "uniform").pvalue > 1e-3
    assert np.abs(d.mean(0).numpy()).max() < 0.01


def test_fgsm_rs_is_wong_et_al():
    model, (x, y) = Linear(), _data()
    eps = 0.1
    x_adv = fgsm_rs(model, x, y, eps, 1.25 * eps, generator=torch.Generator().manual_seed(3))
    # Wong et al. 2020: delta ~ U(-eps, eps), clip to the box, one signed step of alpha, clamp, clip.
    g = torch.Generator().manual_seed(3)
    delta0 = (torch.rand(x.shape, generator=g) * 2 * eps - eps).numpy().reshape(len(x), -1)
    xn = x.numpy().reshape(len(x), -1).astype(np.float64)
    d = np.clip(delta0, -xn, 1 - xn)
    Wm, b = _np_model(model)
    grad = (_softmax((xn + d) @ Wm.T + b) - np.eye(K)[y.numpy()]) @ Wm
    d = np.clip(d + 1.25 * eps * np.sign(grad), -eps, eps)
    ref = np.clip(xn + d, 0, 1)
    np.testing.assert_allclose(x_adv.flatten(1).double().numpy(), ref, atol=1e-5)


@pytest.mark.parametrize("norm,eps,step", [("linf", 0.1, 0.02), ("l2", 0.5, 0.1)])
def test_trades_inner_max_matches_numpy_reference(norm, eps, step):
    model, (x, _) = Linear(), _data()
    x_adv = trades_inner_max(model, x, eps, step, 4, norm=norm, generator=torch.Generator().manual_seed(5))
    Wm, b = _np_model(model)
    xn = x.numpy().reshape(len(x), -1).astype(np.float64)
    g = torch.Generator().manual_seed(5)
    xa = xn + 0.001 * torch.randn(x.shape, generator=g).numpy().reshape(len(x), -1)  # not clipped (reference)
    p = _softmax(xn @ Wm.T + b)
    for _ in range(4):
        # d/dx' KL(p || softmax(W x' + b)) = (q - p) W
        grad = (_softmax(xa @ Wm.T + b) - p) @ Wm
        xa = _np_project(xn, xa + step * _np_direction(grad, norm), eps, norm)
    np.testing.assert_allclose(x_adv.flatten(1).double().numpy(), xa, atol=1e-5)
    # Passing the clean logits gives the same result as computing them inside.
    same = trades_inner_max(model, x, eps, step, 4, norm=norm, generator=torch.Generator().manual_seed(5),
                            clean_logits=model(x))
    torch.testing.assert_close(same, x_adv)


def test_restarts_keep_the_worst_case_per_example():
    model, (x, y) = Linear(), _data(64)
    eps, step = 0.1, 0.01
    best = pgd(model, x, y, eps, step, 2, restarts=3, generator=torch.Generator().manual_seed(11))
    g = torch.Generator().manual_seed(11)
    runs = [pgd(model, x, y, eps, step, 2, generator=g) for _ in range(3)]
    losses = torch.stack([attack_loss(model(r), y) for r in runs])
    expected = torch.stack(runs)[losses.argmax(0), torch.arange(len(x))]
    torch.testing.assert_close(best, expected)


def test_cw_loss_by_hand():
    logits = torch.tensor([[2.0, 5.0, 1.0], [0.0, -1.0, 3.0]])
    y = torch.tensor([1, 0])
    torch.testing.assert_close(attack_loss(logits, y, "cw"), torch.tensor([2.0 - 5.0, 3.0 - 0.0]))


def _tiny_cnn():
    import robustscale  # noqa: F401  (registers the models)
    from robustscale.data import dataset_normalization
    from robustscale.models import create_model

    torch.manual_seed(0)
    return create_model("wide_resnet16_1", num_classes=10, in_chans=1, **dataset_normalization("fashion_mnist"))


ATTACKS = {
    "pgd_linf": lambda m, x, y: pgd(m, x, y, 0.1, 0.025, 1),
    "pgd_l2": lambda m, x, y: pgd(m, x, y, 1.0, 0.25, 1, norm="l2"),
    "fgsm_rs": lambda m, x, y: fgsm_rs(m, x, y, 0.1, 0.125),
    "trades": lambda m, x, y: trades_inner_max(m, x, 0.1, 0.025, 1, clean_logits=torch.randn(len(x), 10)),
}


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_attack_computes_only_the_input_gradient(name):
    model = _tiny_cnn().train()
    x, y = torch.rand(4, 1, 28, 28), torch.randint(0, 10, (4,))
    params = list(model.parameters())
    for i, p in enumerate(params):  # some with a pending gradient, some without
        p.grad = torch.full_like(p, 0.5) if i % 2 else None
    with FlopCounterMode(display=False) as attack_counter:
        x_adv = ATTACKS[name](model, x, y)
    for i, p in enumerate(params):
        assert p.requires_grad, "requires_grad must be restored"
        if i % 2:
            assert torch.equal(p.grad, torch.full_like(p, 0.5))
        else:
            assert p.grad is None
    assert model.training and not x_adv.requires_grad
    # One attack step = forward + input-gradient backward; a training step = forward + full backward.
    for p in params:
        p.grad = None
    with FlopCounterMode(display=False) as train_counter:
        nn.functional.cross_entropy(model(x), y).backward()
    with FlopCounterMode(display=False) as forward_counter, torch.no_grad():
        model(x)
    attack_flops, train_flops = attack_counter.get_total_flops(), train_counter.get_total_flops()
    forward_flops = forward_counter.get_total_flops()
    assert attack_flops < train_flops
    # No weight-gradient convolutions: backward part of the attack <= ~ one forward, full backward ~ two.
    assert attack_flops <= 2.05 * forward_flops < 0.75 * train_flops


def test_attacks_leave_the_model_mode_and_bn_statistics_alone_in_eval():
    model = _tiny_cnn().eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    pgd(model, torch.rand(4, 1, 28, 28), torch.randint(0, 10, (4,)), 0.1, 0.03, 2)
    assert not model.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
