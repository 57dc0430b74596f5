"""The run's loss log: losses.jsonl (one line per step, the record resuming trims) and
TensorBoard event files beside it (the `train` extra), written by rank 0 only."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from mnt.runtime.files import atomic_path

LOG_FILE = "losses.jsonl"


def trim(out: Path, step: int) -> None:
    """Drop steps logged after the last save: a resumed run trains them again."""
    log = out / LOG_FILE
    if log.is_file():
        kept = [line for line in log.read_text().splitlines() if json.loads(line)["step"] <= step]
        with atomic_path(log) as temporary:
            temporary.write_text("".join(line + "\n" for line in kept))


class RunLog:
    def __init__(self, out: Path, first_step: int, say: Callable[[str], None]) -> None:
        out.mkdir(parents=True, exist_ok=True)
        self.lines = open(out / LOG_FILE, "a")  # noqa: SIM115 - closed by close()
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            say("no TensorBoard event files: install the train extra (pip install 'mnt[train]')")
            self.board = None
        else:
            # purge_step hides events a stopped run logged after its last save.
            self.board = SummaryWriter(str(out), purge_step=first_step + 1)

    def write(self, step: int, values: dict[str, float]) -> None:
        self.lines.write(json.dumps({"step": step, **values}) + "\n")
        if self.board is not None:
            for name, value in values.items():
                self.board.add_scalar(f"loss/{name}", value, step)

    def flush(self) -> None:
        self.lines.flush()
        if self.board is not None:
            self.board.flush()

    def close(self) -> None:
        self.lines.close()
        if self.board is not None:
            self.board.close()
