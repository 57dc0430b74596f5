"""The pipelined frame path: decoding, landmarks and the generator as stages on threads of
their own, joined by bounded queues, so that one frame's decoding and landmarks overlap
another's generator (and the caller's encoding, the last stage). Order is kept: each stage
takes its queue in order. From a live source frames are dropped (the oldest waiting one)
when the pipeline falls behind, so latency stays bounded; from a file every frame is used.

    for item in reenact(VideoSource("driver.mp4"), stream):
        if item.produced is not None:
            face, crop = item.produced

Leaving the loop (a break, an error, Ctrl-C) stops every stage; an error in a stage
(a driver that cannot be decoded further) is raised in order, after the frames before it.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mnt.runtime.align import Crop
from mnt.runtime.pipeline import DriverStream
from mnt.runtime.sources import FrameSource

DEPTH = 2  # frames waiting between two stages: enough to overlap, little added latency


@dataclass
class Item:
    """One driver frame on its way: `at` its source time, `captured` when the source gave
    it (time.monotonic), `produced` (face, crop), None while no face has been seen yet."""

    index: int
    at: float
    captured: float
    frame: np.ndarray | None = None
    found: tuple[Crop, np.ndarray] | None = None
    produced: tuple[np.ndarray, Crop] | None = None
    error: BaseException | None = None


@dataclass
class Counters:
    dropped: int = 0  # frames of a live source the pipeline had no room for
    frames: int = 0  # frames the caller used (counted by it)
    latencies: list[float] = field(default_factory=list)  # capture to hand-over, seconds

    def latency_ms(self, quantile: float) -> float:
        return 1e3 * float(np.quantile(self.latencies, quantile)) if self.latencies else 0.0


_END = object()


class _Stopped(Exception):
    pass


def reenact(source: FrameSource, stream: DriverStream, pipelined: bool = True, depth: int = DEPTH,
            counters: Counters | None = None) -> Iterator[Item]:
    """Every frame of `source` through `stream`, in order (a live source's dropped frames
    aside). `pipelined=False` runs the same steps one after another on the caller's thread
    (the baseline the benchmark compares against; it never drops a frame, live or not)."""
    counters = counters if counters is not None else Counters()
    if not pipelined:
        yield from _sequential(source, stream, counters)
        return
    stop = threading.Event()
    frames: queue.Queue[Any] = queue.Queue(depth)
    found: queue.Queue[Any] = queue.Queue(depth)
    produced: queue.Queue[Any] = queue.Queue(depth)
    threads = [threading.Thread(target=target, daemon=True, name=f"mnt-{name}")
               for name, target in (
                   ("decode", lambda: _read(source, frames, stop, counters)),
                   ("landmarks", lambda: _stage(frames, found, stop, lambda i: _landmarks(stream, i))),
                   ("generator", lambda: _stage(found, produced, stop, lambda i: _generate(stream, i))))]
    for thread in threads:
        thread.start()
    try:
        while True:
            item = produced.get()
            if item is _END:
                return
            if item.error is not None:
                raise item.error
            counters.latencies.append(time.monotonic() - item.captured)
            yield item
    finally:
        stop.set()
        for q in (frames, found, produced):  # unblock a stage waiting to put
            _drain(q)
        for thread in threads:
            thread.join(timeout=10)


def _sequential(source: FrameSource, stream: DriverStream, counters: Counters) -> Iterator[Item]:
    for index, (at, frame) in enumerate(source):
        item = Item(index, at, time.monotonic(), frame)
        _generate(stream, _landmarks(stream, item))
        counters.latencies.append(time.monotonic() - item.captured)
        yield item


def _landmarks(stream: DriverStream, item: Item) -> Item:
    assert item.frame is not None
    item.found = stream.landmarks(item.frame, item.at)
    item.frame = None  # (no longer needed: the crop holds what the generator sees)
    return item


def _generate(stream: DriverStream, item: Item) -> Item:
    if item.found is not None:
        item.produced = stream.generate(*item.found)
    return item


def _put(q: queue.Queue[Any], item: Any, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return
        except queue.Full:
            continue
    raise _Stopped


def _read(source: FrameSource, out: queue.Queue[Any], stop: threading.Event, counters: Counters) -> None:
    index = 0
    try:
        for at, frame in source:
            if stop.is_set():
                return
            item = Item(index, at, time.monotonic(), frame)
            index += 1
            if source.live and out.full():  # behind: the oldest waiting frame makes room
                try:
                    out.get_nowait()
                    counters.dropped += 1
                except queue.Empty:
                    pass
            _put(out, item, stop)
        _put(out, _END, stop)
    except _Stopped:
        return
    except BaseException as err:  # the driver broke off: raised in order, after what came before
        try:
            _put(out, Item(index, 0.0, time.monotonic(), error=err), stop)
            _put(out, _END, stop)
        except _Stopped:
            return


def _stage(source: queue.Queue[Any], out: queue.Queue[Any], stop: threading.Event,
           work: Callable[[Item], Item]) -> None:
    try:
        while True:
            try:
                item = source.get(timeout=0.1)
            except queue.Empty:
                if stop.is_set():
                    return
                continue
            if item is _END:
                _put(out, _END, stop)
                return
            if item.error is None:
                try:
                    item = work(item)
                except BaseException as err:  # passed on in order; this stage ends
                    item.error = err
                    _put(out, item, stop)
                    _put(out, _END, stop)
                    return
            _put(out, item, stop)
    except _Stopped:
        return


def _drain(q: queue.Queue[Any]) -> None:
    try:
        while True:
            q.get_nowait()
    except queue.Empty:
        pass
