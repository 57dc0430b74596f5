"""GridSample numerics on an exported graph (mmdeploy-style per-op parity): the warp
with flows that reach outside the image, at the chosen opset, in ONNX Runtime."""

import numpy as np
import onnxruntime as ort
import pytest
import torch

from mnt.export.model.blocks import warp
from mnt.export.onnx.exporter import OPSET, grid_sample_modes


class Warp(torch.nn.Module):
    def forward(self, features, flow):
        return warp(features, flow)


@pytest.mark.parametrize("factor", [1, 2, 8])
def test_exported_warp_matches_float64(tmp_path, factor):
    rng = np.random.default_rng(factor)
    features = rng.standard_normal((2, 5, 16, 16)).astype(np.float32)
    # Offsets up to 0.6 of the half-image, piecewise constant over factor x factor cells
    # plus fine noise, so pooling keeps them large: some samples fall outside (zeros padding).
    coarse = 0.6 * np.tanh(rng.standard_normal((2, 2, 16, 16)))
    flow = np.repeat(np.repeat(coarse, factor, axis=2), factor, axis=3)
    flow = (flow + 0.01 * rng.standard_normal(flow.shape)).astype(np.float32)
    path = tmp_path / "warp.onnx"
    torch.onnx.export(Warp(), (torch.from_numpy(features), torch.from_numpy(flow)), str(path),
                      dynamo=True, opset_version=OPSET, input_names=["features", "flow"],
                      verbose=False, external_data=False)
    assert grid_sample_modes(path) == ["bilinear"]
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        None, {"features": features, "flow": flow})[0]
    reference = warp(torch.from_numpy(features).double(), torch.from_numpy(flow).double()).numpy()
    assert (reference == 0).any()  # some samples came from outside the image
    # float32 coordinates and weights: errors of a few float32 ulps of values of order 1.
    assert np.abs(got - reference).max() < 1e-5
