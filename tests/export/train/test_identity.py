"""dlib's identity and pose metrics on real faces, and `mnt-export evaluate` in the paper's
two settings, with and without the identity extra."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
from click.testing import CliRunner

from mnt.export.cli import main as export_cli
from mnt.export.errors import ExportError
from mnt.export.train.dataset import find_videos, prepare
from mnt.export.train.evaluate import CROSS, METHODS, SELF
from tests.helpers import SHARED_DATA

pytest.importorskip("dlib")
if importlib.util.find_spec("face_recognition_models") is None:
    pytest.skip("needs the identity extra (face-recognition-models)", allow_module_level=True)
pytestmark = pytest.mark.skipif(not (SHARED_DATA / "driving").exists(),
                                reason="needs ../shared/data/driving beside the checkout")

from mnt.export.train.identity import FaceMetrics, csim, prmse, same_person  # noqa: E402


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    videos, cache = tmp_path_factory.mktemp("clips"), tmp_path_factory.mktemp("cache")
    for name in ("d0.mp4", "d11.mp4"):
        (videos / name).symlink_to(SHARED_DATA / "driving" / name)
    return videos, cache, prepare(find_videos(videos), cache, 128, say=lambda _: None)


def test_the_same_person_scores_higher_than_another(clips):
    metrics = FaceMetrics()
    a, b = clips[2].clips
    first, last = a.train[0], a.train[-1]  # one person, frames apart (another pose and mouth)
    e = {name: metrics.embedding(clip.target_images[i], clip.target_landmarks[i])
         for name, clip, i in (("a0", a, first), ("a1", a, last), ("b0", b, b.train[0]))}
    assert csim(e["a0"], e["a1"]) > csim(e["a0"], e["b0"]) + 0.02
    assert same_person(e["a0"], e["a1"]) and not same_person(e["a0"], e["b0"])


def test_prmse_is_zero_for_an_image_with_itself_and_grows_with_a_shift(clips):
    metrics = FaceMetrics()
    clip = clips[2].clips[0]
    image, points = clip.driver_images[0], clip.driver_landmarks[0]
    dlib_points = metrics.points(image, points)
    assert prmse(dlib_points, metrics.points(image, points)) == 0.0
    shifted = np.roll(image, 6, axis=1)  # the face moved 6 px right
    moved = metrics.points(shifted, points + [6, 0, 0])
    assert 4.0 < prmse(dlib_points, moved) < 8.0
    # dlib's points follow the face, not the box they are given
    assert np.abs((moved - dlib_points).mean(axis=0) - [6, 0]).max() < 1.5


def _evaluate(clips, tmp_path):
    from mnt.runtime.defaults import default_checkpoint

    videos, cache, _ = clips
    result = CliRunner().invoke(export_cli, [
        "evaluate", "--checkpoint", str(default_checkpoint()), "--videos", str(videos),
        "--data-cache", str(cache), "--targets", "1", "--frames", "2", "--threads", "2", "--workers", "1",
        "--json", str(tmp_path / "results.json")])
    assert result.exit_code == 0, result.output
    return result.output, json.loads((tmp_path / "results.json").read_text())


def test_evaluate_reports_both_settings_with_identity_and_pose(clips, tmp_path):
    output, results = _evaluate(clips, tmp_path)
    assert f"{SELF}:" in output and f"{CROSS}:" in output and "| CSIM | same person | PRMSE |" in output
    cross = results["results"][CROSS]["1"]
    model, target, driver = (cross[m] for m in METHODS[CROSS])
    # The trivial baselines bracket the task: the target has the identity, the driver the pose.
    assert target["CSIM"] == pytest.approx(1.0) and driver["PRMSE"] == 0.0
    assert driver["CSIM"] < target["CSIM"] and target["PRMSE"] > 1.0
    # The model moves the target's face towards the driver's pose.
    assert model["PRMSE"] < target["PRMSE"] and 0.0 < model["CSIM"] < 1.0
    own = results["results"][SELF]["1"]["model"]
    assert {"SSIM", "CSIM", "PRMSE", "same person"} <= set(own)


def test_evaluate_without_the_identity_extra_says_so(clips, tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args: None if name == "face_recognition_models" else real(name, *args))
    with pytest.raises(ExportError, match="identity metrics need face-recognition-models") as raised:
        FaceMetrics()
    assert "identity extra" in raised.value.hint
    output, results = _evaluate(clips, tmp_path)
    assert "CSIM, same-person rate, PRMSE and the different-identity setting omitted" in output
    assert "pip install 'mnt[identity]'" in output
    assert list(results["results"]) == [SELF] and "CSIM" not in results["results"][SELF]["1"]["model"]
