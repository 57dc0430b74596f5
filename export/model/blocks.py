"""BigGAN-style residual blocks (Brock et al. 2019, as the paper's supplement A1 uses
them) with ReLU, optional instance norm, and spectral norm on every layer."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import spectral_norm


def conv(cin: int, cout: int, kernel: int = 3) -> nn.Module:
    return spectral_norm(nn.Conv2d(cin, cout, kernel, padding=kernel // 2))


def linear(cin: int, cout: int, bias: bool = True) -> nn.Module:
    return spectral_norm(nn.Linear(cin, cout, bias=bias))


def norm(channels: int, enabled: bool) -> nn.Module:
    return nn.InstanceNorm2d(channels, affine=True) if enabled else nn.Identity()


class ResBlockDown(nn.Module):
    """norm-ReLU-conv3x3, norm-ReLU-conv3x3, 2x average pool; 1x1 conv shortcut."""

    def __init__(self, cin: int, cout: int, normalize: bool) -> None:
        super().__init__()
        self.norm1, self.conv1 = norm(cin, normalize), conv(cin, cout)
        self.norm2, self.conv2 = norm(cout, normalize), conv(cout, cout)
        self.skip = conv(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.relu(self.norm1(x)))
        h = self.conv2(F.relu(self.norm2(h)))
        # Pool before the 1x1 shortcut: the same function (both are linear), 4x cheaper.
        return F.avg_pool2d(h, 2) + self.skip(F.avg_pool2d(x, 2))


class ResBlockUp(nn.Module):
    """norm-ReLU, 2x nearest upsample, conv3x3, norm-ReLU-conv3x3; 1x1 conv shortcut."""

    def __init__(self, cin: int, cout: int, normalize: bool) -> None:
        super().__init__()
        self.norm1, self.conv1 = norm(cin, normalize), conv(cin, cout)
        self.norm2, self.conv2 = norm(cout, normalize), conv(cout, cout)
        self.skip = conv(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.interpolate(F.relu(self.norm1(x)), scale_factor=2.0, mode="nearest")
        h = self.conv2(F.relu(self.norm2(self.conv1(h))))
        # 1x1 conv before the nearest upsample: the same function, 4x cheaper.
        return h + F.interpolate(self.skip(x), scale_factor=2.0, mode="nearest")


class FlowHead(nn.Module):
    """ReLU, conv, tanh -> a 2-channel flow: offsets (x, y) from the identity sampling grid
    in normalised [-1, 1] coordinates, bounded by the tanh.

    Not spectrally normalised: spectral norm pins a layer's gain at 1, so a flow head
    could not start near zero. Small initial weights keep a random model's warps tame.
    """

    def __init__(self, cin: int, kernel: int, init_std: float) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, 2, kernel, padding=kernel // 2)
        nn.init.normal_(self.conv.weight, std=init_std)
        nn.init.zeros_(self.conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.conv(F.relu(x)))


def identity_grid(height: int, width: int, like: torch.Tensor) -> torch.Tensor:
    """(1, H, W, 2) pixel-centre coordinates for grid_sample with align_corners=False."""
    ys = (torch.arange(height, dtype=like.dtype, device=like.device) * 2 + 1) / height - 1
    xs = (torch.arange(width, dtype=like.dtype, device=like.device) * 2 + 1) / width - 1
    return torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1).unsqueeze(0)


def warp(features: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """T(s; f): bilinearly sample `features` (N, C, H, W) at the identity grid plus `flow`
    (N, 2, h, w), average-pooled to H x W first when it is finer (zeros padding)."""
    height, width = features.shape[-2:]
    if flow.shape[-2:] != (height, width):
        factor = flow.shape[-2] // height
        if factor < 1 or flow.shape[-2] != height * factor or flow.shape[-1] != width * factor:
            raise ValueError(f"flow {tuple(flow.shape)} does not pool to {height}x{width}")
        flow = F.avg_pool2d(flow, factor)
    grid = identity_grid(height, width, flow) + flow.permute(0, 2, 3, 1)
    return F.grid_sample(features, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def fold_spectral_norm(module: nn.Module) -> nn.Module:
    """Replace every spectral-norm parametrisation by its plain weight W / sigma (in place),
    as it is in eval mode. Export calls this; the result computes the same function."""
    module.eval()  # in training mode the parametrisation would run a power iteration first
    for sub in module.modules():
        if parametrize.is_parametrized(sub):
            for name in list(sub.parametrizations.keys()):
                parametrize.remove_parametrizations(sub, name, leave_parametrized=True)
    return module
