"""A checkpoint's config and statistics are untrusted input: each field is checked by
value, and a bad one is named with its allowed range (exit 1, never an internal error)."""

import json
import math

import pytest
import torch
from click.testing import CliRunner
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from mnt.export.cli import main as export_main
from mnt.export.errors import CheckpointError
from mnt.export.model.checkpoint import init_reference, load_checkpoint, save_checkpoint
from mnt.export.model.config import PRESETS


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    save_checkpoint(init_reference(PRESETS["tiny"], seed=3), path)
    return path


def rewritten(src, dst, config=None, tensors=None):
    """`src` with its header's config edited by `config(dict)` and its tensors by `tensors(dict)`."""
    with safe_open(str(src), framework="pt") as handle:
        metadata = handle.metadata()
    weights = load_file(str(src))
    header = json.loads(metadata["mnt"])
    if config:
        config(header["config"])
    if tensors:
        tensors(weights)
    save_file(weights, str(dst), metadata={"mnt": json.dumps(header)})
    return dst


def _set(key, value):
    def edit(config):
        config[key] = value
    return edit


def _set_backbone(key, value):
    def edit(config):
        config["backbone"][key] = value
    return edit


@pytest.mark.parametrize(("edit", "message"), [
    (_set("image_size", 0), r"image_size is 0, expected an integer from 32 to 2048, a multiple of 32"),
    (_set("image_size", -128), r"image_size is -128, expected an integer from 32 to 2048"),
    (_set("image_size", "big"), r"image_size is 'big', expected an integer"),
    (_set("image_size", 100), r"image_size is 100, expected .* a multiple of 32"),
    (_set("image_size", 1.5e9), r"image_size is 1500000000\.0, expected an integer"),
    (_set("flow_init_std", math.nan), r"flow_init_std is nan, expected a finite number from 0\.0 to 1\.0"),
    (_set("flow_init_std", math.inf), r"flow_init_std is inf, expected a finite number"),
    (_set("base_channels", 6), r"base_channels is 6, expected .* a multiple of 4"),
    (_set("max_channels", 8), r"max_channels is 8, expected at least base_channels \(16\)"),
    (_set("disentangler_hidden", True), r"disentangler_hidden is True, expected an integer"),
    (_set("backbone", [1, 2]), r"backbone is list, expected an object"),
    (_set_backbone("layers", [0]), r"backbone\.layers\[0\] is 0, expected an integer from 1 to 64"),
    (_set_backbone("layers", 3), r"backbone\.layers is 3, expected a list of 1 to 6 block counts"),
    (_set_backbone("block", "vit"), r"backbone\.block is 'vit', expected 'bottleneck' or 'basic'"),
    (_set_backbone("depth", 3), r"unknown backbone fields \['depth'\]"),
], ids=lambda v: "" if callable(v) else None)
def test_a_bad_config_field_is_named_with_its_range(tiny_file, tmp_path, edit, message):
    bad = rewritten(tiny_file, tmp_path / "bad.safetensors", config=edit)
    with pytest.raises(CheckpointError, match=message) as caught:
        load_checkpoint(bad)
    assert str(caught.value).startswith(f"checkpoint {bad} has an invalid config: ")
    result = CliRunner().invoke(export_main, ["describe", "--checkpoint", str(bad)])
    assert result.exit_code == 1 and "internal error" not in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1, result.output


@pytest.mark.parametrize(("name", "value", "message"), [
    ("mean", math.nan, "'mean' holds NaN or infinite values"),
    ("coef_std", 0.0, "'coef_std' must be positive"),
    ("lambda_exp", math.inf, "'lambda_exp' holds NaN or infinite values"),
])
def test_bad_statistics_are_refused_by_value(tiny_file, tmp_path, name, value, message):
    def edit(weights):
        key = f"landmark_stats.{name}"
        weights[key] = torch.full_like(weights[key], value)

    bad = rewritten(tiny_file, tmp_path / "stats.safetensors", tensors=edit)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(bad)
