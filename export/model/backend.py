"""PyTorch eager FP32 behind the runtime's backend interface: the baseline that mnt-bench
measures every engine against, and `mnt-run --backend torch` for comparisons.

It runs the same deployment components as the ONNX graphs (spectral norm folded, as
exported) from the checkpoint the artefacts were built from. It lives on the export side
because it needs torch and the reference model; the runtime's backend registry finds it
through the `mnt.backends` entry point (`TORCH`), never by importing mnt.export; torch is
imported only when the backends are made.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mnt.export.errors import ExportError
from mnt.runtime.backends.base import Backend
from mnt.runtime.backends.registry import BackendKind
from mnt.runtime.files import sha256_file
from mnt.runtime.manifest import ComponentInfo, Manifest

if TYPE_CHECKING:
    from torch import nn


class TorchBackend(Backend):
    """One component as a PyTorch module in float32, run eagerly under inference mode."""

    def __init__(self, component: ComponentInfo, module: nn.Module, threads: int | None = None) -> None:
        super().__init__(component)
        self.module, self.threads = module, threads

    def activate_impl(self) -> None:
        import torch

        if self.threads:
            torch.set_num_threads(self.threads)
        self.module.float().eval()

    def infer_impl(self, ready: dict[str, np.ndarray], dims: dict[str, int]) -> dict[str, np.ndarray]:
        import torch

        args = [torch.from_numpy(np.require(ready[t.name], np.float32, ("C", "W")))  # torch wants writable
                for t in self.component.inputs]
        with torch.inference_mode():
            out = self.module(*args)
        outputs = out if isinstance(out, tuple) else (out,)
        return {t.name: y.numpy() for t, y in zip(self.component.outputs, outputs, strict=True)}

    def deactivate_impl(self) -> None:
        pass


def torch_backends(folder: Path, manifest: Manifest, checkpoint: Path | None = None,
                   threads: int | None = None, allow_fallback: bool = False) -> dict[str, Backend]:
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
    from mnt.export.model.checkpoint import load_checkpoint
    from mnt.export.model.components import component_modules

    reference = load_checkpoint(checkpoint)
    modules = component_modules(reference.folded_generator(), reference.disentangler)
    return {name: TorchBackend(info, modules[name], threads)
            for name, info in manifest.components.items()}


def _unavailable(folder: Path | None, manifest: Manifest | None) -> str | None:
    return None if importlib.util.find_spec("torch") else "PyTorch is not installed"


# The registry's entry (pyproject: entry point mnt.backends:torch); importing this module
# imports no torch.
TORCH = BackendKind("torch", "PyTorch eager FP32 from the checkpoint the folder was built from "
                    "(needs --checkpoint)", _unavailable, torch_backends)
