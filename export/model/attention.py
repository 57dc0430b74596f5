"""The blender: image-attention blocks (paper, Fig. 3) with the sinusoidal positional
encoding of supplement Eq. 9.

Q = f(zx)Wq + f(Px)Wqp, K = f(Zy)Wk + f(Py)Wkp, V = f(Zy)Wv, A = softmax(QKᵀ/√d)V,
then residual and instance norm (the transformer's "add & norm") and a 3x3
convolution. Normalising the sum, not A alone, matters for conditioning: an untrained
block's attention is near uniform, so A alone is nearly constant over positions and
its instance norm would amplify rounding about tenfold. K and V depend on the targets only,
so they are computed once in the target phase (`keys_values`).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from mnt.export.model.blocks import InstanceNorm, conv, island_dtype, linear


def positional_encoding(height: int, width: int, channels: int, like: torch.Tensor) -> torch.Tensor:
    """Supplement Eq. 9 as an (H*W, C) tensor in `like`'s dtype (computed in float64):
    P[i, j, 4k..4k+3] = sin/cos(256 i / (H 10000^(2k/C))), sin/cos(256 j / (W 10000^(2k/C)))."""
    if channels % 4:
        raise ValueError(f"positional encoding needs channels divisible by 4, got {channels}")
    k = torch.arange(channels // 4, dtype=torch.float64)
    inv_freq = 10000.0 ** (-2.0 * k / channels)
    rows = (256.0 * torch.arange(height, dtype=torch.float64) / height)[:, None] * inv_freq
    cols = (256.0 * torch.arange(width, dtype=torch.float64) / width)[:, None] * inv_freq
    rows = rows[:, None, :].expand(height, width, -1)
    cols = cols[None, :, :].expand(height, width, -1)
    enc = torch.stack([rows.sin(), rows.cos(), cols.sin(), cols.cos()], dim=-1)
    return enc.reshape(height * width, channels).to(dtype=like.dtype, device=like.device)


class ImageAttention(nn.Module):
    def __init__(self, driver_channels: int, target_channels: int) -> None:
        super().__init__()
        cx, cy = driver_channels, target_channels
        self.dim = cx
        self.query, self.query_pos = linear(cx, cx), linear(cx, cx, bias=False)
        self.key, self.key_pos = linear(cy, cx), linear(cy, cx, bias=False)
        self.value = linear(cy, cx)
        self.norm = InstanceNorm(cx)
        self.conv = conv(cx, cx)

    def keys_values(self, zy: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Zy (B, K, C, h, w) -> keys and values (B, K*h*w, cx) over all targets' positions."""
        b, k, c, h, w = zy.shape
        tokens = zy.permute(0, 1, 3, 4, 2).reshape(b, k * h * w, c)
        pos = positional_encoding(h, w, c, zy).repeat(k, 1)
        return self.key(tokens) + self.key_pos(pos), self.value(tokens)

    def forward(self, zx: torch.Tensor, keys: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        b, c, h, w = zx.shape
        tokens = zx.flatten(2).transpose(1, 2)
        query = self.query(tokens) + self.query_pos(positional_encoding(h, w, c, zx))
        dt = island_dtype(query, "softmax")
        logits = query.to(dt) @ keys.to(dt).transpose(1, 2) / math.sqrt(self.dim)
        weights = torch.softmax(logits, dim=-1).to(values.dtype)
        attended = (weights @ values).transpose(1, 2).reshape(b, c, h, w)
        return self.conv(self.norm(zx + attended))


class Blender(nn.Module):
    """Three stacked image-attention blocks: B(zx, Zy) -> zxy."""

    def __init__(self, driver_channels: int, target_channels: int, blocks: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            ImageAttention(driver_channels, target_channels) for _ in range(blocks)
        )

    def keys_values(self, zy: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [block.keys_values(zy) for block in self.blocks]

    def forward(
        self, zx: torch.Tensor, keys_values: list[tuple[torch.Tensor, torch.Tensor]]
    ) -> torch.Tensor:
        for block, (keys, values) in zip(self.blocks, keys_values, strict=True):
            zx = block(zx, keys, values)
        return zx
