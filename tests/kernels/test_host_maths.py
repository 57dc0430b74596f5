"""The host reference library's FP16 storage (common.h's software half conversion, which the
host build uses where the CUDA build has __half): exact against numpy. The ops' maths are
tested per op, over every implementation, in test_warp.py and test_cross_attention.py."""

from __future__ import annotations

import numpy as np
import pytest

from mnt.kernels.loader import host_library


@pytest.fixture(scope="module")
def host():
    return host_library()


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
