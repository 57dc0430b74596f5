import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from mnt.runtime.errors import RuntimeStageError
from mnt.runtime.landmarkers.base import Face, check_image
from mnt.runtime.landmarkers.mesh_faces import HUMAN_SCORE_THRESHOLD, MEDIAPIPE_TO_IBUG68
from mnt.runtime.smoothing import OneEuroFilter
from tests.helpers import SHARED_DATA

NO_DATA = f"no shared test media at {SHARED_DATA}"
TARGETS = sorted((SHARED_DATA / "targets").glob("*.jpg")) if SHARED_DATA.exists() else []
NON_FACES = sorted((SHARED_DATA / "non-faces").glob("*.jpg")) if SHARED_DATA.exists() else []
DRIVING = sorted((SHARED_DATA / "driving").glob("*.mp4")) if SHARED_DATA.exists() else []



def _params(paths, reason=NO_DATA):
    return [pytest.param(p, id=p.stem) for p in paths] or [pytest.param(None, marks=pytest.mark.skip(reason))]


def _read_rgb(path: Path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


@pytest.fixture(scope="module")
def backend():
    pytest.importorskip("mediapipe")
    pytest.importorskip("dlib")
    from mnt.runtime.landmarkers.mediapipe_mesh import MediaPipeLandmarks

    with MediaPipeLandmarks(static_image_mode=True) as b:
        yield b


def _assert_plausible(face: Face, image: np.ndarray) -> None:
    h, w = image.shape[:2]
    lm = face.landmarks
    assert lm.shape == (68, 3) and lm.dtype == np.float64
    assert np.all(np.isfinite(lm))
    assert np.all((lm[:, 0] >= 0) & (lm[:, 0] < w) & (lm[:, 1] >= 0) & (lm[:, 1] < h)), "point outside image"
    x0, y0, x1, y1 = face.box
    assert x0 <= lm[:, 0].min() and lm[:, 0].max() <= x1 and y0 <= lm[:, 1].min() and lm[:, 1].max() <= y1
    right_eye, left_eye = lm[36:42].mean(0), lm[42:48].mean(0)
    mouth, nose_tip, chin = lm[48:68].mean(0), lm[30], lm[8]
    # The subject's right eye, brow and jaw end lie on the image's left in a photo.
    assert right_eye[0] < left_eye[0]
    assert lm[17:22, 0].mean() < lm[22:27, 0].mean()
    assert lm[0, 0] < lm[16, 0] and lm[36, 0] < lm[39, 0] < lm[42, 0] < lm[45, 0]
    assert lm[48, 0] < lm[54, 0]
    # Top to bottom: brows, eyes, nose tip, mouth, chin.
    assert lm[17:27, 1].mean() < min(right_eye[1], left_eye[1])
    assert max(right_eye[1], left_eye[1]) < nose_tip[1] < mouth[1] < chin[1]
    # The face is a face-sized thing: eye distance between a tenth and two thirds of its width.
    eyes = np.linalg.norm(left_eye[:2] - right_eye[:2])
    assert 0.1 * (x1 - x0) < eyes < 0.67 * (x1 - x0)
    # Depth is in pixels, like x: no more than the face's width from front to back.
    assert np.ptp(lm[:, 2]) < (x1 - x0)


def test_mapping_has_68_distinct_face_mesh_indices():
    assert len(MEDIAPIPE_TO_IBUG68) == 68
    assert len(set(MEDIAPIPE_TO_IBUG68)) == 68
    assert all(isinstance(i, int) and 0 <= i < 468 for i in MEDIAPIPE_TO_IBUG68)
    assert MEDIAPIPE_TO_IBUG68[8] == 152  # chin
    assert MEDIAPIPE_TO_IBUG68[30] == 4  # nose tip


def test_mesh_module_imports_without_torch_mediapipe_or_dlib():
    code = ("import sys, mnt.runtime.landmarkers.mediapipe_mesh;"
            "bad = [m for m in ('torch', 'mediapipe', 'dlib', 'mnt.export') if m in sys.modules];"
            "print(bad); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("missing", ["mediapipe", "dlib"])
def test_missing_optional_dependency_is_one_clear_error(monkeypatch, missing):
    from mnt.runtime.landmarkers.mediapipe_mesh import MediaPipeLandmarks

    monkeypatch.setitem(sys.modules, missing, None)  # makes `import <missing>` fail
    if missing == "dlib":
        pytest.importorskip("mediapipe")
    with pytest.raises(RuntimeStageError) as info:
        MediaPipeLandmarks()
    assert missing in str(info.value) and "\n" not in str(info.value)
    assert info.value.hint is not None and "mnt[faces]" in info.value.hint


def test_face_validates_and_freezes_landmarks():
    face = Face(landmarks=np.zeros((68, 3)), box=(0, 0, 1, 1), score=None)
    assert not face.landmarks.flags.writeable
    with pytest.raises(RuntimeStageError):
        Face(landmarks=np.zeros((67, 3)), box=(0, 0, 1, 1), score=None)
    with pytest.raises(RuntimeStageError):
        Face(landmarks=np.full((68, 3), np.nan), box=(0, 0, 1, 1), score=None)


def test_check_image_refuses_non_rgb_uint8():
    with pytest.raises(RuntimeStageError):
        check_image(np.zeros((64, 64, 3), np.float32))
    with pytest.raises(RuntimeStageError):
        check_image(np.zeros((64, 64), np.uint8))
    assert check_image(np.zeros((64, 64, 3), np.uint8)[:, ::-1]).flags.c_contiguous


@pytest.mark.parametrize("path", _params(TARGETS))
def test_target_photos_give_plausible_landmarks(backend, path):
    image = _read_rgb(path)
    face = backend.detect(image)
    assert face is not None, f"no face found in {path.name}"
    _assert_plausible(face, image)
    assert face.count == 1
    assert face.score is not None and face.score >= HUMAN_SCORE_THRESHOLD


@pytest.mark.parametrize("path", _params(NON_FACES))
def test_non_faces_are_refused(backend, path):
    assert backend.detect(_read_rgb(path)) is None
    # mediapipe's mesh does fit the monkey and the dog: the human check turned them down.
    assert backend.last_rejected == 1


def test_without_the_human_check_mediapipe_accepts_a_monkey(backend):
    if not NON_FACES:
        pytest.skip(NO_DATA)
    face = backend.detect(_read_rgb(NON_FACES[0]), human_check=False)
    assert face is not None and face.score is None  # why the check exists


@pytest.mark.parametrize("path", _params(DRIVING[:2]))
def test_driving_video_frame(backend, path):
    from mnt.runtime.video import read_frames

    frame = next(read_frames(path, limit=1))
    face = backend.detect(frame)
    assert face is not None, f"no face in the first frame of {path.name}"
    _assert_plausible(face, frame)


def test_tracking_mode_follows_a_video(tmp_path):
    pytest.importorskip("mediapipe")
    if not DRIVING:
        pytest.skip(NO_DATA)
    from mnt.runtime.landmarkers.mediapipe_mesh import MediaPipeLandmarks
    from mnt.runtime.video import read_frames

    frames = list(read_frames(DRIVING[0], limit=10))
    smooth = OneEuroFilter(freq=25.0)
    with MediaPipeLandmarks(static_image_mode=False, max_num_faces=1, human_check=False) as tracker:
        first = tracker.detect(frames[0], human_check=True)  # check the face once, when acquired
        assert first is not None and first.score is not None
        for frame in frames[1:]:
            face = tracker.detect(frame)
            assert face is not None and face.score is None
            _assert_plausible(face, frame)
            steady = smooth(face.landmarks)
            assert np.abs(steady - face.landmarks).max() < 0.1 * (face.box[2] - face.box[0])


def test_several_faces_give_the_largest_and_the_count(backend):
    if len(TARGETS) < 2:
        pytest.skip(NO_DATA)
    # Two portraits side by side; mediapipe's short-range detector misses faces much smaller
    # than these (a 60 px face beside a 180 px one was not found).
    big = cv2.resize(_read_rgb(SHARED_DATA / "targets" / "s42.jpg"), (400, 400))
    small = cv2.resize(_read_rgb(SHARED_DATA / "targets" / "s9.jpg")[150:530, 170:550], (250, 250))
    canvas = np.full((420, 690, 3), 128, np.uint8)
    canvas[10:410, 10:410] = big
    canvas[10:260, 430:680] = small
    face = backend.detect(canvas)
    assert face is not None and face.count == 2
    assert face.box[2] < 420  # the big face, on the left
    _assert_plausible(face, canvas)
