"""Fault injection: mnt-run and mnt-export build stopped at random points (SIGINT, SIGTERM,
SIGKILL, a disk that fills up) leave every output valid or absent, and no stray hidden file
once the next run is over. The points are drawn from a seeded generator and printed, so a
failure can be replayed."""

import os
import random
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import cv2
import pytest
from skimage import data

from mnt.runtime.video import read_frames
from tests.helpers import console_script, talking_clip

FAULTS = ("SIGINT", "SIGTERM", "SIGKILL", "disk-full")
# what each fault may end in: the run finished first (0), the handler's code (130, 143, or 1
# for a write that failed), or death by the signal where it came before the handler was in place
EXIT_CODES = {"SIGINT": {0, 130, -2}, "SIGTERM": {0, 143, -15}, "SIGKILL": {0, -9}, "disk-full": {0, 1}}


def _start(args: list[str], fault: str, limit: int, **kwargs) -> subprocess.Popen:
    def prepare() -> None:
        signal.signal(signal.SIGINT, signal.SIG_DFL)  # (a background shell may ignore it)
        if fault == "disk-full":  # writes past `limit` bytes fail (EFBIG), as on a full disk
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return subprocess.Popen(args, preexec_fn=prepare, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, **kwargs)


def _inject(process: subprocess.Popen, fault: str, delay: float) -> tuple[int, str]:
    if fault in ("SIGINT", "SIGTERM", "SIGKILL"):
        try:
            process.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            process.send_signal(getattr(signal, fault))
    _, stderr = process.communicate(timeout=600)
    return process.returncode, stderr


def _strays(*folders: Path) -> list[Path]:
    return [p for folder in folders if folder.exists() for p in folder.rglob(".*")
            if ".partial-" in p.name or ".old-" in p.name or p.name.endswith(".lock")]


def _check_video(path: Path, most: int) -> None:
    frames = sum(1 for _ in read_frames(path))  # decodes every frame: raises on a damaged file
    assert 0 < frames <= most
    with av.open(str(path)) as container:
        assert container.streams.video[0].codec_context.name == "h264"


@pytest.fixture(scope="module")
def artefacts(tiny_artefacts):
    return tiny_artefacts("fp32")


def test_mnt_run_stopped_anywhere_leaves_a_valid_video_or_none(artefacts, tmp_path):
    pytest.importorskip("mediapipe")
    seed = int(os.environ.get("MNT_FAULT_SEED", "16"))
    rng = random.Random(seed)
    targets = tmp_path / "targets"
    targets.mkdir()
    cv2.imwrite(str(targets / "astronaut.png"), cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR))
    driver = talking_clip(tmp_path / "driver.mp4", faces=24)
    work, cache = tmp_path / "work", tmp_path / "cache"
    work.mkdir()
    env = {**os.environ, "MNT_CACHE_DIR": str(cache)}
    args = [console_script("mnt-run"), str(driver), "--targets", str(targets), "--artifacts",
            str(artefacts), "-o", str(work / "out.mp4"), "--force"]
    started = time.monotonic()
    code, stderr = _inject(_start(args, "none", 0, env=env), "none", 0)
    assert code == 0, stderr
    whole = time.monotonic() - started
    for trial in range(12):
        fault, delay, limit = FAULTS[trial % 4], rng.uniform(0, whole), rng.randint(2_000, 400_000)
        (work / "out.mp4").unlink(missing_ok=True)
        case = f"seed {seed}, trial {trial}: {fault} after {delay:.1f} s (limit {limit} bytes)"
        code, stderr = _inject(_start(args, fault, limit, env=env), fault, delay)
        assert code in EXIT_CODES[fault], f"{case}: exit {code}\n{stderr}"
        if code in (1, 130, 143):
            assert "Traceback" not in stderr and "internal error" not in stderr, f"{case}\n{stderr}"
        if fault == "disk-full" and code == 1:
            assert "mnt-run: error: cannot write" in stderr, f"{case}\n{stderr}"
        if (work / "out.mp4").exists():
            _check_video(work / "out.mp4", 24)
        else:
            assert code != 0, f"{case}: exit 0 and no video\n{stderr}"
    code, stderr = _inject(_start(args, "none", 0, env=env), "none", 0)  # the next run
    assert code == 0, stderr
    _check_video(work / "out.mp4", 24)
    assert _strays(work, cache) == [], f"seed {seed}"


@pytest.mark.slow
def test_mnt_export_build_stopped_anywhere_leaves_a_valid_folder_or_none(tiny_checkpoint, tmp_path):
    seed = int(os.environ.get("MNT_FAULT_SEED", "16"))
    rng = random.Random(seed)
    out = tmp_path / "artefacts"
    args = [console_script("mnt-export"), "build", "--checkpoint", str(tiny_checkpoint), "--precision",
            "fp32", "--out", str(out), "--engines", "none", "--force"]
    for trial, fault in enumerate(("SIGTERM", "SIGKILL", "disk-full", "SIGINT", "SIGKILL")):
        delay, limit = rng.uniform(1, 40), rng.randint(1_000_000, 12_000_000)
        case = f"seed {seed}, trial {trial}: {fault} after {delay:.1f} s (limit {limit} bytes)"
        process = _start(args, fault, limit)
        if trial == 0:  # a second build to the same folder meanwhile is refused at once
            while not (tmp_path / ".artefacts.lock").exists() and process.poll() is None:
                time.sleep(0.05)
            second = subprocess.run(args, capture_output=True, text=True, timeout=120)
            assert second.returncode == 1, second.stderr
            assert f"{out} is being written by process {process.pid}" in second.stderr
        code, stderr = _inject(process, fault, delay)
        assert code in EXIT_CODES[fault], f"{case}: exit {code}\n{stderr}"
        if code in (1, 130, 143):
            assert "Traceback" not in stderr and "internal error" not in stderr, f"{case}\n{stderr}"
        if out.exists():  # only a whole build is ever there
            verified = subprocess.run([console_script("mnt-export"), "verify", str(out)],
                                      capture_output=True, text=True, timeout=300)
            assert verified.returncode == 0, f"{case}\n{verified.stdout}{verified.stderr}"
    finished = subprocess.run(args, capture_output=True, text=True, timeout=600)  # the next build
    assert finished.returncode == 0, finished.stderr
    assert _strays(tmp_path) == [], f"seed {seed}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["artefacts"]


def _mount_tmpfs(folder: Path, size: str) -> bool:
    if sys.platform != "linux" or os.geteuid() != 0:
        return False
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                          capture_output=True).returncode == 0


def test_a_really_full_disk_gives_one_line_and_no_file(artefacts, tmp_path):
    pytest.importorskip("mediapipe")
    full = tmp_path / "full"
    full.mkdir()
    if not _mount_tmpfs(full, "150k"):
        pytest.skip("mounting a 150 kB tmpfs needs root on Linux (the random faults above use RLIMIT_FSIZE)")
    try:
        targets = tmp_path / "targets"
        targets.mkdir()
        cv2.imwrite(str(targets / "astronaut.png"), cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR))
        driver = talking_clip(tmp_path / "driver.mp4", faces=60)
        result = subprocess.run([console_script("mnt-run"), str(driver), "--targets", str(targets),
                                 "--artifacts", str(artefacts), "-o", str(full / "x.mp4"),
                                 "--output-mode", "side-by-side"], capture_output=True, text=True,
                                env={**os.environ, "MNT_CACHE_DIR": str(tmp_path / "cache")}, timeout=600)
        assert result.returncode == 1 and "Traceback" not in result.stderr
        assert f"mnt-run: error: cannot write {full / 'x.mp4'}: No space left on device" in result.stderr
        assert list(full.iterdir()) == []
    finally:
        subprocess.run(["umount", str(full)], check=False)
