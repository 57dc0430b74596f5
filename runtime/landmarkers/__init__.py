"""Landmark backends: each finds the main face of an image and its 68 3D landmarks.
`base` holds the interface, `mediapipe_mesh` the default, `fan` the paper's 3D-FAN."""

from __future__ import annotations

import os

from mnt.runtime.landmarkers.base import LandmarkBackend


def landmark_backend(static_image_mode: bool, fan_weights: os.PathLike[str] | str | None = None
                     ) -> LandmarkBackend:
    """3D-FAN when its weights are given (or in $MNT_FAN_WEIGHTS), else mediapipe."""
    from mnt.runtime.landmarkers.fan import FanLandmarks, weights_folder
    from mnt.runtime.landmarkers.mediapipe_mesh import MediaPipeLandmarks

    folder = weights_folder(fan_weights)
    if folder is not None:
        return FanLandmarks(folder, static_image_mode=static_image_mode)
    return MediaPipeLandmarks(static_image_mode=static_image_mode)
