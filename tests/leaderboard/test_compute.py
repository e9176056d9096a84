"""Training FLOPs of entries against independent hand computations.

Hand computation = architecture forward FLOPs (the WRN conv formula, counted by hand) x forward-
equivalents of the method x samples seen. The measured parts of a real (small) WRN are first checked
against the same hand formula, which justifies replacing the measurement by the formula for the big
leaderboard architectures (the tests then run in milliseconds).
"""
from __future__ import annotations

import pytest

from robustscale.compute import measure_step_flops
from robustscale.config import TrainConfig
from robustscale.leaderboard.compute import (ArchFlops, FlopsCache, entry_compute, measure_architecture, step_flops,
                                             wrn_stage_forward_flops, wrn_stage_params)
from robustscale.leaderboard.recipes import load_recipes

REL = 1e-9  # both sides are sums of exact integer FLOP counts in float64


def stem_flops(size: int = 32) -> float:
    return 2.0 * size * size * 27 * 16  # 3x3 conv, 3 -> 16 channels


def wrn_hand(depth: int, width: int, classes: int = 10, size: int = 32) -> float:
    n = (depth - 4) // 6
    return wrn_stage_forward_flops(16, [16 * width, 32 * width, 64 * width], [n] * 3, classes, size)


def hand_arch(spec, input_size: int, num_classes: int) -> ArchFlops:
    """F from the conv formula; the input-only backward is F (every layer's input gradient, same MACs);
    the training backward is 2F minus the stem's input gradient (the image needs no gradient)."""
    if isinstance(spec, str) and spec.startswith("wrn-"):
        depth, width = map(int, spec.split("-")[1:])
    else:
        name = spec.removeprefix("wide_resnet").removesuffix("_dm")
        depth, width = map(int, name.split("_"))
    f = wrn_hand(depth, width, num_classes, input_size)
    return ArchFlops(str(spec), f, f, 2 * f - stem_flops(input_size), None, "hand")


@pytest.mark.parametrize("depth, width", [(16, 2), (22, 4)])
def test_measured_wrn_parts_equal_the_hand_formula(depth, width):
    arch = measure_architecture(f"wrn-{depth}-{width}", 32, 10)
    hand = hand_arch(f"wrn-{depth}-{width}", 32, 10)
    assert arch.forward == pytest.approx(hand.forward, rel=REL)
    assert arch.input_backward == pytest.approx(hand.input_backward, rel=REL)
    assert arch.full_backward == pytest.approx(hand.full_backward, rel=REL)


def test_stage_formula_counts_the_parameters_of_the_built_network():
    from robustscale.models import wide_resnet

    model = wide_resnet(16, 4)
    assert wrn_stage_params(16, [64, 128, 256], [2, 2, 2]) == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("method, k", [("standard", 0), ("fgsm_rs", 1), ("pgd", 2), ("trades", 3)])
def test_composed_step_equals_a_measured_training_step(method, k):
    from robustscale.models import wide_resnet

    arch = measure_architecture("wrn-16-1", 32, 10)
    cfg = TrainConfig.from_dict({"model": "wrn-16-1", "method": method, "attack_steps": max(k, 1)})
    measured = measure_step_flops(wide_resnet(16, 1), cfg, (3, 32, 32), use_cache=False)
    ours, analytic = step_flops(arch, method, k)
    assert ours == pytest.approx(measured.train_step_flops, rel=REL)
    assert analytic == pytest.approx(measured.analytic_train_step_flops, rel=REL)


@pytest.fixture(scope="module")
def entries():
    return load_recipes()


@pytest.fixture
def cache():
    return FlopsCache(measure=hand_arch)


def test_trades_reference_code_spends_its_recomputed_forwards(entries, cache):
    # Zhang2019Theoretically: WRN-34-10, TRADES-10, 80 epochs x 50,000 images (yaodongyu/TRADES defaults).
    # As spent (trades.py): 2 forwards per attack step (x_adv and x_natural), input-only attack backward,
    # three training forwards (x_natural twice) all back-propagated: F(2K+3) + K Bin + 3B.
    e = entry_compute(entries["Zhang2019Theoretically"], entries, cache)
    F, s, samples, k = wrn_hand(34, 10), stem_flops(), 80 * 50_000, 10
    B = 2 * F - s
    assert e.train_flops == pytest.approx(samples * ((2 * k + 3) * F + k * F + 3 * B), rel=REL)
    assert e.train_flops_needed == pytest.approx(samples * ((k + 2) * F + k * F + 2 * B), rel=REL)
    assert e.train_flops_2024 == pytest.approx(samples * 3 * (k + 3) * F, rel=REL)  # 3F(K+3)
    assert e.train_flops_low == e.train_flops_high


def test_largest_entry_counts_its_padded_epochs_and_separate_clean_forward(entries, cache):
    # Bartoldson2024 WRN-94-16: TRADES-10, 10,000 epochs x ceil(50,000 / 2048) x 2048 = 51,200 images;
    # core/utils/trades.py runs p_natural apart: K+3 forwards, 27F per image at Bin = F, B = 2F.
    F, s = wrn_hand(94, 16), stem_flops()
    B = 2 * F - s
    spent = 10_000 * 51_200 * (13 * F + 10 * F + 2 * B)
    needed = 10_000 * 51_200 * (12 * F + 10 * F + 2 * B)
    for name in ("Bartoldson2024Adversarial_WRN-94-16", "Amini2024MeanSparse_S-WRN-94-16"):
        e = entry_compute(entries[name], entries, cache)
        assert e.train_flops == pytest.approx(spent, rel=REL)
        assert e.train_flops_needed == pytest.approx(needed, rel=REL)


def test_two_phases_add_up(entries, cache):
    # Hendrycks2019: PGD-10 on 1,281,167 ImageNet32 images x 100 epochs (1000 classes), then PGD-10 x 5 CIFAR
    # epochs; attacks.py PGD_linf takes input-only gradients and the scripts run no other forward, so the
    # total as spent is the efficient one
    k, s = 10, stem_flops()
    pgd = lambda F: (2 * k + 3) * F - s  # noqa: E731  F(K+1) + K F + (2F - s)
    e = entry_compute(entries["Hendrycks2019Using"], entries, cache)
    big, small = 100 * 1_281_167, 5 * 50_000
    F1, F2 = wrn_hand(28, 10, 1000), wrn_hand(28, 10)
    assert e.train_flops_needed == pytest.approx(big * pgd(F1) + small * pgd(F2), rel=REL)
    assert (e.train_flops_low, e.train_flops_high) == (pytest.approx(e.train_flops_needed, rel=REL),) * 2


def test_a_sourced_range_gives_low_and_high(entries, cache):
    # Madry2018: 80,000 steps x 128 images, PGD with 7 (paper) or 10 (config.json) steps; train.py adds 3
    # logging forwards every 100 steps (0.03 F per image) to the efficient step
    F, s = wrn_hand(34, 10), stem_flops()
    e = entry_compute(entries["Madry2018Towards"], entries, cache)
    assert e.train_flops_needed_low == pytest.approx(80_000 * 128 * (17 * F - s), rel=REL)
    assert e.train_flops_needed_high == pytest.approx(80_000 * 128 * (23 * F - s), rel=REL)
    assert e.train_flops_low == pytest.approx(80_000 * 128 * (17.03 * F - s), rel=REL)
    assert e.train_flops_high == pytest.approx(80_000 * 128 * (23.03 * F - s), rel=REL)
    assert e.train_flops == pytest.approx((e.train_flops_low * e.train_flops_high) ** 0.5, rel=REL)


def test_extra_passes_and_teachers_are_added(entries, cache):
    # Wu2020Adversarial (TRADES-AWP): TRADES-10 + AWP's 2 proxy passes in 191 of 200 epochs (1.91 per image),
    # 200 epochs x 50,000; as spent, the TRADES reference loss (2 forwards per attack step, a second clean
    # pass) and the proxy's second clean pass (0.955) are added
    F, s = wrn_hand(34, 10), stem_flops()
    e = entry_compute(entries["Wu2020Adversarial"], entries, cache)
    assert e.train_flops_needed == pytest.approx(200 * 50_000 * ((26 * F - 2 * s) + 1.91 * (3 * F - s)), rel=REL)
    assert e.train_flops == pytest.approx(
        200 * 50_000 * ((36 * F - 2 * s) + (1.91 + 1.955) * (3 * F - s)), rel=REL)


def test_unbounded_and_excluded_entries_have_no_upper_bound(entries, cache):
    bai = entry_compute(entries["Bai2023Improving_edm"], entries, cache)
    wang = entry_compute(entries["Wang2023Better_WRN-70-16"], entries, cache)
    assert bai.train_flops_low == pytest.approx(wang.train_flops, rel=REL)
    assert bai.train_flops_high is None and bai.train_flops is None
    assert entry_compute(entries["Zhang2020Towards"], entries, cache) is None


def test_real_plus_synthetic_batches_count_both_halves_and_the_clean_forward(entries, cache):
    # Sehwag2021Proxy: WRN-34-10, PGD-10, 100 epochs of 391 steps x (128 real + 128 synthetic) = 100,000
    # images per epoch, plus the clean forward utils.py trainfxn computes for its accuracy (redundant)
    k, F, s = 10, wrn_hand(34, 10), stem_flops()
    needed = (k + 1) * F + k * F + (2 * F - s)
    e = entry_compute(entries["Sehwag2021Proxy"], entries, cache)
    assert e.train_flops == pytest.approx(100 * 100_000 * (needed + F), rel=REL)
    assert e.train_flops_needed == pytest.approx(100 * 100_000 * needed, rel=REL)
    assert e.train_flops_low == e.train_flops_high


def test_pretrain_prune_finetune_phases_add_up(entries, cache):
    # Sehwag2020Hydra: WRN-28-10, (100 + 20 + 100) epochs x 100,000 images; utils/adv.py trades_loss: 2
    # forwards per attack step, the clean batch forwarded twice in the loss (both back-propagated), and
    # trainer/adv.py's clean forward for the accuracy: F(2K+2) + K Bin + 2B + F + (F + B)
    k, F, s = 10, wrn_hand(28, 10), stem_flops()
    B = 2 * F - s
    e = entry_compute(entries["Sehwag2020Hydra"], entries, cache)
    assert e.train_flops == pytest.approx(220 * 100_000 * ((2 * k + 2) * F + k * F + 2 * B + F + (F + B)), rel=REL)
    assert e.train_flops_needed == pytest.approx(220 * 100_000 * ((k + 2) * F + k * F + 2 * B), rel=REL)
