import numpy as np
import pytest

from mnt.export.model.landmark_prior import mean_face, random_stats
from mnt.runtime import LandmarkStats, Pose, RuntimeStageError, denormalize, normalize
from mnt.runtime.landmarks import N_EXPRESSION, LandmarkTransformer
from tests.tolerances import ROUNDTRIP_PX


def _random_rotation(rng):
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


@pytest.mark.parametrize("seed", range(5))
def test_normalize_denormalize_round_trip(seed):
    rng = np.random.default_rng(seed)
    stats = random_stats(rng)
    landmarks = rng.uniform(0, 256, (68, 3))
    normed, pose = normalize(landmarks, stats.mean)
    assert np.abs(denormalize(normed, pose) - landmarks).max() < ROUNDTRIP_PX
    assert np.isclose(np.linalg.det(pose.rotation), 1.0)


def test_normalize_removes_scale_translation_and_rotation():
    rng = np.random.default_rng(1)
    stats = random_stats(rng)
    expression = stats.expression(rng.standard_normal(N_EXPRESSION))
    shape = stats.mean + expression
    pose = Pose(rotation=_random_rotation(rng), scale=73.0, translation=np.array([120, 140, 9.0]))
    normed, found = normalize(denormalize(shape, pose), stats.mean)
    # Recovered up to the tiny rotation that best aligns the expression to the mean.
    assert np.isclose(found.scale, 73.0 * np.sqrt(np.mean(np.sum((shape - shape.mean(0))**2, 1))))
    assert np.abs(normed - (shape - shape.mean(0)) / np.sqrt(np.mean(np.sum(
        (shape - shape.mean(0))**2, 1)))).max() < 0.05
    assert np.allclose(normalize(denormalize(stats.mean, pose), stats.mean)[0], stats.mean)


def test_mean_face_is_normalised():
    face = mean_face()
    assert np.allclose(face.mean(axis=0), 0)
    assert np.isclose(np.sqrt(np.mean(np.sum(face**2, axis=1))), 1.0)


def _images(k):
    return np.zeros((k, 3, 32, 32), np.float32)


def test_target_driven_by_itself_keeps_its_own_landmarks():
    rng = np.random.default_rng(2)
    stats = random_stats(rng)
    weights = rng.standard_normal((204, N_EXPRESSION)).astype(np.float32)
    # Any disentangler (here a fixed random map) must give back the target itself.
    transformer = LandmarkTransformer(stats, lambda images, offsets: np.tanh(offsets @ weights))
    target = denormalize(stats.mean + 0.05 * rng.standard_normal((68, 3)),
                         Pose(_random_rotation(rng), 80.0, np.array([128, 130, 0.0])))
    identity = transformer.target_identity(_images(1), target[None])
    out = transformer.drive(identity, _images(1)[0], target)
    assert np.abs(out - target).max() < 1e-6


def test_identity_is_averaged_over_targets_and_expression_comes_from_the_driver():
    rng = np.random.default_rng(3)
    stats = random_stats(rng)
    identity = 0.03 * rng.standard_normal((68, 3))
    alphas = rng.standard_normal((4, N_EXPRESSION))
    poses = [Pose(_random_rotation(rng), s, np.array([128, 128, 0.0])) for s in (60, 70, 80, 90)]
    frames = np.stack([denormalize(stats.mean + identity + stats.expression(a), p)
                       for a, p in zip(alphas, poses, strict=False)])

    def oracle(images, offsets):  # a perfect disentangler for this person: recovers alpha
        residual = offsets.astype(np.float64) - identity.reshape(1, -1)
        raw = np.linalg.lstsq(stats.lambda_exp * stats.basis.T, residual.T, rcond=None)[0].T
        return (raw - stats.coef_mean) / stats.coef_std

    transformer = LandmarkTransformer(stats, oracle)
    # Normalisation aligns each frame onto the mean, which rotates away a little of each
    # expression; the oracle's recovery is exact only up to that, hence the tolerance.
    found = transformer.target_identity(_images(3), frames[:3])
    assert np.abs(found - identity).max() < 0.02
    out = transformer.drive(found, _images(1)[0], frames[3])
    assert np.abs(out - frames[3]).max() < 0.02 * poses[3].scale


def test_statistics_are_validated():
    stats = random_stats(np.random.default_rng(0))
    with pytest.raises(RuntimeStageError, match="basis"):
        LandmarkStats(stats.mean, stats.basis[:10], stats.coef_mean, stats.coef_std)
    with pytest.raises(RuntimeStageError, match="coef_std"):
        LandmarkStats(stats.mean, stats.basis, stats.coef_mean, -stats.coef_std)
    # Numbers written as strings convert to floats but would stay strings (found by fuzzing).
    for odd in (stats.mean.astype(str), stats.mean.astype(complex), stats.mean.astype(object)):
        with pytest.raises(RuntimeStageError, match="'mean' holds .*, not real numbers"):
            LandmarkStats(odd, stats.basis, stats.coef_mean, stats.coef_std)


def test_degenerate_landmarks_are_refused():
    with pytest.raises(RuntimeStageError, match="coincide"):
        normalize(np.ones((68, 3)), mean_face())
