"""The checkpoint format: one safetensors file (no code is executed on load) holding the
model config, the weights of the generator and the landmark disentangler, and the
landmark statistics.

Keys: ``generator.*`` (MarioNETte, spectral-norm parametrisations as in training),
``landmark_disentangler.*``, ``landmark_stats.{mean,basis,coef_mean,coef_std,lambda_exp}``.
Metadata: one key, ``mnt``, a JSON object with the format, its version and the config.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from mnt.export.errors import CheckpointError, ExportError
from mnt.export.model.blocks import fold_spectral_norm
from mnt.export.model.config import PRESETS, ModelConfig
from mnt.export.model.disentangler import LandmarkDisentangler
from mnt.export.model.landmark_prior import random_stats
from mnt.export.model.marionette import MarioNETte
from mnt.runtime.errors import RuntimeStageError
from mnt.runtime.files import atomic_path
from mnt.runtime.landmarks import N_EXPRESSION, N_POINTS, LandmarkStats

FORMAT = "mnt-checkpoint"
FORMAT_VERSION = 1
_STATS: dict[str, tuple[int, ...]] = {
    "mean": (N_POINTS, 3), "basis": (N_EXPRESSION, N_POINTS * 3),
    "coef_mean": (N_EXPRESSION,), "coef_std": (N_EXPRESSION,), "lambda_exp": (),
}


@dataclass
class Reference:
    """The PyTorch reference: generator, disentangler (both in eval mode) and statistics."""

    config: ModelConfig
    generator: MarioNETte
    disentangler: LandmarkDisentangler
    stats: LandmarkStats

    def folded_generator(self) -> MarioNETte:
        """A copy of the generator with spectral norm folded into plain weights, as
        exported. (A deepcopy of a parametrised module shares its parametrisations, so
        folding one would break the other.)"""
        generator = MarioNETte(self.config)
        generator.load_state_dict(self.generator.state_dict())
        return fold_spectral_norm(generator).eval()


def init_reference(config: ModelConfig, seed: int) -> Reference:
    """A seeded random-initialised reference: the same seed gives the same weights."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        generator, disentangler = MarioNETte(config), LandmarkDisentangler(config)
    stats = random_stats(np.random.default_rng(seed))
    return Reference(config, generator.eval(), disentangler.eval(), stats)


def save_checkpoint(reference: Reference, path: str | os.PathLike[str], note: str = "",
                    replace: bool = True) -> None:
    """Without `replace`, a file that appeared at `path` meanwhile is kept (an ExportError)."""
    tensors: dict[str, torch.Tensor] = {}
    for prefix, module in (("generator.", reference.generator),
                           ("landmark_disentangler.", reference.disentangler)):
        for key, value in module.state_dict().items():
            tensors[prefix + key] = value.detach().contiguous()
    for name in _STATS:
        value = np.asarray(getattr(reference.stats, name), dtype=np.float64)
        tensors[f"landmark_stats.{name}"] = torch.from_numpy(value.copy())
    header = {"format": FORMAT, "format_version": FORMAT_VERSION,
              "config": json.loads(reference.config.to_json()), "note": note}
    with atomic_path(path, replace=replace, error=ExportError) as temporary:
        try:
            save_file(tensors, str(temporary), metadata={"mnt": json.dumps(header, sort_keys=True)})
        except SafetensorError as err:  # safetensors reports I/O failures (full disk) this way
            reason = "its folder does not exist" if not Path(path).parent.is_dir() else str(err)
            raise ExportError(f"cannot write {path}: {reason}",
                              hint="check that the folder exists, is writable and has free space") from err


def _read(path: Path) -> tuple[dict[str, object], dict[str, torch.Tensor]]:
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist",
                              hint="create one with `mnt-export init --preset tiny -o PATH`")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"checkpoint {path} is not a readable safetensors file: {err}") from err
    try:
        header = json.loads(metadata["mnt"])
        assert isinstance(header, dict)
    except (KeyError, ValueError, AssertionError) as err:
        raise CheckpointError(f"checkpoint {path} has no mnt header (not an mnt checkpoint)") from err
    if header.get("format") != FORMAT or header.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {path} has format {header.get('format')!r} version "
            f"{header.get('format_version')!r}; this mnt reads {FORMAT!r} version {FORMAT_VERSION}")
    return header, tensors


def _check_keys(path: Path, expected: dict[str, tuple[int, ...]],
                found: dict[str, torch.Tensor]) -> None:
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    misshaped = sorted(
        f"{key} {tuple(found[key].shape)} (expected {expected[key]})"
        for key in set(expected) & set(found) if tuple(found[key].shape) != expected[key]
    )
    problems = [
        f"{label}: {', '.join(items[:5])}{f' and {len(items) - 5} more' if len(items) > 5 else ''}"
        for label, items in (("missing", missing), ("unexpected", unexpected),
                             ("mis-shaped", misshaped)) if items
    ]
    if problems:
        raise CheckpointError(f"checkpoint {path} does not match its config; " + "; ".join(problems))


def load_checkpoint(path: str | os.PathLike[str]) -> Reference:
    """Load and validate a checkpoint; every mismatch is named in one CheckpointError."""
    path = Path(path)
    header, tensors = _read(path)
    try:
        config = ModelConfig.from_dict(dict(header["config"]))  # type: ignore[call-overload]
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"checkpoint {path} has an invalid config: {err}") from err
    generator, disentangler = MarioNETte(config), LandmarkDisentangler(config)
    modules: tuple[tuple[str, nn.Module], ...] = (
        ("generator.", generator), ("landmark_disentangler.", disentangler))
    expected = {prefix + k: tuple(v.shape)
                for prefix, module in modules for k, v in module.state_dict().items()}
    expected.update({f"landmark_stats.{name}": shape for name, shape in _STATS.items()})
    _check_keys(path, expected, tensors)
    for prefix, module in modules:
        module.load_state_dict({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})
    try:
        stats = LandmarkStats(**{
            name: float(tensors[f"landmark_stats.{name}"]) if name == "lambda_exp"
            else tensors[f"landmark_stats.{name}"].numpy() for name in _STATS})
    except (ValueError, RuntimeStageError) as err:  # shapes, and values (NaN, zero spread)
        raise CheckpointError(f"checkpoint {path}: {err}") from err
    return Reference(config, generator.eval(), disentangler.eval(), stats)


def preset(name: str) -> ModelConfig:
    try:
        return PRESETS[name]
    except KeyError:
        raise CheckpointError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}") from None
