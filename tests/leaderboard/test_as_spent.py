"""Training compute *as spent* by the authors' code and *as needed* on the efficient step, against hand counts.

Each hand count is written from the facts the recipe table sources to the authors' code (forward FLOPs x
forward-equivalents x images seen): F from the WRN conv formula, the input-only backward Bin = F and the
training backward B = 2F - s (s: the stem's input gradient, which the image does not need), as in
test_compute.py, whose first tests check these against real measurements.
"""
from __future__ import annotations

import pytest

from robustscale.leaderboard.compute import (ArchFlops, FlopsCache, entry_compute, measure_architecture, step_flops,
                                             wrn_stage_forward_flops, wrn_stage_params)
from robustscale.leaderboard.recipes import IMPLEMENTATION, RecipeTableError, load_recipes
from robustscale.leaderboard.sources import entry_sources, fact_links

from .test_compute import REL, hand_arch, stem_flops, wrn_hand


@pytest.fixture(scope="module")
def entries():
    return load_recipes()


@pytest.fixture
def cache():
    return FlopsCache(measure=hand_arch)


def parts(depth: int, width: int):
    F = wrn_hand(depth, width)
    return F, 2 * F - stem_flops()


def test_las_at_attack_backward_is_full(entries, cache):
    # LAS_AT_train_cifar10.py: Attack_policy_batch calls loss.backward() (B per attack step, K = 3..14),
    # Get_reward every 20 steps (2.7..3.7 F as needed, 1.15..1.65 F more as spent), a copy's step (0.05)
    F, B = parts(34, 10)
    e = entry_compute(entries["Jia2022LAS-AT_34_10"], entries, cache)
    n = 110 * 50_000
    assert e.train_flops_low == pytest.approx(n * (4 * F + 3 * B + B + 2.7 * F + 0.05 * (F + B) + 1.15 * F), rel=REL)
    assert e.train_flops_high == pytest.approx(n * (15 * F + 14 * B + B + 3.7 * F + 0.05 * (F + B) + 1.65 * F),
                                               rel=REL)
    assert e.train_flops_needed_low == pytest.approx(n * (4 * F + 3 * F + B + 2.7 * F + 0.05 * (F + B)), rel=REL)
    assert e.train_flops_needed_high == pytest.approx(n * (15 * F + 14 * F + B + 3.7 * F + 0.05 * (F + B)), rel=REL)


def test_dkl_recomputes_the_clean_forward_at_every_attack_step(entries, cache):
    # train_dkl_cifar10.py perturb_input: model(x_natural) and model(x_adv) per step (K = 3..5), then the
    # two training passes, plus AWP's 1.91 passes per image (utils_awp.py)
    F, B = parts(34, 10)
    e = entry_compute(entries["Cui2023Decoupled_WRN-34-10"], entries, cache)
    n = 200 * 50_000
    spent = lambda k: (2 * k + 2) * F + k * F + 2 * B + 1.91 * (F + B)  # noqa: E731
    needed = lambda k: (k + 2) * F + k * F + 2 * B + 1.91 * (F + B)  # noqa: E731
    assert (e.train_flops_low, e.train_flops_high) == (pytest.approx(n * spent(3), rel=REL),
                                                       pytest.approx(n * spent(5), rel=REL))
    assert e.train_flops_needed_high == pytest.approx(n * needed(5), rel=REL)


def test_bag_of_tricks_trades_in_at_he(entries, cache):
    # AT_HE CIFAR-10/losses.py trades_loss: 2 forwards per attack step; WRN-34-20, TRADES-10, 110 epochs
    F, B = parts(34, 20)
    e = entry_compute(entries["Pang2020Bag"], entries, cache)
    assert e.train_flops == pytest.approx(110 * 50_000 * (22 * F + 10 * F + 2 * B), rel=REL)
    assert e.train_flops_needed == pytest.approx(110 * 50_000 * (12 * F + 10 * F + 2 * B), rel=REL)


@pytest.mark.parametrize("name, depth, width, epochs, images", [
    ("Wang2023Better_WRN-70-16", 70, 16, 2000, 50_176),  # ceil(50,000 / 1024) x 1024
    ("Wang2023Better_WRN-28-10", 28, 10, 2400, 51_200),  # ceil(50,000 / 2048) x 2048
    ("Pang2022Robustness_WRN70_16", 70, 16, 400, 50_176),
])
def test_generated_data_trades_runs_p_natural_apart(entries, cache, name, depth, width, epochs, images):
    # trades_loss of the imrahulr lineage: p_natural = model(x_natural) before the attack, K+3 forwards
    F, B = parts(depth, width)
    e = entry_compute(entries[name], entries, cache)
    assert e.train_flops == pytest.approx(epochs * images * (13 * F + 10 * F + 2 * B), rel=REL)
    assert e.train_flops_needed == pytest.approx(epochs * images * (12 * F + 10 * F + 2 * B), rel=REL)


def test_hat_adds_the_helper_forward_and_pass(entries, cache):
    # hat.py hat_loss: p_natural apart, hr_model(x_adv) (a forward), model(x_hr) back-propagated (a pass)
    F, B = parts(28, 10)
    e = entry_compute(entries["Rade2021Helper_ddpm"], entries, cache)
    assert e.train_flops == pytest.approx(400 * 50_176 * (13 * F + 10 * F + 2 * B + F + (F + B)), rel=REL)


def test_rst_and_rice(entries, cache):
    F, B = parts(28, 10)
    e = entry_compute(entries["Carmon2019Unlabeled"], entries, cache)  # losses.py: 2 forwards per step
    assert e.train_flops == pytest.approx(200 * 50_176 * (22 * F + 10 * F + 2 * B), rel=REL)
    F, B = parts(34, 20)  # train_cifar.py: loss.backward() in attack_pgd, a restart's loss and a clean forward
    e = entry_compute(entries["Rice2020Overfitting"], entries, cache)
    assert e.train_flops == pytest.approx(200 * 50_000 * (11 * F + 10 * B + B + 2 * F), rel=REL)
    assert e.train_flops_needed == pytest.approx(200 * 50_000 * (11 * F + 10 * F + B), rel=REL)


def test_xcit_phases_spend_a_clean_forward_each(entries):
    # src/attacks.py: AdvTrainingLoss forwards model(x) it does not train on; TRADESLoss runs p_natural apart.
    # Any architecture: F = 1 GFLOP x (side / 32)^2, Bin = F, B = 2F.
    def measure(spec, size, classes):
        f = 1e9 * (size / 32) ** 2
        return ArchFlops(str(spec), f, f, 2 * f, None, "test")

    e = entry_compute(entries["Debenedetti2022Light_XCiT-S12"], entries, FlopsCache(measure=measure))
    f224, f128 = 1e9 * 49, 1e9 * 16
    pgd2 = 3 * f224 + 2 * f224 + 2 * f224  # F(K+1) + K Bin + B, K = 2
    trades10 = 12 * f128 + 10 * f128 + 4 * f128
    assert e.train_flops == pytest.approx(110 * 1_281_167 * (pgd2 + f224) + 22 * 50_000 * (trades10 + f128), rel=REL)
    assert e.train_flops_needed == pytest.approx(110 * 1_281_167 * pgd2 + 22 * 50_000 * trades10, rel=REL)


def test_unread_code_is_a_range_from_the_efficient_step(entries, cache):
    # Chen2021LTD: no code found; its total spans the efficient step up to the dearest implementation
    e = entry_compute(entries["Chen2021LTD_WRN34_10"], entries, cache)
    assert e.train_flops_low == pytest.approx(e.train_flops_needed_low, rel=REL)
    assert e.train_flops_high > e.train_flops_needed_high
    phase = entries["Chen2021LTD_WRN34_10"].phases[0]
    assert set(phase.implementation_missing()) == set(IMPLEMENTATION)
    assert all(phase.get(n).reason for n in IMPLEMENTATION)


def test_step_as_spent_by_hand():
    F, Bin, B = 3.0, 5.0, 7.0  # distinct numbers so every term is visible
    arch = ArchFlops("x", F, Bin, B, None, "test")
    k = 4
    assert step_flops(arch, "pgd", k)[0] == (k + 1) * F + k * Bin + B
    assert step_flops(arch, "pgd", k, attack_backward="full", attack_forwards=2)[0] == (2 * k + 1) * F + k * B + B
    assert step_flops(arch, "trades", k, redundant_forwards=1, redundant_train_passes=1)[0] == \
        (k + 2) * F + k * Bin + 2 * B + F + (F + B)
    assert step_flops(arch, "standard", 0, attack_backward="full", attack_forwards=2)[0] == F + B


def test_entries_with_code_have_every_implementation_fact_sourced(entries):
    for name in ("Jia2022LAS-AT_34_10", "Cui2023Decoupled_WRN-34-10", "Pang2020Bag", "Sehwag2020Hydra",
                 "Zhang2019Theoretically", "Pang2022Robustness_WRN70_16", "Wang2023Better_WRN-70-16",
                 "Bartoldson2024Adversarial_WRN-94-16", "Debenedetti2022Light_XCiT-S12", "Rice2020Overfitting",
                 "Addepalli2021Towards_RN18", "Addepalli2021Towards_WRN34", "Mustafa2019Adversarial",
                 "Jang2019Adversarial", "Atzmon2019Controlling", "Xu2023Exploring_WRN-28-10",
                 "Chen2020Adversarial", "Mao2019Metric"):
        assert entries[name].implementation_missing() == [], name


def test_bad_attack_backward_is_a_table_error(tmp_path):
    table = tmp_path / "t.yaml"
    table.write_text("entries:\n  X:\n"
                     "    model: {value: wrn-16-1, source: s}\n    method: {value: pgd, source: s}\n"
                     "    attack_steps: {value: 2, source: s}\n    epochs: {value: 1, source: s}\n"
                     "    images_per_epoch: {value: 10, source: s}\n    batch_size: {value: 2, source: s}\n"
                     "    attack_backward: {value: weights, source: s}\n", encoding="utf-8")
    with pytest.raises(RecipeTableError, match="attack_backward 'weights'"):
        load_recipes(table)


def test_sources_link_repository_files_and_papers(entries):
    e = entries["Cui2023Decoupled_WRN-34-10"]
    facts = {f["fact"]: f for f in entry_sources(e, {"Cui2023": "https://arxiv.org/abs/2305.13948"})}
    assert facts["attack_forwards"]["urls"] == [
        "https://github.com/jiequancui/DKL/blob/HEAD/DKLv1/Adv-training-dkl/train_dkl_cifar10.py"]
    assert "https://github.com/RobustBench/robustbench/blob/master/model_info/cifar10/Linf/" \
           "Cui2023Decoupled_WRN-34-10.json" in facts["data"]["urls"]
    wang = entries["Wang2023Better_WRN-70-16"].phases[0].facts["epochs"]
    assert fact_links(wang, "Wang2023Better_WRN-70-16", [], {"Wang2023": "P"}) == ["P"]
    # a file whose repository cannot be told is not linked to a guess
    yopo = entries["Zhang2019You"].phases[0].facts["images_per_epoch"]
    assert fact_links(yopo, "Zhang2019You", ["a/b", "c/d"], {}) == []


# ------------------------------------------------------------------ entries sourced from the rest of the field


def stage_arch(spec, input_size: int, num_classes: int) -> ArchFlops:
    """hand_arch, plus {wrn_stages: ...} specs priced by the stage formula (B = 2F, as compute.py does)."""
    if isinstance(spec, dict) and "wrn_stages" in spec:
        s = spec["wrn_stages"]
        f = wrn_stage_forward_flops(s["stem"], s["widths"], s["blocks"], num_classes, input_size)
        return ArchFlops("stages", f, f, 2 * f, None, "hand")
    return hand_arch(spec, input_size, num_classes)


def test_deepmind_pipeline_cutmix_runs_no_clean_forward_before_the_attack(entries, cache):
    # jax/attacks.py: jax.grad w.r.t. the input, one forward per step; experiment.py _trades_loss_fn: the two
    # passes. With CutMix the attack targets the mixed labels (no clean forward); without, softmax(logits_fn)
    # runs before the attack unless XLA merges it with the loss's clean forward: 0..1 F
    F, B = parts(70, 16)
    n = 400 * 50_000
    cutmix = entry_compute(entries["Rebuffi2021Fixing_70_16_cutmix_ddpm"], entries, cache)
    efficient = pytest.approx(n * (12 * F + 10 * F + 2 * B), rel=REL)
    assert (cutmix.train_flops_low, cutmix.train_flops_high) == (efficient, efficient)
    assert cutmix.train_flops_needed == pytest.approx(cutmix.train_flops, rel=REL)
    plain = entry_compute(entries["Gowal2020Uncovering_70_16"], entries, cache)
    assert plain.train_flops_low == efficient
    assert plain.train_flops_high == pytest.approx(n * (13 * F + 10 * F + 2 * B), rel=REL)


def test_robust_wrn_and_wrn_a4_are_priced_from_their_stage_configs(entries):
    cache = FlopsCache(measure=stage_arch)
    # RobustWRN trades.py: logits = model(x_natural) before the attack, then the two passes; the sampler fills
    # 196 batches of 256 (50,176 images) per epoch, 400 epochs
    F = wrn_stage_forward_flops(16, [320, 640, 512], [5, 5, 5], 10, 32)
    e = entry_compute(entries["Huang2021Exploring"], entries, cache)
    assert e.train_flops == pytest.approx(400 * 50_176 * (13 * F + 10 * F + 4 * F), rel=REL)
    assert e.train_flops_needed == pytest.approx(400 * 50_176 * (12 * F + 10 * F + 4 * F), rel=REL)
    # WRN-A4 from configs/Advanced_CIFAR10/WRN-A4.yaml: the README states 147M parameters and 40.4G (multiply-
    # adds); the stage formula must agree to the README's rounding (half a unit in its last digit)
    assert wrn_stage_params(16, [160, 448, 384], [27, 28, 13], 10) == pytest.approx(147e6, abs=0.5e6)
    F = wrn_stage_forward_flops(16, [160, 448, 384], [27, 28, 13], 10, 32)
    assert F / 2 == pytest.approx(40.4e9, abs=0.05e9)
    e = entry_compute(entries["Huang2022Revisiting_WRN-A4"], entries, cache)
    assert e.train_flops_low == pytest.approx(400 * 50_000 * (13 * F + 10 * F + 4 * F), rel=REL)
    assert e.train_flops_high == pytest.approx(400 * 50_176 * (13 * F + 10 * F + 4 * F), rel=REL)


def test_gair_rst_counts_its_cw_attack_and_three_forwards_per_step(entries, cache):
    # GAIR_RST/losses.py: 3 forwards per KL step; in 101 of 200 epochs a 10-step CW attack (20 F as needed,
    # 11 F more as spent: an unused clean forward and weight gradients) and a third training pass
    F, B = parts(28, 10)
    e = entry_compute(entries["Zhang2020Geometry"], entries, cache)
    n = 200 * 50_176
    extra = 10.1 * F + 0.505 * (F + B)
    assert e.train_flops == pytest.approx(n * (32 * F + 10 * F + 2 * B + extra + 5.56 * F), rel=REL)
    assert e.train_flops_needed == pytest.approx(n * (12 * F + 10 * F + 2 * B + extra), rel=REL)


def test_robust_paf_is_pgd_on_half_synthetic_batches(entries, cache):
    # trainers.py madry: a clean forward for the accuracy, PGD-10 (pgd_whitebox, input gradients), one pass;
    # 196 steps of 256 real (the last 80) + 256 synthetic images per epoch, 200 epochs
    F, B = parts(28, 10)
    e = entry_compute(entries["Dai2021Parameterizing"], entries, cache)
    n = 200 * (50_000 + 196 * 256)
    assert e.train_flops == pytest.approx(n * (11 * F + 10 * F + B + F), rel=REL)
    assert e.train_flops_needed == pytest.approx(n * (11 * F + 10 * F + B), rel=REL)


def test_backward_smoothing_and_fat(entries, cache):
    F, B = parts(34, 10)
    # trades_backward.py: a smoothing step + 1 KL step, a separate clean target forward; 100 epochs
    e = entry_compute(entries["Chen2020Efficient"], entries, cache)
    assert e.train_flops == pytest.approx(100 * 50_000 * (4 * F + 2 * F + 2 * B + F), rel=REL)
    assert e.train_flops_needed == pytest.approx(100 * 50_000 * (4 * F + 2 * F + 2 * B), rel=REL)
    # earlystop.py: K = 3..10 steps per example with loss.backward() (B each); every loop iteration (9..10 per
    # batch) also back-propagates the retained clean forward of the whole batch (about 2F), plus that forward: 85 epochs
    e = entry_compute(entries["Zhang2020Attacks"], entries, cache)
    spent = lambda k, iters: (k + 2) * F + k * B + 2 * B + (1 + 2 * iters) * F  # noqa: E731
    assert (e.train_flops_low, e.train_flops_high) == (pytest.approx(85 * 50_000 * spent(3, 9), rel=REL),
                                                       pytest.approx(85 * 50_000 * spent(10, 10), rel=REL))
    assert e.train_flops_needed_low == pytest.approx(85 * 50_000 * (5 * F + 3 * F + 2 * B), rel=REL)


def test_lat_adds_a_short_fine_tuning_to_madrys_run(entries, cache):
    # feature_adv_training_layer11.py: 1001 steps of 128 on the cifar10_challenge model: PGD-10 (input
    # gradients), the latent attack and update (12..15 F) and a logging forward every 100 steps
    F, B = parts(34, 10)
    madry = entry_compute(entries["Madry2018Towards"], entries, cache)
    e = entry_compute(entries["Kumari2019Harnessing"], entries, cache)
    phase = lambda x: 1001 * 128 * (11 * F + 10 * F + B + x * F + 0.01 * F)  # noqa: E731
    assert e.train_flops_low == pytest.approx(madry.train_flops_low + phase(12), rel=REL)
    assert e.train_flops_high == pytest.approx(madry.train_flops_high + phase(15), rel=REL)


# ------------------------------------------------------------------ OAAT, PCL, level-set control, DyART


def unit_arch(spec, input_size: int, num_classes: int) -> ArchFlops:
    """Any architecture as F = 1, Bin = 1, B = 2: the totals are linear in (F, Bin, B), so a hand count in
    these units checks the facts' arithmetic for networks hand_arch does not know (ResNet-18)."""
    return ArchFlops(str(spec), 1.0, 1.0, 2.0, None, "unit")


def test_oaat_wrn_counts_its_four_phases(entries, cache):
    # train_OAAT.py with defaults.py CIFAR10_WRN: 200 epochs of 49,000 images. Epochs 1-50: CE attack of 5
    # steps (1 forward + input gradient each), 3 training passes (2 TRADES + the KL target's clean forward,
    # back-propagated) and AWP from epoch 10 (3 proxy passes); epochs 51-150: the same with 10 steps; epochs
    # 151-200: train_lpips_alt, even batches (24,552 images) CE attack + 3 passes + AWP, odd batches (24,448)
    # the LPIPS attack (loss.backward() in the loop, 2 LPIPS forwards and their weight-gradient backward per
    # step: 6F, of which 21F per image the method needs) + 2 passes + AWP
    F, B = parts(34, 10)
    e = entry_compute(entries["Addepalli2021Towards_WRN34"], entries, cache)
    awp = 41 / 50
    p1 = 50 * 49_000 * (5 * (F + F) + 3 * (F + B) + awp * 3 * (F + B))
    p2 = 100 * 49_000 * (10 * (F + F) + 3 * (F + B) + 3 * (F + B))
    p3 = 50 * 24_552 * (10 * (F + F) + 3 * (F + B) + 3 * (F + B))
    p4 = 50 * 24_448 * (10 * (F + B) + 2 * (F + B) + 3 * (F + B) + 60 * F)
    assert e.train_flops == pytest.approx(p1 + p2 + p3 + p4, rel=REL)
    # as needed: no duplicate clean pass (TRADES target, AWP proxy), input-only gradients, LPIPS needs 21F
    n1 = 50 * 49_000 * (5 * (F + F) + 2 * (F + B) + awp * 2 * (F + B))
    n2 = 100 * 49_000 * (10 * (F + F) + 2 * (F + B) + 2 * (F + B))
    n3 = 50 * 24_552 * (10 * (F + F) + 3 * (F + B) + 2 * (F + B))
    n4 = 50 * 24_448 * (10 * (F + F) + 2 * (F + B) + 2 * (F + B) + 21 * F)
    assert e.train_flops_needed == pytest.approx(n1 + n2 + n3 + n4, rel=REL)


def test_pcl_is_softmax_pre_training_then_fgsm_or_pgd_on_clean_and_adversarial_halves(entries, cache):
    # softmax_training.py: 164 epochs of cross-entropy; pcl_training_adversarial_{fgsm,pgd}.py: 500 epochs, an
    # attack of 1 (FGSM) or 10 (PGD) steps with loss.backward() (B each), then one pass over torch.cat((data, adv))
    F = 5.1e8  # the explicit ResNet-110 forward of the table (B = 2F, Bin = F)
    B = 2 * F
    e = entry_compute(entries["Mustafa2019Adversarial"], entries, cache)
    pre = 164 * 50_000 * (F + B)
    adv = lambda k: 500 * 50_000 * (k * (F + B) + 2 * (F + B))  # noqa: E731
    assert (e.train_flops_low, e.train_flops_high) == (pytest.approx(pre + adv(1), rel=REL),
                                                       pytest.approx(pre + adv(10), rel=REL))
    assert e.train_flops_needed_high == pytest.approx(pre + 500 * 50_000 * (10 * (F + F) + 2 * (F + B)), rel=REL)


def test_level_set_control_counts_the_projection_and_the_level_set_points(entries):
    # ControllingNeuralLevelsets: 300 epochs of 50,000; 20 projection steps (forward + input gradient), a
    # clean forward before and a filter forward after (2), the level-set points' forward and input gradient
    # (0..2), a duplicate clean forward (1) and the copy's weight gradients (0..1), one training pass
    e = entry_compute(entries["Atzmon2019Controlling"], entries, FlopsCache(measure=unit_arch))
    F, Bin, B = 1.0, 1.0, 2.0
    n = 300 * 50_000
    assert e.train_flops_low == pytest.approx(n * (20 * (F + Bin) + (F + B) + 2 * F + 1 * F), rel=REL)
    assert e.train_flops_high == pytest.approx(n * (20 * (F + Bin) + (F + B) + 4 * F + 2 * F), rel=REL)
    assert e.train_flops_needed_low == pytest.approx(n * (20 * (F + Bin) + (F + B) + 2 * F), rel=REL)


def test_dyart_per_image_cost_from_the_fab_search(entries, cache):
    # DyART_Linf.py / FAB_scalar_boundary.py: 18..20 FAB iterations (20 x the correctly classified share), each
    # 2 forwards and an input gradient; 2.8..3 forwards besides, 1.8..2 recomputed; the clean pass and 0..1
    # boundary-point passes; 10M-image run: 400..2400 epochs of 50,176..51,200 images
    F, B = parts(28, 10)
    e = entry_compute(entries["Xu2023Exploring_WRN-28-10"], entries, cache)
    low = 400 * 50_176 * (18 * (2 * F + F) + (F + B) + 2.8 * F + 1.8 * F)
    high = 2400 * 51_200 * (20 * (2 * F + F) + (F + B) + 3 * F + 2 * F + (F + B))
    assert (e.train_flops_low, e.train_flops_high) == (pytest.approx(low, rel=REL), pytest.approx(high, rel=REL))


def test_learned_attack_generator_counts_classifier_and_generator_passes(entries, cache):
    # l2l-da trainer.py: 100,000 steps of 100; per clean image 39 classifier forward + full backward passes
    # (the clean gradient, 2 copies x (10 proxy + 9 gradient passes)), one update over the clean image and both
    # copies (3 passes), and the U-Net generator: 60 forward-equivalents of 83,820,544 x 2 FLOPs
    F = 8.2e7  # the explicit ResNet-20 forward of the table (B = 2F, Bin = F)
    B = 2 * F
    generator = 60 * 2 * (17 * 64 * 9 * 1024 + 72 * 64 * 16 * 256 + 72 * 128 * 16 * 64 + 128 * 64 * 16 * 64
                          + 128 * 64 * 16 * 256 + 128 * 3 * 9 * 1024)
    assert generator / F == pytest.approx(122.7, abs=0.05)  # the table's rounded value
    e = entry_compute(entries["Jang2019Adversarial"], entries, cache)
    n = 100_000 * 100
    assert e.train_flops == pytest.approx(n * (39 * (F + B) + 3 * (F + B) + 122.7 * F), rel=REL)
    assert e.train_flops_needed == pytest.approx(n * (39 * (F + F) + 3 * (F + B) + 122.7 * F), rel=REL)


# ------------------------------------------------------------------ self-supervised pre-training ensemble, TLA


def bottleneck_resnet_macs(num_classes: int | None, stages: int = 4, side: int = 32) -> float:
    """Multiply-adds of a CIFAR-stem ResNet-50 (3x3 stride-1 stem, bottleneck stages [3, 4, 6, 3]); the first
    ``stages`` stages only (no classifier) when ``num_classes`` is None. The stride sits on the 3x3 conv."""
    macs = side * side * 27 * 64
    c_in, res = 64, side
    for i, (planes, blocks) in enumerate(zip([64, 128, 256, 512][:stages], [3, 4, 6, 3][:stages])):
        for j in range(blocks):
            out_res = res // 2 if (i > 0 and j == 0) else res
            macs += res * res * c_in * planes  # 1x1 reduce, at the input resolution
            macs += out_res * out_res * 9 * planes * planes  # 3x3 (strided)
            macs += out_res * out_res * planes * 4 * planes  # 1x1 expand
            if j == 0:
                macs += out_res * out_res * c_in * 4 * planes  # 1x1 projection shortcut
            c_in, res = 4 * planes, out_res
    return macs + (c_in * num_classes if num_classes is not None else 0)


def resnet50_arch(spec, input_size: int, num_classes: int) -> ArchFlops:
    """resnet50_32 by the hand formula: F, Bin = F, B = 2F minus the stem's input gradient (as hand_arch)."""
    assert spec == "resnet50_32" and input_size == 32, spec
    f = 2.0 * bottleneck_resnet_macs(num_classes)
    return ArchFlops(spec, f, f, 2 * f - 2.0 * 32 * 32 * 27 * 64, None, "hand")


def test_resnet50_hand_formula_equals_the_measured_network():
    measured = measure_architecture("resnet50_32", 32, 10)
    hand = resnet50_arch("resnet50_32", 32, 10)
    assert (measured.forward, measured.input_backward, measured.full_backward) == \
        (hand.forward, hand.input_backward, hand.full_backward)


def test_self_supervised_ensemble_counts_each_members_pretraining_and_fine_tuning(entries):
    # Adv-SS-Pretraining: three members, each its task's adversarial pre-training then finetune/main.py (PGD-10
    # with autograd.grad w.r.t. the input, one training pass), 45,000 images per epoch (a 10 % validation split).
    # Selfie: 200 epochs of PGD-10 on the patch network (ResNet-50 stages 1-3 on 16 8x8 patches = one 32x32
    # image, then a 13-layer transformer, d_model 1024, on 13 tokens), the clean pass back-propagated too;
    # Rotation (4 classes) and Jigsaw (31): 100 epochs, PGD-10 + the clean pass. Explicit FLOPs: Bin = F, B = 2F.
    transformer = 13 * (13 * (4 * 1024 * 1024 + 2 * 1024 * 2048) + 2 * 16 * 13 * 13 * 64)
    fs = 2.0 * (bottleneck_resnet_macs(None, stages=3) + transformer + 4 * 4 * 1024)
    assert entries["Chen2020Adversarial"].phases[0].facts["model"].value == fs  # the table's number, by hand
    e = entry_compute(entries["Chen2020Adversarial"], entries, FlopsCache(measure=resnet50_arch))

    def pgd10(classes, clean_pass):
        a = resnet50_arch("resnet50_32", 32, classes)
        F, B = a.forward, a.full_backward
        return 11 * F + 10 * F + B + (F + B if clean_pass else 0.0)

    selfie = 200 * 45_000 * (11 * fs + 10 * fs + 2 * fs + (fs + 2 * fs))
    rotation, jigsaw = (100 * 45_000 * pgd10(k, True) for k in (4, 31))
    fine_tuning = 3 * 100 * 45_000 * pgd10(10, False)
    total = selfie + rotation + jigsaw + fine_tuning
    assert (e.train_flops_low, e.train_flops_high) == (pytest.approx(total, rel=REL), pytest.approx(total, rel=REL))
    assert e.train_flops_needed == pytest.approx(total, rel=REL)  # their code is the efficient step


def test_tla_counts_the_negative_bank_the_triplet_passes_and_madrys_run(entries, cache):
    # train_update_fast_triplet.py with config_cifar.json: fine-tunes Madry's model for 80,000 steps of 50; per
    # image a no-grad forward of mul_num 10 bank images, PGD-7 (tf.gradients w.r.t. the input), a forward of
    # the final adversarial image for the search (recomputed by the training pass), one training pass over A', A,
    # A1 and B, and logging forwards (4 every 100 steps, 4 every 500)
    F, B = parts(34, 10)
    madry = entry_compute(entries["Madry2018Towards"], entries, cache)
    e = entry_compute(entries["Mao2019Metric"], entries, cache)
    needed = 80_000 * 50 * (8 * F + 7 * F + B + 10 * F + 3 * (F + B))
    spent = needed + 80_000 * 50 * (1 + 4 / 100 + 4 / 500) * F
    assert e.train_flops_low == pytest.approx(madry.train_flops_low + spent, rel=REL)
    assert e.train_flops_high == pytest.approx(madry.train_flops_high + spent, rel=REL)
    assert e.train_flops_needed_low == pytest.approx(madry.train_flops_needed_low + needed, rel=REL)
    assert e.train_flops_needed_high == pytest.approx(madry.train_flops_needed_high + needed, rel=REL)
