import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch._subclasses.fake_tensor import FakeTensorMode

from mnt.export.model.attention import positional_encoding
from mnt.export.model.blocks import warp
from mnt.export.model.checkpoint import init_reference
from mnt.export.model.config import PRESETS
from mnt.runtime import rasterize, to_model_input
from tests.helpers import placed_landmarks, real_faces
from tests.tolerances import (
    FOLDED_MAX_ABS,
    FOLDED_SPECTRAL_NORM_REL,
    GENERATOR_FP32_VS_FP64_MIN_PSNR_DB,
)


@pytest.fixture(scope="module")
def tiny():
    return init_reference(PRESETS["tiny"], seed=0)


def _expected_shapes(config, k):
    c, s = config.channels, config.image_size
    return {
        "zy": (k, c(5), s // 32, s // 32),
        "warped": [(1, c(j), s // 2**j, s // 2**j) for j in range(1, 5)],
        "keys": (1, k * (s // 32) ** 2, c(4)),
        "values": (1, k * (s // 32) ** 2, c(4)),
        "zx": (1, c(4), s // 16, s // 16),
        "flow": (k, 2, s // 2, s // 2),
    }


def _check_shapes(reference, k, make):
    g, config = reference.generator, reference.config
    s = config.image_size
    expected = _expected_shapes(config, k)
    y, ry, rx = make((1, k, 3, s, s)), make((1, k, 3, s, s)), make((1, 3, s, s))
    with torch.no_grad():
        zy, _, flow = g.target_encoder(y[0], ry[0])
        state = g.encode_targets(y, ry)
        zx = g.driver_encoder(rx)
        out = g.generate(rx, state)
        alpha = reference.disentangler(y[0], make((k, 204)))
    assert tuple(zy.shape) == expected["zy"] and tuple(flow.shape) == expected["flow"]
    assert [tuple(t.shape) for t in state.warped] == expected["warped"]
    assert all(tuple(t.shape) == expected["keys"] for t in state.keys)
    assert all(tuple(t.shape) == expected["values"] for t in state.values)
    assert len(state.keys) == 3 and tuple(zx.shape) == expected["zx"]
    assert tuple(out.shape) == (1, 3, s, s) and tuple(alpha.shape) == (k, 48)


@pytest.mark.parametrize("k", [1, 8])
def test_tiny_component_shapes(tiny, k):
    _check_shapes(tiny, k, lambda shape: torch.rand(shape) * 2 - 1)


@pytest.mark.parametrize("k", [1, 8])
def test_paper_component_shapes(k):
    # Fake tensors propagate shapes without arithmetic: the paper model at K=8 in seconds.
    paper = init_reference(PRESETS["paper"], seed=0)
    with FakeTensorMode(allow_non_fake_inputs=True) as mode:
        _check_shapes(paper, k, lambda shape: mode.from_tensor(torch.empty(shape)))


def test_positional_encoding_matches_eq9_written_out():
    h, w, c = 5, 7, 12
    enc = positional_encoding(h, w, c, torch.empty((), dtype=torch.float64)).reshape(h, w, c)
    for i in range(h):
        for j in range(w):
            for k in range(c // 4):
                denom = 10000 ** (2 * k / c)
                assert math.isclose(enc[i, j, 4 * k], math.sin(256 * i / (h * denom)), abs_tol=1e-12)
                assert math.isclose(enc[i, j, 4 * k + 1], math.cos(256 * i / (h * denom)), abs_tol=1e-12)
                assert math.isclose(enc[i, j, 4 * k + 2], math.sin(256 * j / (w * denom)), abs_tol=1e-12)
                assert math.isclose(enc[i, j, 4 * k + 3], math.cos(256 * j / (w * denom)), abs_tol=1e-12)


def test_warp_is_identity_at_zero_flow_and_shifts_by_whole_pixels():
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64)
    assert torch.equal(warp(x, torch.zeros(2, 2, 8, 8, dtype=torch.float64)), x)
    # Flow +2/W in x samples one pixel to the right; the last column reads zeros padding.
    flow = torch.zeros(2, 2, 16, 16, dtype=torch.float64)
    flow[:, 0] = 2 / 8
    shifted = warp(x, flow)  # the 16x16 flow is average-pooled to 8x8 first
    assert torch.allclose(shifted[..., :-1], x[..., 1:])
    assert torch.all(shifted[..., -1] == 0)


def test_flows_of_the_random_model_are_small_but_exercised(tiny):
    faces = (real_faces() * 2)[:2]  # two targets, with or without ../shared beside the checkout
    y = torch.from_numpy(np.stack([to_model_input(f) for f in faces]))
    ry = torch.from_numpy(np.stack([to_model_input(rasterize(placed_landmarks()))] * 2))
    with torch.no_grad():
        _, _, flow = tiny.generator.target_encoder(y, ry)
    pixels = flow.abs().max().item() * 128 / 2  # normalised offset -> pixels at h/2
    assert 0.01 < pixels < 8


def test_spectral_norm_folds_into_plain_weights(tiny):
    rx, y, ry = torch.rand(1, 3, 256, 256), torch.rand(1, 2, 3, 256, 256), torch.rand(1, 2, 3, 256, 256)
    with torch.no_grad():
        before = tiny.generator(rx, y, ry)
        g = tiny.folded_generator()
        after = g(rx, y, ry)
        assert torch.equal(tiny.generator(rx, y, ry), before)  # the original is untouched
    assert not any("parametrizations" in name for name, _ in g.named_parameters())
    assert (before - after).abs().max().item() <= FOLDED_MAX_ABS
    conv = g.decoder.out
    sigma = torch.linalg.matrix_norm(conv.weight.flatten(1), ord=2).item()
    assert math.isclose(sigma, 1.0, rel_tol=FOLDED_SPECTRAL_NORM_REL)


def _psnr(a, b):
    mse = F.mse_loss(a.double(), b.double()).item()
    return 10 * math.log10(4.0 / mse) if mse > 0 else math.inf


def _real_inputs(size, k):
    faces = real_faces(size)
    y = torch.from_numpy(np.stack([to_model_input(faces[i % len(faces)]) for i in range(k)]))
    rng = np.random.default_rng(0)
    ry = torch.from_numpy(np.stack([
        to_model_input(rasterize(placed_landmarks(size, rng.standard_normal(48), yaw=0.1 * i), size))
        for i in range(k)]))
    rx = torch.from_numpy(to_model_input(rasterize(
        placed_landmarks(size, 2 * rng.standard_normal(48), yaw=-0.2), size)))
    return rx[None], y[None], ry[None]


@pytest.mark.parametrize("preset", ["tiny", pytest.param("paper", marks=pytest.mark.slow)])
def test_init_generator_float32_agrees_with_float64_on_real_faces(preset):
    reference = init_reference(PRESETS[preset], seed=0)
    rx, y, ry = _real_inputs(reference.config.image_size, k=2)
    with torch.no_grad():
        out32 = reference.generator(rx, y, ry)
        g64 = copy.deepcopy(reference.generator).double()
        out64 = g64(rx.double(), y.double(), ry.double())
    assert out32.abs().max() <= 1.0 and out32.std() > 0.05  # a real image, not a constant
    assert _psnr(out32, out64) >= GENERATOR_FP32_VS_FP64_MIN_PSNR_DB


def test_fp32_islands_choose_the_dtype():
    from mnt.export.model.blocks import ISLANDS, fp32_islands, island_dtype

    half, double = torch.zeros(1, dtype=torch.float16), torch.zeros(1, dtype=torch.float64)
    assert all(island_dtype(half, name) == torch.float32 for name in ISLANDS)
    assert island_dtype(double, "flow") == torch.float64  # float64 reference stays float64
    with fp32_islands("norm"):
        assert island_dtype(half, "norm") == torch.float32
        assert island_dtype(half, "flow") == torch.float16
    assert island_dtype(half, "flow") == torch.float32  # restored
    with pytest.raises(ValueError, match="unknown FP32 islands"), fp32_islands("bogus"):
        pass
