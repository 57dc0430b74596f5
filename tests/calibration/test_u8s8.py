"""Issue 31: ONNX Runtime's u8 x s8 kernels on x86 without VNNI add pairs of products in
saturating 16 bits. Modelled in numpy (tests/calibration/u8s8.py) on the tiny disentangler's
all-INT8 graph, the case that failed on an AVX2-only EPYC: saturation costs it many dB, and
the kernels mnt's sessions run on this CPU compute the exact products instead."""

from __future__ import annotations

import numpy as np

from mnt.export.onnx.gates import Error
from tests.calibration.test_held_back import disentangler  # noqa: F401 (the fixture)
from tests.calibration.u8s8 import Emulator, pair_dot
from tests.tolerances import U8S8_SATURATION_MIN_LOSS_DB


def test_full_range_weights_saturate_and_weights_within_64_cannot():
    a = np.array([[255, 255, 200, 10]])
    b = np.array([[127, 127, -128, 3]])
    exact, none = pair_dot(a, b, saturate=False)
    got, saturated = pair_dot(a, b, saturate=True)
    assert none == 0 and saturated == 1  # 255 * 127 * 2 = 64770 > 32767; the second pair fits
    assert int(got[0, 0]) == 32767 + (200 * -128 + 10 * 3) != int(exact[0, 0])
    # ONNX Runtime leaves weights within [-64, 64] int8 even with its precision option: there
    # 255 * 64 * 2 = 32640 fits, whatever the activations
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 256, (64, 96)), rng.choice([-64, 64], (32, 96))
    assert pair_dot(a, b, saturate=True)[1] == 0
    assert np.array_equal(pair_dot(a, b, saturate=True)[0], pair_dot(a, b, saturate=False)[0])


def test_the_tiny_disentangler_loses_to_saturation_and_mnt_sessions_compute_exactly(disentangler, tmp_path):  # noqa: F811
    import onnxruntime as ort

    from mnt.calibration.quantize import quantize
    from mnt.runtime.backends.onnxruntime import session_options

    fp32, info, _, feeds = disentangler
    samples = [feeds(seed, 1) for seed in range(6)]  # the held-back test's search samples
    int8 = tmp_path / "int8.onnx"
    quantize(fp32 / info.file, int8, tmp_path / "cache.json", feeds=samples)  # all 7 blocks INT8
    reference = ort.InferenceSession(str(fp32 / info.file), providers=["CPUExecutionProvider"])
    runtime = ort.InferenceSession(str(int8), session_options(ort), providers=["CPUExecutionProvider"])
    emulator = Emulator(int8)
    assert len(emulator.nodes) >= 7
    worst = {"exact": np.inf, "saturating": np.inf}
    saturated = 0
    for f in samples:
        (ref,) = reference.run(None, f)
        (here,) = runtime.run(None, f)
        exact, saturating = emulator(f, saturate=False), emulator(f, saturate=True)
        saturated += sum(saturating.saturated.values())
        assert not any(exact.saturated.values())
        # the exact model is the graph's own arithmetic (float maths on the same integers)
        np.testing.assert_array_equal(exact.outputs[0], exact.unfused[0])
        for kind, got in (("exact", exact), ("saturating", saturating)):
            worst[kind] = min(worst[kind], Error.between(got.outputs[0], ref.astype(np.float64)).psnr_db)
        # what ONNX Runtime runs here with mnt's options is the exact arithmetic, not the saturating
        here64 = here.astype(np.float64)
        assert (Error.between(exact.outputs[0], here64).psnr_db
                > Error.between(saturating.outputs[0], here64).psnr_db + U8S8_SATURATION_MIN_LOSS_DB)
    assert saturated > 0
    assert worst["saturating"] < worst["exact"] - U8S8_SATURATION_MIN_LOSS_DB, worst
