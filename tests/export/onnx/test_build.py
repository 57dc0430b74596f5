"""mnt-export build / verify / inspect on the tiny preset, with parity on real faces."""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from mnt.export.cli import main
from mnt.export.errors import CheckpointError, ExportError
from mnt.export.onnx import gates
from mnt.export.onnx.build import build
from mnt.export.onnx.exporter import OPSET, grid_sample_modes
from mnt.runtime.errors import MntError
from mnt.runtime.files import sha256_file
from mnt.runtime.manifest import MANIFEST_NAME, load_manifest
from tests.helpers import assert_generator_gate, console_script, interruptible_popen


@pytest.fixture(scope="module", params=["fp32", "fp16"])
def artefact(request, tiny_artefacts):
    return request.param, tiny_artefacts(request.param)


@pytest.fixture(scope="module")
def checkpoint(tiny_checkpoint):
    return tiny_checkpoint


@pytest.fixture(scope="module")
def faces(parity_faces):
    return parity_faces


def test_every_component_passes_parity_for_k_1_3_8(artefact):
    precision, out = artefact
    manifest = load_manifest(out)
    assert set(manifest.components) == {"target_encoder", "landmark_disentangler", "generator"}
    for c in manifest.components.values():
        assert c.accuracy["passed"] and c.accuracy["k"] == [1, 3, 8], c.name
        assert c.accuracy["reference"] == "torch-fp32" and c.accuracy["computed_in"] == "float64"
    assert_generator_gate(manifest, precision)


def test_manifest_schema(artefact):
    precision, out = artefact
    data = json.loads((out / MANIFEST_NAME).read_text())
    assert data["schema_version"] == 1 and data["opset"] == OPSET == 18
    assert data["precision"] == precision and len(data["checkpoint_sha256"]) == 64
    assert {"torch", "onnx", "onnxruntime"} <= set(data["versions"])
    dtype = {"fp32": "float32", "fp16": "float16"}[precision]
    for name, c in data["components"].items():
        assert c["onnx"]["file"] == f"{name}.onnx"
        assert c["onnx"]["sha256"] == sha256_file(out / c["onnx"]["file"])
        assert c["precision"] == precision and c["phase"] in ("target", "frame")
        for t in c["inputs"] + c["outputs"]:
            assert t["dtype"] == dtype and all(isinstance(d, (int, str)) for d in t["shape"])
            assert all(d in c["dims"] for d in t["shape"] if isinstance(d, str))
        assert all(v == {"min": 1, "max": 8} for v in c["dims"].values())
        acc = c["accuracy"]
        for key in ("reference", "max_abs_error", "psnr_db", "passed", "thresholds", "torch_fp32"):
            assert key in acc
        assert c["golden"]["sha256"] == sha256_file(out / c["golden"]["file"])
    assert data["components"]["generator"]["phase"] == "frame"
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no staging left


def test_grid_sample_is_bilinear_at_the_chosen_opset(artefact):
    _, out = artefact
    assert grid_sample_modes(out / "generator.onnx") == ["bilinear"] * 4
    assert grid_sample_modes(out / "target_encoder.onnx") == ["bilinear"] * 4
    model = onnx.load(str(out / "generator.onnx"))
    assert {o.version for o in model.opset_import if o.domain in ("", "ai.onnx")} == {18}


def test_frame_graph_does_not_grow_with_k(artefact):
    _, out = artefact
    generator = load_manifest(out).components["generator"]
    with_k = [t.name for t in generator.inputs if "K" in t.shape]
    assert sorted(with_k) == sorted(f"{kind}_{i}" for kind in ("keys", "values") for i in range(3))
    assert all(t.shape[0] == "K" for t in generator.inputs if t.name in with_k)
    model = onnx.load(str(out / "generator.onnx"))
    # K is symbolic: the graph (and so its node count) is one for every K, and only the
    # key/value inputs carry it.
    symbolic = {i.name for i in model.graph.input
                if any(d.dim_param for d in i.type.tensor_type.shape.dim)}
    assert symbolic == set(with_k)


@pytest.mark.parametrize("artefact", ["fp16"], indirect=True)
def test_fp16_graph_is_typed_with_fp32_islands(artefact):
    _, out = artefact
    model = onnx.load(str(out / "generator.onnx"))
    assert all(i.type.tensor_type.elem_type == onnx.TensorProto.FLOAT16 for i in model.graph.input)
    fp16_weights = [t for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT16]
    assert len(fp16_weights) > 20
    casts_to_fp32 = [n for n in model.graph.node if n.op_type == "Cast"
                     and onnx.helper.get_attribute_value(n.attribute[0]) == onnx.TensorProto.FLOAT]
    assert len(casts_to_fp32) >= 10  # islands: flows/sampling, softmax, normalisation


def test_verify_passes_then_catches_a_tampered_onnx_and_drifted_goldens(artefact, tmp_path):
    _, out = artefact
    runner = CliRunner()
    ok = runner.invoke(main, ["verify", str(out)])
    assert ok.exit_code == 0, ok.output
    assert "all 16 outputs within their thresholds" in ok.output

    copy = tmp_path / "copy"
    subprocess.run(["cp", "-r", str(out), str(copy)], check=True)
    onnx_file = copy / "landmark_disentangler.onnx"
    onnx_file.write_bytes(onnx_file.read_bytes() + b"\0")
    tampered = runner.invoke(main, ["verify", str(copy)])
    assert tampered.exit_code == 1
    assert "landmark_disentangler" in tampered.output and "sha256 mismatch" in tampered.output

    drift = tmp_path / "drift"
    subprocess.run(["cp", "-r", str(out), str(drift)], check=True)
    golden_path = drift / "goldens" / "generator.npz"
    golden = dict(np.load(golden_path))
    golden["output:image"] = golden["output:image"] + 0.05  # a reference no build matches
    np.savez(golden_path, **golden)
    manifest = json.loads((drift / MANIFEST_NAME).read_text())
    manifest["components"]["generator"]["golden"]["sha256"] = sha256_file(golden_path)
    (drift / MANIFEST_NAME).write_text(json.dumps(manifest))
    drifted = runner.invoke(main, ["verify", str(drift)])
    assert drifted.exit_code == 3  # the accuracy gate failed, not the input
    line = next(x for x in drifted.output.splitlines() if x.startswith("generator"))
    assert "image" in line and "dB <" in line


def test_inspect_summarises(artefact):
    precision, out = artefact
    result = CliRunner().invoke(main, ["inspect", str(out)])
    assert result.exit_code == 0, result.output
    assert precision in result.output and "generator" in result.output and "K 1..8" in result.output


def test_a_missed_gate_names_component_figure_threshold_and_leaves_nothing(
        checkpoint, faces, tmp_path, monkeypatch):
    monkeypatch.setitem(gates.THRESHOLDS, "fp16", {"min_psnr_db": 500.0})
    out = tmp_path / "out"
    with pytest.raises(ExportError) as err:
        build(checkpoint, "fp16", out, faces=faces[:2], gate_ks=(1,), log=lambda line: None)
    message = str(err.value)
    assert message.startswith("target_encoder (fp16) failed its parity gate")
    assert "dB < 500.0 dB" in message
    assert list(tmp_path.iterdir()) == []


def test_existing_output_is_refused_without_force_and_kept(checkpoint, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    result = CliRunner().invoke(main, ["build", "--checkpoint", str(checkpoint), "--out", str(out)])
    assert result.exit_code == 1 and "already exists" in result.output and "--force" in result.output
    assert (out / "keep.txt").read_text() == "mine"


@pytest.mark.parametrize("problem", ["missing", "corrupt", "config"])
def test_bad_checkpoints_give_one_line(checkpoint, tmp_path, problem):
    bad = tmp_path / "bad.safetensors"
    if problem == "corrupt":
        bad.write_bytes(checkpoint.read_bytes()[:5000])
    elif problem == "config":
        from safetensors import safe_open
        from safetensors.torch import load_file, save_file

        with safe_open(str(checkpoint), framework="pt") as handle:
            meta = handle.metadata()
        header = json.loads(meta["mnt"])
        header["config"]["max_channels"] = 256
        save_file(load_file(str(checkpoint)), str(bad), metadata={"mnt": json.dumps(header)})
    result = CliRunner().invoke(main, ["build", "--checkpoint", str(bad), "--out", str(tmp_path / "o")])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mnt-export: error: checkpoint") and str(bad) in lines[0]
    assert not (tmp_path / "o").exists()
    with pytest.raises(CheckpointError):
        build(bad, "fp32", tmp_path / "o2", log=lambda line: None)


def test_unwritable_output_and_full_disk(checkpoint, faces, tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ExportError, match="cannot create"):
        build(checkpoint, "fp32", blocker / "out", log=lambda line: None)

    import errno
    import pathlib

    real_write_text = pathlib.Path.write_text

    def no_space(self, *args, **kwargs):
        if self.name.startswith(".manifest.partial-"):  # (atomic_path's name for it)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write_text(self, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "write_text", no_space)
    out = tmp_path / "full"
    with pytest.raises(MntError, match="cannot write .*manifest.json: No space left on device"):
        build(checkpoint, "fp32", out, faces=faces[:1], gate_ks=(1,), log=lambda line: None)
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["file"]


def test_ctrl_c_during_a_build_leaves_no_folder(checkpoint, tmp_path):
    out = tmp_path / "out"
    process = interruptible_popen([console_script("mnt-export"), "build", "--checkpoint", str(checkpoint),
                                   "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not any(p.name.startswith(".out.partial") for p in tmp_path.iterdir()):
        time.sleep(0.2)
    time.sleep(2)  # well inside the export
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "interrupted" in stderr
    assert list(tmp_path.iterdir()) == []


def test_the_real_cli_verifies_and_inspects(artefact):
    _, out = artefact
    verified = subprocess.run([console_script("mnt-export"), "verify", str(out)],
                              capture_output=True, text=True, timeout=300)
    assert verified.returncode == 0, verified.stderr
    assert "within their thresholds" in verified.stdout
    missing = subprocess.run([console_script("mnt-export"), "inspect", str(out / "nope")],
                             capture_output=True, text=True)
    assert missing.returncode == 1 and missing.stderr.startswith("mnt-export: error:")
    assert "not an mnt artefact folder" in missing.stderr and "Traceback" not in missing.stderr


def test_ctrl_c_that_torch_export_swallows_is_still_an_interruption(checkpoint, monkeypatch):
    """torch.export may catch the KeyboardInterrupt of a Ctrl-C and raise an error of its own
    (seen in CI: 'Failed to export the model with torch.export'): still an interruption."""
    from mnt.export.model.checkpoint import load_checkpoint
    from mnt.export.model.components import component_modules, component_specs
    from mnt.export.onnx import exporter

    def swallowing_export(*args, **kwargs):
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)
        except KeyboardInterrupt:
            pass
        raise RuntimeError("Failed to export the model with torch.export.")

    loaded = load_checkpoint(checkpoint)
    module = component_modules(loaded.generator, loaded.disentangler)["generator"]
    monkeypatch.setattr(exporter.torch.onnx, "export", swallowing_export)
    with pytest.raises(KeyboardInterrupt):
        exporter.export_component(module, component_specs(loaded.config)["generator"], "fp32",
                                  Path("/nonexistent/generator.onnx"))
    def failing_export(*args, **kwargs):
        raise RuntimeError("bad")

    monkeypatch.setattr(exporter.torch.onnx, "export", failing_export)
    with pytest.raises(ExportError, match="torch.onnx.export failed: bad"):
        exporter.export_component(module, component_specs(loaded.config)["generator"], "fp32",
                                  Path("/nonexistent/generator.onnx"))
