"""dlib's face-recognition ResNet (`dlib_face_recognition_resnet_model_v1.dat`, shipped by
face-recognition-models, public domain) in PyTorch, its weights read from the `.dat` file
itself: no dlib import and no download. The trainer takes its intermediate activations as
the face perceptual features (the paper's VGG-VD-16 on faces cannot be had here); its final
128-d descriptor is what `mnt-export evaluate` measures identity with, so it is never a loss.

The network (dlib's examples/dnn_face_recognition_ex.cpp): a 150x150 RGB chip, (pixel -
mean) / 256; conv 7x7/2 -> affine -> ReLU -> max-pool 3x3/2; residual blocks 3x32, then a
downsampling block and 3x64, 2x128, 2x256 more, and a last downsampling block of 256;
global average pool; a bias-free 256 -> 128 projection. dlib's rules that decide exactness:
strided convolutions and pools pad 0 (stride-1 3x3 convolutions pad 1), a downsampling
block's shortcut is a 2x2/2 average pool, and its add zero-fills where shapes differ (the
missing channels, and the last row and column where the pooled map is the larger)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mnt.export.errors import ExportError

FILE = "dlib_face_recognition_resnet_model_v1.dat"
CHIP = 150  # the input size the network was trained on
MEAN = (122.782, 117.001, 104.298)  # dlib's input_rgb_image_sized averages, RGB
# (channels, blocks, first block downsamples) per stage, input side first.
STAGES = ((32, 3, False), (64, 4, True), (128, 3, True), (256, 3, True), (256, 1, True))
CONVOLUTIONS = 1 + 2 * sum(blocks for _, blocks, _ in STAGES)  # 29
PARAMETERS = 5_614_592


class _Reader:
    """dlib's serialisation: an integer is one byte holding its length (0x80 set when
    negative) then that many little-endian bytes; a float an integer mantissa and an integer
    exponent; a string its length then its bytes; a tensor version, n, k, nr, nc then raw
    little-endian float32."""

    def __init__(self, data: bytes, path: Path) -> None:
        self.data, self.at, self.path = data, 0, path

    def _take(self, n: int) -> bytes:
        if self.at + n > len(self.data):
            raise ExportError(f"{self.path} ends early (at byte {self.at} of {len(self.data)}): "
                              f"a truncated {FILE}", hint=_HINT)
        chunk = self.data[self.at:self.at + n]
        self.at += n
        return chunk

    def integer(self) -> int:
        head = self._take(1)[0]
        size = head & 0x7F
        if size > 8:
            raise ExportError(f"{self.path}: a malformed integer at byte {self.at - 1}", hint=_HINT)
        value = int.from_bytes(self._take(size), "little")
        return -value if head & 0x80 else value

    def real(self) -> float:
        mantissa, exponent = self.integer(), self.integer()
        return float(mantissa) * 2.0 ** exponent

    def string(self) -> str:
        return self._take(self.integer()).decode("latin-1")

    def tensor(self) -> np.ndarray:
        if (version := self.integer()) != 2:
            raise ExportError(f"{self.path}: tensor version {version} at byte {self.at}", hint=_HINT)
        shape = tuple(self.integer() for _ in range(4))
        count = int(np.prod(shape))
        return np.frombuffer(self._take(4 * count), "<f4").reshape(shape).copy()

    def shape(self) -> tuple[int, ...]:
        """An alias tensor: version 1 and its shape (its values live in the layer's params)."""
        self.integer()
        return tuple(self.integer() for _ in range(4))

    def expect(self, name: str) -> None:
        """Moves to the next layer record named `name` (the records between them, the
        network's structure, hold no weights)."""
        tag = bytes([1, len(name)]) + name.encode()
        found = self.data.find(tag, self.at)
        if found < 0:
            raise ExportError(f"{self.path} has fewer layers than dlib's face network (no "
                              f"'{name}' after byte {self.at})", hint=_HINT)
        self.at = found
        self.string()


_HINT = f"reinstall it: pip install --force-reinstall face-recognition-models (its {FILE})"


@dataclass
class _Conv:
    weight: np.ndarray  # (O, I, H, W)
    bias: np.ndarray
    stride: int
    padding: int


def _read_conv(reader: _Reader) -> _Conv:
    reader.expect("con_4")
    params = reader.tensor().ravel()
    reader.integer()  # num_filters
    reader.integer(), reader.integer()  # nr, nc
    stride = reader.integer()
    reader.integer()  # stride x (square)
    padding = reader.integer()
    reader.integer()
    filters, biases = reader.shape(), reader.shape()
    for _ in range(4):
        reader.real()  # learning-rate and weight-decay multipliers
    count = int(np.prod(filters))
    if len(params) != count + int(np.prod(biases)):
        raise ExportError(f"{reader.path}: a convolution's sizes disagree", hint=_HINT)
    return _Conv(params[:count].reshape(filters), params[count:], stride, padding)


def _read_affine(reader: _Reader) -> tuple[np.ndarray, np.ndarray]:
    reader.expect("affine_")
    params = reader.tensor().ravel()  # gamma then beta
    n = int(np.prod(reader.shape()))
    if reader.shape() != (1, n, 1, 1) or len(params) != 2 * n:
        raise ExportError(f"{reader.path}: an affine layer's sizes disagree", hint=_HINT)
    reader.integer()  # mode
    return params[:n], params[n:]


class _ConvAffine(nn.Module):
    """dlib's con followed by affine (batch norm frozen): folded into one convolution."""

    def __init__(self, conv: _Conv, affine: tuple[np.ndarray, np.ndarray]) -> None:
        super().__init__()
        gamma, beta = affine
        self.stride, self.padding = conv.stride, conv.padding
        self.register_buffer("weight", torch.from_numpy(conv.weight * gamma[:, None, None, None]))
        self.register_buffer("bias", torch.from_numpy(conv.bias * gamma + beta))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding)


def _add_zero_filled(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib's add of two maps of different shapes: each zero-filled to the larger one."""
    c, h, w = (max(a.shape[i], b.shape[i]) for i in (1, 2, 3))

    def grow(x: torch.Tensor) -> torch.Tensor:
        return F.pad(x, (0, w - x.shape[3], 0, h - x.shape[2], 0, c - x.shape[1]))

    return grow(a) + grow(b)


class _Block(nn.Module):
    def __init__(self, first: _ConvAffine, second: _ConvAffine, down: bool) -> None:
        super().__init__()
        self.first, self.second, self.down = first, second, down

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.second(F.relu(self.first(x)))
        shortcut = F.avg_pool2d(x, 2, 2) if self.down else x
        return F.relu(_add_zero_filled(y, shortcut))


class FaceNetwork(nn.Module):
    """The network with frozen weights; `features` gives the activations after the stem
    and after each stage (the perceptual taps), `forward` the 128-d descriptor."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        try:
            data = path.read_bytes()
        except OSError as err:
            raise ExportError(f"cannot read dlib's face network {path}: {err.strerror}", hint=_HINT) from err
        reader = _Reader(data, path)
        reader.expect("input_rgb_image_sized")
        convs, affines = [], []
        for _ in range(CONVOLUTIONS):
            convs.append(_read_conv(reader))
            affines.append(_read_affine(reader))
        reader.expect("fc_2")
        outputs, inputs = reader.integer(), reader.integer()
        fc = reader.tensor().ravel()
        if (outputs, inputs) != (128, 256) or fc.size != 256 * 128:
            raise ExportError(f"{path} is not dlib's face network: its projection is {inputs} -> {outputs}",
                              hint=_HINT)
        layers = [_ConvAffine(c, a) for c, a in zip(convs, affines, strict=True)]
        self.stem = layers[0]
        stages, index = [], 1
        for channels, blocks, down in STAGES:
            stage = []
            for b in range(blocks):
                first, second = layers[index], layers[index + 1]
                index += 2
                if first.weight.shape[0] != channels:
                    raise ExportError(f"{path} is not dlib's face network: a stage of "
                                      f"{first.weight.shape[0]} channels where {channels} belong",
                                      hint=_HINT)
                stage.append(_Block(first, second, down and b == 0))
            stages.append(nn.Sequential(*stage))
        self.stages = nn.ModuleList(stages)
        self.register_buffer("projection", torch.from_numpy(fc.reshape(256, 128)))
        self.register_buffer("mean", torch.tensor(MEAN).view(1, 3, 1, 1))
        count = sum(int(np.prod(c.weight.shape)) + c.bias.size + 2 * a[0].size
                    for c, a in zip(convs, affines, strict=True)) + fc.size
        if count != PARAMETERS or self.stem.weight.shape != (32, 3, 7, 7):
            raise ExportError(f"{path} is not dlib's face network ({count} parameters, "
                              f"{PARAMETERS} expected)", hint=_HINT)
        self.requires_grad_(False).eval()

    def features(self, chips: torch.Tensor) -> list[torch.Tensor]:
        """(B, 3, 150, 150) RGB in [0, 255] -> the stem's and each stage's activations."""
        x = self.stem((chips - self.mean) / 256.0)
        x = F.max_pool2d(F.relu(x), 3, 2)
        taps = [x]
        for stage in self.stages:
            x = stage(x)
            taps.append(x)
        return taps

    def forward(self, chips: torch.Tensor) -> torch.Tensor:
        """-> (B, 128) descriptors, dlib's compute_face_descriptor on the same chips."""
        return self.features(chips)[-1].mean(dim=(2, 3)) @ self.projection


def network_file() -> Path:
    """The `.dat` that face-recognition-models installs (the `identity` extra)."""
    from mnt.export.train.identity import model_file

    return model_file(FILE)
