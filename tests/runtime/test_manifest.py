"""A manifest is untrusted input: it is checked against its schema, whole, before use."""

import shutil

import pytest
from click.testing import CliRunner

from mnt.export.cli import main as export_main
from mnt.runtime import RuntimeStageError
from mnt.runtime.files import sha256_file
from mnt.runtime.manifest import MANIFEST_NAME, REBUILD_HINT, load_manifest
from mnt.runtime.reenactor import Reenactor
from tests.helpers import copied_artefacts as _copy
from tests.helpers import write_manifest as _write


@pytest.fixture(scope="module")
def fp32(tiny_artefacts):
    return tiny_artefacts("fp32")




def _drop_generator(m):
    del m["components"]["generator"]


def _bad_dtype(m):
    m["components"]["generator"]["inputs"][0]["dtype"] = "int7"


def _empty_accuracy(m):
    m["components"]["generator"]["accuracy"] = {}


def _accuracy_list(m):
    m["components"]["generator"]["accuracy"] = []


def _dims_reversed(m):
    m["components"]["target_encoder"]["dims"]["K"] = {"min": 8, "max": 1}


def _dims_zero(m):
    m["components"]["target_encoder"]["dims"]["K"] = {"min": 0, "max": 8}


def _unknown_dim(m):
    m["components"]["generator"]["inputs"][1]["shape"][0] = "N"


def _float_shape(m):
    m["components"]["generator"]["inputs"][0]["shape"][1] = 3.0


def _no_name(m):
    del m["components"]["landmark_disentangler"]["outputs"][0]["name"]


def _opset_text(m):
    m["opset"] = "18"


def _components_list(m):
    m["components"] = list(m["components"])


def _onnx_missing(m):
    del m["components"]["generator"]["onnx"]


@pytest.mark.parametrize(("tamper", "message"), [
    (_drop_generator, r"components\.generator is missing"),
    (_bad_dtype, r"components\.generator\.inputs\[0\]\.dtype is 'int7', expected float32 or float16"),
    (_empty_accuracy, r"components\.generator\.accuracy\.psnr_db is missing"),
    (_accuracy_list, r"components\.generator\.accuracy is a list, expected an object"),
    (_dims_reversed, r"components\.target_encoder\.dims\.K is 8\.\.1, expected 1 <= min <= max"),
    (_dims_zero, r"components\.target_encoder\.dims\.K is 0\.\.8"),
    (_unknown_dim, r"components\.generator\.inputs\[1\]\.shape\[0\] is the dim 'N', which is not in dims"),
    (_float_shape, r"components\.generator\.inputs\[0\]\.shape\[1\] is a number, expected an integer"),
    (_no_name, r"components\.landmark_disentangler\.outputs\[0\]\.name is missing"),
    (_opset_text, r"opset is a string, expected an integer"),
    (_components_list, r"components is a list, expected an object"),
    (_onnx_missing, r"components\.generator\.onnx is missing"),
], ids=lambda v: v.__name__.strip("_") if callable(v) else "")
def test_a_broken_manifest_is_refused_naming_the_field(fp32, tmp_path, tamper, message):
    copy, data = _copy(fp32, tmp_path)
    tamper(data)
    _write(copy, data)
    with pytest.raises(RuntimeStageError, match=message) as caught:
        load_manifest(copy)
    assert caught.value.hint == REBUILD_HINT and "\n" not in str(caught.value)
    with pytest.raises(RuntimeStageError, match=message):
        Reenactor(copy)  # what mnt-run does


@pytest.mark.parametrize("payload", ["[1, 2]", '"text"', "null", "3"])
def test_a_manifest_that_is_not_an_object_is_refused(fp32, tmp_path, payload):
    copy, _ = _copy(fp32, tmp_path)
    (copy / MANIFEST_NAME).write_text(payload)
    with pytest.raises(RuntimeStageError, match="expected a JSON object"):
        load_manifest(copy)


def test_every_problem_is_reported_on_one_line(fp32, tmp_path):
    copy, data = _copy(fp32, tmp_path)
    _bad_dtype(data)
    _drop_generator(data)  # the dtype problem goes with it; these stay:
    del data["tool_version"]
    data["components"]["target_encoder"]["outputs"][0]["dtype"] = "float64"
    data["files"] = {"landmark_stats.npz": 7}
    _write(copy, data)
    with pytest.raises(RuntimeStageError) as caught:
        load_manifest(copy)
    text = str(caught.value)
    assert "\n" not in text and text.startswith(str(copy / MANIFEST_NAME) + ": ")
    for part in ("tool_version is missing", "components.generator is missing",
                 "components.target_encoder.outputs[0].dtype is 'float64'",
                 "files.landmark_stats.npz is an integer, expected a string"):
        assert part in text, text


def test_what_real_builds_write_still_loads(fp32, tmp_path):
    copy, data = _copy(fp32, tmp_path)
    assert set(load_manifest(copy).components) == {"target_encoder", "landmark_disentangler", "generator"}
    # int8 builds add a calibration record; engines (and mnt 0.1's single engine) are optional
    data["calibration"] = {"method": "qdq", "sample": {"frames": []}, "components": {}, "report": "r.json"}
    engine = {"file": "generator.engine", "sha256": "d" * 64, "runtime": "tensorrt",
              "tensorrt_version": "10.3.0", "compute_capability": "8.7", "plugin_library_sha256": None,
              "build_key": "e" * 64, "ops": "native"}
    data["components"]["generator"]["engines"] = {"tensorrt": engine,
                                                  "tensorrt-rtx": {**engine, "runtime": "tensorrt-rtx",
                                                                   "compute_capability": "",
                                                                   "compute_capabilities": ["8.6", "8.9"]}}
    data["components"]["target_encoder"]["engine"] = engine
    data["components"]["target_encoder"]["precision"] = "int8"
    _write(copy, data)
    manifest = load_manifest(copy)
    assert manifest.calibration["report"] == "r.json"
    assert set(manifest.components["generator"].engines) == {"tensorrt", "tensorrt-rtx"}
    assert manifest.components["target_encoder"].engines["tensorrt"].file == "generator.engine"


def test_a_component_file_holding_another_components_graph_is_refused(fp32, tmp_path):
    copy, data = _copy(fp32, tmp_path)
    # the landmark disentangler's graph under the target encoder's name, re-hashed
    shutil.copyfile(copy / "landmark_disentangler.onnx", copy / "target_encoder.onnx")
    data["components"]["target_encoder"]["onnx"]["sha256"] = sha256_file(copy / "target_encoder.onnx")
    _write(copy, data)
    with pytest.raises(RuntimeStageError, match=r"target_encoder\.onnx has inputs \[.*'images'.*\], "
                                                r"but the manifest's target_encoder has \[.*'target_images'"):
        Reenactor(copy, backend="onnxruntime-cpu")


def test_verify_fails_on_a_folder_missing_a_component(fp32, tmp_path):
    copy, data = _copy(fp32, tmp_path)
    _drop_generator(data)
    _write(copy, data)
    result = CliRunner().invoke(export_main, ["verify", str(copy)])
    assert result.exit_code != 0
    assert "components.generator is missing" in result.output
    assert "within their thresholds" not in result.output
