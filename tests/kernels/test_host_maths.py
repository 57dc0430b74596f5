"""The kernels' per-element maths, compiled for the host (the same headers the CUDA kernels
include) and compared with PyTorch on the CPU: warp against blocks.warp / grid_sample,
attention against scaled-dot-product attention in float64."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mnt.export.model.blocks import warp
from mnt.kernels.errors import KernelError
from mnt.kernels.launch import cross_attention_launch, warp_launch
from mnt.kernels.loader import host_library
from tests.tolerances import KERNEL_ATTN_F32_MAX_ABS, KERNEL_F16_MAX_ULP, KERNEL_WARP_F32_MAX_ABS

# (N, C, H, W, pool factor): single pixel, odd and non-square sizes, every factor.
WARP_SHAPES = [(1, 1, 1, 1, 1), (2, 3, 5, 7, 1), (2, 4, 8, 6, 2), (1, 5, 16, 16, 4), (1, 3, 32, 20, 2),
               (2, 2, 3, 9, 4), (1, 8, 64, 64, 1), (1, 4, 128, 96, 2)]
FLOWS = ("small", "outside")
# (B, Lq, K targets, tokens per target, D, Dv, logit sharpness).
ATTN_CASES = [(1, 64, k, 16, 64, 64, 1.0) for k in range(1, 9)] + [
    (2, 5, 2, 9, 48, 80, 1.0),  # B > 1, Lq not a multiple of 4, Lk not of the key tile, D != Dv
    (1, 8, 2, 16, 512, 512, 1.0),  # the widest supported head (the paper's bottleneck)
    (1, 33, 8, 16, 64, 64, 6.0),  # sharp logits: the running max moves between tiles
    (1, 4, 1, 1, 32, 32, 1.0),  # a single key
]


@pytest.fixture(scope="module")
def host():
    return host_library()


def _f16_within(out: np.ndarray, ref: np.ndarray, f32_abs: float) -> float:
    """Max of |out - ref| in FP16 steps of ref, after allowing the FP32 bound; asserts it."""
    step = np.spacing(np.abs(ref).astype(np.float16)).astype(np.float64)
    excess = np.maximum(np.abs(out.astype(np.float64) - ref) - f32_abs, 0.0) / step
    return float(excess.max())


def _flow(rng: np.random.Generator, kind: str, shape: tuple[int, ...]) -> np.ndarray:
    if kind == "small":
        return (rng.standard_normal(shape) * 0.2).astype(np.float32)
    return rng.uniform(-3.0, 3.0, shape).astype(np.float32)  # most taps beyond the border


@pytest.mark.parametrize("kind", FLOWS)
@pytest.mark.parametrize("shape", WARP_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_warp_matches_pytorch(host, shape, kind):
    n, c, height, width, factor = shape
    rng = np.random.default_rng(sum(shape))
    features = rng.standard_normal((n, c, height, width)).astype(np.float32)
    flow = _flow(rng, kind, (n, 2, height * factor, width * factor))

    ref = warp(torch.from_numpy(features), torch.from_numpy(flow)).numpy()
    err32 = float(np.abs(host.warp(features, flow) - ref).max())
    assert err32 <= KERNEL_WARP_F32_MAX_ABS, f"fp32 max abs {err32:.2e}"

    half = features.astype(np.float16)
    ref16 = warp(torch.from_numpy(half), torch.from_numpy(flow)).numpy().astype(np.float64)
    out16 = host.warp(half, flow)
    assert out16.dtype == np.float16
    assert _f16_within(out16, ref16, KERNEL_WARP_F32_MAX_ABS) <= KERNEL_F16_MAX_ULP


@pytest.mark.parametrize("factor", [1, 2, 4])
def test_warp_integer_shifts_are_exact(host, factor):
    """Power-of-two sizes and flows of whole pixels make every coordinate exact in FP32:
    the output is the input shifted, bit for bit, with zeros where it left the image."""
    n, c, height, width = 1, 3, 16, 32
    features = np.random.default_rng(1).standard_normal((n, c, height, width)).astype(np.float32)
    dx, dy = 3, -5  # pixels
    flow = np.empty((n, 2, height * factor, width * factor), np.float32)
    flow[:, 0], flow[:, 1] = dx * 2.0 / width, dy * 2.0 / height
    expected = np.zeros_like(features)
    rows_out, rows_in = slice(max(0, -dy), height - max(0, dy)), slice(max(0, dy), height + min(0, dy))
    expected[..., rows_out, :width - dx] = features[..., rows_in, dx:]
    np.testing.assert_array_equal(host.warp(features, flow), expected)
    np.testing.assert_array_equal(host.warp(features.astype(np.float16), flow), expected.astype(np.float16))


def test_warp_far_outside_is_zero(host):
    features = np.ones((1, 2, 4, 4), np.float32)
    flow = np.full((1, 2, 8, 8), 1e30, np.float32)
    flow[:, :, :4] = -1e30
    assert not host.warp(features, flow).any()


def test_warp_pools_the_flow(host):
    """A factor-2 flow gives the same result as its 2x2 mean at the features' size."""
    rng = np.random.default_rng(2)
    features = rng.standard_normal((1, 4, 6, 10)).astype(np.float32)
    fine = (rng.standard_normal((1, 2, 12, 20)) * 0.3).astype(np.float32)
    pooled = fine.reshape(1, 2, 6, 2, 10, 2).transpose(0, 1, 2, 4, 3, 5).reshape(1, 2, 6, 10, 4)
    pooled = ((pooled[..., 0] + pooled[..., 1]) + (pooled[..., 2] + pooled[..., 3])) / np.float32(4)
    np.testing.assert_allclose(host.warp(features, fine), host.warp(features, pooled), atol=1e-6)


@pytest.mark.parametrize("case", ATTN_CASES, ids=lambda c: "-".join(map(str, c)))
def test_cross_attention_matches_sdpa(host, case):
    b, lq, k, tokens, d, dv, sharp = case
    lk = k * tokens
    rng = np.random.default_rng(lq * 1000 + lk + d)
    query = (rng.standard_normal((b, lq, d)) * sharp).astype(np.float32)
    keys = rng.standard_normal((b, lk, d)).astype(np.float32)
    values = rng.standard_normal((b, lk, dv)).astype(np.float32)

    def reference(*xs: np.ndarray) -> np.ndarray:
        return F.scaled_dot_product_attention(*(torch.from_numpy(x).double() for x in xs)).numpy()

    err32 = float(np.abs(host.cross_attention(query, keys, values) - reference(query, keys, values)).max())
    assert err32 <= KERNEL_ATTN_F32_MAX_ABS, f"fp32 max abs {err32:.2e}"

    halves = [x.astype(np.float16) for x in (query, keys, values)]
    out16 = host.cross_attention(*halves)
    assert out16.dtype == np.float16 and out16.shape == (b, lq, dv)
    assert _f16_within(out16, reference(*halves), KERNEL_ATTN_F32_MAX_ABS) <= KERNEL_F16_MAX_ULP


def test_shape_errors_name_the_problem(host):
    with pytest.raises(KernelError, match="does not pool"):
        host.warp(np.zeros((1, 1, 4, 4), np.float32), np.zeros((1, 2, 6, 6), np.float32))
    with pytest.raises(KernelError, match="at most 512"):
        host.cross_attention(*(np.zeros((1, 2, 513), np.float32),) * 3)
    with pytest.raises(KernelError, match="float32"):
        host.warp(np.zeros((1, 1, 4, 4), np.float32), np.zeros((1, 2, 4, 4), np.float16))


def test_half_conversion_is_exact(host):
    """The host's FP16 storage rounds like __float2half_rn / numpy: all 65536 halves back and
    forth, the ties between neighbours, overflow and the subnormal range."""
    every = np.arange(2**16, dtype=np.uint16).view(np.float16)
    as_float = host.f16_to_f32(every)
    np.testing.assert_array_equal(as_float, every.astype(np.float32))  # NaN == NaN here
    finite = every[np.isfinite(every)]
    f32 = np.sort(finite.astype(np.float32))
    midpoints = ((f32[:-1].astype(np.float64) + f32[1:]) / 2).astype(np.float32)  # exact ties
    rng = np.random.default_rng(3)
    probes = np.concatenate([f32, midpoints, np.nextafter(midpoints, np.float32(np.inf)),
                             np.nextafter(midpoints, np.float32(-np.inf)),
                             np.array([65504, 65519.99, 65520, 1e6, -1e6, np.inf, -np.inf, 1e-8, -3e-8],
                                      np.float32),
                             rng.standard_normal(10**5) * 10.0 ** rng.integers(-9, 5, 10**5)])
    probes = probes.astype(np.float32)
    with np.errstate(over="ignore"):
        expected = probes.astype(np.float16)
    np.testing.assert_array_equal(host.f32_to_f16(probes).view(np.uint16), expected.view(np.uint16))
    assert np.isnan(host.f32_to_f16(np.array([np.nan], np.float32))).all()


def test_launch_geometry_matches_headers(host):
    """mnt.kernels.launch (for plugin callers) computes what the compiled launchers do."""
    rng = np.random.default_rng(4)
    for _ in range(200):
        n, c, height, width = (int(v) for v in rng.integers(1, 300, 4))
        factor = int(rng.integers(1, 5))
        valid = host.lib.mnt_warp_check_shapes(n, c, height, width, height * factor, width * factor) == 0
        assert valid
        launch = warp_launch("float16", n, c, height, width, height * factor, width * factor)
        assert launch.grid[0] == host.lib.mnt_warp_grid_x(n, height, width)
        assert launch.grid[0] * launch.block[0] >= n * height * width > (launch.grid[0] - 1) * launch.block[0]
        assert host.lib.mnt_warp_check_shapes(n, c, height, width, height * factor + 1, width * factor) != 0
        with pytest.raises(KernelError):
            warp_launch("float32", n, c, height, width, height * factor + 1, width * factor)
        b, lq, lk, d, dv = (int(v) for v in rng.integers(1, 700, 5))
        ok = host.lib.mnt_cross_attention_check_shapes(b, lq, lk, d, dv) == 0
        assert ok == (d <= 512 and dv <= 512)
        if ok:
            launch = cross_attention_launch("float32", b, lq, lk, d, dv)
            assert launch.grid == (host.lib.mnt_cross_attention_grid_x(lq), b, 1)
            assert launch.scalars == (b, lq, lk, d, dv) and launch.kernel == "mnt_cross_attention_kernel_f32"
            assert 1 <= host.lib.mnt_cross_attention_key_tile(d, dv, 4) <= 16
        else:
            with pytest.raises(KernelError, match="at most 512"):
                cross_attention_launch("float32", b, lq, lk, d, dv)
