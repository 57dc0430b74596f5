"""mnt-web's socket protocol without a browser (aiohttp's test client): targets, frames,
bad photos and bad frames answered by name with the tab's state kept, a closed socket
freeing its stream, messages and photos over the limits refused in words, recordings
downloadable by their tab only and dropped with it."""

import asyncio
import base64
import json

import cv2
import numpy as np
import pytest
from skimage import data

from mnt.runtime.hub import Hub
from mnt.runtime.video import read_frames
from tests.helpers import SHARED_DATA, talking_clip

pytest.importorskip("aiohttp")
pytest.importorskip("dlib")

from aiohttp.test_utils import TestClient, TestServer  # noqa: E402

from mnt.runtime.web.server import MAX_MESSAGE, make_app  # noqa: E402
from tests.runtime.test_images import png_claiming  # noqa: E402


@pytest.fixture(scope="module")
def hub(artefacts):
    with Hub(artefacts, backend="onnxruntime-cpu", max_streams=2, idle_s=60) as hub:
        yield hub


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    clip = talking_clip(tmp_path_factory.mktemp("web") / "driver.mp4", faces=6)
    return [cv2.imencode(".jpg", cv2.cvtColor(f, cv2.COLOR_RGB2BGR))[1].tobytes() for f in read_frames(clip)]


def _png(image) -> str:
    png = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))[1]
    return base64.b64encode(png.tobytes()).decode()


def _run(hub, play):
    async def main():
        async with TestClient(TestServer(make_app(hub))) as client:
            await play(client)
    asyncio.run(main())


async def _answer(socket):
    """The next JSON answer, with the binary that follows a frame with a face."""
    message = await socket.receive_json(timeout=120)
    if message["type"] == "frame" and message["face"]:
        body = await socket.receive_bytes(timeout=30)
        n = int.from_bytes(body[:4], "big")
        message["crop"], message["output"] = _decoded(body[4:4 + n]), _decoded(body[4 + n:])
    return message


def _decoded(jpeg: bytes):
    return cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)


async def _until_face(socket, frames):
    for frame in frames:
        await socket.send_bytes(frame)
        answer = await _answer(socket)
        if answer.get("face"):
            return answer
    raise AssertionError("no reenacted frame came")


def test_targets_frames_and_bad_inputs_answered_by_name(hub, frames):
    async def play(client):
        socket = await client.ws_connect("/ws")
        assert (await socket.receive_json())["type"] == "ready"
        await socket.send_bytes(frames[0])
        assert "no target photo yet" in (await _answer(socket))["message"]
        await socket.send_json({"type": "targets", "photos": [_png(data.astronaut())], "names": ["a.png"]})
        targets = await _answer(socket)
        assert targets["type"] == "targets" and len(targets["crops"]) == 1
        face = await _until_face(socket, frames)
        assert face["output"].shape == (hub.size, 2 * hub.size, 3)  # side-by-side by default
        assert face["crop"].shape == (hub.size, hub.size, 3) and face["ms"]["model"] > 0
        bad = [({"type": "targets", "photos": [base64.b64encode(b"not an image").decode()]},
                "not a readable image"),
               ({"type": "targets", "photos": ["%%%"]}, "not base64"),
               ({"type": "targets", "photos": [_png(data.astronaut())] * 9}, "9 target photos"),
               ({"type": "mode", "mode": "sepia"}, "unknown output mode 'sepia'"),
               ({"type": "dance"}, "unknown command 'dance'"),
               ({"type": "record", "on": False}, "nothing was recorded")]
        if SHARED_DATA.is_dir():
            dog = (SHARED_DATA / "non-faces" / "s25.jpg").read_bytes()
            bad.append(({"type": "targets", "photos": [base64.b64encode(dog).decode()]}, "no human face"))
        for command, error in bad:
            await socket.send_json(command)
            answer = await _answer(socket)
            assert answer["type"] == "error" and error in answer["message"], (command["type"], answer)
        await socket.send_str("{not json")
        assert "not a command" in (await _answer(socket))["message"]
        await socket.send_bytes(b"\xff\xd8 not a jpeg")
        assert "not a readable JPEG" in (await _answer(socket))["message"]
        assert len(hub.streams) == 1  # the bad photos started nothing, ended nothing
        await socket.send_json({"type": "mode", "mode": "face"})
        assert (await _answer(socket))["mode"] == "face"
        assert (await _until_face(socket, frames[2:]))["output"].shape == (hub.size, hub.size, 3)
        await socket.close()
        for _ in range(50):
            if not hub.streams:
                break
            await asyncio.sleep(0.1)
        assert hub.streams == [] and (await (await client.get("/status")).json())["tabs"] == 0

    _run(hub, play)


def test_a_recording_downloads_as_mp4_and_goes_with_its_tab(hub, frames, tmp_path):
    async def play(client):
        socket = await client.ws_connect("/ws")
        await socket.receive_json()
        await socket.send_json({"type": "targets", "photos": [_png(data.astronaut())]})
        assert (await _answer(socket))["type"] == "targets"
        await socket.send_json({"type": "record", "on": True})
        assert (await _answer(socket))["on"] is True
        await _until_face(socket, frames)
        for frame in frames[3:]:
            await socket.send_bytes(frame)
            await _answer(socket)
        await socket.send_json({"type": "record", "on": False})
        url = (await _answer(socket))["url"]
        got = await client.get(url)
        assert got.status == 200
        (tmp_path / "got.mp4").write_bytes(await got.read())
        assert len(list(read_frames(tmp_path / "got.mp4"))) >= 3
        two = await client.ws_connect("/ws")  # another tab cannot take this one's recording
        tab = (await two.receive_json())["tab"]
        key = url.split("/")[2]  # the tab's secret, not its (sequential) id: no other tab can guess it
        assert len(key) >= 22 and not key.isdigit()
        for guess in (url.replace(key, tab), url.replace(key, str(int(tab) - 1))):
            assert (await client.get(guess)).status == 404, guess
        status = await (await client.get("/status")).json()
        assert status["tabs"] == 2 and status["streams"] == 1
        await socket.close()
        await two.close()
        for _ in range(50):
            if (await client.get(url)).status == 404:
                break
            await asyncio.sleep(0.1)
        assert (await client.get(url)).status == 404

    _run(hub, play)


def test_a_message_over_the_limit_and_an_image_bomb_are_refused_in_words_and_the_tab_lives_on(hub, frames):
    async def play(client):
        socket = await client.ws_connect("/ws")
        ready = await socket.receive_json()
        assert ready["max_message"] == MAX_MESSAGE and ready["max_pixels"] > 0  # (the page checks them)
        await socket.send_json({"type": "targets", "photos": [_png(data.astronaut())], "names": ["a.png"]})
        assert (await _answer(socket))["type"] == "targets"
        await socket.send_str(json.dumps({"type": "targets", "photos": ["A" * MAX_MESSAGE]}))
        answer = await _answer(socket)
        assert answer["type"] == "error" and "64.0 MiB is over the limit of 64 MiB" in answer["message"]
        bomb = base64.b64encode(png_claiming(24000, 24000)).decode()  # 1.7 GB decoded
        await socket.send_json({"type": "targets", "photos": [bomb], "names": ["bomb.png"]})
        answer = await _answer(socket)
        assert answer["type"] == "error" and "bomb.png: 24000x24000 pixels is over the" in answer["message"]
        assert (await _until_face(socket, frames))["face"]  # the tab and its stream lived on
        assert len(hub.streams) == 1
        await socket.close()

    _run(hub, play)


def test_a_targets_note_reaches_the_page(hub, monkeypatch):
    """A photo with several faces: the page is told which was used (the hub's log alone was)."""
    import mnt.runtime.hub as hub_module

    real = hub_module.encode_photos

    def noting(photos, model, landmarker, cache, say):
        say("note: a.png shows 2 faces; using the largest")
        return real(photos, model, landmarker, cache, say)

    monkeypatch.setattr(hub_module, "encode_photos", noting)

    async def play(client):
        socket = await client.ws_connect("/ws")
        await socket.receive_json()
        await socket.send_json({"type": "targets", "photos": [_png(data.astronaut())], "names": ["a.png"]})
        answer = await _answer(socket)
        assert answer["type"] == "targets"
        assert answer["notes"] == ["note: a.png shows 2 faces; using the largest"]
        await socket.close()

    _run(hub, play)
