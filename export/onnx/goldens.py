"""Goldens: each component's inputs (float32-exact, see samples.py) and its float64
reference outputs, stored beside the ONNX so any machine can re-check the graph
(`mnt-export verify`, `build --from`) without PyTorch."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mnt.runtime.files import sha256_file
from mnt.runtime.manifest import ComponentInfo

GOLDEN_K = 3  # the goldens' number of targets: inside 1..8 and not a gate's edge
GOLDENS_DIR = "goldens"


def write_golden(folder: Path, info: ComponentInfo, inputs: Sequence[np.ndarray],
                 outputs: Sequence[np.ndarray]) -> dict[str, str]:
    """Write `goldens/<component>.npz` into `folder`; -> the manifest's golden entry."""
    file = f"{GOLDENS_DIR}/{info.name}.npz"
    (folder / GOLDENS_DIR).mkdir(exist_ok=True)
    np.savez(folder / file,
             **{f"input:{t.name}": np.asarray(x).astype(np.float32)
                for t, x in zip(info.inputs, inputs, strict=True)},
             **{f"output:{t.name}": y for t, y in zip(info.outputs, outputs, strict=True)})
    return {"file": file, "sha256": sha256_file(folder / file)}
