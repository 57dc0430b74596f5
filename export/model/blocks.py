"""BigGAN-style residual blocks (Brock et al. 2019, as the paper's supplement A1 uses
them) with ReLU, optional instance norm, and spectral norm on every layer."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import spectral_norm

from mnt.kernels.spec import torch_name

# FP32 islands: where the model runs in float16, these computations run in float32
# (float64 stays float64). Measured with `mnt-export islands` (tiny, float16 frame against
# float64: 56.6 dB with all islands, 43.9 dB with none; README):
#   flow:    flow heads, sampling coordinates, bilinear sampling. Without it 43.9 dB: an FP16
#            grid is off by up to 1/2048 of the image, and every later warp amplifies it.
#   norm:    instance-norm statistics. Without it 55.9 dB.
#   softmax: attention logits and softmax. No loss at init (attention is near uniform);
#            kept for trained models, whose sharp attention loses small weights in FP16.
ISLANDS = ("flow", "softmax", "norm")
_active_islands: set[str] = set(ISLANDS)


@contextlib.contextmanager
def fp32_islands(*names: str) -> Iterator[None]:
    """Trace or run with only the named islands active (to measure what each buys)."""
    unknown = set(names) - set(ISLANDS)
    if unknown:
        raise ValueError(f"unknown FP32 islands {sorted(unknown)}; known: {ISLANDS}")
    saved = set(_active_islands)
    _active_islands.clear()
    _active_islands.update(names)
    try:
        yield
    finally:
        _active_islands.clear()
        _active_islands.update(saved)


# Plugin ops: while `plugin_ops()` is active, warp() and the attention core run as the custom
# ops mnt::warp / mnt::cross_attention, which export/onnx/custom_ops.py translates to single
# `mnt::Warp` / `mnt::CrossAttention` ONNX nodes (the op contract: kernels/<op>/spec.json,
# which also names the torch ops). Same maths.
_plugin_ops = False


@contextlib.contextmanager
def plugin_ops() -> Iterator[None]:
    """Trace or run with warp and attention as the custom ops TensorRT maps to our kernels."""
    global _plugin_ops
    saved, _plugin_ops = _plugin_ops, True
    try:
        yield
    finally:
        _plugin_ops = saved


def plugin_ops_active() -> bool:
    return _plugin_ops


def island_dtype(x: torch.Tensor, island: str) -> torch.dtype:
    """The dtype an island computes in: at least float32 while it is active."""
    return torch.promote_types(x.dtype, torch.float32) if island in _active_islands else x.dtype


def conv(cin: int, cout: int, kernel: int = 3) -> nn.Module:
    return spectral_norm(nn.Conv2d(cin, cout, kernel, padding=kernel // 2))


def linear(cin: int, cout: int, bias: bool = True) -> nn.Module:
    return spectral_norm(nn.Linear(cin, cout, bias=bias))


def spatial_mean(x: torch.Tensor) -> torch.Tensor:
    """Mean over H and W as two reductions (rows, then columns): the same value, but an
    exported single ReduceMean over 256x256 accumulates sequentially in ONNX Runtime and
    lost ~400x accuracy (max abs 8e-4 against float64 after one driver block, PyTorch
    float32 2e-6); two reductions of 256 keep it at PyTorch's level."""
    return x.mean(dim=3, keepdim=True).mean(dim=2, keepdim=True)


class InstanceNorm(nn.InstanceNorm2d):
    """Affine instance norm with two-pass statistics (an FP32 island), written out rather
    than F.instance_norm: ONNX InstanceNormalization on ONNX Runtime's CPU lost as much
    accuracy as the single ReduceMean (5.8e-4 max abs on the driver encoder)."""

    def __init__(self, channels: int) -> None:
        super().__init__(channels, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dt = island_dtype(x, "norm")
        h = x.to(dt)
        centred = h - spatial_mean(h)
        out = centred * torch.rsqrt(spatial_mean(centred * centred) + self.eps)
        out = out * self.weight.to(dt)[:, None, None] + self.bias.to(dt)[:, None, None]
        return out.to(x.dtype)


def norm(channels: int, enabled: bool) -> nn.Module:
    return InstanceNorm(channels) if enabled else nn.Identity()


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
        """-> flow in the island's dtype (float32 when the model runs in float16)."""
        dt = island_dtype(x, "flow")
        w, b = self.conv.weight.to(dt), self.conv.bias.to(dt)
        return torch.tanh(F.conv2d(F.relu(x).to(dt), w, b, padding=self.conv.padding))


def identity_grid(height: int, width: int, like: torch.Tensor) -> torch.Tensor:
    """(1, H, W, 2) pixel-centre coordinates for grid_sample with align_corners=False."""
    ys = (torch.arange(height, dtype=like.dtype, device=like.device) * 2 + 1) / height - 1
    xs = (torch.arange(width, dtype=like.dtype, device=like.device) * 2 + 1) / width - 1
    return torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1).unsqueeze(0)


def _pool_factor(features: torch.Tensor, flow: torch.Tensor) -> int:
    height, width = features.shape[-2:]
    factor = flow.shape[-2] // height
    if factor < 1 or flow.shape[-2] != height * factor or flow.shape[-1] != width * factor:
        raise ValueError(f"flow {tuple(flow.shape)} does not pool to {height}x{width}")
    return factor


def _sample(features: torch.Tensor, flow: torch.Tensor, dt: torch.dtype) -> torch.Tensor:
    """The warp's maths with coordinates and sampling in `dt`, the result in features' dtype."""
    factor = _pool_factor(features, flow)
    if factor > 1:
        flow = F.avg_pool2d(flow, factor)
    flow = flow.to(dt)
    grid = identity_grid(*features.shape[-2:], flow) + flow.permute(0, 2, 3, 1)
    sampled = F.grid_sample(features.to(dt), grid, mode="bilinear", padding_mode="zeros",
                            align_corners=False)
    return sampled.to(features.dtype)


@torch.library.custom_op(torch_name("warp"), mutates_args=())
def warp_op(features: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """mnt::Warp: FP32 coordinates and sampling (float64 stays float64), storage in T."""
    return _sample(features, flow, torch.promote_types(features.dtype, torch.float32))


@warp_op.register_fake
def _(features: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    _pool_factor(features, flow)
    return torch.empty_like(features)


def warp(features: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """T(s; f): bilinearly sample `features` (N, C, H, W) at the identity grid plus `flow`
    (N, 2, h, w), average-pooled to H x W first when it is finer (zeros padding)."""
    if _plugin_ops:  # the contract's flow is float32 whatever the islands say
        return warp_op(features, flow.to(torch.promote_types(flow.dtype, torch.float32)))
    return _sample(features, flow, island_dtype(features, "flow"))


def fold_spectral_norm(module: nn.Module) -> nn.Module:
    """Replace every spectral-norm parametrisation by its plain weight W / sigma (in place),
    as it is in eval mode. Export calls this; the result computes the same function."""
    module.eval()  # in training mode the parametrisation would run a power iteration first
    for sub in module.modules():
        if parametrize.is_parametrized(sub):
            for name in list(sub.parametrizations.keys()):
                parametrize.remove_parametrizations(sub, name, leave_parametrized=True)
    return module
