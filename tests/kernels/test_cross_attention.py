"""mnt::CrossAttention, every implementation (host reference, ONNX function, CUDA kernel,
TensorRT plugin; tests/kernels/implementations.py) against the PyTorch reference
softmax(Q Kᵀ / √D) V in float64: K = 1..8 targets, B > 1, odd sizes, D != Dv, the widest
supported head, sharp logits, a single key; float32 and float16 storage; the GPU kernel
against the host reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mnt.kernels.errors import KernelError
from mnt.kernels.spec import op_spec
from tests.kernels.implementations import (
    f16_excess_ulp,
    implementation,
    max_abs,
    params,
    symbol_bounds,
)
from tests.tolerances import (
    KERNEL_ATTN_F32_MAX_ABS,
    KERNEL_F16_MAX_ULP,
    MNT_OPS_FP16_MAX_REL,
)

# (B, Lq, K targets, tokens per target, D, Dv, logit sharpness).
CASES = [(1, 64, k, 16, 64, 64, 1.0) for k in range(1, 9)] + [
    (2, 5, 2, 9, 48, 80, 1.0),  # B > 1, Lq not a multiple of 4, Lk not of the key tile, D != Dv
    (1, 8, 2, 16, 512, 512, 1.0),  # the widest supported head (the paper's bottleneck)
    (1, 33, 8, 16, 64, 64, 6.0),  # sharp logits: the running max moves between tiles
    (1, 4, 1, 1, 32, 32, 1.0),  # a single key
] + [(1, 64, k, 64, 128, 128, 1.0) for k in range(1, 9)] + [
    (1, 256, 3, 256, 512, 512, 1.0),  # many keys at the widest head
    (1, 37, 8, 16, 32, 32, 1.0),
    (1, 4, 1, 1, 512, 100, 1.0),  # one key, D at the limit, Dv not a multiple of 32
] + [(1, 64, k, 16, 32, 32, 3.0) for k in (1, 8)]  # sharp attention, far from uniform
DTYPES = ("float32", "float16")


def _shapes(case: tuple) -> list[tuple[int, int, int]]:
    b, lq, k, tokens, d, dv, _ = case
    return [(b, lq, d), (b, k * tokens, d), (b, k * tokens, dv)]


@pytest.fixture(scope="module", params=params())
def impl(request, tmp_path_factory):
    chosen = implementation(request.param, tmp_path_factory.mktemp(request.param),
                            {"cross_attention": symbol_bounds("cross_attention", map(_shapes, CASES))})
    yield chosen
    chosen.close()


def _inputs(case: tuple, dtype: str) -> list[np.ndarray]:
    b, lq, k, tokens, d, dv, sharp = case
    lk = k * tokens
    rng = np.random.default_rng(lq * 1000 + lk + d)
    query = (rng.standard_normal((b, lq, d)) * sharp).astype(np.float32)
    keys = rng.standard_normal((b, lk, d)).astype(np.float32)
    values = rng.standard_normal((b, lk, dv)).astype(np.float32)
    return [x.astype(dtype) for x in (query, keys, values)]


def reference(query: np.ndarray, keys: np.ndarray, values: np.ndarray) -> np.ndarray:
    """softmax(Q Kᵀ / √D) V in float64."""
    q, k, v = (torch.from_numpy(x).double() for x in (query, keys, values))
    return (torch.softmax(q @ k.transpose(1, 2) / math.sqrt(q.shape[-1]), dim=-1) @ v).numpy()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(map(str, c)))
def test_cross_attention_matches_float64(impl, case, dtype):
    inputs = _inputs(case, dtype)
    out = impl.run("cross_attention", inputs)
    b, lq, _, _, _, dv, _ = case
    assert out.dtype == np.dtype(dtype) and out.shape == (b, lq, dv)
    ref = reference(*inputs)
    bound = KERNEL_ATTN_F32_MAX_ABS * impl.fp32_factor
    if dtype == "float32":
        assert max_abs(out, ref) <= bound, f"fp32 max abs {max_abs(out, ref):.2e}"
    else:
        assert f16_excess_ulp(out, ref, bound) <= KERNEL_F16_MAX_ULP
        assert max_abs(out, ref) <= MNT_OPS_FP16_MAX_REL * np.abs(ref).max()


def test_host_shape_errors_name_the_problem():
    from mnt.kernels.loader import host_library

    host = host_library()
    limit = op_spec("cross_attention")["limits"]["D"]
    with pytest.raises(KernelError, match=f"at most {limit}"):
        host.cross_attention(*(np.zeros((1, 2, limit + 1), np.float32),) * 3)
    with pytest.raises(KernelError, match="float16"):  # one storage type for all three
        host.cross_attention(np.zeros((1, 2, 8), np.float16), *(np.zeros((1, 2, 8), np.float32),) * 2)
    with pytest.raises(KernelError, match="D must be 8"):
        host.cross_attention(np.zeros((1, 2, 8), np.float32), np.zeros((1, 3, 4), np.float32),
                             np.zeros((1, 3, 8), np.float32))


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(map(str, c)))
def test_cuda_kernel_follows_the_host_reference(cuda_and_host, case, dtype):
    """Same steps and rounding order as the host reference except CUDA's expf (<= 2 ulp)."""
    cuda, host = cuda_and_host
    inputs = _inputs(case, dtype)
    out, expected = cuda.run("cross_attention", inputs), host.run("cross_attention", inputs)
    if dtype == "float32":
        np.testing.assert_allclose(out, expected, atol=KERNEL_ATTN_F32_MAX_ABS, rtol=0)
    else:
        assert f16_excess_ulp(out, expected, KERNEL_ATTN_F32_MAX_ABS) <= KERNEL_F16_MAX_ULP
