"""The built-in demo driver moves the head and opens the mouth, as the face mesh sees it."""

import numpy as np

from mnt.runtime.demo import FRAMES, demo_inputs
from mnt.runtime.landmarkers.mediapipe_mesh import MediaPipeLandmarks
from mnt.runtime.video import read_frames


def test_demo_driver_sways_and_talks(tmp_path):
    video, targets = demo_inputs(tmp_path)
    assert (targets / "astronaut.png").is_file()
    gaps, centres = [], []
    with MediaPipeLandmarks(static_image_mode=False, human_check=False) as faces:
        for frame in read_frames(video):
            points = faces.detect(frame).landmarks
            gaps.append(points[66, 1] - points[62, 1])  # inner lips, lower minus upper
            centres.append(points[:, :2].mean(axis=0))
    assert len(gaps) == FRAMES
    assert max(gaps) - min(gaps) > 5.0, gaps  # the mouth opens and closes ...
    crossings = np.sum(np.diff((np.array(gaps) > (max(gaps) + min(gaps)) / 2).astype(int)) == 1)
    assert crossings >= 3  # ... several times
    assert np.ptp(np.array(centres), axis=0).max() > 15  # and the head sways
    assert demo_inputs(tmp_path) == (video, targets)  # written once
