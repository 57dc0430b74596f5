"""The Python API refuses bad arguments with a RuntimeStageError naming them."""

from fractions import Fraction

import numpy as np
import pytest

from mnt.runtime import RuntimeStageError
from mnt.runtime.pipeline import DriverStream, load_targets
from mnt.runtime.video import VideoWriter, read_frames


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    path = tmp_path_factory.mktemp("video") / "five.mp4"
    writer = VideoWriter(path, Fraction(25), 32, 32)
    for value in range(5):
        writer.write(np.full((32, 32, 3), 40 * value, np.uint8))
    writer.close()
    return path


def test_read_frames_limit_and_step(video):
    assert list(read_frames(video, limit=0)) == []
    assert len(list(read_frames(video, limit=2))) == 2
    assert len(list(read_frames(video, step=2))) == 3
    for kwargs, message in (({"limit": -1}, "limit must be None or an integer >= 0, got -1"),
                            ({"step": 0}, "step must be an integer >= 1, got 0"),
                            ({"step": -2}, "step must be an integer >= 1, got -2"),
                            ({"step": 1.5}, "step must be an integer >= 1, got 1.5")):
        with pytest.raises(RuntimeStageError, match=message):
            next(read_frames(video, **kwargs))


@pytest.mark.parametrize(("frame", "got"), [
    (np.zeros((16, 32, 3), np.uint8), r"uint8 \(16, 32, 3\)"),
    (np.zeros((32, 32), np.uint8), r"uint8 \(32, 32\)"),
    (np.zeros((32, 32, 3), np.float32), r"float32 \(32, 32, 3\)"),
    ([[0, 0, 0]], "list"),
], ids=["size", "gray", "dtype", "list"])
def test_writer_refuses_a_frame_of_another_size_or_dtype(tmp_path, frame, got):
    writer = VideoWriter(tmp_path / "out.mp4", Fraction(25), 32, 32)
    try:
        with pytest.raises(RuntimeStageError, match=r"frame 1 must be uint8 \(32, 32, 3\), got " + got):
            writer.write(frame)
    finally:
        writer.abort()


def test_writer_close_twice_is_a_no_op(tmp_path):
    writer = VideoWriter(tmp_path / "out.mp4", Fraction(25), 32, 32)
    writer.write(np.zeros((32, 32, 3), np.uint8))
    assert writer.close() == writer.close() == tmp_path / "out.mp4"
    assert [p.name for p in tmp_path.iterdir()] == ["out.mp4"]
    with pytest.raises(RuntimeStageError, match="write after close"):
        writer.write(np.zeros((32, 32, 3), np.uint8))
    aborted = VideoWriter(tmp_path / "gone.mp4", Fraction(25), 32, 32)
    aborted.abort()
    aborted.close()  # after abort: nothing to finish
    assert not (tmp_path / "gone.mp4").exists()


@pytest.mark.parametrize("rate", [0, -25.0, float("nan"), float("inf"), "25", True])
def test_driver_stream_refuses_a_bad_rate_at_construction(rate):
    with pytest.raises(RuntimeStageError, match="rate must be frames per second > 0"):
        DriverStream(None, None, None, rate)  # the rate is checked before anything is used


def test_driver_stream_accepts_a_fraction_rate():
    assert DriverStream(None, None, None, Fraction(30000, 1001)).rate == Fraction(30000, 1001)


def test_load_targets_accepts_a_str_folder(tmp_path):
    from types import SimpleNamespace

    model = SimpleNamespace(target_range=(1, 8))  # (the folder is refused before the model is used)
    with pytest.raises(RuntimeStageError, match="is empty"):
        load_targets(str(tmp_path), model, None, str(tmp_path / "cache"), print)
    with pytest.raises(RuntimeStageError, match="does not exist"):
        load_targets(str(tmp_path / "nowhere"), model, None, None, print)
