import json

import pytest
import timm
import torch

import robustscale  # noqa: F401  (registers the models)
from robustscale.errors import UserError
from robustscale.data import dataset_normalization
from robustscale.models import NormalizedModel, create_model, our_models, wide_resnet

# Published parameter counts of the 2024 study's models (10 classes, 3 channels).
PUBLISHED = {
    "wide_resnet28_10": 36_479_194,
    "wide_resnet34_10": 46_160_474,
    "wide_resnet34_20": 184_531_674,
    "wide_resnet70_16": 266_796_506,
}


def _params_on_meta(name, **kw):
    with torch.device("meta"):
        model = timm.create_model(name, num_classes=10, **kw)
    return sum(p.numel() for p in model.parameters()), model


@pytest.mark.parametrize("name,count", sorted(PUBLISHED.items()))
@pytest.mark.parametrize("suffix", ["", "_dm"])
def test_published_parameter_counts(name, count, suffix):
    n, _ = _params_on_meta(name + suffix)
    assert n == count


def _wrn_params_by_hand(depth, group_widths, in_chans=3, classes=10):
    """Stem conv, 3 groups of (depth - 4) / 6 pre-activation blocks, final BN, fc."""
    def conv(i, o, k=3):
        return i * o * k * k

    def bn(c):
        return 2 * c

    widths = [16] + list(group_widths)
    blocks = (depth - 4) // 6
    total = conv(in_chans, 16)
    for g in range(3):
        i, o = widths[g], widths[g + 1]
        for b in range(blocks):
            cin = i if b == 0 else o
            total += bn(cin) + conv(cin, o) + bn(o) + conv(o, o)
            if cin != o or (b == 0 and g > 0):
                total += conv(cin, o, 1)
    return total + bn(widths[3]) + widths[3] * classes + classes


@pytest.mark.parametrize("name,depth,group_widths", [
    ("wide_resnet16_1", 16, (16, 32, 64)),
    ("wide_resnet10_1", 10, (16, 32, 64)),
    # fractional widths (the scaling study's small sizes): groups of 16k, 32k, 64k channels, k < 1
    ("wide_resnet10_0p125", 10, (2, 4, 8)),
    ("wide_resnet10_0p1875", 10, (3, 6, 12)),
    ("wide_resnet10_0p25", 10, (4, 8, 16)),
    ("wide_resnet10_0p5", 10, (8, 16, 32)),
    ("wide_resnet16_0p5", 16, (8, 16, 32)),
    ("wide_resnet16_0p25", 16, (4, 8, 16)),
])
def test_wrn_param_count_matches_hand_formula(name, depth, group_widths):
    n, _ = _params_on_meta(name)
    assert n == _wrn_params_by_hand(depth, group_widths)


def test_fractional_width_names_and_forward():
    assert {"wide_resnet10_0p25", "wide_resnet10_0p5_dm", "wide_resnet16_0p5"} <= set(our_models())
    m = timm.create_model("wide_resnet10_0p25", num_classes=10, in_chans=1).eval()
    assert m(torch.rand(2, 1, 28, 28)).shape == (2, 10)
    assert m.num_features == 16
    with pytest.raises(ValueError, match="at least one channel"):
        wide_resnet(10, 0.01)


def test_dm_flavour_uses_silu_and_bn_momentum():
    _, classic = _params_on_meta("wide_resnet16_2")
    _, dm = _params_on_meta("wide_resnet16_2_dm")
    acts = {type(m).__name__ for m in dm.modules()}
    assert "SiLU" in acts and "ReLU" not in acts
    assert all(m.momentum == 0.01 for m in dm.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert all(m.momentum == 0.1 for m in classic.modules() if isinstance(m, torch.nn.BatchNorm2d))


def test_constructor_any_depth_and_bad_depth():
    m = wide_resnet(22, 3, activation="silu", num_classes=7, in_chans=1)
    assert m(torch.rand(2, 1, 28, 28)).shape == (2, 7)
    with pytest.raises(ValueError, match="6n\\+4"):
        wide_resnet(27, 2)


def test_zoo_registered_and_forward_shapes():
    names = our_models()
    for expected in ["wide_resnet16_1", "wide_resnet106_16_dm", "resnet18_32", "resnet50_32", "preact_resnet18"]:
        assert expected in names
    for name in ["resnet18_32", "preact_resnet18", "wide_resnet16_1_dm"]:
        m = timm.create_model(name, num_classes=10).eval()
        assert m(torch.rand(2, 3, 32, 32)).shape == (2, 10)
        assert m.pretrained_cfg["input_size"] == (3, 32, 32)


def test_resnet_cifar_stem_has_no_maxpool():
    m = timm.create_model("resnet18_32", num_classes=10)
    assert isinstance(m.maxpool, torch.nn.Identity) and m.conv1.stride == (1, 1) and m.conv1.kernel_size == (3, 3)


def test_normalization_inside_model():
    inner = torch.nn.Flatten()
    mean, std = (0.5, 0.25), (0.5, 0.25)
    wrapped = NormalizedModel(inner, mean, std)
    x = torch.rand(3, 2, 4, 4)
    expected = torch.cat([((x[:, 0] - 0.5) / 0.5).flatten(1).reshape(3, 16), ((x[:, 1] - 0.25) / 0.25).reshape(3, 16)], 1)
    assert torch.allclose(wrapped(x), expected)
    assert "mean" not in wrapped.state_dict()  # buffers are not persisted: checkpoints stay timm's


def test_create_model_grayscale_dataset_stats():
    m = create_model("wide_resnet16_1", num_classes=10, in_chans=1, **dataset_normalization("fashion_mnist"))
    assert m.mean.flatten().tolist() == pytest.approx([0.2860])
    assert m(torch.rand(2, 1, 28, 28)).shape == (2, 10)


def test_any_timm_model_works():
    m = create_model("resnet10t", num_classes=5, in_chans=3)
    assert m(torch.rand(1, 3, 64, 64)).shape == (1, 5)


def test_unknown_model_is_user_error():
    with pytest.raises(UserError, match="unknown model 'wide_resnet28_11'.*wide_resnet28_10"):
        create_model("wide_resnet28_11")


def test_models_command_table_and_json(cli):
    code, out, err = cli("models", "wide_resnet28_10", "wide_resnet16_1", "--json")
    assert code == 0, err
    rows = {r["model"]: r for r in json.loads(out)}
    assert rows["wide_resnet28_10"]["parameters"] == 36_479_194
    # The study's figure: WRN-28-10 forward = 10.5 GFLOPs per 32x32 image (2 x MACs).
    assert rows["wide_resnet28_10"]["forward_flops_per_image"] == pytest.approx(10.5e9, rel=0.01)
    code, out, _ = cli("models", "--dataset", "fashion_mnist")
    assert code == 0 and "1x28x28" in out and "wide_resnet16_4" in out


def test_models_command_bad_input(cli):
    code, out, err = cli("models", "nope_net")
    assert code == 2 and err.count("\n") == 1 and "unknown model 'nope_net'" in err
    code, out, err = cli("models", "--dataset", "cifar11")
    assert code == 2 and "unknown dataset 'cifar11'" in err and "cifar10" in err


def test_cli_help_lists_commands(cli, capsys):
    with pytest.raises(SystemExit) as exc:
        cli("--help")
    assert exc.value.code == 0
    assert "models" in capsys.readouterr().out
