"""dlib's face-recognition network in PyTorch, read from face-recognition-models' `.dat`:
the same descriptors as dlib on real faces, gradients to the input, the trainer's face
chip, and files that are not the network refused."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from mnt.export.errors import ExportError
from tests.helpers import real_faces
from tests.tolerances import FACE_CHIP_DESCRIPTOR_DISTANCE, FACE_DESCRIPTOR_MAX_ABS

dlib = pytest.importorskip("dlib")
if importlib.util.find_spec("face_recognition_models") is None:
    pytest.skip("needs the identity extra (face-recognition-models)", allow_module_level=True)

from mnt.export.train.dataset import face_box  # noqa: E402
from mnt.export.train.face_network import CHIP, FaceNetwork, network_file  # noqa: E402
from mnt.export.train.identity import model_file  # noqa: E402
from mnt.export.train.losses import face_chips, face_perceptual  # noqa: E402


@pytest.fixture(scope="module")
def network():
    return FaceNetwork(network_file())


@pytest.fixture(scope="module")
def faces():
    """(image, dlib's 68-point shape) of every real portrait dlib's detector finds."""
    detector = dlib.get_frontal_face_detector()
    shapes = dlib.shape_predictor(str(model_file("shape_predictor_68_face_landmarks.dat")))
    found = []
    for image in real_faces(256):
        boxes = detector(image, 1)
        if boxes:
            found.append((image, shapes(image, boxes[0])))
    assert found, "no face found in the packaged astronaut"
    return found


def _tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(image.astype(np.float32)).permute(2, 0, 1)[None]


def test_descriptors_match_dlib_on_real_faces(network, faces):
    recogniser = dlib.face_recognition_model_v1(str(network_file()))
    for image, shape in faces:
        chip = dlib.get_face_chip(image, shape, CHIP, 0.25)
        expected = np.array(recogniser.compute_face_descriptor(chip))
        with torch.no_grad():
            got = network(_tensor(chip))[0].numpy()
        assert np.abs(got - expected).max() <= FACE_DESCRIPTOR_MAX_ABS


def test_the_trainer_s_chip_is_the_face_and_passes_gradients(network, faces):
    recogniser = dlib.face_recognition_model_v1(str(network_file()))
    for image, shape in faces:
        points = np.array([(p.x, p.y, 0.0) for p in shape.parts()])
        x = (_tensor(image) / 127.5 - 1).requires_grad_()
        descriptor = network(face_chips(x, torch.from_numpy(face_box(points))[None], CHIP))[0]
        expected = np.array(recogniser.compute_face_descriptor(image, shape))
        assert np.linalg.norm(descriptor.detach().numpy() - expected) < FACE_CHIP_DESCRIPTOR_DISTANCE
        descriptor.sum().backward()
        assert x.grad is not None and x.grad.abs().sum() > 0
    image, shape = faces[0]
    points = np.array([(p.x, p.y, 0.0) for p in shape.parts()])
    x, boxes = _tensor(image) / 127.5 - 1, torch.from_numpy(face_box(points))[None]
    assert face_perceptual(network, x, x, boxes) == 0
    assert face_perceptual(network, x.flip(-1), x, boxes) > 0


def test_a_truncated_or_foreign_file_is_refused(tmp_path):
    data = network_file().read_bytes()
    truncated = tmp_path / "truncated.dat"
    truncated.write_bytes(data[:len(data) // 2])
    with pytest.raises(ExportError, match="ends early|fewer layers") as caught:
        FaceNetwork(truncated)
    assert "face-recognition-models" in caught.value.hint
    with pytest.raises(ExportError, match="fewer layers"):
        FaceNetwork(model_file("shape_predictor_68_face_landmarks.dat"))
    with pytest.raises(ExportError, match="cannot read"):
        FaceNetwork(tmp_path / "missing.dat")
