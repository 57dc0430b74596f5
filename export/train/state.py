"""The trainer's resumable state in one safetensors file (nothing is unpickled on resume):
the networks, both Adam optimisers flattened to tensors, the landmark statistics, the
step and the settings in the metadata."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from mnt.export.errors import ExportError
from mnt.runtime.files import atomic_path

STATE_FILE = "train_state.safetensors"


def _flatten_optimizer(prefix: str, optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], Any]:
    state = optimizer.state_dict()
    tensors = {f"{prefix}.{index}.{name}": value.detach().cpu().clone().contiguous()
               for index, entries in state["state"].items() for name, value in entries.items()}
    return tensors, state["param_groups"]


def _unflatten_optimizer(prefix: str, tensors: dict[str, torch.Tensor], groups: Any) -> dict[str, Any]:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith(prefix + "."):
            index, name = key[len(prefix) + 1:].split(".", 1)
            state.setdefault(int(index), {})[name] = value
    return {"state": state, "param_groups": groups}


def save_state(path: Path, modules: dict[str, torch.nn.Module],
               optimizers: dict[str, torch.optim.Optimizer], extra: dict[str, torch.Tensor],
               header: dict[str, Any]) -> None:
    tensors = {f"{name}.{k}": v.detach().cpu().contiguous() for name, module in modules.items()
               for k, v in module.state_dict().items()}
    groups = {}
    for name, optimizer in optimizers.items():
        flat, groups[name] = _flatten_optimizer(name, optimizer)
        tensors.update(flat)
    tensors.update({f"extra.{k}": v.contiguous() for k, v in extra.items()})
    metadata = {"header": json.dumps(header, sort_keys=True), "groups": json.dumps(groups)}
    try:
        with atomic_path(path) as temporary:
            save_file(tensors, str(temporary), metadata=metadata)
    except SafetensorError as err:
        raise ExportError(f"cannot write {path}: {err}", hint="check free space in the run folder") from err


def load_state(path: Path, modules: dict[str, torch.nn.Module],
               optimizers: dict[str, torch.optim.Optimizer]
               ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Fill the modules and optimisers in place; -> (extra tensors, header)."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        tensors = load_file(str(path))
        header, groups = json.loads(metadata["header"]), json.loads(metadata["groups"])
    except (SafetensorError, OSError, KeyError, ValueError) as err:
        raise ExportError(f"{path} is not a readable training state: {err}",
                          hint="pass --restart to start the run again") from err
    try:
        for name, module in modules.items():
            prefix = name + "."
            module.load_state_dict({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})
        for name, optimizer in optimizers.items():
            optimizer.load_state_dict(_unflatten_optimizer(name, tensors, groups[name]))
    except (RuntimeError, ValueError, KeyError) as err:  # another preset or model version
        raise ExportError(f"{path} holds networks of another shape: {str(err).splitlines()[0]}",
                          hint="give a state of the same --preset, or --restart") from err
    extra = {k[len("extra."):]: v for k, v in tensors.items() if k.startswith("extra.")}
    return extra, header


def is_state(path: Path) -> bool:
    """Whether `path` is a training state (not a checkpoint): its metadata has the header."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            return "header" in (handle.metadata() or {})
    except (SafetensorError, OSError):
        return False
