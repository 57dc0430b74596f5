"""The landmark step on the artefact folder's engines (face components, no mediapipe),
against mediapipe's own face mesh."""

import json

import cv2
import numpy as np
import pytest

from mnt.runtime.errors import RuntimeStageError
from mnt.runtime.manifest import ComponentInfo, Manifest, TensorInfo, load_manifest
from mnt.runtime.manifest_schema import FIXED_TENSORS, REQUIRED_COMPONENTS, STATS_NAME
from tests import tolerances
from tests.helpers import SHARED_DATA, real_faces, run_blocking


def _placeholder(name: str) -> ComponentInfo:
    """A model component entry whose shapes agree with the others and with a 128 px model
    (never run here: these tests load only the face components)."""
    state = {"state": (4,)}  # what the target encoder hands the generator

    def tensors(side: str, extra: dict) -> tuple[TensorInfo, ...]:
        named = {**FIXED_TENSORS[name].get(side, {}), **extra}
        return tuple(TensorInfo(t, "float32", (1, *[128 if d == "S" else d for d in shape]))
                     for t, shape in named.items())

    outputs = tensors("outputs", state if name == "target_encoder" else {})
    figures = {"psnr_db": 0.0, "torch_fp32": {"max_abs_error": 0.0, "rmse": 0.0, "psnr_db": 0.0}}
    return ComponentInfo(name, f"{name}.onnx", "0" * 64, "fp32", "frame",
                         tensors("inputs", state if name == "generator" else {}), outputs, {},
                         {"psnr_db": 0.0, "max_abs_error": 0.0, "passed": True,
                          "outputs": {t.name: figures for t in outputs}})


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A folder whose manifest holds real FP32 face components (built from mediapipe's wheel)."""
    pytest.importorskip("mediapipe")
    from mnt.export.faces.build import available, build_faces_into, face_images

    if available():
        pytest.skip(available())
    out = tmp_path_factory.mktemp("faces")
    faces = build_faces_into(out, "fp32", face_images(), log=lambda line: None)
    Manifest("0", "0" * 64, "fp32", 18, {}, {"image_size": 128},
             {n: _placeholder(n) for n in REQUIRED_COMPONENTS}, {STATS_NAME: "0" * 64},
             faces=faces).write(out)
    return out


def _ours(folder, **kwargs):
    from mnt.runtime.landmarkers.onnx_mesh import OnnxMeshLandmarks

    return OnnxMeshLandmarks(folder, backend="onnxruntime-cpu", **kwargs)


def _mediapipe(**kwargs):
    from mnt.runtime.landmarkers.mediapipe_mesh import MediaPipeLandmarks

    return MediaPipeLandmarks(**kwargs)


def test_the_manifest_records_source_licence_and_gate(folder):
    manifest = load_manifest(folder)
    assert set(manifest.faces) == {"face_detector", "face_landmarks"}
    for info in manifest.faces.values():
        assert info.source["licence"] == "Apache-2.0" and info.source["file"].endswith(".tflite")
        assert info.accuracy["passed"] and info.accuracy["reference"].startswith("TFLite")
    data = json.loads((folder / "manifest.json").read_text())
    assert "face_detector" not in data["components"]  # apart from the model's own components


def test_photos_match_mediapipe(folder):
    """Static mode on the astronaut and the shared targets: the same detection, ROI and mesh."""
    with _ours(folder, static_image_mode=True) as ours, _mediapipe(static_image_mode=True) as reference:
        for photo in real_faces(512):
            a, b = ours.detect(photo), reference.detect(photo)
            assert a is not None and b is not None
            assert np.abs(a.landmarks - b.landmarks).max() < tolerances.FACE_PHOTO_MAX_PX
            assert a.score == pytest.approx(b.score) and a.count == b.count


def test_a_folder_without_face_components_is_refused(folder, tmp_path):
    data = json.loads((folder / "manifest.json").read_text())
    del data["face_components"]
    (tmp_path / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(RuntimeStageError, match="holds no face components") as err:
        _ours(tmp_path)
    assert "mnt-export build" in err.value.hint


def test_a_changed_face_file_is_refused(folder, tmp_path):
    for path in folder.iterdir():
        if path.is_file():
            (tmp_path / path.name).write_bytes(path.read_bytes())
    with open(tmp_path / "face_landmarks.onnx", "ab") as f:
        f.write(b"\0")
    with pytest.raises(RuntimeStageError, match="face_landmarks.onnx changed"):
        _ours(tmp_path)


@pytest.mark.skipif(not SHARED_DATA.exists(), reason="needs ../shared/data (driving clips)")
def test_tracking_detects_only_when_the_face_is_lost(folder):
    from mnt.runtime.video import read_frames

    frames = list(read_frames(SHARED_DATA / "driving" / "d0.mp4", limit=20))
    with _ours(folder, static_image_mode=False, human_check=False) as ours:
        assert all(ours.detect(f) is not None for f in frames)
        assert ours.detections == 1
        assert ours.detect(np.zeros_like(frames[0])) is None  # lost: the detector looks again
        assert ours.detections == 2
        assert ours.detect(frames[0]) is not None and ours.detections == 3
        assert ours.detect(frames[1]) is not None and ours.detections == 3


@pytest.mark.skipif(not SHARED_DATA.exists(), reason="needs ../shared/data (non-faces)")
def test_non_faces_are_refused_by_the_human_check(folder):
    with _ours(folder, static_image_mode=True) as ours:
        for name in ("s22.jpg", "s25.jpg"):
            image = cv2.cvtColor(cv2.imread(str(SHARED_DATA / "non-faces" / name)), cv2.COLOR_BGR2RGB)
            assert ours.detect(image) is None, name


@pytest.mark.skipif(not SHARED_DATA.exists(), reason="needs ../shared/data (driving clips)")
def test_tracking_parity_with_mediapipe_on_every_shared_clip(folder):
    """The first 60 frames of each driving clip, both backends tracking; the bar in
    tests/tolerances.py comes from the whole clips (see there)."""
    from mnt.export.faces.landmark_parity import clip_parity
    from mnt.runtime.landmarkers.onnx_mesh import OnnxMeshLandmarks
    from mnt.runtime.manifest import load_manifest

    manifest = load_manifest(folder)
    from mnt.runtime.backends.onnxruntime import OnnxRuntimeBackend

    backends = {n: OnnxRuntimeBackend(i, folder, threads=1) for n, i in manifest.faces.items()}
    clips = sorted((SHARED_DATA / "driving").glob("*.mp4"))
    assert len(clips) == 6
    with OnnxMeshLandmarks(backends=backends, static_image_mode=False, human_check=False) as ours:
        for clip in clips:
            found = clip_parity(clip, ours, limit=60)
            assert found.only_ours == found.only_mediapipe == 0 and found.both == found.frames, found
            assert found.mean_px < tolerances.FACE_TRACK_MEAN_PX, found
            assert found.p99_px < tolerances.FACE_TRACK_P99_PX, found


def test_runs_with_mediapipe_blocked(folder):
    """The whole landmark step, photo and tracking, in an interpreter where mediapipe (and
    torch) cannot be imported."""
    code = (
        "import numpy as np\n"
        "from skimage import data\n"
        "from mnt.runtime.landmarkers.onnx_mesh import OnnxMeshLandmarks\n"
        f"with OnnxMeshLandmarks({str(folder)!r}, backend='onnxruntime-cpu', static_image_mode=False) as b:\n"
        "    faces = [b.detect(data.astronaut()) for _ in range(3)]\n"
        "assert all(f is not None for f in faces) and b.detections == 1\n"
        "import sys; assert 'mediapipe' not in sys.modules and 'torch' not in sys.modules\n"
        "print('ok', faces[-1].landmarks[30])\n")
    done = run_blocking(code, blocked=("mediapipe", "torch"))
    assert done.returncode == 0 and done.stdout.startswith("ok"), done.stderr


def test_the_factory_picks_the_engines_when_the_folder_has_face_components(folder, tmp_path):
    from mnt.runtime.landmarkers import landmark_backend
    from mnt.runtime.landmarkers.onnx_mesh import OnnxMeshLandmarks

    with landmark_backend(False, artifacts=folder, backend="onnxruntime-cpu") as chosen:
        assert isinstance(chosen, OnnxMeshLandmarks)
    with landmark_backend(True, artifacts=folder, backend="torch", human_check=False) as chosen:
        assert isinstance(chosen, OnnxMeshLandmarks)  # the faces are not torch modules: auto runs them
    with pytest.raises(RuntimeStageError, match="unknown landmark backend 'dlib'"):
        landmark_backend(True, artifacts=folder, landmarks="dlib")
    with pytest.raises(RuntimeStageError, match="needs an artefact folder"):
        landmark_backend(True, landmarks="engines")
