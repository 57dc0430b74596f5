"""PyTorch eager FP32 behind the runtime's backend interface: the baseline that mnt-bench
measures every engine against, and `mnt-run --backend torch` for comparisons.

It runs the same deployment components as the ONNX graphs (spectral norm folded, as
exported) from the checkpoint the artefacts were built from. It lives on the export side
because it needs torch and the reference model; the runtime finds it through the
`mnt.backends` entry point, never by importing mnt.export.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mnt.export.checkpoint import load_checkpoint
from mnt.export.components import component_modules
from mnt.export.errors import ExportError
from mnt.runtime.backends.base import Backend
from mnt.runtime.files import sha256_file
from mnt.runtime.manifest import ComponentInfo, Manifest


class TorchBackend(Backend):
    """One component as a PyTorch module in float32, run eagerly under inference mode."""

    def __init__(self, component: ComponentInfo, module: nn.Module, threads: int | None = None) -> None:
        super().__init__(component)
        self.module, self.threads = module, threads
        self.active = False

    def activate(self) -> None:
        if self.threads:
            torch.set_num_threads(self.threads)
        self.module.float().eval()
        self.active = True

    def infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        if not self.active:
            raise ExportError(f"{self.component.name}: torch backend used before activate()")
        ready, _ = self.prepare_feeds(feeds)
        args = [torch.from_numpy(np.require(ready[t.name], np.float32, ("C", "W")))  # torch wants writable
                for t in self.component.inputs]
        with torch.inference_mode():
            out = self.module(*args)
        outputs = out if isinstance(out, tuple) else (out,)
        return {t.name: y.numpy() for t, y in zip(self.component.outputs, outputs, strict=True)}

    def deactivate(self) -> None:
        self.active = False


def torch_backends(folder: Path, manifest: Manifest, checkpoint: Path | None,
                   threads: int | None = None) -> dict[str, Backend]:
    """The artefact folder's components as PyTorch modules from `checkpoint`, which must be
    the file the folder was built from (its hash is in the manifest)."""
    if checkpoint is None:
        raise ExportError(f"the torch backend needs the checkpoint {folder} was built from",
                          hint="pass --checkpoint CKPT")
    if not checkpoint.is_file():
        raise ExportError(f"checkpoint {checkpoint} does not exist")
    if sha256_file(checkpoint) != manifest.checkpoint_sha256:
        raise ExportError(f"{checkpoint} is not the checkpoint {folder} was built from "
                          "(its hash differs from the manifest's)",
                          hint="pass the checkpoint given to `mnt-export build`")
    reference = load_checkpoint(checkpoint)
    modules = component_modules(reference.folded_generator(), reference.disentangler)
    return {name: TorchBackend(info, modules[name], threads)
            for name, info in manifest.components.items()}
