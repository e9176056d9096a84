"""ResNets with a CIFAR stem (3x3 conv, stride 1, no max-pool), registered in timm.

``resnet18_32`` / ``resnet50_32`` are timm ResNets with the stem swapped; ``preact_resnet18``
is the pre-activation ResNet-18 of He et al. 2016 as used by Wong et al. 2020 and Rice et al. 2020.
"""
from __future__ import annotations

import torch
from torch import nn
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models.resnet import BasicBlock, Bottleneck, ResNet

_CIFAR_CFG = {"num_classes": 10, "input_size": (3, 32, 32), "pool_size": (4, 4), "crop_pct": 1.0,
              "interpolation": "bilinear", "mean": (0.4914, 0.4822, 0.4465), "std": (0.2471, 0.2435, 0.2616),
              "first_conv": "conv1", "classifier": "fc"}

default_cfgs = generate_default_cfgs({name: dict(_CIFAR_CFG) for name in
                                      ("resnet18_32", "resnet50_32", "preact_resnet18")})


def _cifar_stem_resnet(in_chans: int = 3, **kwargs) -> ResNet:
    """A timm ResNet with its stem swapped for a 3x3 stride-1 conv and no max-pool.

    The swap keeps the module names (``conv1``, ``maxpool``), so state dicts keep timm's ResNet keys.
    """
    model = ResNet(in_chans=in_chans, **kwargs)
    model.conv1 = nn.Conv2d(in_chans, 64, 3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    return model


def _create(model_cls, variant: str, pretrained: bool, **kwargs):
    # timm's builder: pretrained_cfg, pretrained loading (hf-hub:, local-dir:, file) and features_only.
    return build_model_with_cfg(model_cls, variant, pretrained, **kwargs)


@register_model
def resnet18_32(pretrained: bool = False, **kwargs) -> ResNet:
    """ResNet-18 with a CIFAR stem (11.2M parameters at 10 classes)."""
    return _create(_cifar_stem_resnet, "resnet18_32", pretrained, block=BasicBlock, layers=[2, 2, 2, 2], **kwargs)


@register_model
def resnet50_32(pretrained: bool = False, **kwargs) -> ResNet:
    """ResNet-50 with a CIFAR stem (23.5M parameters at 10 classes)."""
    return _create(_cifar_stem_resnet, "resnet50_32", pretrained, block=Bottleneck, layers=[3, 4, 6, 3], **kwargs)


class _PreActBlock(nn.Module):
    def __init__(self, in_chs: int, out_chs: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_chs)
        self.conv1 = nn.Conv2d(in_chs, out_chs, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_chs)
        self.conv2 = nn.Conv2d(out_chs, out_chs, 3, stride=1, padding=1, bias=False)
        self.shortcut = (nn.Conv2d(in_chs, out_chs, 1, stride=stride, bias=False)
                         if stride != 1 or in_chs != out_chs else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = torch.relu(self.bn1(x))
        shortcut = x if self.shortcut is None else self.shortcut(pre)
        out = self.conv2(torch.relu(self.bn2(self.conv1(pre))))
        return out + shortcut


class PreActResNet(nn.Module):
    """Pre-activation ResNet for 32x32 inputs. Input (N, C, 32, 32); output (N, num_classes)."""

    def __init__(self, layers=(2, 2, 2, 2), num_classes: int = 10, in_chans: int = 3, **kwargs):
        super().__init__()
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.num_features = 512
        self.conv1 = nn.Conv2d(in_chans, 64, 3, stride=1, padding=1, bias=False)
        blocks, in_chs = [], 64
        for i, (n, out_chs) in enumerate(zip(layers, (64, 128, 256, 512))):
            for j in range(n):
                blocks.append(_PreActBlock(in_chs, out_chs, 2 if (j == 0 and i > 0) else 1))
                in_chs = out_chs
        self.layers = nn.Sequential(*blocks)
        self.bn = nn.BatchNorm2d(512)
        self.fc = nn.Linear(512, num_classes) if num_classes > 0 else nn.Identity()

    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.bn(self.layers(self.conv1(x))))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


@register_model
def preact_resnet18(pretrained: bool = False, **kwargs) -> PreActResNet:
    """Pre-activation ResNet-18 (11.2M parameters at 10 classes)."""
    return _create(PreActResNet, "preact_resnet18", pretrained, layers=(2, 2, 2, 2), **kwargs)
