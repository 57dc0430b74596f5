"""Where a training process runs: its device, its precision, and its place in a torchrun job
(WORLD_SIZE, RANK, LOCAL_RANK in the environment). One process per GPU, or several CPU
processes on gloo. Gradients are averaged by hand after each backward rather than by
DistributedDataParallel: a GAN step calls the discriminator three times per backward and
switches its gradients off for the generator's pass, which DDP's reducer (one forward per
backward, a fixed set of trainable parameters) does not allow; StyleGAN2-ADA does the same."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from mnt.export.errors import ExportError

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# Rank 0 prepares the data while the others wait: that can take hours on VoxCeleb, so the
# wait has its own gloo group; training collectives keep the backend's default timeout.
PREPARE_TIMEOUT = timedelta(hours=24)


@dataclass
class Context:
    device: torch.device
    precision: str = "fp32"
    rank: int = 0
    world: int = 1
    wait_group: object = None

    @property
    def main(self) -> bool:
        return self.rank == 0

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=PRECISIONS[self.precision])

    def scaler(self) -> torch.amp.GradScaler:
        """Loss scaling for fp16 only (bf16 has float32's range); disabled otherwise."""
        return torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")

    def wait_for_main(self) -> None:
        if self.world > 1:
            dist.barrier(group=self.wait_group)

    def average_gradients(self, parameters: Iterable[torch.nn.Parameter]) -> None:
        """Mean of every rank's gradients. Each rank's loss is a mean over its share of the
        batch, so with equal shares this is the gradient of the whole batch's mean."""
        if self.world == 1:
            return
        grads = [p.grad for p in parameters if p.grad is not None]
        for flat, tensors in _coalesced(grads):
            dist.all_reduce(flat)
            flat /= self.world
            _scatter(flat, tensors)

    def broadcast(self, tensors: Iterable[torch.Tensor]) -> None:
        """Rank 0's values everywhere (module states: spectral-norm vectors, BatchNorm)."""
        if self.world == 1:
            return
        for flat, group in _coalesced(list(tensors)):
            dist.broadcast(flat, src=0)
            _scatter(flat, group)

    def mean(self, values: dict[str, float]) -> dict[str, float]:
        """Losses averaged over the ranks: the whole batch's, for the log."""
        if self.world == 1:
            return values
        flat = torch.tensor(list(values.values()), dtype=torch.float64, device=self.device)
        dist.all_reduce(flat)
        return dict(zip(values, (flat / self.world).tolist(), strict=True))


def _coalesced(tensors: list[torch.Tensor]) -> Iterator[tuple[torch.Tensor, list[torch.Tensor]]]:
    """One flat tensor per dtype: one collective call each instead of one per tensor."""
    by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
    for t in tensors:
        by_dtype.setdefault(t.dtype, []).append(t)
    for group in by_dtype.values():
        yield torch.cat([t.detach().reshape(-1) for t in group]), group


def _scatter(flat: torch.Tensor, tensors: list[torch.Tensor]) -> None:
    with torch.no_grad():
        for t, part in zip(tensors, flat.split([t.numel() for t in tensors]), strict=True):
            t.copy_(part.view_as(t))


def start(device: str, precision: str) -> Context:
    """The process's context; joins the torchrun job when there is one."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ExportError("--device cuda but PyTorch sees no CUDA GPU",
                          hint="use --device cpu (or auto), or install a CUDA build of torch")
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "cuda":
        torch.cuda.set_device(local)
        place = torch.device("cuda", local)
    else:
        place = torch.device("cpu")
    if world == 1:
        return Context(place, precision)
    dist.init_process_group("nccl" if device == "cuda" else "gloo")
    wait_group = dist.new_group(backend="gloo", timeout=PREPARE_TIMEOUT)
    return Context(place, precision, dist.get_rank(), world, wait_group)


def stop(context: Context) -> None:
    if context.world > 1 and dist.is_initialized():
        dist.destroy_process_group()
