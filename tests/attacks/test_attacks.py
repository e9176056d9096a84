"""Training-time attacks against hand-written NumPy references on a linear model (whose input gradient
is known in closed form), plus the input-gradient-only guarantee (parameters' .grad untouched, an
attack step costs less than a training step).

The reference comparisons run in float64 end to end (model, images, random starts and the attack
itself), against a tolerance derived from float64 rounding and the conditioning of the very run being
checked (``_np_attack``). In float32 (a unit roundoff 2**29 times larger) the same bound exceeds
the eps-ball for TRADES l2, whose first step is taken 0.001 away from x where the KL gradient is tiny
(||g|| ~ 2e-3 here): float32 cannot pin that step down, and a fixed ``atol`` passes or fails with one
CPU's rounding (it failed at 2e-5 against 1e-5 on another machine).
"""
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
U64 = np.finfo(np.float64).eps / 2  # unit roundoff of float64


class Linear(nn.Module):
    """logits = W x + b on flattened pixels (float64): d CE / dx = (softmax(z) - onehot(y)) W."""

    def __init__(self, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.fc = nn.Linear(D, K, dtype=torch.float64)
        with torch.no_grad():
            self.fc.weight.copy_(torch.randn(K, D, generator=g, dtype=torch.float64))
            self.fc.bias.copy_(torch.randn(K, generator=g, dtype=torch.float64))

    def forward(self, x):
        return self.fc(x.flatten(1))


def _softmax(z):
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def _np_model(model):
    return model.fc.weight.detach().numpy(), model.fc.bias.detach().numpy()


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


def _gamma(n):
    """Relative error bound of a length-n dot product or sum (Higham, Accuracy and Stability of
    Numerical Algorithms, 2nd ed., eq. 3.4 and sec. 3.1)."""
    return n * U64 / (1 - n * U64)


def _softmax_error(Wm, b, xa):
    """(softmax(W xa + b), bound on the rounding error of each entry) per row of ``xa``.

    |dz_k| <= gamma_{D+1} (|W_k| . |xa| + |b_k|), and |d log q_k| <= |dz_k| + |d logsumexp z| <= 2 max|dz|
    (first order) plus gamma_{K+3} for the exp, the sum of K terms and the division.
    """
    q = _softmax(xa @ Wm.T + b)
    dz = _gamma(D + 1) * (np.abs(xa) @ np.abs(Wm).T + np.abs(b))
    return q, q * (2 * dz.max(1, keepdims=True) + _gamma(K + 3))


def _np_attack(model, x, x0, eps, step, steps, norm, y=None):
    """Reference PGD (cross-entropy of labels ``y``) or, with ``y=None``, the TRADES inner maximisation
    (KL to the clean prediction), from the start ``x0``; NumPy float64, flattened images.

    Returns ``(x_adv, atol)``, ``atol`` a first-order bound on |torch - reference|. Per step:
    - the input gradient g = r W (r = q - target) is computed with |dr_k| <= |dq_k| + |dtarget_k| + u |r_k|
      and |dg_j| <= sum_k |dr_k| |W_kj| + gamma_K sum_k |r_k| |W_kj|;
    - an error e (l2, per example) already in the iterate moves g by <= ||H|| e, H = W^T (diag q - q q^T) W
      the Hessian of either loss in x;
    - l-inf: sign(g) is exact while every |g_j| exceeds both (asserted: else the comparison is
      ill-conditioned), so the step adds only rounding (the projection is non-expansive);
      l2: g / ||g|| is off by <= 2 ||dg|| / ||g|| + gamma_{D+1}, and the step map x -> x + step g/||g||
      is (1 + step ||H|| / ||g||)-Lipschitz, projections non-expansive;
    - rounding: <= 4 roundings of values <= 1 per pixel (ascent, l2 rescale, x + delta) and the l2
      rescale factor's gamma_{D+2} eps.
    Both the attack and the reference carry such an error, so the tolerance is twice the bound.
    """
    Wm, b = _np_model(model)
    x, xa = x.reshape(len(x), -1), x0.reshape(len(x), -1)
    e = np.full(len(x), 2 * U64 * np.sqrt(D))  # the start: x + delta and its box clip
    if y is None:
        target, dtarget = _softmax_error(Wm, b, x)
    else:
        target, dtarget = np.eye(K)[y], 0.0
    rounding = 4 * U64 * np.sqrt(D) + (_gamma(D + 2) * eps if norm == "l2" else 0.0)
    for _ in range(steps):
        q, dq = _softmax_error(Wm, b, xa)
        r = q - target
        g = r @ Wm
        dg = (dq + dtarget + U64 * np.abs(r)) @ np.abs(Wm) + _gamma(K) * np.abs(r) @ np.abs(Wm)
        hess = np.linalg.norm(np.einsum("kd,nkl,le->nde", Wm, _softmax_jacobian(q), Wm), ord=2, axis=(1, 2))
        if norm == "linf":
            assert (np.abs(g) > dg + (hess * e)[:, None]).all(), "a gradient coordinate is within error of 0"
            e = e + rounding
        else:
            gn = np.linalg.norm(g, axis=1)
            e = e * (1 + step * hess / gn) + step * (2 * np.linalg.norm(dg, axis=1) / gn + _gamma(D + 1)) + rounding
        xa = _np_project(x, xa + step * _np_direction(g, norm), eps, norm)
    atol = 2 * e.max()
    assert atol < 1e-6 * step  # still far below what any slip of the algorithm moves (a sizeable part of a step)
    return xa, atol


def _softmax_jacobian(q):
    """d softmax / dz = diag(q) - q q^T, per row of q."""
    return np.einsum("nk,kl->nkl", q, np.eye(K)) - np.einsum("nk,nl->nkl", q, q)


def _data(n=16, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, C, H, W_, generator=g, dtype=torch.float64), torch.randint(0, K, (n,), generator=g)


def _flat(x):
    return x.flatten(1).numpy()


@pytest.mark.parametrize("norm,eps,step", [("linf", 0.1, 0.03), ("l2", 0.5, 0.2)])
def test_pgd_matches_numpy_reference(norm, eps, step):
    model, (x, y) = Linear(), _data()
    x_adv = pgd(model, x, y, eps, step, steps=5, norm=norm, random_start=False)
    assert x_adv.dtype == torch.float64
    ref, atol = _np_attack(model, _flat(x), _flat(x), eps, step, 5, norm, y=y.numpy())
    np.testing.assert_allclose(_flat(x_adv), ref, rtol=0, atol=atol)
    delta = (x_adv - x).flatten(1)
    bound = delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)
    assert (bound <= eps + 1e-12).all() and x_adv.min() >= 0 and x_adv.max() <= 1
    # The attack ascends: loss on x_adv above the clean loss for every example.
    assert (attack_loss(model(x_adv), y) > attack_loss(model(x), y)).all()


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_pgd_random_start_is_the_given_generator_draw(norm):
    model, (x, y) = Linear(), _data()
    eps, step = (0.1, 0.03) if norm == "linf" else (0.5, 0.2)
    x_adv = pgd(model, x, y, eps, step, 3, norm=norm, generator=torch.Generator().manual_seed(7))
    start = _flat(uniform_start(x, eps, norm, torch.Generator().manual_seed(7)))
    x0 = _np_project(_flat(x), _flat(x) + start, eps, norm)
    ref, atol = _np_attack(model, _flat(x), x0, eps, step, 3, norm, y=y.numpy())
    np.testing.assert_allclose(_flat(x_adv), ref, rtol=0, atol=atol)


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
    delta0 = _flat(torch.rand(x.shape, generator=g, dtype=torch.float64) * 2 * eps - eps)
    xn = _flat(x)
    x0 = xn + np.clip(delta0, -xn, 1 - xn)
    ref, atol = _np_attack(model, xn, x0, eps, 1.25 * eps, 1, "linf", y=y.numpy())
    np.testing.assert_allclose(_flat(x_adv), ref, rtol=0, atol=atol)


@pytest.mark.parametrize("norm,eps,step", [("linf", 0.1, 0.02), ("l2", 0.5, 0.1)])
def test_trades_inner_max_matches_numpy_reference(norm, eps, step):
    model, (x, _) = Linear(), _data()
    x_adv = trades_inner_max(model, x, eps, step, 4, norm=norm, generator=torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(5)
    x0 = _flat(x) + 0.001 * _flat(torch.randn(x.shape, generator=g, dtype=torch.float64))  # not clipped (reference)
    # d/dx' KL(p || softmax(W x' + b)) = (q - p) W: _np_attack with y=None
    ref, atol = _np_attack(model, _flat(x), x0, eps, step, 4, norm)
    np.testing.assert_allclose(_flat(x_adv), ref, rtol=0, atol=atol)
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
