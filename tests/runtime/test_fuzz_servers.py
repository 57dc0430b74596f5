"""Fuzzing the servers' inputs (issue 30): random requests to the serving protocol's one
handler (in process, on a real Hub) and random messages to mnt-web's socket (aiohttp's test
client). The contract: a refusal in words (RuntimeStageError; an "error" message), never
another exception or an internal error, and the server still serving afterwards. Bounded
(a few dozen examples each), so it runs with the rest of the tests and in CI."""

import asyncio
import base64
import json
import struct

import cv2
import numpy as np
import pytest
from skimage import data

from mnt.runtime.errors import RuntimeStageError
from mnt.runtime.hub import Hub
from mnt.runtime.serve.protocol import CONTROLS, DATA, handle, pack_photos
from tests.runtime.test_images import png_claiming

hypothesis = pytest.importorskip("hypothesis")
pytest.importorskip("dlib")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.extra import numpy as hnp  # noqa: E402

FUZZ = settings(max_examples=40, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def hub(artefacts):
    with Hub(artefacts, backend="onnxruntime-cpu", max_streams=3, idle_s=60) as hub:
        yield hub


@pytest.fixture(scope="module")
def photo():
    return cv2.imencode(".png", cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR))[1].tobytes()


def _jpeg(image: np.ndarray) -> bytes:
    return cv2.imencode(".jpg", image)[1].tobytes()


def _noise_jpeg(height: int, width: int, seed: int) -> bytes:
    return _jpeg(np.random.default_rng(seed).integers(0, 255, (height, width, 3), np.uint8))


def _damaged_jpeg(at: int, flip: int) -> bytes:
    """A small real JPEG with one byte changed (headers, tables or scan data)."""
    jpeg = bytearray(_jpeg(np.full((24, 24, 3), 128, np.uint8)))
    jpeg[at % len(jpeg)] ^= flip
    return bytes(jpeg)


def _jpeg_claiming(width: int, height: int) -> bytes:
    """A JPEG's start and frame header, claiming width x height, and nothing after."""
    return b"\xff\xd8\xff\xc0\x00\x11\x08" + struct.pack(">HH", height, width) + b"\x03" + bytes(9)


# Image files as a hostile client sends them: random bytes, real headers cut or claiming
# any size, and small real images (decoded and searched for a face).
image_files = st.one_of(
    st.binary(max_size=64),
    st.builds(png_claiming, st.integers(0, 2**31 - 1), st.integers(0, 2**31 - 1)),
    st.builds(lambda w, h, cut: png_claiming(w, h)[:cut], st.integers(1, 64), st.integers(1, 64),
              st.integers(0, 60)),
    st.builds(_noise_jpeg, st.integers(1, 48), st.integers(1, 48), st.integers(0, 9)),
    st.builds(_damaged_jpeg, st.integers(0, 2000), st.integers(1, 255)),
    st.builds(_jpeg_claiming, st.integers(0, 65535), st.integers(0, 65535)),
)

# -- the serving protocol's handler -----------------------------------------------------------------

numbers = st.sampled_from([np.uint8, np.int64, np.uint64, np.float32, np.float64, np.bool_])
arrays = st.one_of(
    hnp.arrays(numbers, hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5)),
    hnp.arrays(np.uint8, st.tuples(st.integers(0, 40), st.integers(0, 40), st.sampled_from([1, 3, 4]))),
    st.builds(lambda t: np.array([t]), st.floats(allow_nan=True, allow_infinity=True)),
)
names = st.sampled_from([s.name for s in CONTROLS + DATA] + ["SHAPE", ""])


def _start(photo_bytes: list[bytes]) -> dict[str, np.ndarray]:
    return {"START": np.array([True]), **pack_photos(photo_bytes)}


requests = st.one_of(
    st.dictionaries(names, arrays, max_size=6),  # anything at all
    st.builds(lambda corrid, extra: {"CORRID": np.array([corrid], np.uint64), **extra},  # a running stream
              st.sampled_from([7, 8]), st.dictionaries(names.filter(lambda n: n != "CORRID"), arrays,
                                                       max_size=4)),
    st.builds(lambda corrid, files, end: {"CORRID": np.array([corrid], np.uint64), **_start(files),
                                          **({"END": np.array([True])} if end else {})},
              st.integers(9, 12), st.lists(image_files, min_size=0, max_size=9), st.booleans()),
    st.builds(lambda frame, at, end: {"CORRID": np.array([7], np.uint64), "FRAME": frame,
                                      **({} if at is None else {"TIME": np.array([at])}),
                                      **({"END": np.array([True])} if end else {})},
              hnp.arrays(np.uint8, st.tuples(st.integers(0, 48), st.integers(0, 48), st.just(3))),
              st.none() | st.floats(allow_nan=True, allow_infinity=True), st.just(False)),
)


def test_random_requests_are_refused_in_words_and_the_hub_serves_on(hub, photo):
    handle(hub, {"CORRID": np.array([7], np.uint64), **_start([photo])})
    refused = []

    @FUZZ
    @given(requests)
    def one(request):
        try:
            out = handle(hub, request)
        except RuntimeStageError as err:
            refused.append(err.one_line())
            assert "\n" not in err.one_line()
            return
        assert isinstance(out, dict) and out["FOUND"].dtype == np.bool_

    one()
    assert refused  # (the harness reached the refusals)
    for stream in hub.streams:  # what the fuzz left running (streams 7, 8, ...)
        hub.end(stream)
    handle(hub, {"CORRID": np.array([1], np.uint64), **_start([photo])})  # still serving
    out = handle(hub, {"CORRID": np.array([1], np.uint64), "FRAME": data.astronaut(),
                       "END": np.array([True])})
    assert out["FOUND"][0] and hub.streams == []


def test_stream_times_nan_inf_missing_and_backwards_never_poison_the_stream(hub, photo):
    """Issue 30, item 11: NaN or inf refused; a frame without TIME comes 1/rate after the
    last; a time that does not increase refused; the stream serves on after each."""
    frame = data.astronaut()
    start = {"CORRID": np.array([21], np.uint64), **_start([photo])}
    handle(hub, start)

    def send(at=None, image=frame):
        return handle(hub, {"CORRID": np.array([21], np.uint64), "FRAME": image,
                            **({} if at is None else {"TIME": np.array([at], np.float64)})})

    for bad in (float("nan"), float("inf"), -float("inf")):
        with pytest.raises(RuntimeStageError, match="times must be finite and increase"):
            send(bad)
    with pytest.raises(RuntimeStageError, match=r"expected uint8 RGB pixels .* got uint8 \(0, 0, 3\)"):
        send(0.0, np.zeros((0, 0, 3), np.uint8))
    assert send(0.0)["FOUND"][0]  # the first good frame after the refusals
    assert send(1.0)["FOUND"][0]
    assert send()["FOUND"][0]  # no TIME: 1/30 s after 1.0
    with pytest.raises(RuntimeStageError, match=r"frame time 1 s after 1.0333"):
        send(1.0)
    with pytest.raises(RuntimeStageError, match="after 1.0333"):
        send(float("inf"))
    assert send(1.5)["FOUND"][0]
    handle(hub, {"CORRID": np.array([21], np.uint64), "END": np.array([True])})


# -- mnt-web's socket --------------------------------------------------------------------------------

json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner,
                                                                                       max_size=3),
                           max_leaves=8)
commands = st.one_of(
    st.fixed_dictionaries({"type": st.sampled_from(["targets", "mode", "record", "dance", ""]) | json_values},
                          optional={"photos": json_values, "names": json_values, "mode": json_values,
                                    "on": json_values}),
    st.fixed_dictionaries({"type": st.just("targets"),
                           "photos": st.lists(image_files.map(lambda b: base64.b64encode(b).decode()),
                                              max_size=9)},
                          optional={"names": st.lists(st.text(max_size=20), max_size=9) | json_values}),
    st.fixed_dictionaries({"type": st.just("mode"), "mode": st.sampled_from(["face", "side-by-side", "x"])}),
)
messages = st.one_of(
    commands.map(lambda c: ("text", json.dumps(c))),
    st.text(max_size=200).map(lambda t: ("text", t)),
    json_values.map(lambda v: ("text", json.dumps(v))),
    image_files.map(lambda b: ("binary", b)),
    st.just(("binary", b"")),
)


def test_random_web_messages_are_refused_in_words_and_the_tab_serves_on(hub, photo):
    pytest.importorskip("aiohttp")
    from aiohttp.test_utils import TestClient, TestServer

    from mnt.runtime.web.server import make_app

    loop = asyncio.new_event_loop()
    client = TestClient(TestServer(make_app(hub)), loop=loop)
    loop.run_until_complete(client.start_server())
    try:
        socket = loop.run_until_complete(client.ws_connect("/ws"))
        assert loop.run_until_complete(socket.receive_json())["type"] == "ready"
        targets = {"type": "targets", "photos": [base64.b64encode(photo).decode()], "names": ["a.png"]}
        loop.run_until_complete(socket.send_json(targets))
        assert loop.run_until_complete(socket.receive_json(timeout=120))["type"] == "targets"
        errors = []

        async def exchange(kind, payload):
            await (socket.send_str(payload) if kind == "text" else socket.send_bytes(payload))
            answer = await socket.receive_json(timeout=60)  # exactly one answer, JSON
            if answer["type"] == "frame" and answer["face"]:
                await socket.receive_bytes(timeout=30)
            return answer

        @FUZZ
        @given(messages)
        def one(message):
            answer = loop.run_until_complete(exchange(*message))
            assert answer["type"] in ("error", "targets", "mode", "recording", "frame"), answer
            if answer["type"] == "error":
                errors.append(answer["message"])
                assert "internal error" not in answer["message"] and "Traceback" not in answer["message"]
                assert "\n" not in answer["message"]

        one()
        assert errors and not socket.closed
        loop.run_until_complete(socket.send_json({"type": "record", "on": False}))  # (stop any recording)
        loop.run_until_complete(socket.receive_json(timeout=30))
        loop.run_until_complete(socket.send_json(targets))  # still serving: targets, then a frame
        assert loop.run_until_complete(socket.receive_json(timeout=120))["type"] == "targets"
        answer = loop.run_until_complete(exchange("binary", _jpeg(cv2.cvtColor(data.astronaut(),
                                                                               cv2.COLOR_RGB2BGR))))
        assert answer["type"] == "frame" and answer["face"]
        loop.run_until_complete(socket.close())
    finally:
        loop.run_until_complete(client.close())
        loop.close()
