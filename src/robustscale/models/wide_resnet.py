"""CIFAR wide ResNets (Zagoruyko & Komodakis 2016), registered in timm.

Two flavours with identical parameter counts:
- classic (``wide_resnet28_10``): pre-activation blocks with ReLU, as in the TRADES /
  RobustBench WRN;
- DeepMind (``wide_resnet28_10_dm``): SiLU/Swish and BatchNorm momentum 0.01 (PyTorch
  convention, i.e. 0.99 in TF), as in Gowal et al. 2020's model zoo.

Depth must be 6n+4: n blocks in each of 3 groups, widths (16, 16k, 32k, 64k). WRN-10-1 (one block per
group, 78k parameters) is the CPU demo's net. Fractional widths (``wide_resnet10_0p25`` = WRN-10-0.25,
5.7k parameters on 1-channel input, groups of 4, 8 and 16 channels) give CPU scaling studies models small enough to be
capacity-limited on Fashion-MNIST; their group widths are rounded to whole channels.
Input (N, C, H, W) normalized; output (N, num_classes) logits.
"""
from __future__ import annotations

import torch
from torch import nn
from timm.layers import get_act_layer
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model

__all__ = ["WideResNet", "wide_resnet"]


class _Block(nn.Module):
    """Pre-activation basic block: BN-act-conv3x3-BN-act-(dropout)-conv3x3 + shortcut."""

    def __init__(self, in_chs: int, out_chs: int, stride: int, act_layer, bn_momentum: float, drop_rate: float):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_chs, momentum=bn_momentum)
        self.act1 = act_layer(inplace=True)
        self.conv1 = nn.Conv2d(in_chs, out_chs, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_chs, momentum=bn_momentum)
        self.act2 = act_layer(inplace=True)
        self.drop = nn.Dropout(drop_rate) if drop_rate > 0 else nn.Identity()
        self.conv2 = nn.Conv2d(out_chs, out_chs, 3, stride=1, padding=1, bias=False)
        self.equal_in_out = in_chs == out_chs and stride == 1
        self.shortcut = None if self.equal_in_out else nn.Conv2d(in_chs, out_chs, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.act1(self.bn1(x))
        out = self.conv1(pre)
        out = self.conv2(self.drop(self.act2(self.bn2(out))))
        # The projection shortcut sees the pre-activated input (as in the reference WRN).
        return out + (x if self.shortcut is None else self.shortcut(pre))


class WideResNet(nn.Module):
    """CIFAR-style wide ResNet (depth = 6n+4, width k)."""

    def __init__(
        self,
        depth: int = 28,
        width: float = 10,
        num_classes: int = 10,
        in_chans: int = 3,
        act_layer: str = "relu",
        bn_momentum: float = 0.1,
        drop_rate: float = 0.0,
        **kwargs,
    ):
        super().__init__()
        if (depth - 4) % 6 != 0 or depth < 10:
            raise ValueError(f"WideResNet depth must be 6n+4 with n >= 1, got {depth}")
        n = (depth - 4) // 6
        if width <= 0 or round(16 * width) < 1:
            raise ValueError(f"WideResNet width must give at least one channel in the first group, got {width}")
        widths = [16] + [int(round(c * width)) for c in (16, 32, 64)]
        act = get_act_layer(act_layer)
        self.num_classes = num_classes
        self.in_chans = in_chans  # timm reads it (export's model_args, input-conv adaptation)
        self.num_features = widths[3]
        self.drop_rate = drop_rate
        self.stem = nn.Conv2d(in_chans, widths[0], 3, stride=1, padding=1, bias=False)
        stages = []
        in_chs = widths[0]
        for i, (out_chs, stride) in enumerate(zip(widths[1:], (1, 2, 2))):
            blocks = [_Block(in_chs if j == 0 else out_chs, out_chs, stride if j == 0 else 1, act, bn_momentum, drop_rate)
                      for j in range(n)]
            stages.append(nn.Sequential(*blocks))
            in_chs = out_chs
        self.stages = nn.Sequential(*stages)
        self.norm = nn.BatchNorm2d(widths[3], momentum=bn_momentum)
        self.act = act(inplace=True)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[3], num_classes) if num_classes > 0 else nn.Identity()
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.stages(self.stem(x))))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.pool(x).flatten(1)
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def wide_resnet(depth: int, width: float, activation: str = "relu", num_classes: int = 10, in_chans: int = 3,
                **kwargs) -> WideResNet:
    """Any CIFAR WRN: ``activation='relu'`` (classic) or ``'silu'`` with BN momentum 0.01 (DeepMind)."""
    if activation in ("silu", "swish"):
        kwargs.setdefault("bn_momentum", 0.01)
    return WideResNet(depth=depth, width=width, num_classes=num_classes, in_chans=in_chans, act_layer=activation,
                      **kwargs)


_SIZES = [(10, 0.125), (10, 0.1875), (10, 0.25), (10, 0.5), (16, 0.25), (16, 0.5),  # fractional: the CPU scaling study's sizes
          (10, 1), (10, 2), (16, 1), (16, 2), (16, 4), (16, 8), (28, 10), (34, 10), (34, 20), (70, 16), (106, 16)]


def _cfg(**kwargs):
    return {"num_classes": 10, "input_size": (3, 32, 32), "pool_size": (8, 8), "crop_pct": 1.0,
            "interpolation": "bilinear", "mean": (0.4914, 0.4822, 0.4465), "std": (0.2471, 0.2435, 0.2616),
            "first_conv": "stem", "classifier": "fc", **kwargs}


def _width_name(width: float) -> str:
    """``1`` -> ``"1"``, ``0.25`` -> ``"0p25"`` (a dot cannot stand in a timm model name)."""
    return str(int(width)) if float(width).is_integer() else str(width).replace(".", "p")


default_cfgs = generate_default_cfgs(
    {f"wide_resnet{d}_{_width_name(w)}{s}": _cfg() for d, w in _SIZES for s in ("", "_dm")})


def _create(variant: str, depth: int, width: float, dm: bool, pretrained: bool = False, **kwargs) -> WideResNet:
    if dm:
        kwargs.setdefault("act_layer", "silu")
        kwargs.setdefault("bn_momentum", 0.01)
    return build_model_with_cfg(WideResNet, variant, pretrained, depth=depth, width=width, **kwargs)


def _register(depth: int, width: float, dm: bool):
    name = f"wide_resnet{depth}_{_width_name(width)}{'_dm' if dm else ''}"

    def entry(pretrained: bool = False, **kwargs) -> WideResNet:
        return _create(name, depth, width, dm, pretrained, **kwargs)

    entry.__name__ = name
    entry.__doc__ = f"WRN-{depth}-{width} for 32x32 inputs ({'SiLU, BN momentum 0.01' if dm else 'ReLU'})."
    entry.__module__ = __name__
    globals()[name] = register_model(entry)


for _d, _w in _SIZES:
    _register(_d, _w, False)
    _register(_d, _w, True)

