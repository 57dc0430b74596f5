"""mnt::Warp, every implementation (host reference, ONNX function, CUDA kernel, TensorRT
plugin; tests/kernels/implementations.py) against the PyTorch reference
`mnt.export.model.blocks.warp`: shapes from a single pixel to 128x96 with every pooling
factor, flows that stay near the identity, point mostly outside the image, or jump by
whole cells; float32 and float16 storage; exact cases; the GPU kernel against the host."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mnt.export.model.blocks import warp
from mnt.kernels.errors import KernelError
from tests.kernels.implementations import (
    f16_excess_ulp,
    implementation,
    max_abs,
    params,
    symbol_bounds,
)
from tests.tolerances import (
    KERNEL_F16_MAX_ULP,
    KERNEL_WARP_F32_MAX_ABS,
    MNT_OPS_FP16_MAX_REL,
    MNT_OPS_FP32_MAX_ABS,
)

# (N, C, H, W, pool factor): single pixel, odd and non-square sizes, every factor, the
# model's sizes (64 channels at 64x64, batch 8) and its largest map.
SHAPES = [(1, 1, 1, 1, 1), (2, 3, 5, 7, 1), (2, 4, 8, 6, 2), (1, 5, 16, 16, 4), (1, 3, 32, 20, 2),
          (2, 2, 3, 9, 4), (1, 8, 64, 64, 1), (1, 4, 128, 96, 2), (3, 7, 33, 20, 2), (1, 64, 64, 64, 4),
          (8, 32, 32, 32, 8), (1, 16, 128, 96, 2), (3, 5, 8, 12, 1), (3, 5, 8, 12, 2), (3, 5, 8, 12, 8)]
FLOWS = ("small", "outside", "cells")
DTYPES = ("float32", "float16")
SMALL_IMAGE_FACTORS = (1, 2, 8)  # on (3, 5, 8, 12): where the float64 bound holds
CASES = [((n, c, h, w), (n, 2, h * f, w * f)) for n, c, h, w, f in SHAPES] + [
    ((3, 5, 8, 12), (3, 2, 8 * f, 12 * f)) for f in SMALL_IMAGE_FACTORS]


@pytest.fixture(scope="module", params=params())
def impl(request, tmp_path_factory):
    chosen = implementation(request.param, tmp_path_factory.mktemp(request.param),
                            {"warp": symbol_bounds("warp", CASES)})
    yield chosen
    chosen.close()


def _flow(rng: np.random.Generator, kind: str, shape: tuple[int, ...], factor: int) -> np.ndarray:
    if kind == "small":
        return (rng.standard_normal(shape) * 0.2).astype(np.float32)
    if kind == "outside":
        return rng.uniform(-3.0, 3.0, shape).astype(np.float32)  # most taps beyond the border
    # Large offsets, constant over each f x f cell plus noise: pooling keeps some beyond ±1.
    n, _, height, width = shape
    coarse = 0.8 * np.tanh(rng.standard_normal((n, 2, height // factor, width // factor)))
    flow = np.repeat(np.repeat(coarse, factor, axis=2), factor, axis=3)
    return (flow + 0.01 * rng.standard_normal(flow.shape)).astype(np.float32)


def _reference(features: np.ndarray, flow: np.ndarray, double: bool = False) -> np.ndarray:
    x, f = torch.from_numpy(features), torch.from_numpy(flow)
    return warp(x.double(), f.double()).numpy() if double else warp(x, f).numpy()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", FLOWS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_warp_matches_pytorch(impl, shape, kind, dtype):
    """Against blocks.warp in the storage type (FP32 coordinates, as the model computes),
    and for FP16 also against float64: one rounding to FP16 of an FP32 result."""
    n, c, height, width, factor = shape
    rng = np.random.default_rng(sum(shape))
    features = rng.standard_normal((n, c, height, width)).astype(dtype)
    flow = _flow(rng, kind, (n, 2, height * factor, width * factor), factor)

    out = impl.run("warp", [features, flow])
    assert out.dtype == np.dtype(dtype) and out.shape == features.shape
    ref = _reference(features, flow)
    bound = KERNEL_WARP_F32_MAX_ABS * impl.fp32_factor
    if dtype == "float32":
        assert max_abs(out, ref) <= bound, f"fp32 max abs {max_abs(out, ref):.2e}"
    else:
        assert f16_excess_ulp(out, ref, bound) <= KERNEL_F16_MAX_ULP
        ref64 = _reference(features, flow, double=True)
        assert max_abs(out, ref64) <= MNT_OPS_FP16_MAX_REL * np.abs(ref64).max()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("factor", SMALL_IMAGE_FACTORS)
def test_warp_matches_float64_with_flows_outside_the_image(impl, dtype, factor):
    """On a small image (coordinates of a few pixels, so FP32 rounds them by little):
    within a few float32 ulps of float64."""
    rng = np.random.default_rng(factor)
    features = rng.standard_normal((3, 5, 8, 12)).astype(dtype)
    coarse = 0.8 * np.tanh(rng.standard_normal((3, 2, 8, 12)))
    flow = np.repeat(np.repeat(coarse, factor, axis=2), factor, axis=3)
    flow = (flow + 0.01 * rng.standard_normal(flow.shape)).astype(np.float32)
    out = impl.run("warp", [features, flow])
    assert out.dtype == np.dtype(dtype)
    reference = _reference(features, flow, double=True)
    assert (reference == 0).any()  # some samples came from outside the image
    error = max_abs(out, reference)
    if dtype == "float32":
        assert error < MNT_OPS_FP32_MAX_ABS * impl.fp32_factor, error
    else:
        assert error <= MNT_OPS_FP16_MAX_REL * np.abs(reference).max(), error


@pytest.mark.parametrize("factor", [1, 2, 4])
def test_warp_integer_shifts_are_exact(impl, factor):
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
    np.testing.assert_array_equal(impl.run("warp", [features, flow]), expected)
    np.testing.assert_array_equal(impl.run("warp", [features.astype(np.float16), flow]),
                                  expected.astype(np.float16))


def test_warp_far_outside_is_zero(impl, request):
    if impl.name == "onnx":  # strict: says so when a later ONNX Runtime gets it right
        request.node.add_marker(pytest.mark.xfail(strict=True, reason=(
            "ONNX Runtime's GridSample (CPU) returns 0.25, not 0, at coordinates of 1e30")))
    features = np.ones((1, 2, 4, 4), np.float32)
    flow = np.full((1, 2, 8, 8), 1e30, np.float32)
    flow[:, :, :4] = -1e30
    assert not impl.run("warp", [features, flow]).any()


def test_warp_pools_the_flow(impl):
    """A factor-2 flow gives the same result as its 2x2 mean at the features' size."""
    rng = np.random.default_rng(2)
    features = rng.standard_normal((1, 4, 6, 10)).astype(np.float32)
    fine = (rng.standard_normal((1, 2, 12, 20)) * 0.3).astype(np.float32)
    pooled = fine.reshape(1, 2, 6, 2, 10, 2).transpose(0, 1, 2, 4, 3, 5).reshape(1, 2, 6, 10, 4)
    pooled = ((pooled[..., 0] + pooled[..., 1]) + (pooled[..., 2] + pooled[..., 3])) / np.float32(4)
    np.testing.assert_allclose(impl.run("warp", [features, fine]), impl.run("warp", [features, pooled]),
                               atol=1e-6)


def test_host_shape_errors_name_the_problem():
    from mnt.kernels.loader import host_library

    host = host_library()
    with pytest.raises(KernelError, match="pooling factor"):
        host.warp(np.zeros((1, 1, 4, 4), np.float32), np.zeros((1, 2, 6, 6), np.float32))
    with pytest.raises(KernelError, match="float32"):
        host.warp(np.zeros((1, 1, 4, 4), np.float32), np.zeros((1, 2, 4, 4), np.float16))
    with pytest.raises(KernelError, match="N must be 1"):  # the flow's batch is the features'
        host.warp(np.zeros((1, 1, 4, 4), np.float32), np.zeros((2, 2, 4, 4), np.float32))


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", FLOWS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_cuda_kernel_is_the_host_reference_bit_for_bit(cuda_and_host, shape, kind, dtype):
    """The same maths with the same rounding (no implicit FMAs and no transcendental
    functions in the warp): bit-identical."""
    cuda, host = cuda_and_host
    n, c, height, width, factor = shape
    rng = np.random.default_rng(sum(shape))
    features = rng.standard_normal((n, c, height, width)).astype(dtype)
    flow = _flow(rng, kind, (n, 2, height * factor, width * factor), factor)
    np.testing.assert_array_equal(cuda.run("warp", [features, flow]), host.run("warp", [features, flow]))
