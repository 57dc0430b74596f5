"""One loaded model, many streams: each with backend states of its own (its buffers, its
target state resident), concurrent from threads, bit for bit what they give one by one."""

import threading

import numpy as np
import pytest

from mnt.export.model.checkpoint import load_checkpoint
from mnt.export.onnx.samples import posed_landmarks
from mnt.runtime import RuntimeStageError
from mnt.runtime.backends.base import Backend
from mnt.runtime.manifest import ComponentInfo, TensorInfo
from mnt.runtime.reenactor import Reenactor


@pytest.fixture(scope="module")
def fp32(tiny_artefacts):
    return tiny_artefacts("fp32")


def _scenes(stats, faces, ks=(1, 3, 8), frames=4):
    """Per stream: its target photos with landmarks, and its driver's landmarks."""
    scenes = []
    for s, k in enumerate(ks):
        rng = np.random.default_rng(s)
        points = [posed_landmarks(stats, 256, rng.standard_normal(48), rng.uniform(-0.3, 0.3))
                  for _ in range(k)]
        drivers = [posed_landmarks(stats, 256, 2 * rng.standard_normal(48), rng.uniform(-0.4, 0.4))
                   for _ in range(frames)]
        scenes.append(([faces[(s + i) % len(faces)] for i in range(k)], points, drivers))
    return scenes


def _play(stream, faces, drivers):
    return [stream.generate(stream.driver_landmarks(faces[0], d)) for d in drivers]


def test_streams_on_threads_give_exactly_what_they_give_one_by_one(fp32, tiny_checkpoint, parity_faces):
    scenes = _scenes(load_checkpoint(tiny_checkpoint).stats, parity_faces)
    with Reenactor(fp32, backend="onnxruntime-cpu") as model:
        states = [model.encode_targets(faces, points)[0] for faces, points, _ in scenes]
        alone = []
        for state, (faces, _, drivers) in zip(states, scenes, strict=True):
            with model.stream(state) as stream:
                alone.append(_play(stream, faces, drivers))
        together = [None] * len(scenes)
        streams = [model.stream(state) for state in states]
        start = threading.Barrier(len(scenes))

        def run(i):
            start.wait()  # all at once
            together[i] = _play(streams[i], scenes[i][0], scenes[i][2])

        threads = [threading.Thread(target=run, args=(i,)) for i in range(len(scenes))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for stream in streams:
            stream.close()
        # the model's own single-stream API gives the same frames
        legacy = [model.generate(states[0], model.driver_landmarks(states[0], scenes[0][0][0], d))
                  for d in scenes[0][2]]
    for a, b in zip(alone, together, strict=True):
        assert len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert all(np.array_equal(x, y) for x, y in zip(alone[0], legacy, strict=True))
    assert not np.array_equal(alone[0][0], alone[1][0])  # (different targets, different faces)


def test_a_stream_hands_the_generator_only_the_driver(fp32, tiny_checkpoint, parity_faces):
    (faces, points, drivers), = _scenes(load_checkpoint(tiny_checkpoint).stats, parity_faces, ks=(8,))
    with Reenactor(fp32) as model:
        state, _ = model.encode_targets(faces, points)
        with model.stream(state) as stream:
            stream.generate(drivers[0])
            stream.generate(drivers[1])
            state_bytes = sum(a.nbytes for a in state.feeds.values())
            driver_bytes = 3 * 256 * 256 * 4  # the driver's landmark image, float32
            assert stream.bytes_per_frame == driver_bytes  # the K = 8 target state stays resident
            assert state_bytes > 6 * driver_bytes  # (5.4 MB against 0.8 MB, every frame)


def test_a_stream_takes_only_a_state_of_its_model(fp32):
    with Reenactor(fp32) as model:
        with pytest.raises(RuntimeStageError, match="not encoded by the model"):
            model.stream(object())


INFO = ComponentInfo(name="generator", file="g.onnx", sha256="0" * 64, precision="fp32", phase="frame",
                     inputs=(TensorInfo("x", "float32", (2,)), TensorInfo("state", "float32", ("K", 2))),
                     outputs=(TensorInfo("y", "float32", (2,)),), dims={"K": (1, 8)}, accuracy={})


class Reusing(Backend):
    """A backend without states of its own that reuses one output buffer, as most do."""

    def __init__(self):
        super().__init__(INFO)
        self.out = np.zeros(2, np.float32)
        self.inside = 0
        self.overlapped = False

    def activate_impl(self):
        pass

    def deactivate_impl(self):
        pass

    def infer_impl(self, feeds, dims):
        self.inside += 1
        self.overlapped |= self.inside > 1
        threading.Event().wait(0.01)
        self.out[:] = feeds["x"] + feeds["state"].sum(axis=0)
        self.inside -= 1
        return {"y": self.out}


def test_states_on_a_backend_without_them_are_serialised_and_copied():
    backend = Reusing()
    backend.activate()
    states = [backend.new_state(resident={"state": np.full((k, 2), k, np.float32)}) for k in (1, 2, 3)]
    results = {}

    def run(i):
        results[i] = [backend.infer({"x": np.full(2, j, np.float32)}, states[i]) for j in range(5)]

    threads = [threading.Thread(target=run, args=(i,)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not backend.overlapped
    for i, k in enumerate((1, 2, 3)):
        assert [float(r["y"][0]) for r in results[i]] == [j + k * k for j in range(5)]  # each its own copy
    assert states[0].calls == 5 and states[0].moved_bytes == 5 * 8  # x only: the state is resident
    with pytest.raises(RuntimeStageError, match="not inputs of it"):
        backend.new_state(resident={"nope": np.zeros(2)})
