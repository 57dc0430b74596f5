"""--faces: photos without a human face are refused; real faces are cropped as before."""

import shutil

import numpy as np
import pytest

from mnt.export.errors import ExportError
from mnt.export.onnx.samples import faces_from, square_crop
from mnt.runtime.errors import RuntimeStageError
from mnt.runtime.images import read_image
from tests.helpers import SHARED_DATA, run_blocking, talking_clip

NON_FACES, TARGETS = SHARED_DATA / "non-faces", SHARED_DATA / "targets"
needs_data = pytest.mark.skipif(not NON_FACES.exists() or not TARGETS.exists(),
                                reason=f"{SHARED_DATA} (non-faces, targets) not present")


@pytest.fixture()
def checker():
    pytest.importorskip("mediapipe")
    pytest.importorskip("dlib")


@needs_data
@pytest.mark.parametrize("name", ["s22.jpg", "s25.jpg"])  # the monkey, the dog
def test_a_photo_without_a_human_face_is_refused_by_name(checker, tmp_path, name):
    folder = tmp_path / "faces"
    folder.mkdir()
    shutil.copy(TARGETS / "s42.jpg", folder / "s42.jpg")
    shutil.copy(NON_FACES / name, folder / name)
    with pytest.raises(ExportError, match=f"{name}: no human face found") as caught:
        faces_from([folder], 256)
    assert caught.value.hint and "--faces" in caught.value.hint
    with pytest.raises(ExportError, match=name):  # a file given by itself, too
        faces_from([NON_FACES / name], 256)


@needs_data
def test_real_faces_are_cropped_byte_for_byte_as_before(checker):
    photos = sorted(TARGETS.glob("*.jpg"))
    faces = faces_from(photos, 256)
    crops = [square_crop(read_image(p), 256) for p in photos]
    step = max(1, len(crops) // 8)
    expected = (crops[::step] * 8)[:8]
    assert len(faces) == 8 and all(np.array_equal(a, b) for a, b in zip(faces, expected, strict=True))


@needs_data
def test_without_the_face_check_photos_are_taken_as_before(tmp_path, monkeypatch, recwarn):
    def missing(*args, **kwargs):
        raise RuntimeStageError("face landmarks need mediapipe, which cannot be imported")

    monkeypatch.setattr("mnt.runtime.landmarkers.mediapipe_mesh.MediaPipeLandmarks", missing)
    faces = faces_from([NON_FACES / "s25.jpg"], 64)
    assert len(faces) == 8 and not recwarn.list


@needs_data
def test_a_machine_without_mediapipe_builds_from_any_photo_without_a_warning():
    code = ("import warnings; warnings.simplefilter('error')\n"
            "from mnt.export.onnx.samples import faces_from\n"
            f"print(len(faces_from([{str(NON_FACES / 's25.jpg')!r}], 64)))\n")
    result = run_blocking(code, blocked=("mediapipe",), timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "8", result.stderr
    assert "Warning" not in result.stderr


def test_a_video_frame_without_a_face_is_skipped_and_a_video_without_any_refused(checker, tmp_path):
    # frames 0, 15, ... 75 are sampled: the first three grey, the last three the astronaut
    mixed = talking_clip(tmp_path / "mixed.mp4", faceless=45, faces=45, size=128)
    faces = faces_from([mixed], 64)
    assert len(faces) == 8 and len({f.tobytes() for f in faces}) == 3
    assert all(f.std() > 20 for f in faces)  # none of the grey frames
    grey = talking_clip(tmp_path / "grey.mp4", faceless=90, faces=0, size=128)
    with pytest.raises(ExportError, match="grey.mp4: no human face found in its sampled frames"):
        faces_from([grey], 64)
