"""The runtime API on real artefacts of the tiny checkpoint."""

import shutil

import numpy as np
import pytest

from mnt.export.model.checkpoint import load_checkpoint
from mnt.export.onnx.samples import posed_landmarks
from mnt.runtime import RuntimeStageError
from mnt.runtime.reenactor import Reenactor
from tests.helpers import reference_frame, run_blocking


@pytest.fixture(scope="module")
def fp32(tiny_artefacts):
    return tiny_artefacts("fp32")


def _targets(stats, faces, k, seed=0):
    rng = np.random.default_rng(seed)
    points = [posed_landmarks(stats, 256, rng.standard_normal(48), rng.uniform(-0.3, 0.3))
              for _ in range(k)]
    return faces[:k], points


@pytest.mark.parametrize("k", [1, 4])
def test_matches_the_pytorch_reference_end_to_end(fp32, tiny_checkpoint, parity_faces, k):
    reference = load_checkpoint(tiny_checkpoint)
    faces, points = _targets(reference.stats, parity_faces, k)
    driver = posed_landmarks(reference.stats, 256, np.random.default_rng(9).standard_normal(48), 0.2)
    with Reenactor(fp32, backend="onnxruntime-cpu") as model:
        state, hit = model.encode_targets(faces, points)
        frame = model.generate(state, driver)
    assert not hit and state.k == k and frame.shape == (256, 256, 3) and frame.dtype == np.uint8
    expected = reference_frame(reference, faces, points, driver)
    assert np.abs(frame.astype(int) - expected.astype(int)).max() <= 1  # rounding to uint8


def test_landmark_transformer_keeps_a_target_driven_by_itself(fp32, tiny_checkpoint, parity_faces):
    stats = load_checkpoint(tiny_checkpoint).stats
    faces, points = _targets(stats, parity_faces, 1)
    with Reenactor(fp32) as model:
        state, _ = model.encode_targets(faces, points)
        again = model.driver_landmarks(state, faces[0], points[0])
    assert np.abs(again - points[0]).max() < 1e-3  # pixels; float32 coefficients


def test_target_state_is_cached_and_immutable(fp32, tiny_checkpoint, parity_faces, tmp_path):
    stats = load_checkpoint(tiny_checkpoint).stats
    faces, points = _targets(stats, parity_faces, 3)
    with Reenactor(fp32) as model:
        first, hit1 = model.encode_targets(faces, points, cache=tmp_path)
        second, hit2 = model.encode_targets(faces, points, cache=tmp_path)
        other, hit3 = model.encode_targets(faces[:2], points[:2], cache=tmp_path)
    assert (hit1, hit2, hit3) == (False, True, False)
    assert first.key == second.key != other.key and len(list(tmp_path.glob("*.npz"))) == 2
    assert all(np.array_equal(first.feeds[n], second.feeds[n]) for n in first.feeds)
    with pytest.raises(ValueError):
        first.feeds["keys_0"][0, 0, 0] = 1.0
    (tmp_path / f"{first.key}.npz").write_bytes(b"damaged")
    with Reenactor(fp32) as model:
        _, hit = model.encode_targets(faces, points, cache=tmp_path)
    assert not hit


def test_bad_targets_and_changed_artefacts_are_refused(fp32, tiny_checkpoint, parity_faces, tmp_path):
    stats = load_checkpoint(tiny_checkpoint).stats
    faces, points = _targets(stats, parity_faces, 1)
    with Reenactor(fp32) as model:
        with pytest.raises(RuntimeStageError, match="need 1 to 8 target faces"):
            model.encode_targets(faces * 9, points * 9)
        with pytest.raises(RuntimeStageError, match="face crops must be"):
            model.encode_targets([faces[0][:100]], points)
    copy = tmp_path / "copy"
    shutil.copytree(fp32, copy)
    with open(copy / "generator.onnx", "ab") as handle:
        handle.write(b"\0")
    with pytest.raises(RuntimeStageError, match="generator.onnx changed since the build"):
        Reenactor(copy)


def test_runtime_runs_fp16_artefacts_without_torch(tiny_artefacts):
    folder = tiny_artefacts("fp16")
    code = (
        "import numpy as np\n"
        "from mnt.runtime.reenactor import Reenactor\n"
        "from mnt.runtime.landmarks import Pose, denormalize\n"
        f"model = Reenactor({str(folder)!r})\n"
        "pose = Pose(np.eye(3), 80.0, np.array([128.0, 140.0, 0.0]))\n"
        "points = denormalize(model.stats.mean, pose)\n"
        "face = np.full((256, 256, 3), 128, np.uint8)\n"
        "state, _ = model.encode_targets([face], [points])\n"
        "frame = model.generate(state, model.driver_landmarks(state, face, points))\n"
        "assert frame.shape == (256, 256, 3) and frame.std() > 1\n"
        "assert 'torch' not in sys.modules\n"
    )
    result = run_blocking(code, ("torch", "onnxscript"))
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("damage", ["empty", "truncated", "not_a_zip", "missing_array", "k_inf", "k_half"])
def test_a_damaged_cache_entry_is_recomputed_and_replaced(fp32, tiny_checkpoint, parity_faces, tmp_path,
                                                          damage):
    stats = load_checkpoint(tiny_checkpoint).stats
    faces, points = _targets(stats, parity_faces, 2)
    with Reenactor(fp32) as model:
        good, _ = model.encode_targets(faces, points, cache=tmp_path)
        entry = tmp_path / f"{good.key}.npz"
        whole = entry.read_bytes()
        if damage == "missing_array":  # a readable archive without the identity
            np.savez(entry, k=np.int64(2))
        elif damage.startswith("k_"):  # the target count not a whole number (found by fuzzing)
            np.savez(entry, identity=good.identity, k=np.float64(np.inf if damage == "k_inf" else 2.5),
                     **good.feeds)
        else:
            entry.write_bytes({"empty": b"", "truncated": whole[: len(whole) // 2],
                               "not_a_zip": b"damaged"}[damage])
        again, hit = model.encode_targets(faces, points, cache=str(tmp_path))
        assert not hit and entry.read_bytes() == whole  # recomputed and written anew
        assert all(np.array_equal(good.feeds[n], again.feeds[n]) for n in good.feeds)
        _, hit = model.encode_targets(faces, points, cache=tmp_path)
    assert hit


def test_float_face_crops_are_refused_on_a_cache_hit_too(fp32, tiny_checkpoint, parity_faces, tmp_path):
    stats = load_checkpoint(tiny_checkpoint).stats
    faces, points = _targets(stats, parity_faces, 1)
    with Reenactor(fp32) as model:
        model.encode_targets(faces, points, cache=tmp_path)
        with pytest.raises(RuntimeStageError, match="face crops must be uint8 .* got float32"):
            model.encode_targets([faces[0].astype(np.float32)], points, cache=tmp_path)


def test_a_target_state_of_another_model_is_refused(fp32, tiny_checkpoint, parity_faces, tmp_path):
    stats = load_checkpoint(tiny_checkpoint).stats
    faces, points = _targets(stats, parity_faces, 1)
    other = tmp_path / "other"
    shutil.copytree(fp32, other)
    manifest = other / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"tool_version": "', '"tool_version": "other-'))
    with Reenactor(fp32) as model, Reenactor(other) as second, Reenactor(fp32) as same:
        state, _ = model.encode_targets(faces, points)
        for call in (lambda: second.generate(state, points[0]),
                     lambda: second.driver_landmarks(state, faces[0], points[0])):
            with pytest.raises(RuntimeStageError, match="target state was not encoded by the model of"):
                call()
        assert same.generate(state, points[0]).shape == (256, 256, 3)  # same artefacts: accepted
        with pytest.raises(RuntimeStageError, match="target state was not encoded"):
            model.generate({"feeds": state.feeds}, points[0])
