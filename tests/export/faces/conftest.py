"""The face components need mediapipe's wheel (the TFLite files), the tflite schema and a
TFLite interpreter: skipped with the reason where any is missing."""

import pytest

from tests.helpers import SHARED_DATA


@pytest.fixture(scope="session")
def face_step():
    pytest.importorskip("mediapipe")
    from mnt.export.faces.build import available

    missing = available()
    if missing:
        pytest.skip(missing)


@pytest.fixture(scope="session")
def face_photos(face_step):
    """Whole images with faces: the astronaut, then the shared targets and one frame of each
    shared driving clip where ../shared/data is present."""
    import cv2

    from mnt.export.faces.build import face_images
    from mnt.runtime.video import read_frames

    images = face_images()
    if SHARED_DATA.exists():
        for path in sorted((SHARED_DATA / "targets").glob("*.jpg")):
            images.append(cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB))
        for clip in sorted((SHARED_DATA / "driving").glob("*.mp4")):
            images += list(read_frames(clip, limit=1))
    return images
