"""The catastrophic-overfitting detector on per-epoch {PGD, FGSM} accuracies measured with the project's own
attacks: a healthy linear model, and a constructed collapse (a gradient-masking model that FGSM cannot
move but PGD's random start gets around), plus the rules and thresholds by hand."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from robustscale.attacks import fgsm, pgd
from robustscale.errors import UserError
from robustscale.train.collapse import CollapseThresholds, detect_collapse, flagged_at

D, K, N, EPS = 64, 10, 500, 0.06


class GridDeadZone(nn.Module):
    """``c + sign(x - c) relu(|x - c| - tau)``, ``c = round(255 x) / 255``: the identity up to ``tau``, but
    with an input gradient of exactly zero within ``tau`` of every 8-bit value, i.e. at every clean image.
    Gradient masking in its purest form: FGSM from the clean image sees a zero gradient and does not move,
    PGD from a random start is off the grid (with probability 1 - 510 tau per pixel) and attacks the
    underlying linear model."""

    def __init__(self, tau: float = 1e-3 / 255):
        super().__init__()
        self.tau = tau

    def forward(self, x):
        c = torch.round(x * 255) / 255
        d = x - c
        return c + torch.sign(d) * torch.relu(d.abs() - self.tau)


def _teacher():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(K, D, generator=g)
    x = torch.randint(0, 256, (N, D), generator=g).float().div(255)  # 8-bit images, as every dataset's
    return w, x.view(N, 1, 8, 8), (x @ w.T).argmax(1)


def _linear(w):
    layer = nn.Linear(D, K, bias=False)
    with torch.no_grad():
        layer.weight.copy_(w)
    return layer


def _epoch_row(model, x, y, epoch):
    """What the per-epoch evaluation reports: clean, FGSM (step eps) and PGD-10 accuracy on the same images."""
    def acc(images):
        with torch.no_grad():
            return 100.0 * (model(images).argmax(1) == y).double().mean().item()

    pgd_images = pgd(model, x, y, EPS, 2.5 * EPS / 10, 10, generator=torch.Generator().manual_seed(epoch))
    return {"epoch": epoch, "clean_acc": acc(x), "fgsm_robust_acc": acc(fgsm(model, x, y, EPS)),
            "pgd_robust_acc": acc(pgd_images), "eval_images": len(y)}


@pytest.fixture(scope="module")
def histories():
    """Four epochs of a linear model learning the teacher (healthy), and the same run whose fourth epoch
    is the teacher behind the gradient-masking layer (collapsed)."""
    w, x, y = _teacher()
    w0 = torch.randn(K, D, generator=torch.Generator().manual_seed(1))
    models = [nn.Sequential(nn.Flatten(), _linear((1 - t) * w0 + t * w)) for t in (0.6, 0.8, 0.95, 1.0)]
    healthy = [_epoch_row(m, x, y, i + 1) for i, m in enumerate(models)]
    masked = nn.Sequential(nn.Flatten(), GridDeadZone(), _linear(w))
    collapsed = healthy[:3] + [_epoch_row(masked, x, y, 4)]
    return healthy, collapsed


def test_healthy_run_is_not_flagged(histories):
    healthy, _ = histories
    # A linear model's worst l-inf perturbation is FGSM's, so PGD reads (nearly) what FGSM reads.
    assert all(abs(r["fgsm_robust_acc"] - r["pgd_robust_acc"]) < 3 for r in healthy)
    assert healthy[-1]["pgd_robust_acc"] < 60  # the attack is not trivial at this eps
    assert detect_collapse(healthy) is None


def test_gradient_masking_model_is_flagged_at_its_epoch(histories):
    _, collapsed = histories
    last = collapsed[-1]
    assert last["clean_acc"] == last["fgsm_robust_acc"] == 100.0  # FGSM cannot move it
    assert last["pgd_robust_acc"] < 45  # PGD attacks the linear model underneath
    found = detect_collapse(collapsed)
    assert found is not None and found.epoch == 4 and found.reason == "gap"
    assert (found.pgd_robust_acc, found.fgsm_robust_acc) == (last["pgd_robust_acc"], 100.0)
    assert found.eval_images == N and found.thresholds == CollapseThresholds(0.5, 10.0)
    # Earlier prefixes (a resumed run re-reads metrics.jsonl) agree: nothing before epoch 4.
    assert all(detect_collapse(collapsed[:i]) is None for i in range(1, 4))
    line = found.message()
    assert "\n" not in line and "epoch 4" in line and f"PGD {last['pgd_robust_acc']:.1f}%" in line \
        and "FGSM 100.0%" in line and f"on {N} images" in line
    record = found.to_record()
    assert record["collapsed_epoch"] == 4 and record["collapse_reason"] == "gap"
    assert record["collapse_ratio"] == 0.5 and record["collapse_gap"] == 10.0
    json.dumps(record)  # plain JSON for summary.json


def test_drop_rule_and_rows_without_evaluations_by_hand():
    history = [{"epoch": 1, "pgd_robust_acc": 40.0, "fgsm_robust_acc": 50.0},
               {"epoch": 2, "pgd_robust_acc": None, "fgsm_robust_acc": None},  # not evaluated: skipped
               {"epoch": 3, "pgd_robust_acc": 48.0, "fgsm_robust_acc": 57.0},
               {"epoch": 4, "pgd_robust_acc": 20.0, "fgsm_robust_acc": 30.0}]  # 0.67 x FGSM, 0.42 x best
    found = detect_collapse(history)
    assert (found.epoch, found.reason, found.best_pgd_robust_acc, found.best_epoch) == (4, "drop", 48.0, 3)
    assert "below 0.5 x its best, 48.0% at epoch 3" in found.message()
    # Exactly half the best is not below half of it.
    at_half = history[:3] + [{"epoch": 4, "pgd_robust_acc": 24.0, "fgsm_robust_acc": 30.0}]
    assert detect_collapse(at_half) is None
    # The noise guard: far below in ratio but not in points (a weak early model) is not flagged.
    weak = [{"epoch": 1, "pgd_robust_acc": 4.0, "fgsm_robust_acc": 12.0}]
    assert detect_collapse(weak) is None and detect_collapse(weak, CollapseThresholds(0.5, 5)).reason == "gap"
    # Without FGSM accuracies only the drop rule applies; epochs default to positions.
    no_fgsm = [{"pgd_robust_acc": r["pgd_robust_acc"]} for r in history]
    assert detect_collapse(no_fgsm).epoch == 4 and detect_collapse(no_fgsm).fgsm_robust_acc is None
    # Tighter thresholds fire earlier, and the gap rule wins when both hold.
    early = detect_collapse(history, CollapseThresholds(ratio=0.9, gap=5))
    assert (early.epoch, early.reason) == (1, "gap")


def test_a_run_that_recovers_is_flagged_once_and_its_later_epochs_are_not():
    # The shape of docs/single-step.md's PGD-2 run at eps 0.2: a dip at epoch 2, then the most robust run there.
    history = [{"epoch": 1, "pgd_robust_acc": 20.0, "fgsm_robust_acc": 30.0},
               {"epoch": 2, "pgd_robust_acc": 8.6, "fgsm_robust_acc": 39.8},   # 0.22 x FGSM, 31 points under
               {"epoch": 3, "pgd_robust_acc": 30.0, "fgsm_robust_acc": 45.0},  # 0.67 x FGSM
               {"epoch": 4, "pgd_robust_acc": 46.2, "fgsm_robust_acc": 66.4}]  # 0.70 x FGSM, best so far
    assert detect_collapse(history).epoch == 2
    assert [flagged_at(history, e) for e in (1, 2, 3, 4)] == [False, True, False, False]
    assert flagged_at(history, 5) is None  # an epoch the check never saw
    # The drop rule at an epoch counts the best PGD accuracy up to that epoch only.
    later = history + [{"epoch": 5, "pgd_robust_acc": 20.0, "fgsm_robust_acc": 25.0}]  # 0.43 x best (46.2)
    assert flagged_at(later, 5) is True and flagged_at(later, 4) is False


@pytest.mark.parametrize("kwargs,needle", [({"ratio": 0}, "invalid collapse_ratio 0"),
                                           ({"ratio": 1}, "invalid collapse_ratio 1"),
                                           ({"gap": 0}, "invalid collapse_gap 0"),
                                           ({"gap": 101}, "invalid collapse_gap 101")])
def test_bad_thresholds(kwargs, needle):
    with pytest.raises(UserError, match=needle):
        CollapseThresholds(**kwargs)


def test_an_accuracy_outside_0_100_is_refused():
    with pytest.raises(ValueError, match="epoch 1: fgsm_robust_acc 101.0"):
        detect_collapse([{"epoch": 1, "pgd_robust_acc": 0.5, "fgsm_robust_acc": 101.0}])


def test_summary_of_a_flagged_run_stays_collapsed_after_autoattack(tmp_path):
    from robustscale.evaluation import update_summary

    # (name, first flagged epoch, is the reported checkpoint flagged (absent: a record from before the field),
    #  collapsed after an AutoAttack of 35 %)
    for name, flagged, at_selected, expected in (("flagged", 3, "absent", True), ("healthy", None, False, False),
                                                 ("flagged-at-selected", 3, True, True),
                                                 ("recovered", 3, False, False)):
        run_dir = tmp_path / name
        run_dir.mkdir()
        record = {"collapsed": True if flagged else None, "collapsed_epoch": flagged, "eval_flops": 0.0}
        if at_selected != "absent":
            record["collapse_at_selected"] = at_selected
        (run_dir / "summary.json").write_text(json.dumps(record))
        claim = {"attack": "aa-standard", "eps": 0.1, "n_examples": 100, "clean_acc": 70.0, "robust_acc": 35.0}
        summary = update_summary(run_dir, claim, "aa-standard-0.1")
        assert summary["collapsed"] is expected and summary["aa_robust_acc"] == 35.0, name
