"""The One-Euro filter that steadies driver landmarks between frames."""

import numpy as np
import pytest

from mnt.runtime.errors import RuntimeStageError
from mnt.runtime.smoothing import OneEuroFilter
from tests.tolerances import ONE_EURO_JITTER_RATIO, ONE_EURO_STEP_PX


@pytest.mark.parametrize("beta", [0.0, 0.01])
def test_one_euro_filter_reduces_jitter(beta):
    rng = np.random.default_rng(0)
    truth = rng.uniform(50, 450, (68, 3))
    noisy = truth + rng.normal(0.0, 2.0, (300, 68, 3))
    f = OneEuroFilter(freq=30.0, min_cutoff=1.0, beta=beta, d_cutoff=1.0)
    out = np.array([f(x) for x in noisy])
    raw_jitter = np.std(noisy[30:] - truth, axis=0).mean()
    filtered_jitter = np.std(out[30:] - truth, axis=0).mean()
    assert filtered_jitter < ONE_EURO_JITTER_RATIO * raw_jitter
    assert np.abs(out[30:].mean(0) - truth).max() < 1.0  # smoothed around the truth, not off it


def _step_response(beta):
    f = OneEuroFilter(freq=30.0, min_cutoff=1.0, beta=beta, d_cutoff=1.0)
    low, high = np.zeros((68, 3)), np.full((68, 3), 100.0)
    for _ in range(30):
        f(low)
    return f, [f(high) for _ in range(15)]  # half a second


def test_one_euro_filter_follows_a_step_and_resets():
    f, out = _step_response(beta=0.05)
    high = np.full((68, 3), 100.0)
    assert 0 < out[0].max() < 100  # it smooths the jump ...
    assert np.all(np.diff([o.mean() for o in out]) >= 0)  # ... rises monotonically ...
    assert np.abs(out[-1] - high).max() < ONE_EURO_STEP_PX  # ... and arrives
    assert np.all(out[-1] <= 100.0 + 1e-9)  # without overshoot
    _, slow = _step_response(beta=0.0)
    assert slow[3].mean() < out[3].mean()  # speed (beta) is what lets it follow quickly
    f.reset()
    low = np.zeros((68, 3))
    np.testing.assert_array_equal(f(low), low)  # a fresh start passes the first sample through


def test_one_euro_filter_timestamps_and_shapes():
    f = OneEuroFilter()
    x = np.zeros((68, 3))
    f(x, t=0.0)
    f(x + 1, t=0.04)
    with pytest.raises(RuntimeStageError):
        f(x, t=0.04)  # time must move forward
    with pytest.raises(RuntimeStageError):
        f(np.zeros((5, 3)), t=0.08)
    with pytest.raises(RuntimeStageError):
        OneEuroFilter(min_cutoff=0.0)
