"""Landmark disentangler M (paper, Fig. 5; supplement B): ResNet features of the face
image, concatenated with l̄ - l̄m, through a 2-layer MLP -> 48 normalised expression
coefficients. The ResNet is written here: torchvision cannot be imported beside the
CPU torch of this project's machines."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mnt.export.model.config import BackboneConfig, ModelConfig
from mnt.runtime.landmarks import N_EXPRESSION, N_POINTS

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


class _Basic(nn.Module):
    expansion = 1
    last_bn = "bn2"

    def __init__(self, cin: int, width: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, width, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))


class _Bottleneck(nn.Module):
    expansion = 4
    last_bn = "bn3"

    def __init__(self, cin: int, width: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, width * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(width * 4)

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.bn1(self.conv1(x)))
        h = F.relu(self.bn2(self.conv2(h)))
        return self.bn3(self.conv3(h))


class _Stage(nn.Module):
    def __init__(self, kind: type[_Basic] | type[_Bottleneck], cin: int, width: int,
                 blocks: int, stride: int) -> None:
        super().__init__()
        cout = width * kind.expansion
        self.blocks = nn.ModuleList(
            kind(cin if i == 0 else cout, width, stride if i == 0 else 1) for i in range(blocks)
        )
        self.shortcut = (
            nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
            if stride != 1 or cin != cout else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, block in enumerate(self.blocks):
            skip = self.shortcut(x) if i == 0 else x
            x = F.relu(block.residual(x) + skip)
        return x


class ResNet(nn.Module):
    """He et al. 2016 (v1.5: stride in the 3x3 conv); features before the global pool,
    then pooled to a vector."""

    def __init__(self, config: BackboneConfig) -> None:
        super().__init__()
        kind = _Bottleneck if config.block == "bottleneck" else _Basic
        self.stem = nn.Sequential(
            nn.Conv2d(3, config.width, 7, 2, 3, bias=False), nn.BatchNorm2d(config.width),
            nn.ReLU(), nn.MaxPool2d(3, 2, 1),
        )
        stages, cin = [], config.width
        for i, blocks in enumerate(config.layers):
            width = config.width * 2**i
            stages.append(_Stage(kind, cin, width, blocks, 1 if i == 0 else 2))
            cin = width * kind.expansion
        self.stages = nn.Sequential(*stages)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if isinstance(module, (_Basic, _Bottleneck)):
                # A random deep ResNet doubles its activations' variance per block; small
                # last-BN gains keep an untrained one as tame as a trained one.
                nn.init.constant_(getattr(module, module.last_bn).weight, 0.2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x)).mean(dim=(2, 3))


class LandmarkDisentangler(nn.Module):
    """M(x, l̄): image (N, 3, H, W) in [-1, 1] and offsets l̄ - l̄m (N, 204) -> α̂ (N, 48)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.backbone = ResNet(config.backbone)
        self.mlp = nn.Sequential(
            nn.Linear(config.backbone.out_channels + N_POINTS * 3, config.disentangler_hidden),
            nn.ReLU(),
            nn.Linear(config.disentangler_hidden, N_EXPRESSION),
        )
        # ImageNet normalisation belongs to the backbone; constants, not checkpoint keys.
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, image: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        x = ((image + 1) * 0.5 - self.mean) / self.std
        return self.mlp(torch.cat([self.backbone(x), offsets], dim=1))
