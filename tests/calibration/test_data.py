"""The calibration reader: real media through the runtime's preprocessing, a reproducible
sample, and clear errors for media it cannot use (needs ../shared/data)."""

from __future__ import annotations

import pytest

from tests.helpers import SHARED_DATA

pytestmark = pytest.mark.skipif(not SHARED_DATA.exists(), reason=f"{SHARED_DATA} is not beside the checkout")


@pytest.fixture(scope="module")
def fp32_model(tiny_artefacts):
    from mnt.runtime.reenactor import Reenactor

    with Reenactor(tiny_artefacts("fp32"), backend="onnxruntime-cpu") as model:
        yield model


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    """One short driver video, a file that is not a video, one target photo."""
    folder = tmp_path_factory.mktemp("media")
    (folder / "d0.mp4").symlink_to(SHARED_DATA / "driving" / "d0.mp4")
    (folder / "broken.mp4").write_bytes(b"not a video at all" * 100)
    (folder / "s42.jpg").symlink_to(SHARED_DATA / "targets" / "s42.jpg")
    return folder


def test_sample_is_reproducible_and_skips_unreadable_video(fp32_model, media):
    from mnt.calibration.data import Options, collect

    said: list[str] = []
    a = collect(media, fp32_model, Options(frames=4, held_back=2, seed=0), say=said.append)
    b = collect(media, fp32_model, Options(frames=4, held_back=2, seed=0), say=lambda _: None)
    assert a.sample() == b.sample()
    assert any("broken.mp4" in line and "cannot be read" in line for line in said)
    assert any(s.startswith("broken.mp4") for s in a.sample()["skipped"])
    frames = {(f.video, f.index) for f in a.calibration}
    held = {(f.video, f.index) for f in a.held_back}
    assert len(frames) == 4 and len(held) == 2 and not frames & held
    # every component's inputs were recorded as the runtime feeds them
    assert len(a.feeds["generator"]) == 4 and len(a.held_back_feeds["generator"]) == 2
    assert a.feeds["generator"][0]["driver_landmarks"].shape == (1, 3, 256, 256)
    assert {f["target_images"].shape[0] for f in a.held_back_feeds["target_encoder"]} >= {1, 3}
    c = collect(media, fp32_model, Options(frames=4, held_back=2, seed=1), say=lambda _: None)
    assert c.sample()["sha256"] != a.sample()["sha256"]


def test_folder_without_faces_is_refused(fp32_model):
    from mnt.calibration.data import CalibrationError, Options, collect

    with pytest.raises(CalibrationError, match=r"no usable human faces.*s22\.jpg: no human face"):
        collect(SHARED_DATA / "non-faces", fp32_model, Options(frames=4, held_back=2), say=lambda _: None)


def test_too_few_frames_says_how_many_are_needed(fp32_model, media):
    from mnt.calibration.data import CalibrationError, Options, collect

    with pytest.raises(CalibrationError, match=r"only \d+ usable frames .* needs 110 \(100 to calibrate, "
                                               r"10 held back\)") as err:
        collect(media, fp32_model, Options(frames=100, held_back=10), say=lambda _: None)
    assert "--calibration-frames" in (err.value.hint or "")
