"""What reaches the model from outside is checked by value: cached target states (a wrong
entry is recomputed, with a note) and the Python API's landmarks (a sane range, named)."""

import re

import numpy as np
import pytest

from mnt.export.model.checkpoint import load_checkpoint
from mnt.export.onnx.samples import posed_landmarks
from mnt.runtime import RuntimeStageError
from mnt.runtime.reenactor import Reenactor


@pytest.fixture(scope="module")
def model(tiny_artefacts):
    with Reenactor(tiny_artefacts("fp32"), backend="onnxruntime-cpu") as loaded:
        yield loaded


@pytest.fixture(scope="module")
def targets(tiny_checkpoint, parity_faces):
    stats = load_checkpoint(tiny_checkpoint).stats
    rng = np.random.default_rng(0)
    points = [posed_landmarks(stats, 256, rng.standard_normal(48), 0.1) for _ in range(2)]
    return parity_faces[:2], points


def _arrays(entry):
    with np.load(entry) as data:
        return {name: np.array(data[name]) for name in data.files}


def _nan_feed(a):
    a["keys_0"] = a["keys_0"] * np.nan


def _nan_identity(a):
    a["identity"] = a["identity"] * np.nan


def _huge_identity(a):
    a["identity"] = a["identity"] * 1e30


def _identity_shape(a):
    a["identity"] = a["identity"][:10]


def _missing_tensor(a):
    del a["warped_2"]


def _misshaped_tensor(a):
    a["values_1"] = a["values_1"][:, :3]


def _extra_tensor(a):
    a["bias"] = np.zeros(3, np.float32)


def _other_k(a):
    a["k"] = np.int64(5)


def _integer_tensor(a):
    a["warped_1"] = a["warped_1"].astype(np.int32)


@pytest.mark.parametrize(("tamper", "note"), [
    (_nan_feed, "keys_0 holds NaN"),
    (_nan_identity, "identity holds NaN"),
    (_huge_identity, "out-of-range"),
    (_identity_shape, r"identity is float\w* \(10, 3\)"),
    (_missing_tensor, r"missing \['warped_2'\]"),
    (_misshaped_tensor, r"values_1 is float32 \(2, 3, \d+\)"),
    (_extra_tensor, r"unexpected \['bias'\]"),
    (_other_k, "made for 5 targets, not 2"),
    (_integer_tensor, r"warped_1 is int32"),
], ids=lambda v: v.__name__.strip("_") if callable(v) else "")
def test_a_wrong_cache_entry_is_recomputed_with_a_note(model, targets, tmp_path, tamper, note):
    faces, points = targets
    good, _ = model.encode_targets(faces, points, cache=tmp_path)
    entry = tmp_path / f"{good.key}.npz"
    whole = entry.read_bytes()
    arrays = _arrays(entry)
    tamper(arrays)
    with open(entry, "wb") as handle:
        np.savez(handle, **arrays)
    said = []
    again, hit = model.encode_targets(faces, points, cache=tmp_path, say=said.append)
    assert not hit and entry.read_bytes() == whole  # recomputed and written anew
    assert len(said) == 1 and str(entry) in said[0] and "encoding the targets again" in said[0]
    assert re.search(note, said[0]), said[0]
    drive = model.driver_landmarks(again, faces[0], points[0])
    assert np.array_equal(model.generate(again, drive), model.generate(good, drive))  # not black
    _, hit = model.encode_targets(faces, points, cache=tmp_path, say=said.append)
    assert hit and len(said) == 1


@pytest.mark.parametrize("scale", [1e9, 1e30, 1e300, -1e9])
def test_landmarks_far_off_the_crop_are_refused_by_every_entry(model, targets, scale):
    faces, points = targets
    state, _ = model.encode_targets(faces, points)
    far = points[0] * scale
    message = r"outside the range for a 256 px crop: x and y from -512 to 768, z from -768 to 768"
    with pytest.raises(RuntimeStageError, match=r"target 1: landmarks reach .*" + message):
        model.encode_targets(faces, [far, points[1]])
    with pytest.raises(RuntimeStageError, match=message):
        model.driver_landmarks(state, faces[0], far)
    with pytest.raises(RuntimeStageError, match=message):
        model.generate(state, far)
    with model.stream(state) as stream:
        with pytest.raises(RuntimeStageError, match=message):
            stream.driver_landmarks(faces[0], far)
        with pytest.raises(RuntimeStageError, match=message):
            stream.generate(far)


def test_landmarks_of_a_head_half_out_of_the_crop_are_accepted(model, targets):
    faces, points = targets
    state, _ = model.encode_targets(faces, points)
    shifted = points[0] + np.array([200.0, -150.0, 0.0])  # partly outside the crop, still sane
    drive = model.driver_landmarks(state, faces[0], shifted)
    assert np.all(np.isfinite(drive)) and model.generate(state, drive).shape == (256, 256, 3)


@pytest.mark.parametrize(("bad", "message"), [
    (np.zeros((68, 2)), r"expected landmarks of shape \(68, 3\), got \(68, 2\)"),
    (np.full((68, 3), np.nan), "NaN or infinity"),
    ("not landmarks", r"expected \(68, 3\) numbers in crop pixels, got str"),
])
def test_malformed_landmarks_are_named(model, targets, bad, message):
    faces, points = targets
    state, _ = model.encode_targets(faces, points)
    with pytest.raises(RuntimeStageError, match=message):
        model.generate(state, bad)
