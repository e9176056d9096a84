"""The training methods as timm TrainingTasks: outputs, eps warm-up, BatchNorm handling during the
attack, the TRADES objective by hand, and that each method actually buys robustness."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from timm.task import TrainingTask
from torch import nn

import robustscale  # noqa: F401
from robustscale.attacks import pgd
from robustscale.config import TrainConfig
from robustscale.data import dataset_normalization
from robustscale.models import create_model
from robustscale.tasks import FGSMRSTask, PGDTask, StandardTask, TRADESTask, create_task
from robustscale.testing import learnable_images


def _model(seed=0):
    torch.manual_seed(seed)
    return create_model("wide_resnet16_1", num_classes=10, in_chans=1, **dataset_normalization("fashion_mnist"))


def _batch(n=8):
    g = torch.Generator().manual_seed(0)
    return torch.rand(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g)


@pytest.mark.parametrize("method,cls", [("standard", StandardTask), ("pgd", PGDTask), ("trades", TRADESTask),
                                        ("fgsm_rs", FGSMRSTask)])
def test_create_task_and_outputs(method, cls):
    task = create_task(TrainConfig(method=method, eps=0.1, attack_steps=2), _model())
    assert isinstance(task, cls) and isinstance(task, TrainingTask)
    x, y = _batch()
    out = task(x, y)
    assert out["loss"].dim() == 0 and out["output"].shape == (8, 10)
    out["loss"].backward()
    assert all(p.grad is not None for p in task.trainable_module.parameters())
    if method == "standard":
        assert out["x_adv"] is None and out["clean_output"] is out["output"]
    else:
        assert (out["x_adv"] - x).abs().max() <= 0.1 + 1e-6
    assert ("clean_output" in out) == (method in ("standard", "trades"))


@pytest.mark.parametrize("method", ["pgd", "fgsm_rs"])
def test_weight_gradients_come_from_the_training_loss_only(method):
    """The attack steps add nothing to .grad: the gradient equals that of CE(model(x_adv)) alone."""
    model = _model()
    task = create_task(TrainConfig(method=method, eps=0.1, attack_steps=3), model)
    x, y = _batch()
    out = task(x, y)
    out["loss"].backward()
    got = [p.grad.clone() for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    F.cross_entropy(model.train()(out["x_adv"]), y).backward()
    for a, b in zip(got, (p.grad for p in model.parameters())):
        torch.testing.assert_close(a, b)


def test_timm_task_api_ema_and_checkpoint_state():
    task = create_task(TrainConfig(method="pgd", eps=0.1, attack_steps=1), _model())
    task.setup_ema(decay=0.9)
    task(*_batch())["loss"].backward()
    task.update_ema(step=1)
    state = task.get_checkpoint_state()
    assert set(state["state_dict"]) == set(_model().state_dict()) and state["task_state"] == {"eps": 0.1}


def test_set_eps_scales_eps_and_step_size():
    cfg = TrainConfig(method="pgd", eps=0.2, attack_steps=4, step_size_factor=1.5)
    task = create_task(cfg, _model())
    assert task.attack.step_size == pytest.approx(1.5 * 0.2 / 4)
    task.set_eps(0.05)
    assert task.attack.eps == 0.05 and task.attack.step_size == pytest.approx(1.5 * 0.05 / 4)
    x, y = _batch()
    assert (task(x, y)["x_adv"] - x).abs().max() <= 0.05 + 1e-6
    fgsm = create_task(TrainConfig(method="fgsm_rs", eps=0.2), _model())
    assert fgsm.attack.steps == 1 and fgsm.attack.step_size == pytest.approx(1.25 * 0.2)


@pytest.mark.parametrize("bn_eval", [True, False])
def test_batchnorm_statistics_during_the_attack(bn_eval):
    """bn_eval: running stats see only the training forward on x_adv (as one train-mode forward on x_adv
    would leave them); otherwise every attack step updates them too."""
    model = _model()
    task = create_task(TrainConfig(method="pgd", eps=0.1, attack_steps=3, attack_bn_eval=bn_eval), model)
    x, y = _batch()
    reference = _model()
    out = task(x, y)
    assert model.training
    reference.train()(out["x_adv"])  # same initial weights, one train-mode forward on the same x_adv
    same = all(torch.equal(a, b) for (k, a), (_, b) in zip(model.state_dict().items(),
                                                           reference.state_dict().items()) if "running" in k)
    assert same == bn_eval


def test_trades_objective_by_hand():
    cfg = TrainConfig(method="trades", eps=0.1, attack_steps=2, trades_beta=5.0, label_smoothing=0.1)
    task = create_task(cfg, _model().double())  # float64 throughout: the comparison is of formulas
    x, y = _batch()
    out = task(x.double(), y)
    clean, adv = out["clean_output"], out["output"]
    assert out["loss"].dtype == torch.float64
    p, logq = F.softmax(clean, 1), F.log_softmax(adv, 1)
    kl = (p * (p.log() - logq)).sum(1).mean()
    smooth = 0.9 * F.nll_loss(F.log_softmax(clean, 1), y) - 0.1 * F.log_softmax(clean, 1).mean(1).mean()
    # Both sides start from the same logits; they differ only in how the loss is summed. Each
    # log-softmax entry is within gamma * M of exact (gamma = (K + n + 3) u for K classes, n examples,
    # M = 2 max|z| + log K bounds |log p|), the smoothed CE then within 2 gamma M, and the KL term,
    # a p-weighted sum of differences |log p - log q| <= 2 M, within 2 gamma M (1 + M).
    u, k, n = torch.finfo(torch.float64).eps / 2, clean.shape[1], len(y)
    m = 2 * torch.cat([clean, adv]).abs().max().item() + math.log(k)
    gamma = (k + n + 3) * u
    bound = 2 * gamma * m * (2 + cfg.trades_beta * (1 + m))  # both sides carry that error
    torch.testing.assert_close(out["loss"], smooth + 5.0 * kl, rtol=0, atol=bound)


class _TinyNet(nn.Module):
    """A 2-conv net: small enough that four short adversarial trainings fit in a few seconds."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 8, 3, 2, 1), nn.BatchNorm2d(8), nn.ReLU(),
                                  nn.Conv2d(8, 16, 3, 2, 1), nn.BatchNorm2d(16), nn.ReLU(),
                                  nn.Flatten(), nn.Linear(16 * 7 * 7, 10))  # keeps where the band is

    def forward(self, x):
        return self.body(x)


def _robust_acc(model, x, y, eps):
    model.eval()
    x_adv = pgd(model, x, y, eps, 2.5 * eps / 5, 5, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return (model(x_adv).argmax(1) == y).float().mean().item() * 100


EPS = 0.1  # a standard-trained net keeps only part of its accuracy at this radius on these bands


def _train_and_attack(method: str) -> tuple[float, float]:
    """(robust accuracy % before, after) 4 epochs of ``method`` on 512 learnable images; PGD-5 on 256 others."""
    images, labels = learnable_images(768, seed=0)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    y = torch.from_numpy(labels).long()
    x_train, y_train, x_test, y_test = x[:512], y[:512], x[512:], y[512:]
    torch.manual_seed(0)
    model = _TinyNet()
    baseline = _robust_acc(model, x_test, y_test, EPS)
    task = create_task(TrainConfig(method=method, eps=EPS, attack_steps=3), model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for _ in range(4):
        for i in range(0, 512, 64):
            task.train()
            loss = task(x_train[i:i + 64], y_train[i:i + 64])["loss"]
            opt.zero_grad()
            loss.backward()
            opt.step()
    return baseline, _robust_acc(model, x_test, y_test, EPS)


@pytest.fixture(scope="module")
def standard_robust_acc():
    return _train_and_attack("standard")


def test_standard_training_learns(standard_robust_acc):
    baseline, trained = standard_robust_acc
    assert trained > baseline + 30


@pytest.mark.parametrize("method", ["pgd", "trades", "fgsm_rs"])
def test_each_method_raises_robust_accuracy(method, standard_robust_acc):
    """Above the untrained baseline, and above what standard training reaches at the same eps."""
    baseline, trained = _train_and_attack(method)
    assert trained > baseline + 50 and trained > standard_robust_acc[1] + 10, (method, baseline, trained)
