"""Parameter and FLOP counts of the deployment components, from the PyTorch reference.

FLOPs are counted by torch's FlopCounterMode (2 per multiply-add, convolutions and
matrix products only) on fake tensors, so no arithmetic is run."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils.flop_counter import FlopCounterMode

from mnt.export.model.checkpoint import Reference

# Blender parameters that act on the targets only, so they run in the target phase.
_TARGET_PHASE_BLENDER = (".key.", ".key_pos.", ".value.")


@dataclass(frozen=True)
class ComponentCost:
    component: str
    phase: str  # "target" (once per target set) or "frame" (every driver frame)
    k: int
    params: int
    gflops: float


def _params(module: torch.nn.Module, keep=lambda name: True) -> int:
    return sum(p.numel() for name, p in module.named_parameters() if keep(name))


def _gflops(fn, *shapes: tuple[int, ...], prepare=None) -> float:
    """GFLOPs of fn(*prepare(*inputs)) for fake inputs of the given shapes; what
    `prepare` computes is not counted."""
    with FakeTensorMode(allow_non_fake_inputs=True) as mode, torch.no_grad():
        inputs = [mode.from_tensor(torch.empty(shape)) for shape in shapes]
        args = prepare(*inputs) if prepare else inputs
        with FlopCounterMode(display=False) as counter:
            fn(*args)
    return counter.get_total_flops() / 1e9


def component_costs(reference: Reference, ks: tuple[int, ...] = (1, 8)) -> list[ComponentCost]:
    g, size = reference.generator, reference.config.image_size
    image = (3, size, size)
    target_params = _params(g.target_encoder) + _params(
        g.blender, lambda n: any(t in f".{n}" for t in _TARGET_PHASE_BLENDER))
    frame_params = _params(g) - target_params
    rows = [ComponentCost("target_encoder", "target", k, target_params,
                          _gflops(g.encode_targets, (1, k, *image), (1, k, *image)))
            for k in ks]
    rows += [ComponentCost("generator", "frame", k, frame_params,
                           _gflops(g.generate, (1, *image), (1, k, *image), (1, k, *image),
                                   prepare=lambda rx, y, ry: (rx, g.encode_targets(y, ry))))
             for k in ks]
    rows.append(ComponentCost(
        "landmark_disentangler", "target+frame", 1, _params(reference.disentangler),
        _gflops(reference.disentangler, (1, *image), (1, 204))))
    return rows
