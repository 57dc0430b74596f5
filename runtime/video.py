"""Reading video frames with PyAV (FFmpeg)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np

from mnt.runtime.errors import RuntimeStageError


def read_frames(path: str | os.PathLike[str], limit: int | None = None,
                step: int = 1) -> Iterator[np.ndarray]:
    """Yield every `step`-th frame as uint8 (H, W, 3) RGB, at most `limit` frames."""
    import av  # imported here: reading videos is the only use, and PyAV loads FFmpeg

    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError) as err:
        raise RuntimeStageError(f"cannot open video {path}: {err}") from err
    with container:
        if not container.streams.video:
            raise RuntimeStageError(f"{path} has no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        yielded = 0
        try:
            for index, frame in enumerate(container.decode(stream)):
                if index % step:
                    continue
                yield frame.to_ndarray(format="rgb24")
                yielded += 1
                if limit is not None and yielded >= limit:
                    return
        except av.error.FFmpegError as err:
            raise RuntimeStageError(f"{path}: cannot decode frame {index + 1}: {err}") from err
