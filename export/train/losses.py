"""The losses of supplement A4: hinge GAN (Eq. 10-11), feature matching on the
discriminator's features, and perceptual terms with three-fold weight on the face's convex
hull. The paper's perceptual networks (VGG19 on ImageNet, VGG-VD-16 on faces) cannot be
downloaded here: VGG19 is used when its torchvision weights file is given; without it a
pixel L1 with the same face weighting stands in (say which in the checkpoint's note)."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from mnt.export.errors import ExportError

FACE_WEIGHT = 3.0  # supplement A4: "three-fold weights to the corresponding masked position"


def hinge_discriminator(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    return F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean()


def hinge_generator(fake: torch.Tensor) -> torch.Tensor:
    return -fake.mean()


def feature_matching(real: list[torch.Tensor], fake: list[torch.Tensor]) -> torch.Tensor:
    return sum((F.l1_loss(f, r.detach()) for r, f in zip(real, fake, strict=True)),
               start=torch.zeros(()))


def _weighted_l1(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean |a - b| with the face (mask, resized to a's size) weighted FACE_WEIGHT times,
    normalised per sample, then averaged over the batch: so a batch split over processes
    gives the same mean (a batch-wide normaliser would not)."""
    mask = F.interpolate(mask, size=a.shape[-2:], mode="area") if mask.shape[-2:] != a.shape[-2:] else mask
    weight = 1.0 + (FACE_WEIGHT - 1.0) * mask
    per_sample = ((a - b).abs() * weight).flatten(1).mean(1) / weight.flatten(1).mean(1)
    return per_sample.mean()


def pixel(fake: torch.Tensor, real: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return _weighted_l1(fake, real, mask)


# VGG19's convolutions (torchvision's `features` indices) up to relu5_1; the perceptual loss
# reads relu1_1, relu2_1, relu3_1, relu4_1 and relu5_1 (supplement A4).
_VGG19 = [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512]
_VGG19_TAPS = (1, 6, 11, 20, 29)  # indices of those ReLUs in torchvision's `features`
VGG19_FILE = "vgg19-dcbb9e9d.pth"  # torchvision's ImageNet weights


class VGG19Features(nn.Module):
    """VGG19's convolutional trunk, written out (torchvision cannot be imported beside this
    project's CPU torch), loading torchvision's weight file without unpickling code."""

    def __init__(self, weights: Path) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for item in _VGG19:
            if item == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(cin, int(item), 3, padding=1), nn.ReLU()]
                cin = int(item)
        self.features = nn.Sequential(*layers)
        try:
            state = torch.load(weights, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - any unreadable file is the same user error
            raise ExportError(f"cannot read VGG19 weights {weights}: {err}",
                              hint=f"give torchvision's {VGG19_FILE}") from err
        trunk = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
        missing = self.features.load_state_dict(
            {k: v for k, v in trunk.items() if int(k.split(".")[0]) < len(layers)}, strict=False)
        if missing.missing_keys:
            raise ExportError(f"{weights} is not torchvision's VGG19: missing {missing.missing_keys[:3]}")
        self.requires_grad_(False).eval()
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        h = ((image + 1) * 0.5 - self.mean) / self.std
        taps = []
        for index, layer in enumerate(self.features):
            h = layer(h)
            if index in _VGG19_TAPS:
                taps.append(h)
        return taps


def perceptual(network: VGG19Features, fake: torch.Tensor, real: torch.Tensor,
               mask: torch.Tensor) -> torch.Tensor:
    """Mean over the five taps of the face-weighted L1 between features (Johnson et al.)."""
    with torch.no_grad():
        real_features = network(real)
    terms = [_weighted_l1(f, r, mask) for f, r in zip(network(fake), real_features, strict=True)]
    return torch.stack(terms).mean()


def face_chips(images: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """(B, 3, S, S) images in [-1, 1] -> (B, 3, size, size) chips of the (B, 3) boxes
    (centre x, centre y, side in pixels) in [0, 255], bilinear: differentiable in the images."""
    s = images.shape[-1]
    theta = torch.zeros(len(images), 2, 3, dtype=images.dtype, device=images.device)
    scale = boxes[:, 2] / s  # output [-1, 1] spans the box; input [-1, 1] spans S pixels
    theta[:, 0, 0], theta[:, 1, 1] = scale, scale
    theta[:, 0, 2] = (2 * boxes[:, 0] + 1) / s - 1  # pixel centres at integers
    theta[:, 1, 2] = (2 * boxes[:, 1] + 1) / s - 1
    grid = F.affine_grid(theta, [len(images), 3, size, size], align_corners=False)
    chips = F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return (chips + 1) * 127.5


FACE_TAPS = 5  # the stem and the first four stages; the last stage is all but the descriptor


def face_perceptual(network: nn.Module, fake: torch.Tensor, real: torch.Tensor,
                    boxes: torch.Tensor) -> torch.Tensor:
    """Mean over the face network's taps of the L1 between the activations of the generated
    and the real face chips (the paper's VGG-VD-16 term, on dlib's face network)."""
    from mnt.export.train.face_network import CHIP

    with torch.no_grad():
        real_features = network.features(face_chips(real, boxes, CHIP))[:FACE_TAPS]
    fake_features = network.features(face_chips(fake, boxes, CHIP))[:FACE_TAPS]
    return torch.stack([F.l1_loss(f, r) for f, r in zip(fake_features, real_features, strict=True)]).mean()
