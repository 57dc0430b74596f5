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

from mnt.export.model.blocks import InstanceNorm, conv, island_dtype, linear, plugin_ops_active
from mnt.kernels.spec import torch_name


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


def _attend(query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, dt: torch.dtype,
            weighted_in: torch.dtype) -> torch.Tensor:
    """softmax(Q Kᵀ / √D) V: logits and softmax in `dt`, the weighted sum in `weighted_in`."""
    logits = query.to(dt) @ keys.to(dt).transpose(1, 2) / math.sqrt(query.shape[-1])
    weights = torch.softmax(logits, dim=-1).to(weighted_in)
    return (weights @ values.to(weighted_in)).to(values.dtype)


@torch.library.custom_op(torch_name("cross_attention"), mutates_args=())
def cross_attention_op(query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """mnt::CrossAttention: logits, softmax and weighted sum in FP32 (float64 stays), storage T."""
    dt = torch.promote_types(query.dtype, torch.float32)
    return _attend(query, keys, values, dt, dt)


@cross_attention_op.register_fake
def _(query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    return values.new_empty((*query.shape[:-1], values.shape[-1]))


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
        if plugin_ops_active():
            attended = cross_attention_op(query, keys, values)
        else:
            attended = _attend(query, keys, values, island_dtype(query, "softmax"), values.dtype)
        attended = attended.transpose(1, 2).reshape(b, c, h, w)
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
