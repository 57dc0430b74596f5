"""mnt-run's outputs, end to end on drivers made here: time kept (sound in sync with the
picture, --max-frames counting what it says), what was written kept when the driver breaks
off, nothing replaced behind the user's back, sizes bounded, odd target folders named."""

import os
import shutil
import subprocess
import time

import cv2
import numpy as np
import pytest
from skimage import data

from mnt.runtime.video import DecodeError, read_frames, read_timed_frames
from tests.helpers import (
    SHARED_DATA,
    console_script,
    interruptible_popen,
    mnt_run,
    run_blocking,
    sound_by_time,
    talking_clip,
)

pytest.importorskip("mediapipe")
pytest.importorskip("dlib")


@pytest.fixture()
def targets(tmp_path):
    folder = tmp_path / "targets"
    folder.mkdir()
    cv2.imwrite(str(folder / "astronaut.png"), cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR))
    return folder


def _error_lines(result):
    return [line for line in result.stderr.splitlines() if "error:" in line]


def test_sound_stays_with_the_picture_when_the_face_appears_late(artefacts, env, targets, tmp_path):
    # 30 grey frames (1.2 s), then the face, and a tone that starts with it
    driver = talking_clip(tmp_path / "late.mp4", faceless=30, faces=30)
    out = tmp_path / "out.mp4"
    result = mnt_run(driver, "--targets", targets, "--artifacts", artefacts, "-o", out,
                     "--max-frames", 10, env=env)
    assert result.returncode == 0, result.stderr
    assert "30 frames without a face" in result.stderr
    assert sum(1 for _ in read_frames(out)) == 10  # --max-frames counts output frames
    sound, rate = sound_by_time(out)
    start = sound[int(0.02 * rate):int(0.15 * rate)]  # (past the encoder's priming)
    assert np.sqrt(np.mean(start ** 2)) > 0.2  # the tone, not the silence before the face
    assert abs(len(sound) / rate - 10 / 25) < 0.1  # and no longer than the picture


def test_a_driver_damaged_midway_keeps_the_frames_before(artefacts, env, targets, tmp_path):
    driver = talking_clip(tmp_path / "driver.mp4", faces=40)
    data_ = bytearray(driver.read_bytes())
    at = int(len(data_) * 0.6)
    data_[at:at + 3000] = np.random.default_rng(1).integers(0, 256, 3000, dtype=np.uint8).tobytes()
    damaged = tmp_path / "damaged.mp4"
    damaged.write_bytes(bytes(data_))
    with pytest.raises(DecodeError) as caught:  # (the test's premise)
        for _ in read_timed_frames(damaged):
            pass
    readable = caught.value.frames
    assert 0 < readable < 40
    out = tmp_path / "out.mp4"
    result = mnt_run(damaged, "--targets", targets, "--artifacts", artefacts, "-o", out, env=env)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"cannot decode frame {readable + 1}" in _error_lines(result)[0]
    assert f"wrote the first {readable} frames to {out}" in result.stderr
    assert sum(1 for _ in read_frames(out)) == readable


def test_a_file_made_at_the_output_meanwhile_is_not_replaced(artefacts, env, targets, tmp_path):
    driver = talking_clip(tmp_path / "driver.mp4", faces=80)  # long enough to act during it
    out = tmp_path / "out.mp4"
    args = [console_script("mnt-run"), str(driver), "--targets", str(targets), "--artifacts",
            str(artefacts), "-o", str(out)]
    first = interruptible_popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    lock = tmp_path / ".out.mp4.lock"
    deadline = time.time() + 120
    while not lock.exists() and time.time() < deadline:
        time.sleep(0.05)
    second = mnt_run(*args[1:], env=env)  # the same -o, while the first runs
    assert second.returncode == 1
    assert f"{out} is being written by process {first.pid}" in _error_lines(second)[0]
    out.write_bytes(b"the user's own file")  # made while the first runs
    _, stderr = first.communicate(timeout=300)
    assert first.returncode == 1 and "appeared while this run was writing it" in stderr
    assert out.read_bytes() == b"the user's own file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "driver.mp4", "out.mp4", "targets"]


def test_paste_back_onto_a_huge_photo_is_capped(artefacts, env, tmp_path):
    folder = tmp_path / "huge"
    folder.mkdir()
    photo = cv2.resize(cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR), (4000, 4000))
    cv2.imwrite(str(folder / "astronaut.jpg"), photo)
    driver = talking_clip(tmp_path / "driver.mp4", faces=3)
    for extra, side in (((), 1920), (("--max-size", 640), 640)):
        out = tmp_path / f"{side}.mp4"
        result = mnt_run(driver, "--targets", folder, "--artifacts", artefacts, "-o", out,
                         "--output-mode", "paste-back", "--max-frames", 1, *extra, env=env)
        assert result.returncode == 0, result.stderr
        assert next(read_frames(out)).shape == (side, side, 3)


def test_odd_target_folders_are_named(artefacts, env, targets, tmp_path):
    driver = talking_clip(tmp_path / "driver.mp4", faces=3)
    (targets / "gone.jpg").symlink_to(tmp_path / "nowhere.jpg")
    (targets / "loop.jpg").symlink_to(targets / "loop.jpg")
    good = cv2.imencode(".jpg", cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR))[1].tobytes()
    (targets / "cut.jpg").write_bytes(good[:int(len(good) * 0.7)])
    result = mnt_run(driver, "--targets", targets, "--artifacts", artefacts, "-o", tmp_path / "a.mp4",
                     "--max-frames", 1, env=env)
    assert result.returncode == 0, result.stderr
    for line in ("skipping gone.jpg: a broken link", "skipping loop.jpg: a link loop",
                 "skipping cut.jpg: not a readable image"):
        assert line in result.stderr
    assert "targets: 1 photo(s)" in result.stderr

    loops = tmp_path / "loops"
    loops.mkdir()
    (loops / "x.jpg").symlink_to(loops / "x.jpg")
    result = mnt_run(driver, "--targets", loops, "--artifacts", artefacts, "-o", tmp_path / "b.mp4", env=env)
    assert result.returncode == 1 and "holds no photos" in _error_lines(result)[0]

    cv2.imwrite(str(targets / "zz-dot.png"), np.zeros((1, 1, 3), np.uint8))
    result = mnt_run(driver, "--targets", targets, "--artifacts", artefacts, "-o", tmp_path / "c.mp4",
                     env=env)
    assert result.returncode == 1
    assert "zz-dot.png: 1x1 pixels is too small to show a face" in _error_lines(result)[0]
    assert not (tmp_path / "c.mp4").exists()


def test_an_unusable_cache_folder_costs_only_time(artefacts, targets, tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    driver = talking_clip(tmp_path / "driver.mp4", faces=2)
    result = mnt_run(driver, "--targets", targets, "--artifacts", artefacts, "-o", tmp_path / "o.mp4",
                     env={**os.environ, "MNT_CACHE_DIR": str(blocker)})
    assert result.returncode == 0, result.stderr
    assert f"warning: cannot write the cache folder {blocker}/targets" in result.stderr


def test_a_damaged_target_cache_entry_is_recomputed_and_replaced(artefacts, env, targets, tmp_path):
    driver = talking_clip(tmp_path / "driver.mp4", faces=2)
    first = mnt_run(driver, "--targets", targets, "--artifacts", artefacts, "-o", tmp_path / "1.mp4", env=env)
    assert first.returncode == 0, first.stderr
    (entry,) = (tmp_path / "cache" / "targets").glob("*.npz")
    for damage in (b"", entry.read_bytes()[:100]):
        entry.write_bytes(damage)
        again = mnt_run(driver, "--targets", targets, "--artifacts", artefacts, "-o", tmp_path / "2.mp4",
                        "--force", env=env)
        assert again.returncode == 0, again.stderr
        assert "encoding computed in" in again.stderr and entry.stat().st_size > 1000
    shutil.rmtree(tmp_path / "cache")


@pytest.mark.parametrize("clip", ["made here", "d3.mp4"])
def test_mnt_run_needs_neither_mediapipe_nor_torch(artefacts, targets, tmp_path, clip):
    """The whole command, landmarks included, where mediapipe and torch cannot be imported
    (as on a Jetson, where mediapipe has no wheel): the artefacts' face components run it."""
    if clip == "made here":
        driver = talking_clip(tmp_path / "driver.mp4", faces=5)
    elif (SHARED_DATA / "driving" / clip).exists():
        driver = SHARED_DATA / "driving" / clip
    else:
        pytest.skip(f"{SHARED_DATA / 'driving'} not present")
    out = tmp_path / "out.mp4"
    code = (
        "import sys\n"
        "from mnt.runtime.cli import main\n"
        f"sys.argv = ['mnt-run', {str(driver)!r}, '--targets', {str(targets)!r}, '--artifacts',\n"
        f"            {str(artefacts)!r}, '-o', {str(out)!r}, '--landmarks', 'engines',\n"
        "            '--max-frames', '5']\n"
        "try:\n"
        "    main()\n"
        "except SystemExit as stop:\n"
        "    assert stop.code in (0, None), stop.code\n"
        "assert 'mediapipe' not in sys.modules and 'torch' not in sys.modules\n"
        "print('ok')\n")
    done = run_blocking(code, blocked=("mediapipe", "torch"))
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr
    assert sum(1 for _ in read_frames(out)) == 5
