"""evaluate() on a tiny trained MLP: attack ordering, the official AutoAttack, determinism, resume,
gradient masking, and the pass/FLOP accounting."""
from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robustscale.errors import UserError
from robustscale.evaluation import EvaluationWarning, evaluate

EPS = 0.15  # where the MLP is partly robust: AA < APGD-CE < PGD-10 < clean on these images
N, BS = 48, 16  # three batches: exercises AutoAttack's re-batching of the still-robust points


class _Counter(nn.Module):
    """Independent count of the images a model forwards (to check what the evaluation reuses)."""

    def __init__(self, m):
        super().__init__()
        self.model, self.images = m, 0

    def forward(self, t):
        self.images += t.shape[0]
        return self.model(t)


@pytest.fixture(scope="module")
def aa_runs(trained_mlp):
    """Our aa-standard (through an independent call counter), the official one, and APGD-CE / PGD / clean."""
    from pyautoattack import AutoAttack

    model, x, y = trained_mlp
    x, y = x[:N], y[:N]
    ev = evaluate
    ours_model = _Counter(model).eval()
    ours = ev(ours_model, x, y, "aa-standard", eps=EPS, batch_size=BS, seed=0, flops=False)
    official = AutoAttack(model, norm="Linf", eps=EPS, version="standard", seed=0, device="cpu")
    _, y_adv = official.run_standard_evaluation(x, y, batch_size=BS)
    apgd = ev(model, x, y, "apgd-ce", eps=EPS, batch_size=BS, seed=0, flops=False)
    pgd = ev(model, x, y, "pgd", eps=EPS, steps=10, batch_size=BS, seed=0, flops=False)
    clean = ev(model, x, y, "clean", batch_size=BS, flops=False)
    return {"ours": ours, "ours_images": ours_model.images, "official_flags": y_adv == y, "apgd": apgd,
            "pgd": pgd, "clean": clean}


def test_aa_standard_equals_official_autoattack(aa_runs):
    ours = aa_runs["ours"]
    official = aa_runs["official_flags"]
    assert torch.equal(ours["robust_flags"], official)
    assert ours["robust_acc"] == pytest.approx(100.0 * official.float().mean().item())
    assert ours["autoattack_acc"] == ours["robust_acc"]
    # Per-attack breakdown: in AutoAttack's order, non-increasing, ending at the total.
    stages = ours["stage_acc"]
    assert list(stages) == ["apgd-ce", "apgd-t", "fab-t", "square"]
    values = list(stages.values())
    assert all(a >= b for a, b in zip(values, values[1:]))
    assert values[-1] == ours["robust_acc"]


def test_attack_strength_ordering(aa_runs):
    clean = aa_runs["clean"]["clean_acc"]
    pgd, apgd, aa = (aa_runs[k]["robust_acc"] for k in ("pgd", "apgd", "ours"))
    assert aa <= apgd <= pgd <= clean
    assert aa < clean and pgd < clean  # the attacks find something at this eps: the comparison means something
    assert aa_runs["clean"]["robust_acc"] is None
    # Same clean pass everywhere, and AutoAttack's first stage is exactly our APGD-CE.
    assert aa_runs["ours"]["clean_acc"] == aa_runs["pgd"]["clean_acc"] == clean
    assert aa_runs["ours"]["stage_acc"]["apgd-ce"] == apgd
    # Robust points are a subset of clean-correct points.
    for k in ("pgd", "apgd", "ours"):
        r = aa_runs[k]
        assert not (r["robust_flags"] & ~r["clean_flags"]).any()


def test_aa_resume_continues_without_recomputing(trained_mlp, aa_runs, tmp_path):
    """Interrupt after the clean pass and one APGD-CE batch; the rerun finishes with the same result
    and the two sessions together forward exactly as many images as the uninterrupted run."""
    model, x, y = trained_mlp
    x, y = x[:N], y[:N]
    state = tmp_path / ".state.pt"
    images = []
    for max_batches in (4, None):
        counter_model = _Counter(model).eval()
        part = evaluate(counter_model, x, y, "aa-standard", eps=EPS, batch_size=BS, seed=0, flops=False,
                        state_path=state, state_key="ck", max_batches=max_batches)
        images.append(counter_model.images)
        if max_batches is not None:
            assert not part["complete"] and part["robust_acc"] is None and state.is_file()
            assert part["clean_acc"] == aa_runs["ours"]["clean_acc"]
    assert part["complete"] and part["resumed"] and part["sessions"] == 2
    assert not state.exists()  # removed once complete
    assert torch.equal(part["robust_flags"], aa_runs["ours"]["robust_flags"])
    assert part["stage_acc"] == aa_runs["ours"]["stage_acc"]
    assert sum(images) == aa_runs["ours_images"]
    assert part["forward_images"] == aa_runs["ours"]["forward_images"]
    assert images[1] < aa_runs["ours_images"]


def test_stale_resume_state_is_ignored(trained_mlp, tmp_path):
    model, x, y = trained_mlp
    state = tmp_path / ".state.pt"
    evaluate(model, x[:32], y[:32], "pgd", eps=EPS, batch_size=16, state_path=state, state_key="A",
             max_batches=2, flops=False)
    assert state.is_file()
    with pytest.warns(EvaluationWarning, match="different checkpoint"):
        r = evaluate(model, x[:32], y[:32], "pgd", eps=EPS, batch_size=16, state_path=state, state_key="B",
                     flops=False)
    fresh = evaluate(model, x[:32], y[:32], "pgd", eps=EPS, batch_size=16, flops=False)
    assert r["sessions"] == 1 and not r["resumed"]
    assert torch.equal(r["robust_flags"], fresh["robust_flags"])


class _InterruptAfter(nn.Module):
    """Raises KeyboardInterrupt on the n-th forward (a Ctrl-C in the middle of an attack)."""

    def __init__(self, m, n):
        super().__init__()
        self.model, self.left = m, n

    def forward(self, t):
        self.left -= 1
        if self.left < 0:
            raise KeyboardInterrupt
        return self.model(t)


def test_ctrl_c_keeps_finished_batches(trained_mlp, tmp_path):
    model, x, y = trained_mlp
    state = tmp_path / ".state.pt"
    kw = dict(eps=EPS, steps=4, batch_size=16, seed=1, flops=False, state_path=state, state_key="ck")
    # 4 clean batches, the gradient check, then 3 PGD batches of 4 steps + 1 scoring forward each: stop in batch 3.
    with pytest.raises(KeyboardInterrupt):
        evaluate(_InterruptAfter(model, 4 + 1 + 2 * 5 + 2), x, y, "pgd", **kw)
    saved = torch.load(state, weights_only=True)
    assert (saved["stage"], saved["batches_done"], saved["sessions"]) == (1, 2, 1)
    resumed = evaluate(_Counter(model), x, y, "pgd", **kw)
    fresh = evaluate(model, x, y, "pgd", **{**kw, "state_path": None})
    assert torch.equal(resumed["robust_flags"], fresh["robust_flags"]) and resumed["sessions"] == 2
    # Finished batches are not redone; the interrupted one is: its 2 forwards are the only extra work.
    third_batch = min(16, int(fresh["clean_flags"].sum()) - 32)
    assert resumed["forward_images"] == fresh["forward_images"] + 2 * third_batch


def test_determinism_same_seed_same_result(trained_mlp):
    model, x, y = trained_mlp
    for attack, kw in (("pgd", {"steps": 5, "restarts": 2, "eps": EPS}), ("apgd-ce", {"steps": 20, "eps": EPS}),
                       ("pgd", {"norm": "l2", "eps": 1.0}), ("apgd-ce", {"norm": "l2", "eps": 1.0, "steps": 20})):
        a = evaluate(model, x, y, attack, batch_size=32, seed=3, flops=False, **kw)
        b = evaluate(model, x, y, attack, batch_size=32, seed=3, flops=False, **kw)
        assert torch.equal(a["robust_flags"], b["robust_flags"]) and a["robust_acc"] == b["robust_acc"]
        assert a["threat_model"] == ("L2" if kw.get("norm") == "l2" else "Linf")
    # The seed is used: PGD's random starts differ with it (the global RNG is not).
    torch.manual_seed(123)
    c = evaluate(model, x, y, "pgd", eps=EPS, steps=1, batch_size=32, seed=4, flops=False)
    torch.manual_seed(456)
    d = evaluate(model, x, y, "pgd", eps=EPS, steps=1, batch_size=32, seed=4, flops=False)
    assert torch.equal(c["robust_flags"], d["robust_flags"])


def test_more_pgd_steps_and_restarts_do_not_help_the_model(trained_mlp):
    model, x, y = trained_mlp
    n = x.shape[0]
    acc = {k: evaluate(model, x, y, "pgd", eps=EPS, steps=k, batch_size=64, flops=False)["robust_acc"]
           for k in (5, 20, 50)}
    noise = 100.0 * 2 / n  # two examples
    assert acc[20] <= acc[5] + noise and acc[50] <= acc[20] + noise
    assert acc[50] < 100.0
    # A restart only attacks what earlier restarts missed, and restart 1 is the single-run attack:
    # robust points with restarts are a subset of those without.
    one = evaluate(model, x, y, "pgd", eps=EPS, steps=10, batch_size=64, flops=False)
    three = evaluate(model, x, y, "pgd", eps=EPS, steps=10, restarts=3, batch_size=64, flops=False)
    assert not (three["robust_flags"] & ~one["robust_flags"]).any()


class _ArgmaxLogits(nn.Module):
    """Shattered gradients: one-hot of the prediction (no gradient path to the input)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return F.one_hot(self.model(x).argmax(1), 10).float() * 10


class _ConstantLogits(nn.Module):
    def __init__(self):
        super().__init__()
        self.logits = nn.Parameter(torch.arange(10.0))

    def forward(self, x):
        return self.logits.expand(x.shape[0], -1) + 0 * x.flatten(1)[:, :1]


@pytest.mark.parametrize("masked", ["argmax", "constant"])
def test_gradient_masking_is_flagged_not_a_crash(trained_mlp, masked):
    model, x, y = trained_mlp
    net = _ArgmaxLogits(model) if masked == "argmax" else _ConstantLogits()
    with pytest.warns(EvaluationWarning, match="gradient masking"):
        r = evaluate(net, x[:32], y[:32], "pgd", eps=EPS, steps=5, batch_size=32, flops=False)
    assert r["gradient_check"]["zero_gradient"] == r["gradient_check"]["examples"] > 0
    assert any("gradient masking" in w for w in r["warnings"])
    # The attack ran and found (almost) nothing: gradients carry no signal.
    assert r["robust_acc"] >= r["clean_acc"] - 100.0 * 4 / 32
    # An honest model is not flagged.
    with warnings.catch_warnings():
        warnings.simplefilter("error", EvaluationWarning)
        ok = evaluate(model, x[:32], y[:32], "pgd", eps=EPS, steps=2, batch_size=32, flops=False)
    assert ok["gradient_check"]["zero_gradient"] == 0


def test_pass_counts_and_flops(trained_mlp):
    """PGD-k on N points of which C are clean-correct: forward N + G + C (k + 1), backward G + C k
    (G = the gradient check's batch), and eval_flops = passes x measured per-image FLOPs."""
    model, x, y = trained_mlp
    k = 3
    r = evaluate(model, x, y, "pgd", eps=EPS, steps=k, batch_size=64)
    n = x.shape[0]
    c = int(r["clean_flags"].sum())
    g = r["gradient_check"]["examples"]
    assert r["forward_images"] == n + g + c * (k + 1)
    assert r["backward_images"] == g + c * k
    # MLP 144 -> 32 -> 10: forward 2 * (144*32 + 32*10) FLOPs; the input-only backward costs the same matmuls.
    fwd = 2 * (144 * 32 + 32 * 10)
    assert r["forward_flops_per_image"] == fwd
    assert r["input_backward_flops_per_image"] == fwd
    assert r["eval_flops"] == r["forward_images"] * fwd + r["backward_images"] * fwd
    assert r["wall_seconds"] > 0 and r["energy_kwh"] is None


def test_bf16_pgd_runs_and_model_mode_is_restored(trained_mlp):
    model, x, y = trained_mlp
    model.train()
    try:
        r = evaluate(model, x[:16], y[:16], "pgd", eps=EPS, steps=2, batch_size=16, amp="bf16", flops=False)
        assert model.training
    finally:
        model.eval()
    assert r["amp"] == "bf16" and 0 <= r["robust_acc"] <= r["clean_acc"]


def test_bad_requests(trained_mlp):
    model, x, y = trained_mlp
    with pytest.raises(UserError, match="n_examples 65 is larger than the 64"):
        evaluate(model, x, y, "pgd", n_examples=65)
    with pytest.raises(UserError, match="refused for aa-standard"):
        evaluate(model, x, y, "aa-standard", amp="bf16")
    with pytest.raises(UserError, match="unknown attack 'fgsm'"):
        evaluate(model, x, y, "fgsm")


def test_conv_model_runs_channels_last_and_its_format_is_restored():
    """Evaluation converts a conv net to channels-last for speed and hands it back as it came."""
    from robustscale.data import dataset_normalization
    from robustscale.models import create_model

    torch.manual_seed(0)
    model = create_model("wide_resnet16_1", num_classes=10, in_chans=1, **dataset_normalization("fashion_mnist")).eval()
    x, y = torch.rand(8, 1, 28, 28), torch.arange(8) % 10
    expected = model(x).argmax(1) == y  # independent clean pass, NCHW
    seen = []
    hook = model.register_forward_pre_hook(
        lambda m, args: seen.append(next(p for p in m.parameters() if p.dim() == 4)
                                    .is_contiguous(memory_format=torch.channels_last)))
    r = evaluate(model, x, y, "pgd", eps=0.05, steps=2, batch_size=8, flops=False)
    hook.remove()
    assert seen and all(seen)  # every pass ran with channels-last weights
    assert torch.equal(r["clean_flags"], expected)
    assert all(p.is_contiguous() for p in model.parameters())  # restored
    model.to(memory_format=torch.channels_last)
    evaluate(model, x, y, "clean", batch_size=8, flops=False)
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in model.parameters() if p.dim() == 4)
