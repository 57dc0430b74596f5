"""mnt-web in a real browser: Debian's headless Chromium, driven by Playwright, its fake
camera fed from a shared driving clip. Uploads a target, reenacts the camera live, refuses
the dog photo by name while the targets before it keep working, serves two tabs at once
and frees a closed tab's stream; takes a screenshot.

MNT_WEB_README_SCREENSHOT=1 runs it on the built-in model (mnt-web without --artifacts)
instead of the tiny test artefacts, and saves the screenshot as the README's docs/web.png."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest

from mnt.runtime.video import read_frames
from tests.helpers import SHARED_DATA

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "web.png"
README_SHOT = os.environ.get("MNT_WEB_README_SCREENSHOT") == "1"

pytestmark = [
    pytest.mark.skipif(not CHROMIUM.is_file(), reason="needs Debian's chromium: apt-get install chromium"),
    pytest.mark.skipif(not SHARED_DATA.is_dir(), reason=f"needs the shared clips in {SHARED_DATA}"),
]
sync_api = pytest.importorskip("playwright.sync_api", reason="needs Playwright: pip install playwright")
pytest.importorskip("aiohttp")
pytest.importorskip("dlib")


def _y4m(clip: Path, out: Path, frames: int = 60, side: int = 320) -> Path:
    """The clip's first frames as a y4m file (Chromium's fake camera), square, 4:2:0."""
    with out.open("wb") as handle:
        handle.write(f"YUV4MPEG2 W{side} H{side} F25:1 Ip A1:1 C420jpeg\n".encode())
        for frame in read_frames(clip, frames):
            h, w = frame.shape[:2]
            s = min(h, w)
            square = cv2.resize(frame[(h - s) // 2:(h + s) // 2, (w - s) // 2:(w + s) // 2], (side, side))
            handle.write(b"FRAME\n" + cv2.cvtColor(square, cv2.COLOR_RGB2YUV_I420).tobytes())
    return out


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _status(url: str) -> dict:
    with urllib.request.urlopen(f"{url}status", timeout=5) as answer:
        return json.load(answer)


def _eventually(check, seconds: float, what: str):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if result := check():
            return result
        time.sleep(0.2)
    raise AssertionError(f"not within {seconds:g} s: {what}")


@pytest.fixture()
def server(artefacts, env):
    port = _free_port()
    model = [] if README_SHOT else ["--artifacts", str(artefacts)]
    child = subprocess.Popen([sys.executable, "-m", "mnt.runtime.web.cli", *model, "--port", str(port),
                              "--max-streams", "2"], env=env, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}/"
    try:
        def up():
            if child.poll() is not None:
                raise AssertionError(f"mnt-web stopped: {child.stderr.read()}")
            try:
                return _status(url)
            except OSError:
                return None

        _eventually(up, 600, "mnt-web serving")
        yield url
    finally:
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(timeout=60)
        finally:
            child.kill()
            log = child.stderr.read()
        assert "stopped" in log, log


def _output(page) -> bytes:
    return page.locator("#output").screenshot()


def test_the_page_reenacts_the_browser_camera(server, tmp_path):
    camera = _y4m(SHARED_DATA / "driving" / "d3.mp4", tmp_path / "camera.y4m")
    args = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
            f"--use-file-for-fake-video-capture={camera}"]
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=args)
        try:
            page = browser.new_page(viewport={"width": 1000, "height": 760})
            page.goto(server)
            page.set_input_files("#files", str(SHARED_DATA / "targets" / "s12.jpg"))
            page.wait_for_selector("#crops img", timeout=120_000)
            page.click("#camera")
            page.wait_for_function("document.getElementById('stats').dataset.fps > 0", timeout=120_000)
            first = _output(page)
            time.sleep(1.5)
            assert _output(page) != first  # the face follows the driver
            assert re.search(r"\d+\.\d fps · latency \d+ ms", page.text_content("#stats"))

            page.set_input_files("#files", str(SHARED_DATA / "non-faces" / "s25.jpg"))
            page.wait_for_function("document.getElementById('error').textContent.includes('no human face')",
                                   timeout=60_000)
            assert "s25.jpg" in page.text_content("#error")
            assert page.locator("#crops img").count() == 1  # the targets before it stay
            before = _output(page)
            time.sleep(1.5)
            assert _output(page) != before  # and still drive the face

            other = browser.new_page()
            other.goto(server)
            other.click("#astronaut")
            other.wait_for_selector("#crops img", timeout=120_000)
            other.click("#camera")
            other.wait_for_function("document.getElementById('stats').dataset.fps > 0", timeout=120_000)
            assert _status(server)["streams"] == 2
            other.close()
            _eventually(lambda: _status(server)["streams"] == 1, 30, "the closed tab's stream freed")

            page.select_option("#mode", "paste-back")
            time.sleep(2)
            page.screenshot(path=str(tmp_path / "web.png"))
            shot = cv2.imread(str(tmp_path / "web.png"))
            assert shot is not None and float(np.std(shot)) > 10
            if README_SHOT:
                png = cv2.imencode(".png", shot, [cv2.IMWRITE_PNG_COMPRESSION, 9])[1]
                SCREENSHOT.write_bytes(png.tobytes())
        finally:
            browser.close()
