"""mnt-bench --server: a load test of a running server (mnt-serve, or Triton with the
exported repository), beside the same streams on a `Hub` in this process.

N streams at once, each on a thread of its own, each sending the decoded frames of a
driver clip one request at a time (the next after the answer: a client that keeps up,
as a live one must). Bounded: `frames` per stream and `limit_s` per row; loopback only
(the server's address is the user's). Per row: the frames that came back, those refused
(with their reasons), and those not sent before the time limit; throughput over all
streams; latency per frame (median, 99th percentile); and whether every served frame
equals the in-process one of the same stream, bit for bit.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mnt.runtime.errors import RuntimeStageError
from mnt.runtime.video import read_timed_frames

Frames = list[tuple[float, np.ndarray]]
# (stream number, frames, photos) -> per frame: its face, or None (no face yet); raises
# RuntimeStageError for a refused frame (counted) after which the stream goes on
Open = Callable[[int, Sequence[bytes]], tuple[Callable[[np.ndarray, float], np.ndarray | None],
                                               Callable[[], None]]]


@dataclass
class Tally:
    latencies: list[float] = field(default_factory=list)
    returned: int = 0
    refused: Counter[str] = field(default_factory=Counter)
    unsent: int = 0
    faces: dict[tuple[int, int], bytes] = field(default_factory=dict)  # (stream, frame) -> face bytes
    first: float = float("inf")  # the first frame sent, the last answered (the targets' encoding aside)
    last: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)


def clip_frames(clips: Sequence[Path], count: int) -> list[Frames]:
    """The first `count` frames (with their times) of each clip, decoded before any timing."""
    out = []
    for clip in clips:
        frames: Frames = []
        for at, frame in read_timed_frames(str(clip)):
            frames.append((at, frame))
            if len(frames) == count:
                break
        if not frames:
            raise RuntimeStageError(f"{clip} has no frames")
        out.append(frames)
    return out


def _stream(number: int, frames: Frames, photos: Sequence[bytes], open_stream: Open, tally: Tally,
            deadline: float) -> None:
    try:
        send, close = open_stream(number, photos)
    except RuntimeStageError as err:
        with tally.lock:
            tally.refused[f"start: {err}"] += len(frames)
        return
    try:
        for index, (at, frame) in enumerate(frames):
            if time.monotonic() > deadline:
                with tally.lock:
                    tally.unsent += len(frames) - index
                return
            started = time.perf_counter()
            with tally.lock:
                tally.first = min(tally.first, started)
            try:
                face = send(frame, at)
            except RuntimeStageError as err:
                with tally.lock:
                    tally.refused[str(err)] += 1
                continue
            done = time.perf_counter()
            with tally.lock:
                tally.latencies.append(done - started)
                tally.last = max(tally.last, done)
                tally.returned += 1
                if face is not None:
                    tally.faces[(number, index)] = face.tobytes()
    finally:
        close()


def row(mode: str, streams: int, clips: list[Frames], photos: Sequence[bytes], open_stream: Open,
        limit_s: float) -> tuple[dict[str, object], Tally]:
    tally = Tally()
    deadline = time.monotonic() + limit_s
    threads = [threading.Thread(target=_stream, args=(n, clips[n % len(clips)], photos, open_stream, tally,
                                                      deadline), daemon=True) for n in range(streams)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = tally.last - tally.first
    latencies = np.array(tally.latencies) * 1e3
    sent = sum(len(clips[n % len(clips)]) for n in range(streams))
    return {"mode": mode, "streams": streams, "frames": sent, "returned": tally.returned,
            "refused": sum(tally.refused.values()), "refused_why": dict(tally.refused),
            "unsent": tally.unsent, "seconds": round(max(wall, 0.0), 2),
            "frames_per_second": round(tally.returned / wall, 2) if wall > 0 else 0.0,
            "latency_ms_median": round(float(np.median(latencies)), 1) if latencies.size else None,
            "latency_ms_p99": round(float(np.quantile(latencies, 0.99)), 1) if latencies.size else None,
            }, tally


def remote_opener(url: str) -> Open:
    from mnt.runtime.serve.client import RemoteStream

    def open_stream(number: int, photos: Sequence[bytes]):
        stream = RemoteStream(url, photos)

        def send(frame: np.ndarray, at: float) -> np.ndarray | None:
            out = stream.frame(frame, at)
            return None if out is None else out[0]

        return send, stream.close

    return open_stream


def hub_opener(hub) -> Open:
    def open_stream(number: int, photos: Sequence[bytes]):
        name = f"load-{number}-{time.monotonic_ns()}"
        hub.start(name, photos)

        def send(frame: np.ndarray, at: float) -> np.ndarray | None:
            out = hub.frame(name, frame, at)
            return None if out is None else out[0]

        return send, lambda: hub.end(name)

    return open_stream


def load_test(url: str, folder: Path, clips: list[Frames], photos: Sequence[bytes], counts: Sequence[int],
              limit_s: float, say: Callable[[str], None], backend: str = "auto") -> list[dict[str, object]]:
    """Per stream count: the served row, then the in-process row, with `identical`."""
    from mnt.runtime.hub import Hub

    rows = []
    with Hub(folder, backend=backend, max_streams=max(counts)) as hub:
        for count in counts:
            say(f"{count} stream(s): served by {url} ...")
            served, remote = row("served", count, clips, photos, remote_opener(url), limit_s)
            say(f"{count} stream(s): in this process ...")
            local, here = row("in-process", count, clips, photos, hub_opener(hub), limit_s)
            common = set(remote.faces) & set(here.faces)
            same = all(remote.faces[key] == here.faces[key] for key in common)
            served["identical"] = local["identical"] = f"{sum(1 for _ in common)} frames, " + (
                "all equal" if same else "DIFFERENT")
            rows += [served, local]
    return rows


def markdown(rows: list[dict[str, object]]) -> str:
    lines = ["| streams | where | frames | came back | refused | not sent (time) | frames/s | "
             "latency median ms | p99 ms | served = in-process |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['streams']} | {r['mode']} | {r['frames']} | {r['returned']} | {r['refused']} | "
                     f"{r['unsent']} | {r['frames_per_second']} | {r['latency_ms_median']} | "
                     f"{r['latency_ms_p99']} | {r['identical']} |")
    reasons = Counter[str]()
    for r in rows:
        reasons.update(r["refused_why"])  # type: ignore[arg-type]
    lines += [f"refused: {n} x {why}" for why, n in reasons.items()]
    return "\n".join(lines) + "\n"
