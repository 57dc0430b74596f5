"""The three deployment components as graphs with flat, named tensor inputs and outputs.

The cut: `target_encoder` runs once per target set and emits
everything the frame phase needs (per blender block the keys and values, ŝ1..ŝ4 averaged
over K); `generator` runs every frame; `landmark_disentangler` runs on targets and frames.
K (targets) and N (images) are dynamic axes, 1 to 8.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from mnt.export.model.config import ATTENTION_BLOCKS, DRIVER_DOWN_BLOCKS, TARGET_DOWN_BLOCKS, ModelConfig
from mnt.export.model.disentangler import LandmarkDisentangler
from mnt.export.model.marionette import EncodedTargets, MarioNETte

MAX_TARGETS = 8
COMPONENTS = ("target_encoder", "landmark_disentangler", "generator")


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int | str, ...]  # a str is a dynamic axis named in ComponentSpec.dims


@dataclass(frozen=True)
class ComponentSpec:
    name: str
    phase: str  # "target": once per target set; "frame": every driver frame
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    dims: dict[str, tuple[int, int]]  # dynamic axis -> (min, max)


def component_specs(config: ModelConfig) -> dict[str, ComponentSpec]:
    s, c = config.image_size, config.channels
    tokens = (s // 2**TARGET_DOWN_BLOCKS) ** 2
    cx = c(DRIVER_DOWN_BLOCKS)
    image = (3, s, s)
    kv = tuple(TensorSpec(f"{kind}_{i}", ("K", tokens, cx))
               for kind in ("keys", "values") for i in range(ATTENTION_BLOCKS))
    warped = tuple(TensorSpec(f"warped_{j}", (1, c(j), s // 2**j, s // 2**j))
                   for j in range(1, DRIVER_DOWN_BLOCKS + 1))
    k_range = {"K": (1, MAX_TARGETS)}
    return {
        "target_encoder": ComponentSpec(
            "target_encoder", "target",
            (TensorSpec("target_images", ("K", *image)), TensorSpec("target_landmarks", ("K", *image))),
            kv + warped, k_range),
        "landmark_disentangler": ComponentSpec(
            "landmark_disentangler", "target",
            (TensorSpec("images", ("N", *image)), TensorSpec("landmark_offsets", ("N", 204))),
            (TensorSpec("coefficients", ("N", 48)),), {"N": (1, MAX_TARGETS)}),
        "generator": ComponentSpec(
            "generator", "frame",
            (TensorSpec("driver_landmarks", (1, *image)), *kv, *warped),
            (TensorSpec("image", (1, *image)),), k_range),
    }


class TargetEncoderGraph(nn.Module):
    def __init__(self, generator: MarioNETte) -> None:
        super().__init__()
        self.generator = generator

    def forward(self, images: torch.Tensor, landmarks: torch.Tensor) -> tuple[torch.Tensor, ...]:
        state = self.generator.encode_targets(images.unsqueeze(0), landmarks.unsqueeze(0))
        k = images.shape[0]
        per_target = [t.reshape(k, -1, t.shape[-1]) for t in (*state.keys, *state.values)]
        return (*per_target, *state.warped)


class GeneratorGraph(nn.Module):
    """Explicit arguments: their names are the graph's input names (ATTENTION_BLOCKS = 3,
    DRIVER_DOWN_BLOCKS = 4 are fixed by the architecture)."""

    def __init__(self, generator: MarioNETte) -> None:
        super().__init__()
        self.generator = generator

    def forward(self, driver_landmarks: torch.Tensor,
                keys_0: torch.Tensor, keys_1: torch.Tensor, keys_2: torch.Tensor,
                values_0: torch.Tensor, values_1: torch.Tensor, values_2: torch.Tensor,
                warped_1: torch.Tensor, warped_2: torch.Tensor, warped_3: torch.Tensor,
                warped_4: torch.Tensor) -> torch.Tensor:
        def flat(t: torch.Tensor) -> torch.Tensor:  # (K, h*w, c) -> (1, K*h*w, c)
            return t.reshape(1, -1, t.shape[-1])

        state = EncodedTargets(keys=(flat(keys_0), flat(keys_1), flat(keys_2)),
                            values=(flat(values_0), flat(values_1), flat(values_2)),
                            warped=(warped_1, warped_2, warped_3, warped_4))
        return self.generator.generate(driver_landmarks, state)


def component_modules(generator: MarioNETte, disentangler: LandmarkDisentangler
                      ) -> dict[str, nn.Module]:
    return {
        "target_encoder": TargetEncoderGraph(generator).eval(),
        "landmark_disentangler": disentangler.eval(),
        "generator": GeneratorGraph(generator).eval(),
    }
