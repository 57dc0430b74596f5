"""Serving: the stateful interface on a Hub, `mnt-serve` on a real Triton server (PyTriton's),
its client, `mnt-run --server`, the load test, and the exported Triton repository on the
same real server (its component models by stand-ins, see triton_server.py)."""

import os
import signal
import subprocess
import time
import urllib.request

import cv2
import numpy as np
import pytest

from mnt.runtime import RuntimeStageError
from mnt.runtime.hub import Hub
from mnt.runtime.serve.protocol import handle, pack_photos
from mnt.runtime.video import read_timed_frames
from tests.helpers import console_script, mnt_run, talking_clip
from tests.runtime.triton_server import bundled, free_port, triton, with_stand_ins

needs_triton = pytest.mark.skipif(bundled() is None, reason="needs PyTriton's Triton server: "
                                  "pip install 'mnt[serve]'")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A driver made here (the astronaut moving, 12 frames) and a target photo file."""
    from skimage import data

    folder = tmp_path_factory.mktemp("serve-inputs")
    photo = folder / "targets" / "astronaut.png"
    photo.parent.mkdir()
    cv2.imwrite(str(photo), cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR))
    clip = talking_clip(folder / "driver.mp4", faces=12)
    return {"photo": photo, "targets": photo.parent, "clip": clip,
            "frames": list(read_timed_frames(str(clip)))}


@pytest.fixture(scope="module")
def hub(artefacts):
    with Hub(artefacts, backend="onnxruntime-cpu", max_streams=3, idle_s=60) as hub:
        yield hub


def _request(stream, **inputs):
    return {"CORRID": np.array([stream], np.uint64), **inputs}


def _in_process(hub, photo: bytes, frames, name="reference"):
    """The faces a Hub stream gives for `frames` (what the servers must return)."""
    hub.start(name, [photo])
    try:
        return [None if (out := hub.frame(name, frame, at)) is None else out[0] for at, frame in frames]
    finally:
        hub.end(name)


# -- the interface on a Hub, no server -------------------------------------------------------------

def test_bad_requests_are_refused_by_name_and_leave_other_streams_as_they_were(hub, inputs):
    photo = inputs["photo"].read_bytes()
    frames = inputs["frames"][:4]
    expected = _in_process(hub, photo, frames)
    start = handle(hub, _request(1, START=np.array([True]), **pack_photos([photo])))
    assert start["TARGET_CROPS"].shape == (1, hub.size, hub.size, 3)
    assert start["TARGET_MATRICES"].shape == (1, 2, 3)
    first = handle(hub, _request(1, FRAME=frames[0][1], TIME=np.array([frames[0][0]])))
    bad = [
        (_request(2, FRAME=frames[0][1]), "stream '2' is not running"),  # a frame before its targets
        (_request(1, FRAME=frames[0][1].astype(np.float32)), "expected uint8 RGB"),
        (_request(1, FRAME=frames[0][1][:, :, :2].copy()), "expected uint8 RGB"),
        (_request(1, TARGETS=np.zeros(3, np.uint8), TARGET_SIZES=np.array([3])), "come only with START"),
        (_request(3, START=np.array([True]), **pack_photos([photo] * 9)), "9 target photos"),
        (_request(3, START=np.array([True]), **pack_photos([b"not an image"])), "not a readable image"),
        (_request(3, START=np.array([True]), TARGETS=np.zeros(5, np.uint8), TARGET_SIZES=np.array([9])),
         "do not add up"),
        (_request(1, START=np.array([True]), **pack_photos([photo])), "already running"),
        (_request(1, SHAPE=np.zeros(1)), "unknown inputs SHAPE"),
        (_request(1), "holds no FRAME"),
        ({"FRAME": frames[0][1]}, "no CORRID"),
        (_request(4, END=np.array([True])), "'4' is not running; nothing to end"),
    ]
    for request, message in bad:
        with pytest.raises(RuntimeStageError, match=message):
            handle(hub, request)
    assert sorted(hub.streams) == ["1"]  # the refused starts left nothing behind
    rest = [handle(hub, _request(1, FRAME=f, TIME=np.array([at]))) for at, f in frames[1:]]
    last = handle(hub, _request(1, END=np.array([True])))
    assert "FACE" not in last and hub.streams == []
    got = [first, *rest]
    assert all(r["FOUND"][0] for r in got)
    assert all(np.array_equal(r["FACE"], e) for r, e in zip(got, expected, strict=True))


def test_the_hub_refuses_streams_beyond_its_most_and_ends_idle_ones(artefacts, inputs):
    photo = inputs["photo"].read_bytes()
    with Hub(artefacts, backend="onnxruntime-cpu", max_streams=1, idle_s=0.5) as hub:
        hub.start("a", [photo])
        with pytest.raises(RuntimeStageError, match="most streams"):
            hub.start("b", [photo])
        time.sleep(2)  # a client that went away
        assert hub.streams == []
        with pytest.raises(RuntimeStageError, match="'a' is not running"):
            hub.frame("a", inputs["frames"][0][1])
        hub.start("b", [photo])  # its room is free again


def test_a_photo_without_a_human_face_is_refused_by_its_name(hub):
    from skimage import data

    ok, png = cv2.imencode(".png", data.coffee())
    with pytest.raises(RuntimeStageError, match="coffee.png: no human face found"):
        hub.start("coffee", [png.tobytes()], ["coffee.png"])
    assert "coffee" not in hub.streams


# -- mnt-serve: a real Triton server ---------------------------------------------------------------

@pytest.fixture(scope="module")
def served(artefacts, tmp_path_factory):
    ports = {name: free_port() for name in ("http", "grpc", "metrics")}
    log = tmp_path_factory.mktemp("serve") / "triton.log"
    server = subprocess.Popen(
        [console_script("mnt-serve"), "--artifacts", str(artefacts), "--backend", "onnxruntime-cpu",
         "--idle-timeout", "3", "--max-streams", "4", "--triton-log", str(log),
         *[f"--{name}-port={port}" for name, port in ports.items()]],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 240
    while True:
        try:
            ready = f"http://127.0.0.1:{ports['http']}/v2/models/mnt_reenact/ready"
            with urllib.request.urlopen(ready, timeout=2):  # (the server is ready before its model)
                break
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                pytest.fail(f"mnt-serve did not get ready: {server.communicate()[0][-3000:]}")
            time.sleep(0.5)
    yield {"http": f"http://127.0.0.1:{ports['http']}", "grpc": f"grpc://127.0.0.1:{ports['grpc']}",
           "process": server}
    if server.poll() is None:
        server.kill()
        server.wait()


@needs_triton
@pytest.mark.parametrize("transport", ["grpc", "http"])
def test_mnt_serve_answers_a_stream_bit_for_bit_as_the_runtime_in_process(served, hub, inputs, transport):
    from mnt.runtime.serve.client import RemoteStream

    photo = inputs["photo"].read_bytes()
    frames = inputs["frames"]
    expected = _in_process(hub, photo, frames)
    with RemoteStream(served[transport], [photo], ["astronaut.png"]) as stream:
        assert np.array_equal(stream.target_crops[0], hub.start("crops", [photo]).targets.crops[0].image)
        hub.end("crops")
        got = [None if (out := stream.frame(frame, at)) is None else out[0] for at, frame in frames]
    assert sum(g is not None for g in got) == len(frames)
    assert all(np.array_equal(g, e) for g, e in zip(got, expected, strict=True))


@needs_triton
def test_mnt_serve_refuses_bad_requests_clearly_and_frees_a_stream_its_client_left(served, inputs):
    from skimage import data

    from mnt.runtime.serve.client import RemoteStream

    photo = inputs["photo"].read_bytes()
    ok, coffee = cv2.imencode(".png", data.coffee())
    with pytest.raises(RuntimeStageError, match=r"coffee.png: no human face found \(use a photo"):
        RemoteStream(served["grpc"], [coffee.tobytes()], ["coffee.png"])
    stream = RemoteStream(served["grpc"], [photo])
    with pytest.raises(RuntimeStageError, match="expected uint8 RGB pixels"):
        stream.frame(np.zeros((8, 8, 3), np.float32))  # type: ignore[arg-type]
    assert stream.frame(inputs["frames"][0][1], 0.0) is not None  # the stream went on
    time.sleep(5)  # no END: the client went away; --idle-timeout 3 frees the stream
    with pytest.raises(RuntimeStageError, match="is not running"):
        stream.frame(inputs["frames"][1][1], 0.04)
    with pytest.raises(RuntimeStageError, match="no Triton server answers"):
        RemoteStream("grpc://127.0.0.1:9", [photo])


@needs_triton
def test_mnt_run_through_the_server_writes_the_video_mnt_run_writes_here(served, artefacts, inputs, tmp_path):
    env = {**os.environ, "MNT_CACHE_DIR": str(tmp_path / "cache")}
    here, there = tmp_path / "here.mp4", tmp_path / "there.mp4"
    local = mnt_run(str(inputs["clip"]), "--targets", str(inputs["targets"]), "--artifacts", str(artefacts),
                    "--backend", "onnxruntime-cpu", "-o", str(here), "--output-mode", "side-by-side", env=env)
    assert local.returncode == 0, local.stderr
    remote = mnt_run(str(inputs["clip"]), "--targets", str(inputs["targets"]), "--server", served["grpc"],
                     "-o", str(there), "--output-mode", "side-by-side", env=env)
    assert remote.returncode == 0, remote.stderr
    assert "backend: server grpc://" in remote.stderr
    a, b = ([f for _, f in read_timed_frames(str(p))] for p in (here, there))
    assert len(a) == len(b) == len(inputs["frames"])
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    refused = mnt_run(str(inputs["clip"]), "--targets", str(inputs["targets"]), "--server", served["grpc"],
                      "--backend", "onnxruntime-cpu", "-o", str(tmp_path / "x.mp4"), env=env)
    assert refused.returncode != 0 and "--backend cannot be used with --server" in refused.stderr


@needs_triton
def test_the_load_test_counts_every_frame_and_matches_the_streams_in_process(served, artefacts, inputs,
                                                                          tmp_path):
    from mnt.export.bench.serve import clip_frames, load_test, markdown

    rows = load_test(served["grpc"], artefacts, clip_frames([inputs["clip"]], 4),
                     [inputs["photo"].read_bytes()], (1, 2), 60, lambda line: None,
                     backend="onnxruntime-cpu")
    assert [(r["streams"], r["mode"]) for r in rows] == [(1, "served"), (1, "in-process"), (2, "served"),
                                                          (2, "in-process")]
    for r in rows:
        assert r["returned"] == r["frames"] == 4 * r["streams"] and r["refused"] == r["unsent"] == 0
        assert r["identical"] == f"{r['frames']} frames, all equal"
    assert "| 2 | served | 8 | 8 | 0 | 0 |" in markdown(rows)


@needs_triton
def test_mnt_serve_stops_cleanly_on_sigterm(served):
    server = served["process"]
    server.send_signal(signal.SIGTERM)
    output, _ = server.communicate(timeout=60)
    assert server.returncode == 143, output
    assert "Traceback" not in output


# -- the exported repository --------------------------------------------------------------------

def _parsed(path):
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


@pytest.fixture(scope="module")
def repository(artefacts, tmp_path_factory):
    from mnt.export.triton.repository import write_repository

    out = tmp_path_factory.mktemp("triton") / "repo"
    write_repository(artefacts, out, kind="KIND_CPU")
    return out


def test_every_config_of_the_repository_parses_with_tritons_own_schema(repository, artefacts):
    pytest.importorskip("tritonclient.grpc", reason="needs tritonclient: pip install 'mnt[serve]'")
    from mnt.runtime.manifest import load_manifest

    manifest = load_manifest(artefacts)
    for name, info in manifest.all_components.items():
        config = _parsed(repository / name / "config.pbtxt")
        assert config.name == name and config.platform == "onnxruntime_onnx" and config.max_batch_size == 0
        assert [i.name for i in config.input] == [t.name for t in info.inputs]
        assert [o.name for o in config.output] == [t.name for t in info.outputs]
        for tensor, spec in zip(config.input, info.inputs, strict=True):
            assert list(tensor.dims) == [-1 if isinstance(d, str) else d for d in spec.shape]
        assert (repository / name / "1" / "model.onnx").read_bytes() == (artefacts / info.file).read_bytes()
    stateful = _parsed(repository / "mnt_reenact" / "config.pbtxt")
    assert stateful.backend == "python" and stateful.max_batch_size == 8
    assert {c.name for c in stateful.sequence_batching.control_input} == {"CORRID", "START", "END"}
    assert stateful.sequence_batching.max_sequence_idle_microseconds == 30_000_000
    assert all(i.optional for i in stateful.input)
    assert (repository / "mnt_reenact" / "1" / "artifacts" / "manifest.json").is_file()


def test_the_repository_refuses_what_tritons_backends_cannot_run(artefacts, tmp_path):
    import json
    import shutil

    from mnt.export.errors import ExportError
    from mnt.export.triton.repository import write_repository

    with pytest.raises(ExportError, match="has no TensorRT engine"):
        write_repository(artefacts, tmp_path / "plan", fmt="plan")
    plugins = tmp_path / "plugins"
    shutil.copytree(artefacts, plugins)
    manifest = json.loads((plugins / "manifest.json").read_text())
    manifest["components"]["generator"]["custom_ops"] = {"mnt::Warp": 4}
    (plugins / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ExportError, match="generator.onnx holds mnt::Warp nodes"):
        write_repository(plugins, tmp_path / "repo")
    assert not (tmp_path / "repo").exists() and not (tmp_path / "plan").exists()


@needs_triton
def test_the_repositorys_stateful_model_runs_on_a_real_triton_server(repository, hub, inputs, tmp_path):
    """Triton's sequence batcher, the BLS calls and the client's sequence flags, for real;
    the components on stand-ins that run the same ONNX files on ONNX Runtime."""
    import shutil

    from mnt.runtime.serve.client import RemoteStream

    repo = tmp_path / "repo"
    shutil.copytree(repository, repo)
    with_stand_ins(repo)
    photo = inputs["photo"].read_bytes()
    frames = inputs["frames"][:5]
    expected = _in_process(hub, photo, frames)
    with triton(repo, tmp_path) as urls:
        for url in (urls["grpc"], urls["http"]):
            # two sequences at once
            with RemoteStream(url, [photo]) as one, RemoteStream(url, [photo]) as two:
                got = [[None if (o := s.frame(f, at)) is None else o[0] for s in (one, two)]
                       for at, f in frames]
            assert all(np.array_equal(g, e) for pair, e in zip(got, expected, strict=True) for g in pair)
            with pytest.raises(RuntimeStageError, match="expected uint8 RGB"):
                with RemoteStream(url, [photo]) as bad:
                    bad.frame(np.zeros((4, 4, 3), np.float32))  # type: ignore[arg-type]
