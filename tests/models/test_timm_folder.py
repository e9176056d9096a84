"""Our architectures go through timm's builder: a timm-layout folder (timm's own ``save_for_hf``) reloads
with plain ``timm.create_model("local-dir:DIR", pretrained=True)``, and checkpoints saved from the earlier
hand-built construction keep loading (same keys, shapes and parameter counts)."""
from __future__ import annotations

import json

import pytest
import timm
import torch
from timm.models import save_for_hf
from timm.models.resnet import BasicBlock, Bottleneck, ResNet
from torch import nn

import robustscale  # noqa: F401  (registers our architectures in timm)
from robustscale.models.resnet_cifar import PreActResNet

# Counts of the earlier construction at 10 classes, 3 channels (measured before the change, pinned).
PARAMETERS = {"resnet18_32": 11_173_962, "resnet50_32": 23_520_842, "preact_resnet18": 11_172_170}


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # same kernels for both models: bit-identical logits
    yield
    torch.set_num_threads(before)


def _old_construction(name: str, num_classes: int = 10, in_chans: int = 3) -> nn.Module:
    """The models as the entry points built them by hand before they used timm's build_model_with_cfg."""
    if name == "preact_resnet18":
        return PreActResNet((2, 2, 2, 2), num_classes=num_classes, in_chans=in_chans)
    block, layers = {"resnet18_32": (BasicBlock, [2, 2, 2, 2]), "resnet50_32": (Bottleneck, [3, 4, 6, 3])}[name]
    model = ResNet(block, layers, in_chans=in_chans, num_classes=num_classes)
    model.conv1 = nn.Conv2d(in_chans, 64, 3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    return model


def _randomize_bn_buffers(model: nn.Module, seed: int) -> None:
    """Running statistics away from their (0, 1) init, so that a reload that skips buffers shows."""
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)


@pytest.mark.parametrize("name", sorted(PARAMETERS))
def test_state_dict_of_the_old_construction_loads_strictly(name):
    with torch.device("meta"):  # keys and shapes only: no memory, no init time
        old, new = _old_construction(name), timm.create_model(name, num_classes=10)
    old_sd, new_sd = old.state_dict(), new.state_dict()
    assert list(old_sd) == list(new_sd)
    assert all(old_sd[k].shape == new_sd[k].shape for k in old_sd)
    assert sum(p.numel() for p in new.parameters()) == PARAMETERS[name]
    assert type(new) is type(old) and new.in_chans == 3 and new.num_classes == 10


@pytest.mark.parametrize("name", ["resnet18_32", "preact_resnet18"])
def test_same_seed_same_initial_weights_as_the_old_construction(name):
    # The builder draws nothing itself: a seeded run starts from the weights it started from before.
    torch.manual_seed(0)
    old = _old_construction(name)
    torch.manual_seed(0)
    new = timm.create_model(name, num_classes=10)
    old_sd = old.state_dict()
    new.load_state_dict(old_sd, strict=True)
    torch.manual_seed(0)
    fresh = timm.create_model(name, num_classes=10).state_dict()
    assert all(torch.equal(fresh[k], v) for k, v in old_sd.items())


def test_defaults_come_from_the_pretrained_cfg():
    with torch.device("meta"):
        model = timm.create_model("resnet18_32")
    assert model.num_classes == 10 and model.pretrained_cfg["architecture"] == "resnet18_32"


@pytest.mark.parametrize("name,num_classes,in_chans,side", [
    ("resnet18_32", 10, 3, 16), ("preact_resnet18", 10, 3, 32), ("wide_resnet16_1", 7, 1, 28)])
def test_local_dir_folder_reloads_with_plain_timm(tmp_path, name, num_classes, in_chans, side):
    torch.manual_seed(1)
    model = timm.create_model(name, num_classes=num_classes, in_chans=in_chans).eval()
    _randomize_bn_buffers(model, seed=2)
    save_for_hf(model, str(tmp_path), safe_serialization=True)  # no model_args: the model's own in_chans
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["architecture"] == name
    assert config["model_args"]["in_chans"] == in_chans and config["model_args"]["num_classes"] == num_classes

    torch.manual_seed(3)  # a different random init: only loading the folder's weights can match
    plain = timm.create_model(f"local-dir:{tmp_path}", pretrained=True).eval()
    assert type(plain) is type(model) and plain.num_classes == num_classes and plain.in_chans == in_chans
    x = torch.rand(2, in_chans, side, side, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        assert torch.equal(plain(x), model(x))  # same float32 weights, kernels and threads
    theirs = plain.state_dict()
    assert all(torch.equal(theirs[k], v) for k, v in model.state_dict().items())
