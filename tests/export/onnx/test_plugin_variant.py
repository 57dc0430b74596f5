"""`mnt-export build --plugins`: warp and attention as mnt:: custom nodes, run in ONNX Runtime
through their reference functions and gated exactly like the standard graph."""

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner

from mnt.export.cli import main
from mnt.export.model.blocks import plugin_ops, plugin_ops_active
from mnt.export.model.checkpoint import load_checkpoint
from mnt.export.onnx import gates
from mnt.export.onnx.build import build
from mnt.export.onnx.custom_ops import op_counts
from mnt.export.onnx.gates import Error
from mnt.export.onnx.samples import posed_landmarks
from mnt.runtime import rasterize, to_model_input
from mnt.runtime.backends.onnxruntime import OnnxRuntimeBackend
from mnt.runtime.manifest import load_manifest
from mnt.runtime.reenactor import Reenactor
from tests.helpers import assert_generator_gate, reference_frame
from tests.tolerances import PLUGIN_VS_STANDARD_MIN_PSNR_DB

EXPECTED = {"target_encoder": {"mnt::Warp": 4},
            "generator": {"mnt::CrossAttention": 3, "mnt::Warp": 4},
            "landmark_disentangler": {}}


@pytest.fixture(scope="module")
def plugin_build(tiny_checkpoint, parity_faces, tmp_path_factory):
    """precision -> a plugin-variant folder of the tiny checkpoint, gated at K = 1 and the
    goldens' 3 (the default adds 8; two builds less keep the suite's time down)."""
    built = {}

    def get(precision: str):
        if precision not in built:
            out = tmp_path_factory.mktemp(f"plugins-{precision}") / "artefact"
            build(tiny_checkpoint, precision, out, faces=parity_faces, plugins=True, gate_ks=(1,),
                  log=lambda line: None)
            built[precision] = out
        return built[precision]

    return get


@pytest.fixture(scope="module", params=["fp32", "fp16"])
def artefact(request, plugin_build):
    return request.param, plugin_build(request.param)


def test_plugin_ops_keep_the_model_maths(tiny_checkpoint, parity_faces):
    """fp32: the custom ops compute exactly what the model computes without them."""
    reference = load_checkpoint(tiny_checkpoint)
    y = torch.from_numpy(to_model_input(parity_faces[0]))[None, None]
    points = posed_landmarks(reference.stats, 256, np.zeros(48))
    r = torch.from_numpy(to_model_input(rasterize(points)))[None]
    with torch.no_grad():
        standard = reference.generator(r, y, r[None])
        with plugin_ops():
            assert plugin_ops_active()
            plugins = reference.generator(r, y, r[None])
    assert not plugin_ops_active()
    assert torch.equal(standard, plugins)


def test_builds_pass_the_standard_gates(artefact):
    precision, out = artefact
    manifest = load_manifest(out)
    for c in manifest.components.values():
        assert c.accuracy["passed"] and c.accuracy["k"] == [1, 3], c.name
        assert c.accuracy["thresholds"] == gates.THRESHOLDS[precision]
    assert_generator_gate(manifest, precision)


def test_custom_nodes_replace_grid_sample_and_softmax(artefact):
    precision, out = artefact
    manifest = load_manifest(out)
    for name, expected in EXPECTED.items():
        info = manifest.components[name]
        counts = op_counts(out / info.file)
        assert {op: n for op, n in counts.items() if op.startswith("mnt::")} == expected, name
        assert info.custom_ops == expected and info.variant == ("plugins" if expected else "standard")
        if expected:
            assert "GridSample" not in counts and "Softmax" not in counts
    model = onnx.load(str(out / "generator.onnx"))
    assert {(o.domain, o.version) for o in model.opset_import} >= {("mnt", 1), ("", 18)}
    assert not model.functions  # bare custom nodes on disk, for TensorRT
    custom = [n for n in model.graph.node if n.domain == "mnt"]
    assert all(not n.attribute for n in custom)  # the contract: no attributes
    # The contract's types: features/query/keys/values in the graph's dtype, flow in float32.
    typed = onnx.shape_inference.infer_shapes(model)
    types = {v.name: v.type.tensor_type.elem_type
             for v in [*typed.graph.value_info, *typed.graph.input, *typed.graph.output]}
    storage = {"fp32": onnx.TensorProto.FLOAT, "fp16": onnx.TensorProto.FLOAT16}[precision]
    for node in custom:
        wanted = [storage, onnx.TensorProto.FLOAT] if node.op_type == "Warp" else [storage] * 3
        assert [types[i] for i in node.input] == wanted and types[node.output[0]] == storage


def test_plugin_variant_matches_the_standard_graph(artefact, tiny_artefacts):
    precision, out = artefact
    standard = tiny_artefacts(precision)
    for name in ("target_encoder", "generator"):
        plugin_info = load_manifest(out).components[name]
        standard_info = load_manifest(standard).components[name]
        golden = np.load(out / plugin_info.golden["file"])
        feeds = {t.name: golden[f"input:{t.name}"] for t in plugin_info.inputs}
        with OnnxRuntimeBackend(plugin_info, out) as a, OnnxRuntimeBackend(standard_info, standard) as b:
            got, expected = a.infer(feeds), b.infer(feeds)
            for t in plugin_info.outputs:
                psnr = Error.between(got[t.name], expected[t.name].astype(np.float64)).psnr_db
                assert psnr >= PLUGIN_VS_STANDARD_MIN_PSNR_DB[precision], (name, t.name, psnr)


def test_the_cli_flag_builds_the_plugin_variant(tiny_checkpoint, tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr("mnt.export.onnx.build.build", lambda *args, **kwargs: calls.append(kwargs))
    runner = CliRunner()
    for flag in ([], ["--plugins"]):
        result = runner.invoke(main, ["build", "--checkpoint", str(tiny_checkpoint),
                                      "--out", str(tmp_path / "out"), *flag])
        assert result.exit_code == 0, result.output
    assert [c["plugins"] for c in calls] == [False, True]
    assert "mnt::Warp" in runner.invoke(main, ["build", "--help"]).output


def test_verify_passes_on_the_plugin_folder(artefact):
    _, out = artefact
    result = CliRunner().invoke(main, ["verify", str(out)])
    assert result.exit_code == 0, result.output
    assert "all 16 outputs within their thresholds" in result.output


def test_the_runtime_reenacts_with_a_plugin_folder(plugin_build, tiny_checkpoint, parity_faces):
    reference = load_checkpoint(tiny_checkpoint)
    rng = np.random.default_rng(3)
    points = [posed_landmarks(reference.stats, 256, rng.standard_normal(48), 0.1) for _ in range(2)]
    driver = posed_landmarks(reference.stats, 256, rng.standard_normal(48), -0.2)
    with Reenactor(plugin_build("fp32"), backend="onnxruntime-cpu") as model:
        state, _ = model.encode_targets(parity_faces[:2], points)
        frame = model.generate(state, driver)
    expected = reference_frame(reference, parity_faces[:2], points, driver)
    assert np.abs(frame.astype(int) - expected.astype(int)).max() <= 1  # rounding to uint8
