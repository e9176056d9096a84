"""N-FGSM, FGSM and GradAlign against NumPy references on a linear model, whose input gradient is known in
closed form: d CE / dx = (softmax(W x + b) - onehot(y)) W. Also their FLOPs per image (N-FGSM costs what
FGSM-RS costs; GradAlign more, by its penalty's measured double backward) and their bad input."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

from robustscale.attacks import fgsm, fgsm_rs, grad_align_penalty, gradient_cosine, n_fgsm
from robustscale.compute import measure_step_flops
from robustscale.config import TrainConfig
from robustscale.errors import UserError
from robustscale.tasks import GradAlignTask, NFGSMTask, create_task

K, C, H, W_ = 5, 1, 4, 4
D = C * H * W_
# float32 comparisons: a handful of roundings of O(1) values (~1e-7 each); the same bound as the other attacks'.
ATOL32 = 1e-5


class Linear(nn.Module):
    """logits = W x + b on flattened pixels."""

    def __init__(self, seed=0, dtype=torch.float32):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.fc = nn.Linear(D, K, dtype=dtype)
        with torch.no_grad():
            self.fc.weight.copy_(torch.randn(K, D, generator=g, dtype=torch.float64))
            self.fc.bias.copy_(torch.randn(K, generator=g, dtype=torch.float64))

    def forward(self, x):
        return self.fc(x.flatten(1))


def _softmax(z):
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def _np_grad(Wm, b, x, y):
    """Input gradient of the summed cross-entropy of the linear model, (N, D)."""
    return (_softmax(x @ Wm.T + b) - np.eye(K)[y]) @ Wm


def _np(model):
    return model.fc.weight.detach().double().numpy(), model.fc.bias.detach().double().numpy()


def _data(n=16, seed=1, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, C, H, W_, generator=g, dtype=dtype), torch.randint(0, K, (n,), generator=g)


def _uniform(shape, low, high, seed, dtype=torch.float32):
    """The draw the attacks make from ``torch.Generator().manual_seed(seed)``: U[low, high) per pixel."""
    u = torch.rand(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype).double().numpy()
    return (u * (high - low) + low).reshape(shape[0], -1)


# ---------------------------------------------------------------------- N-FGSM
@pytest.mark.parametrize("k,alpha", [(2.0, 0.1), (1.0, 0.05), (0.0, 0.1)])
def test_n_fgsm_matches_numpy_reference(k, alpha):
    model, (x, y) = Linear(), _data()
    eps = 0.1
    x_adv = n_fgsm(model, x, y, eps, alpha, k=k, generator=torch.Generator().manual_seed(3))
    # pdejorge/N-FGSM train.py: eta ~ U(-k eps, k eps) clamped to the box, one signed step, box clamp, no eps clip.
    xn = x.double().numpy().reshape(len(x), -1)
    eta = np.clip(_uniform(x.shape, -k * eps, k * eps, 3), -xn, 1 - xn)
    Wm, b = _np(model)
    ref = np.clip(xn + eta + alpha * np.sign(_np_grad(Wm, b, xn + eta, y.numpy())), 0, 1)
    np.testing.assert_allclose(x_adv.flatten(1).double().numpy(), ref, atol=ATOL32)


def test_n_fgsm_noise_is_uniform_on_k_eps_and_never_projected():
    # Two classes, logits (u.x, 0), label 0: d CE / dx = (p0 - 1) u, so sign(grad) = -sign(u) wherever the
    # step starts. Pixels at 0.5 and k eps + alpha < 0.5: the box never binds, and x_adv - x = eta - alpha sign(u).
    eps, k, alpha, n = 0.1, 2.0, 0.1, 4000
    model = nn.Linear(D, 2)
    with torch.no_grad():
        model.weight.zero_()
        model.weight[0] = torch.linspace(-1, 1, D + 1)[torch.arange(D + 1) != D // 2]  # no zero entry
        model.bias.zero_()
    flat = nn.Sequential(nn.Flatten(), model)
    x, y = torch.full((n, C, H, W_), 0.5), torch.zeros(n, dtype=torch.long)
    delta = (n_fgsm(flat, x, y, eps, alpha, k=k, generator=torch.Generator().manual_seed(5)) - x).flatten(1)
    eta = delta.double().numpy() + alpha * np.sign(model.weight[0].detach().double().numpy())
    assert stats.kstest(eta.ravel(), stats.uniform(loc=-k * eps, scale=2 * k * eps).cdf).pvalue > 1e-3
    # No projection: |eta + alpha s| exceeds eps exactly when eta s > 0 for k = 2, alpha = eps: probability
    # 1/2 per pixel (over 64,000 pixels the 4-sigma band is +-0.008), and it reaches 3 eps.
    beyond = (delta.abs() > eps + 1e-6).double().mean().item()
    assert abs(beyond - 0.5) < 0.008
    assert delta.abs().max().item() == pytest.approx((k + 1) * eps, abs=2e-3)
    # FGSM-RS from the same kind of start stays inside the eps-ball.
    rs = fgsm_rs(flat, x, y, eps, 1.25 * eps, generator=torch.Generator().manual_seed(5)) - x
    assert rs.abs().max().item() <= eps + 1e-6


# ---------------------------------------------------------------------- FGSM (GradAlign's attack, the per-epoch check)
@pytest.mark.parametrize("norm,eps,step", [("linf", 0.1, 0.1), ("linf", 0.1, 0.125), ("l2", 0.5, 0.5)])
def test_fgsm_matches_numpy_reference(norm, eps, step):
    model, (x, y) = Linear(), _data()
    x_adv, grad = fgsm(model, x, y, eps, step, norm=norm, return_grad=True)
    xn = x.double().numpy().reshape(len(x), -1)
    g = _np_grad(*_np(model), xn, y.numpy())
    np.testing.assert_allclose(grad.flatten(1).double().numpy(), g, rtol=1e-5, atol=ATOL32)
    if norm == "linf":  # zero init, one step, clamp to the eps-ball (a 1.25 eps step lands on eps), box clip
        d = np.clip(step * np.sign(g), -eps, eps)
    else:
        d = step * g / np.linalg.norm(g, axis=1, keepdims=True)
        d *= np.minimum(1.0, eps / np.linalg.norm(d, axis=1, keepdims=True))
    np.testing.assert_allclose(x_adv.flatten(1).double().numpy(), np.clip(xn + d, 0, 1), atol=ATOL32)
    assert torch.equal(fgsm(model, x, y, eps, step, norm=norm), x_adv)


# ---------------------------------------------------------------------- GradAlign
def _np_penalty(Wm, b, xn, y, eta, grad_clean):
    """1 - mean cos(grad_clean, grad at x + eta) over the examples whose two gradients are non-zero."""
    g2 = _np_grad(Wm, b, xn + eta, y)
    n1, n2 = np.linalg.norm(grad_clean, axis=1), np.linalg.norm(g2, axis=1)
    ok = (n1 > 0) & (n2 > 0)
    cos = (grad_clean * g2).sum(1)[ok] / (n1[ok] * n2[ok])
    return 1.0 - cos.mean() if ok.any() else 0.0


def _float64_case():
    model, (x, y) = Linear(dtype=torch.float64), _data(dtype=torch.float64)
    xn, yn = x.numpy().reshape(len(x), -1), y.numpy()
    return model, x, y, xn, yn


def test_grad_align_penalty_value_and_weight_gradient_against_finite_differences():
    model, x, y, xn, yn = _float64_case()
    eps = 0.1
    Wm, b = _np(model)
    grad_clean = _np_grad(Wm, b, xn, yn)
    grad_clean[3] = 0.0  # an example without a clean gradient is left out of the mean, as in the reference
    penalty, cos = grad_align_penalty(model, x, y, eps, torch.from_numpy(grad_clean).view_as(x),
                                      generator=torch.Generator().manual_seed(9))
    eta = _uniform(x.shape, -eps, eps, 9, dtype=torch.float64)  # not clipped to the box (reference)
    expected = _np_penalty(Wm, b, xn, yn, eta, grad_clean)
    assert penalty.item() == pytest.approx(expected, rel=1e-12, abs=1e-14)
    assert cos[3].item() == 0.0 and not cos.requires_grad
    penalty.backward()
    # Central differences of the NumPy penalty (the clean gradient held fixed: it is detached), h = 1e-6:
    # truncation O(h^2) ~ 1e-12 and rounding ~ 1e-16 / h = 1e-10, far below the 1e-6 tolerance.
    h = 1e-6
    fd_w = np.zeros_like(Wm)
    for i in range(K):
        for j in range(D):
            plus, minus = Wm.copy(), Wm.copy()
            plus[i, j] += h
            minus[i, j] -= h
            fd_w[i, j] = (_np_penalty(plus, b, xn, yn, eta, grad_clean) -
                          _np_penalty(minus, b, xn, yn, eta, grad_clean)) / (2 * h)
    fd_b = np.array([(_np_penalty(Wm, b + h * e, xn, yn, eta, grad_clean) -
                      _np_penalty(Wm, b - h * e, xn, yn, eta, grad_clean)) / (2 * h) for e in np.eye(K)])
    np.testing.assert_allclose(model.fc.weight.grad.numpy(), fd_w, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(model.fc.bias.grad.numpy(), fd_b, rtol=1e-6, atol=1e-9)
    assert np.abs(fd_w).max() > 1e-3  # the check is not vacuous


def test_gradient_cosine_by_hand():
    a = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
    b = torch.tensor([[0.0, 2.0], [3.0, 3.0], [1.0, 0.0]])
    cos, valid = gradient_cosine(a, b)
    torch.testing.assert_close(cos, torch.tensor([0.0, 1.0, 0.0]))
    assert valid.tolist() == [True, True, False]
    # No example with two non-zero gradients: the penalty is 0, not NaN.
    model, (x, y) = Linear(), _data(4)
    penalty, _ = grad_align_penalty(model, x, y, 0.1, torch.zeros_like(x))
    assert penalty.item() == 0.0


def test_grad_align_task_loss_is_fgsm_ce_plus_lambda_penalty():
    model, x, y, xn, yn = _float64_case()
    eps, lam = 0.1, 0.5
    cfg = TrainConfig(method="grad_align", eps=eps, grad_align_lambda=lam, model="linear")
    task = create_task(cfg, model, generator=torch.Generator().manual_seed(4))
    assert isinstance(task, GradAlignTask) and task.attack.step_size == eps  # alpha = eps by default
    out = task(x, y)
    Wm, b = _np(model)
    g1 = _np_grad(Wm, b, xn, yn)
    x_fgsm = np.clip(xn + eps * np.sign(g1), 0, 1)
    z = x_fgsm @ Wm.T + b
    ce = -np.log(_softmax(z)[np.arange(len(yn)), yn]).mean()
    eta = _uniform(x.shape, -eps, eps, 4, dtype=torch.float64)
    penalty = _np_penalty(Wm, b, xn, yn, eta, g1)
    np.testing.assert_allclose(out["x_adv"].flatten(1).numpy(), x_fgsm, atol=1e-12)
    assert out["grad_align_penalty"].item() == pytest.approx(penalty, rel=1e-10)
    assert out["loss"].item() == pytest.approx(ce + lam * penalty, rel=1e-10)


def test_n_fgsm_task_uses_k_and_alpha_from_the_config():
    model, (x, y) = Linear(), _data()
    cfg = TrainConfig(method="n_fgsm", eps=0.1, nfgsm_k=1.5, step_size=0.08, model="linear")
    task = create_task(cfg, model, generator=torch.Generator().manual_seed(2))
    assert isinstance(task, NFGSMTask)
    out = task(x, y)
    ref = n_fgsm(model, x, y, 0.1, 0.08, k=1.5, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(out["x_adv"], ref)
    # eps warm-up scales alpha with eps (the noise scales with eps by definition).
    task.set_eps(0.05)
    assert task.attack.step_size == pytest.approx(0.04) and task.attack.nfgsm_k == 1.5


def test_grad_align_trains_a_batchnorm_cnn_end_to_end():
    import robustscale  # noqa: F401  (registers the models)
    from robustscale.models import create_model

    torch.manual_seed(0)
    model = create_model("wide_resnet16_1", num_classes=10, in_chans=1, dataset="fashion_mnist").train()
    cfg = TrainConfig(method="grad_align", eps=0.1, model="wide_resnet16_1", dataset="fashion_mnist")
    task = create_task(cfg, model, generator=torch.Generator().manual_seed(0))
    out = task(torch.rand(4, 1, 28, 28), torch.randint(0, 10, (4,)))
    out["loss"].backward()
    assert model.training and all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    assert 0 <= out["grad_align_penalty"].item() <= 2


# ---------------------------------------------------------------------- FLOPs per image
class StrideOneNet(nn.Module):
    """conv 3->4 (3x3, pad 1) -> ReLU -> conv 4->6 (3x3, pad 1) -> ReLU -> linear 384->5 on 3x8x8."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 6, 3, padding=1, bias=False)
        self.fc = nn.Linear(6 * 8 * 8, 5)

    def forward(self, x):
        return self.fc(torch.relu(self.conv2(torch.relu(self.conv1(x)))).flatten(1))


def test_flops_n_fgsm_equals_fgsm_rs_and_grad_align_adds_a_double_backward_by_hand():
    fwd = 2 * 4 * 64 * 27 + 2 * 6 * 64 * 36 + 2 * 384 * 5  # both convs and the linear layer, per image
    full_bwd = 2 * fwd - 2 * 4 * 64 * 27  # weight gradients, and input gradients but the first layer's
    steps = {m: measure_step_flops(StrideOneNet(), TrainConfig(model="t", method=m), (3, 8, 8), use_cache=False)
             for m in ("fgsm_rs", "n_fgsm", "grad_align")}
    assert steps["n_fgsm"].train_step_flops == steps["fgsm_rs"].train_step_flops == 2 * fwd + fwd + full_bwd
    # Penalty backward, by hand: every layer's input-gradient op y = W^T g is differentiated w.r.t. g and W
    # (2 x its forward), then the forward is backpropagated for weights and for inputs down to eta (2 x): 4F.
    s = steps["grad_align"]
    assert s.forward_flops == fwd and s.double_backward_flops == 4 * fwd
    assert s.train_step_flops == steps["n_fgsm"].train_step_flops + fwd + fwd + 4 * fwd
    assert s.attack_steps == 1 and s.analytic_train_step_flops == 3 * fwd * (1 + 3)
    assert steps["n_fgsm"].analytic_train_step_flops == steps["fgsm_rs"].analytic_train_step_flops == 9 * fwd
    assert steps["n_fgsm"].double_backward_flops == 0


def test_flops_on_a_wrn_decompose_into_measured_parts():
    import robustscale  # noqa: F401
    from robustscale.models import create_model

    model = create_model("wide_resnet16_1", num_classes=10, dataset="cifar10")
    steps = {m: measure_step_flops(model, TrainConfig(model="wide_resnet16_1", method=m), (3, 32, 32),
                                   use_cache=False) for m in ("fgsm_rs", "n_fgsm", "grad_align")}
    assert steps["n_fgsm"].to_dict() | {"method": "x"} == steps["fgsm_rs"].to_dict() | {"method": "x"}
    s = steps["grad_align"]
    f, ib = s.forward_flops, s.input_backward_flops
    # Exact (integer FLOP counts): GradAlign = N-FGSM's cost + the penalty's forward, input backward, backward.
    assert s.train_step_flops == steps["n_fgsm"].train_step_flops + f + ib + s.double_backward_flops
    # The counter charges the strided convolutions' double backward a little above 4F (4F for stride 1).
    assert 4 * f <= s.double_backward_flops < 4.2 * f


def test_cli_compares_single_step_methods_side_by_side(cli):
    import json

    code, out, err = cli("flops", "--model", "wide_resnet16_1", "--method", "fgsm_rs", "n_fgsm", "grad_align",
                         "pgd2")
    assert code == 0, err
    header = next(l for l in out.splitlines() if l.startswith("quantity")).split()
    assert header[1:] == ["fgsm_rs", "n_fgsm", "grad_align", "pgd-2"]
    measured = next(l for l in out.splitlines() if l.startswith("train step, measured (x F)")).split()[-4:]
    assert measured[0] == measured[1] and float(measured[0]) < float(measured[3]) < float(measured[2])
    code, out, err = cli("flops", "--model", "wide_resnet16_1", "--method", "n_fgsm", "pgd10", "--json")
    rows = json.loads(out)
    assert [r["method"] for r in rows] == ["n_fgsm", "pgd"] and rows[1]["attack_steps"] == 10


# ---------------------------------------------------------------------- bad input
@pytest.mark.parametrize("over,needle", [
    ({"method": "n_fgsm", "nfgsm_k": -1}, "invalid nfgsm_k -1.0: must be a finite number >= 0"),
    ({"method": "n_fgsm", "nfgsm_k": float("inf")}, "invalid nfgsm_k inf: must be a finite number"),
    ({"method": "n_fgsm", "step_size": 0}, "invalid step_size 0.0: must be in (0, 1]"),
    ({"method": "n_fgsm", "step_size": "-2/255"}, "invalid step_size"),
    ({"method": "grad_align", "grad_align_lambda": 0}, "invalid grad_align_lambda 0.0: must be > 0 for method grad_align"),
    ({"method": "pgd", "grad_align_lambda": -0.2}, "invalid grad_align_lambda -0.2"),
    ({"method": "grad_align", "norm": "l2"}, "grad_align is an l-inf attack"),
    ({"on_collapse": "panic"}, "unknown on_collapse 'panic'; valid: warn, stop"),
    ({"collapse_gap": 0}, "invalid collapse_gap 0.0: must be in (0, 100] percentage points"),
    ({"collapse_ratio": 1.5}, "invalid collapse_ratio 1.5: must be in (0, 1)"),
])
def test_bad_single_step_values_are_one_line_errors(over, needle):
    with pytest.raises(UserError) as info:
        TrainConfig.from_dict({"eps": 0.1, **over})
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_bad_value_on_the_command_line_exits_2_and_writes_nothing(cli, tmp_path):
    code, out, err = cli("train", "--dataset", "fashion_mnist", "--method", "n_fgsm", "--nfgsm-k", "-2",
                         "--output-dir", tmp_path / "runs")
    assert code == 2 and err.startswith("error: invalid nfgsm_k -2.0") and err.count("\n") == 1
    assert not (tmp_path / "runs").exists()
