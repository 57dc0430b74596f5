"""mnt-bench's streaming rows (N concurrent streams on one model, pipelined and sequential)
and its landmark row beside mediapipe: the rows exist with sane fields; no speed is asserted."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from click.testing import CliRunner

from mnt.export.bench.report import markdown, report
from mnt.export.bench.runner import Row
from mnt.export.bench.streams import LoopedSource, StreamRun, throughput
from tests.helpers import SHARED_DATA

MACHINE = {"cpu": {"model": "x", "cores": 2, "simd": "avx2", "clock_ghz": 2.0, "clock_source": "t",
                   "fp32_peak_gflops": 200.0, "peak_formula": "f"},
           "gpu": None, "versions": {}, "threads": 2, "peak_rss_mb": 1.0}


def _run(started, handovers):
    return StreamRun(started, handovers, [0.1] * len(handovers), 0, 10.0, "engines")


def test_throughput_is_taken_while_every_stream_runs_warm():
    # warm-up of one frame: the window is (max(1, 2), min(4, 5)] = (2, 4]: frames at 3, 4 and
    # 3.5, 4 -> 4 frames in 2 s; the first stream's late start and the second's tail are left out
    runs = [_run(0.0, [1.0, 2.0, 3.0, 4.0]), _run(0.5, [2.0, 3.5, 4.0, 5.0])]
    assert throughput(runs, warmup=1) == pytest.approx(2.0)
    # no window (a frame each): every timed frame over the whole span
    assert throughput([_run(0.0, [1.0]), _run(0.0, [2.0])], warmup=0) == pytest.approx(1.0)


def test_looped_source_runs_on_past_the_end(tmp_path):
    from mnt.runtime.video import VideoWriter

    writer = VideoWriter(tmp_path / "v.mp4", Fraction(10), 32, 32)
    for i in range(4):
        writer.write(np.full((32, 32, 3), 40 * i, np.uint8))
    writer.close()
    frames = list(LoopedSource(tmp_path / "v.mp4", 10))
    times = [at for at, _ in frames]
    assert len(frames) == 10 and not LoopedSource(tmp_path / "v.mp4", 1).live
    assert all(b > a for a, b in zip(times, times[1:], strict=False))  # on across the loops
    assert times[4] == pytest.approx(0.4)


def test_report_shows_streaming_rows_in_a_table_of_their_own():
    extra = {"frames": 4, "frames_per_second": 20.0, "latency_ms_median": 50.0, "latency_ms_p99": 60.0,
             "dropped": 0, "bytes_per_frame": 1000, "resident_bytes": 5000, "landmarks": "engines"}
    rows = [Row("driver_streams", "onnxruntime-cpu", "fp32", 1, [50.0],
                extra={**extra, "frames_per_second": fps}, streams=n, pipelined=p)
            for n, p, fps in ((2, True, 30.0), (1, True, 20.0), (1, False, 15.0))]
    rows.append(Row("landmark_detector", "onnxruntime-cpu", "fp32", 1, [5.0],
                    extra={"landmarks": "engines", "speedup_vs_mediapipe": 2.0}))
    data = report(MACHINE, {}, rows, {})
    assert [(r["streams"], r["pipelined"]) for r in data["rows"][1:]] == [(1, True), (1, False), (2, True)]
    assert data["summary"]["onnxruntime-cpu"] == {"landmarks_speedup_vs_mediapipe": 2.0,
                                                  "pipelined_fps_2_streams_over_1": 1.5}
    table = markdown(data)
    assert "| 2 | yes | 1 | onnxruntime-cpu | engines | 30.0 | 50.0 | 60.0 | 0 | 1,000 |" in table
    assert "| driver_streams |" not in table  # not in the per-component table


def test_streams_option_is_checked():
    from mnt.export.bench.cli import main

    result = CliRunner().invoke(main, ["--streams", "0,2"])
    assert result.exit_code == 2 and "stream counts must be in 1..16" in result.output


@pytest.fixture(scope="module")
def driver_and_photos(tmp_path_factory):
    from mnt.export.bench.cli import _photos

    video = SHARED_DATA / "driving" / "d0.mp4"
    if video.exists():
        return video, _photos(SHARED_DATA / "targets")
    from mnt.runtime.demo import demo_inputs

    video, photos = demo_inputs(tmp_path_factory.mktemp("demo"))
    return video, _photos(photos)


def test_stream_and_landmark_rows_on_tiny_artefacts(tiny_artefacts, driver_and_photos):
    """1 and 2 streams on one loaded model, each with its own tracker, pipelined and
    sequential, 3 frames each after 1 of warm-up; the landmark row beside mediapipe's."""
    from mnt.export.bench.cli import face_engines, make_backends_for, tracker_for
    from mnt.export.bench.runner import encoded_targets, landmark_detector, open_contender, prepare_inputs
    from mnt.export.bench.streams import stream_rows
    from mnt.runtime.manifest import load_manifest

    folder = tiny_artefacts("fp32")
    manifest = load_manifest(folder)
    name = "onnxruntime-cpu"
    contender = open_contender(name, manifest.precision, folder, make_backends_for(name, folder, manifest, 1))
    video, photos = driver_and_photos
    try:
        inputs = prepare_inputs(video, photos, contender.model.size, contender.model, 4)
        targets = encoded_targets(contender.model, inputs, 2)
        rows = stream_rows(contender.model, name, manifest.precision, targets, video, (1, 2), 1, 3,
                           tracker_for(name, folder, 1), lambda line: None)
        landmarks = landmark_detector(inputs, 1, 2, face_engines([name], folder, manifest, 1))
    finally:
        contender.model.close()
    assert [(r.streams, r.pipelined) for r in rows] == [(1, True), (1, False), (2, False), (2, True)]
    size = contender.model.size
    for row in rows:
        e = row.extra
        assert (row.component, row.k) == ("driver_streams", 2)
        assert e["frames"] == 3 * row.streams == len(row.ms)  # the warm-up frame left out
        assert e["frames_per_second"] > 0 and 0 < e["latency_ms_median"] <= e["latency_ms_p99"]
        assert e["dropped"] == 0  # a file waits for the pipeline
        assert e["bytes_per_frame"] >= 3 * size * size * 4  # the driver's landmark image at least
        assert e["resident_bytes"] > 0 and e["landmarks"] in ("engines", "mediapipe")
    assert len({r.extra["bytes_per_frame"] for r in rows}) == 1
    assert landmarks[0].backend == "mediapipe" and len(landmarks[0].ms) == 2
    if manifest.faces:  # the folder's face components, paired with mediapipe
        assert [r.backend for r in landmarks] == ["mediapipe", name]
        assert len(landmarks[1].ms) == 2 and landmarks[1].extra["speedup_vs_mediapipe"] > 0
