"""`mnt-export build` writes the face components beside the model's; `verify` and
`inspect` cover them; folders without them still load."""

import json
import subprocess

import numpy as np
import pytest
from click.testing import CliRunner

from mnt.export.cli import main
from mnt.export.faces.gates import thresholds
from mnt.runtime.files import sha256_file
from mnt.runtime.manifest import MANIFEST_NAME, load_manifest


@pytest.fixture(scope="module", params=["fp32", "fp16"])
def artefact(request, tiny_artefacts, face_step):
    return request.param, tiny_artefacts(request.param)


def test_the_build_holds_both_face_components_gated_against_tflite(artefact):
    precision, out = artefact
    manifest = load_manifest(out)
    assert set(manifest.faces) == {"face_detector", "face_landmarks"}
    for name, info in manifest.faces.items():
        assert info.precision == precision and info.sha256 == sha256_file(out / info.file)
        assert info.inputs[0].dtype == "float32" and info.inputs[0].shape[-1] == 3  # NHWC, as TFLite
        acc = info.accuracy
        assert acc["passed"] and acc["thresholds"] == thresholds(name, precision)
        assert all(acc["figures"][k] <= v for k, v in acc["thresholds"].items())
        assert info.source["package"] == "mediapipe" and info.source["licence"] == "Apache-2.0"
        assert info.golden["sha256"] == sha256_file(out / info.golden["file"])


def test_inspect_lists_them_with_their_source(artefact):
    _, out = artefact
    result = CliRunner().invoke(main, ["inspect", "--json", str(out)])
    assert result.exit_code == 0, result.output
    found = {c["name"]: c for c in json.loads(result.stdout)["components"]}
    assert found["face_landmarks"]["source"]["file"] == "mediapipe/modules/face_landmark/face_landmark.tflite"


def test_verify_catches_a_drifted_face_golden(artefact, tmp_path):
    _, out = artefact
    copy = tmp_path / "copy"
    subprocess.run(["cp", "-r", str(out), str(copy)], check=True)
    manifest = load_manifest(copy)
    golden_file = copy / manifest.faces["face_landmarks"].golden["file"]
    golden = dict(np.load(golden_file))
    golden["output:landmarks"] = golden["output:landmarks"] + 1.0  # a pixel off everywhere
    np.savez(golden_file, **golden)
    data = json.loads((copy / MANIFEST_NAME).read_text())
    data["face_components"]["face_landmarks"]["golden"]["sha256"] = sha256_file(golden_file)
    (copy / MANIFEST_NAME).write_text(json.dumps(data))
    result = CliRunner().invoke(main, ["verify", "--json", str(copy)])
    assert result.exit_code == 3, result.output
    rows = {(r["component"], r["output"]): r for r in json.loads(result.stdout)["rows"]}
    assert rows[("face_landmarks", "landmarks")]["drifted"]
    assert "landmarks_max_px" in rows[("face_landmarks", "landmarks")]["status"]
    assert rows[("face_landmarks", "presence")]["status"] == "ok"
    assert rows[("face_detector", "boxes")]["status"] == "ok"


def test_a_folder_without_face_components_still_loads_and_verifies(artefact, tmp_path):
    _, out = artefact
    copy = tmp_path / "old"
    subprocess.run(["cp", "-r", str(out), str(copy)], check=True)
    data = json.loads((copy / MANIFEST_NAME).read_text())
    del data["face_components"]
    (copy / MANIFEST_NAME).write_text(json.dumps(data))
    assert load_manifest(copy).faces == {}
    result = CliRunner().invoke(main, ["verify", str(copy)])
    assert result.exit_code == 0 and "all 12 outputs" in result.output, result.output
