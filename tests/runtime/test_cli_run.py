"""mnt-run end to end through the real command line, on the shared media."""

import json
import re
import shutil
import signal
import subprocess
import time

import av
import cv2
import pytest

from mnt.runtime.backends import registry
from mnt.runtime.video import read_frames
from tests.helpers import SHARED_DATA, console_script, interruptible_popen, mnt_run

pytest.importorskip("mediapipe")
pytest.importorskip("dlib")
if not SHARED_DATA.exists():
    pytest.skip(f"{SHARED_DATA} not present", allow_module_level=True)

DRIVING, TARGETS, NON_FACES = SHARED_DATA / "driving", SHARED_DATA / "targets", SHARED_DATA / "non-faces"


def _targets(tmp_path, *names):
    folder = tmp_path / "targets"
    folder.mkdir(exist_ok=True)
    for name in names:
        shutil.copy(TARGETS / name, folder / name)
    return folder


def _frame_count(path):
    return sum(1 for _ in read_frames(path))


@pytest.mark.parametrize(("clip", "photos"), [("d3.mp4", ["s42.jpg"]),
                                              ("d0.mp4", ["s1.jpg", "s12.jpg", "s42.jpg", "s9.jpg"])])
def test_reenacts_a_clip_with_k_targets_and_hits_the_cache_the_second_time(
        artefacts, env, tmp_path, clip, photos):
    targets = _targets(tmp_path, *photos)
    out = tmp_path / "out.mp4"
    summary_file = tmp_path / "summary.json"
    first = mnt_run(DRIVING / clip, "--targets", targets, "--artifacts", artefacts, "-o", out,
                    "--max-frames", 4, "--json", summary_file, env=env)
    assert first.returncode == 0, first.stderr
    assert "computed in" in first.stderr and "4 frames; per frame: landmarks" in first.stderr
    summary = json.loads(summary_file.read_text())
    assert summary["frames"] == 4 and summary["output"] == str(out) and not summary["target_cache_hit"]
    assert summary["targets"] == len(photos) and summary["frames_without_face"] == 0
    assert set(summary["per_frame_ms"]) == {"landmarks", "generator", "io"}
    assert f"generator {summary['per_frame_ms']['generator']:.1f} ms" in first.stderr
    assert set(summary["backends"]) == {"target_encoder", "landmark_disentangler", "generator"}
    assert set(summary["backends"].values()) <= set(registry.names())
    assert _frame_count(out) == 4 and next(read_frames(out)).shape == (256, 256, 3)
    with av.open(str(out)) as container:
        assert bool(container.streams.audio) == (clip != "d0.mp4")  # d0 has no audio track
    again = mnt_run(DRIVING / clip, "--targets", targets, "--artifacts", artefacts, "-o", out,
                    "--max-frames", 2, "--force", "--output-mode", "side-by-side", "--json", "-", env=env)
    assert again.returncode == 0, again.stderr
    assert "taken from the cache" in again.stderr and "target cache hit" in again.stderr
    assert json.loads(again.stdout)["target_cache_hit"] and json.loads(again.stdout)["frames"] == 2
    assert next(read_frames(out)).shape == (256, 512, 3)


def test_self_reenactment_and_paste_back(artefacts, env, tmp_path):
    folder = tmp_path / "self"
    folder.mkdir()
    frame = next(read_frames(DRIVING / "d11.mp4"))
    cv2.imwrite(str(folder / "frame0.png"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    out = tmp_path / "self.mp4"
    result = mnt_run(DRIVING / "d11.mp4", "--targets", folder, "--artifacts", artefacts, "-o", out,
                     "--max-frames", 3, "--output-mode", "paste-back", env=env)
    assert result.returncode == 0, result.stderr
    assert next(read_frames(out)).shape == frame.shape  # the target photo at full resolution


@pytest.mark.parametrize(("setup", "message"), [
    ("monkey", "s22.jpg: no human face found"),
    ("dog", "s25.jpg: no human face found"),
    ("empty", "is empty"),
    ("only-text", "no readable photos"),
])
def test_bad_target_folders_give_one_line_and_no_output(artefacts, env, tmp_path, setup, message):
    folder = tmp_path / "t"
    folder.mkdir()
    if setup in ("monkey", "dog"):
        name = "s22.jpg" if setup == "monkey" else "s25.jpg"
        shutil.copy(NON_FACES / name, folder / name)
    elif setup == "only-text":
        (folder / "notes.txt").write_text("not a photo")
    out = tmp_path / "out.mp4"
    result = mnt_run(DRIVING / "d3.mp4", "--targets", folder, "--artifacts", artefacts, "-o", out,
                     "--max-frames", 2, env=env)
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and errors[0].startswith("mnt-run: error:") and message in errors[0]
    assert "Traceback" not in result.stderr and not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_non_images_are_skipped_and_more_than_eight_targets_are_cut(artefacts, env, tmp_path):
    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(9):
        shutil.copy(TARGETS / "s42.jpg", folder / f"p{i}.jpg")
    (folder / "readme.txt").write_text("x")
    result = mnt_run(DRIVING / "d3.mp4", "--targets", folder, "--artifacts", artefacts, "-o",
                     tmp_path / "o.mp4", "--max-frames", 1, env=env)
    assert result.returncode == 0, result.stderr
    # (the ninth photo and what follows are never decoded)
    assert "using the first 8" in result.stderr and "(not used: p8.jpg, readme.txt)" in result.stderr


def test_bad_driver_and_existing_output(artefacts, env, tmp_path):
    targets = _targets(tmp_path, "s42.jpg")
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\0" * 4096)
    result = mnt_run(broken, "--targets", targets, "--artifacts", artefacts, "-o", tmp_path / "o.mp4",
                     env=env)
    assert result.returncode == 1 and "broken.mp4" in result.stderr.splitlines()[-1]
    existing = tmp_path / "exists.mp4"
    existing.write_bytes(b"mine")
    result = mnt_run(DRIVING / "d3.mp4", "--targets", targets, "--artifacts", artefacts, "-o", existing,
                     env=env)
    assert result.returncode == 1 and "--force" in result.stderr and existing.read_bytes() == b"mine"


def test_ctrl_c_keeps_a_valid_shorter_video(artefacts, env, tmp_path):
    targets = _targets(tmp_path, "s42.jpg")
    out = tmp_path / "cut.mp4"
    process = interruptible_popen([console_script("mnt-run"), str(DRIVING / "d6.mp4"), "--targets",
                                   str(targets), "--artifacts", str(artefacts), "-o", str(out)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 300
    while time.time() < deadline and not any(p.name.startswith(".cut.partial-") for p in tmp_path.iterdir()):
        time.sleep(0.2)
    time.sleep(3)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "interrupted: wrote the first" in stderr
    frames = _frame_count(out)
    assert 0 < frames < 1008
    with av.open(str(out)) as container:
        assert container.streams.audio  # the audio up to the cut came along


def test_demo_builds_the_default_artefacts_once_and_runs(env, tmp_path):
    out = tmp_path / "demo.mp4"
    first = mnt_run("--demo", "-o", out, "--max-frames", 5, env=env)
    assert first.returncode == 0, first.stderr
    assert "building the built-in model" in first.stderr and _frame_count(out) == 5
    again = mnt_run("--demo", "-o", out, "--max-frames", 2, "--force", env=env)
    assert again.returncode == 0, again.stderr
    assert "building the built-in model" not in again.stderr and "target cache hit" in again.stderr


def test_missing_inputs_point_to_the_demo(env):
    result = mnt_run(env=env)
    assert result.returncode == 1 and "mnt-run --demo" in result.stderr


def _video_of(path, images, size=384):
    from fractions import Fraction

    from mnt.runtime.video import VideoWriter

    writer = VideoWriter(path, Fraction(25), size, size)
    for image in images:
        writer.write(cv2.resize(cv2.cvtColor(cv2.imread(str(image)), cv2.COLOR_BGR2RGB), (size, size)))
    writer.close()
    return path


def test_frames_without_a_face_are_skipped_then_held(artefacts, env, tmp_path):
    targets = _targets(tmp_path, "s42.jpg")
    driver = _video_of(tmp_path / "dog-then-face.mp4",
                       [NON_FACES / "s25.jpg"] * 3 + [TARGETS / "s1.jpg"] * 4 + [NON_FACES / "s25.jpg"] * 2)
    out = tmp_path / "out.mp4"
    result = mnt_run(driver, "--targets", targets, "--artifacts", artefacts, "-o", out, env=env)
    assert result.returncode == 0, result.stderr
    # The 3 leading dog frames are skipped; the trailing ones are either held (face lost) or,
    # as mediapipe's tracker may follow the mesh onto the dog, generated: 6 frames either way.
    without = int(re.search(r"(\d+) frames without a face", result.stderr).group(1))
    assert 3 <= without <= 5 and _frame_count(out) == 6
    no_face = _video_of(tmp_path / "dog.mp4", [NON_FACES / "s25.jpg"] * 3)
    result = mnt_run(no_face, "--targets", targets, "--artifacts", artefacts, "-o", tmp_path / "x.mp4",
                     env=env)
    assert result.returncode == 1 and "no human face found in any frame" in result.stderr
    assert not (tmp_path / "x.mp4").exists()
