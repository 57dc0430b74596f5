"""Every file a manifest names stays inside its folder and is hashed; its statistics and
model fields are checked by value: verify, mnt-run and `mnt-export triton` refuse alike."""

import os
import shutil
from fractions import Fraction

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from mnt.export.cli import main as export_main
from mnt.runtime import RuntimeStageError
from mnt.runtime import cli as run_cli
from mnt.runtime.files import sha256_file
from mnt.runtime.manifest import STATS_NAME, load_manifest
from mnt.runtime.reenactor import Reenactor
from mnt.runtime.video import VideoWriter
from tests.helpers import copied_artefacts as _copy
from tests.helpers import write_manifest as _write


@pytest.fixture(scope="module")
def fp32(tiny_artefacts):
    return tiny_artefacts("fp32")




def _outside_file(copy, source_name):
    """A copy of one of the folder's files beside the folder (what an attacker points at)."""
    outside = copy.parent / "outside.bin"
    shutil.copyfile(copy / source_name, outside)
    return outside


def _component(name="generator"):
    def set_path(data, value):
        data["components"][name]["onnx"]["file"] = value
    return f"components.{name}.onnx.file", f"{name}.onnx", set_path


def _golden(data, value):
    data["components"]["target_encoder"]["golden"]["file"] = value


def _face(data, value):
    name = next(iter(data["face_components"]))
    data["face_components"][name]["onnx"]["file"] = value


def _files_table(data, value):
    data["files"][value] = data["files"][STATS_NAME]


def _engine(data, value):
    engine = {"file": value, "sha256": "d" * 64, "runtime": "tensorrt", "tensorrt_version": "10.3.0",
              "compute_capability": "8.7", "plugin_library_sha256": None, "build_key": "e" * 64,
              "ops": "native"}
    data["components"]["generator"]["engines"] = {"tensorrt": engine}


FIELDS = {
    "component": _component(),
    "golden": ("components.target_encoder.golden.file", "target_encoder.golden.npz", _golden),
    "face": ("face_components.", "face_detector.onnx", _face),
    "files": ("files", STATS_NAME, _files_table),
    "engine": ("components.generator.engines.tensorrt.file", "generator.onnx", _engine),
}


def _how(kind, copy, source_name):
    outside = _outside_file(copy, source_name)
    if kind == "dotdot":
        return "../outside.bin"
    if kind == "absolute":
        return str(outside)
    link = copy / "link.bin"  # a link inside the folder to the file outside it
    os.symlink(outside, link)
    return "link.bin"


def _tampered(fp32, tmp_path, field, kind):
    copy, data = _copy(fp32, tmp_path)
    where, source_name, set_path = FIELDS[field]
    if field == "face" and not data.get("face_components"):
        pytest.skip("the tiny artefacts were built without face components (no mediapipe)")
    if field == "golden" and not (copy / source_name).exists():
        source_name = data["components"]["target_encoder"]["golden"]["file"]
    value = _how(kind, copy, source_name)
    set_path(data, value)
    if field == "component":  # re-hashed: the hash alone would let it through
        data["components"]["generator"]["onnx"]["sha256"] = sha256_file(copy.parent / "outside.bin")
    _write(copy, data)
    return copy, where


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "link"])
@pytest.mark.parametrize("field", list(FIELDS))
def test_a_path_out_of_the_folder_is_refused_naming_the_field(fp32, tmp_path, field, kind):
    copy, where = _tampered(fp32, tmp_path, field, kind)
    with pytest.raises(RuntimeStageError) as caught:
        load_manifest(copy)
    text = str(caught.value)
    assert where in text and "inside the artefact folder" in text and "\n" not in text, text
    with pytest.raises(RuntimeStageError, match="inside the artefact folder"):
        Reenactor(copy)


def _driver_and_targets(tmp_path):
    writer = VideoWriter(tmp_path / "driver.mp4", Fraction(25), 64, 64)
    writer.write(np.zeros((64, 64, 3), np.uint8))
    writer.close()
    (tmp_path / "targets").mkdir()
    cv2.imwrite(str(tmp_path / "targets" / "p.jpg"), np.zeros((64, 64, 3), np.uint8))


@pytest.mark.parametrize("field", ["component", "files"])
def test_verify_run_and_triton_refuse_it_with_exit_1(fp32, tmp_path, monkeypatch, field):
    copy, where = _tampered(fp32, tmp_path, field, "dotdot")
    monkeypatch.setenv("MNT_CACHE_DIR", str(tmp_path / "cache"))
    _driver_and_targets(tmp_path)
    runs = {
        "verify": (export_main, ["verify", str(copy)]),
        "triton": (export_main, ["triton", "--artifacts", str(copy), "--out", str(tmp_path / "repo")]),
        "mnt-run": (run_cli.main, [str(tmp_path / "driver.mp4"), "--targets", str(tmp_path / "targets"),
                                   "--artifacts", str(copy), "-o", str(tmp_path / "out.mp4")]),
    }
    for name, (command, args) in runs.items():
        result = CliRunner().invoke(command, args)
        assert result.exit_code == 1, (name, result.output)
        assert where in result.output and "Traceback" not in result.output, (name, result.output)
    assert not (tmp_path / "repo").exists() and not (tmp_path / "out.mp4").exists()


def test_statistics_must_be_hashed(fp32, tmp_path):
    copy, data = _copy(fp32, tmp_path)
    del data["files"][STATS_NAME]
    _write(copy, data)
    with pytest.raises(RuntimeStageError, match=rf"files\.{STATS_NAME} is missing"):
        load_manifest(copy)


def _restats(copy, data, **changes):
    with np.load(copy / STATS_NAME) as stats:
        arrays = {k: np.array(v) for k, v in stats.items()}
    for name, change in changes.items():
        arrays[name] = change(arrays[name])
    with open(copy / STATS_NAME, "wb") as handle:
        np.savez(handle, **arrays)
    data["files"][STATS_NAME] = sha256_file(copy / STATS_NAME)  # re-hashed
    _write(copy, data)


@pytest.mark.parametrize(("changes", "message"), [
    ({"mean": lambda a: a * np.nan}, "'mean' holds NaN"),
    ({"basis": lambda a: np.where(a == 0, a, np.inf)}, "'basis' holds NaN or infinite"),
    ({"coef_std": lambda a: a * 0}, "'coef_std' must be positive"),
    ({"mean": lambda a: a * 0}, "'mean' has no spread"),
    ({"lambda_exp": lambda a: np.float64(np.nan)}, "'lambda_exp' holds NaN"),
], ids=["nan-mean", "inf-basis", "zero-std", "flat-mean", "nan-lambda"])
def test_statistics_are_checked_by_value_in_verify_and_run(fp32, tmp_path, changes, message):
    copy, data = _copy(fp32, tmp_path)
    _restats(copy, data, **changes)
    with pytest.raises(RuntimeStageError, match=message) as caught:
        Reenactor(copy)
    assert STATS_NAME in str(caught.value)
    result = CliRunner().invoke(export_main, ["verify", str(copy)])
    assert result.exit_code == 1 and message.split()[0] in result.output, result.output


def _resize_model(data):
    data["model"]["image_size"] = 256 if data["model"]["image_size"] != 256 else 128


def _extra_component(data):
    data["components"]["upscaler"] = data["components"]["generator"]


def _generator_of_another_size(data):
    warped = next(t for t in data["components"]["generator"]["inputs"] if t["name"] == "warped_1")
    warped["shape"][2] *= 2


@pytest.mark.parametrize(("tamper", "message"), [
    (_resize_model, r"components\.target_encoder\.inputs 'target_images' is \[3, \d+, \d+\] per item, "
                    r"but model\.image_size \d+ needs"),
    (_extra_component, r"components\.upscaler is not a component of this model"),
    (_generator_of_another_size, r"components\.generator\.inputs .* do not match "
                                 r"components\.target_encoder\.outputs"),
], ids=["image-size", "extra-component", "generator-vs-encoder"])
def test_model_fields_must_agree_with_the_components(fp32, tmp_path, tamper, message):
    copy, data = _copy(fp32, tmp_path)
    tamper(data)
    _write(copy, data)
    with pytest.raises(RuntimeStageError, match=message):
        load_manifest(copy)
    result = CliRunner().invoke(export_main, ["verify", str(copy)])
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
