import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from mnt.export.errors import CheckpointError
from mnt.export.model.checkpoint import init_reference, load_checkpoint, save_checkpoint
from mnt.export.model.config import PRESETS


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    save_checkpoint(init_reference(PRESETS["tiny"], seed=3), path)
    return path


def _rewrite(src, dst, edit):
    with safe_open(str(src), framework="pt") as handle:
        metadata = handle.metadata()
    tensors = load_file(str(src))
    edit(tensors, metadata)
    save_file(tensors, str(dst), metadata=metadata)
    return dst


def test_round_trip_keeps_weights_statistics_and_outputs(tiny_file):
    original = init_reference(PRESETS["tiny"], seed=3)
    loaded = load_checkpoint(tiny_file)
    assert loaded.config == original.config
    for a, b in ((original.generator, loaded.generator), (original.disentangler, loaded.disentangler)):
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    for name in ("mean", "basis", "coef_mean", "coef_std"):
        assert np.array_equal(getattr(original.stats, name), getattr(loaded.stats, name))
    assert loaded.stats.lambda_exp == 1.5
    rx, y = torch.rand(1, 3, 256, 256), torch.rand(1, 1, 3, 256, 256)
    with torch.no_grad():
        assert torch.equal(original.generator(rx, y, y), loaded.generator(rx, y, y))


def test_same_seed_gives_a_byte_identical_file_across_processes(tmp_path):
    paths = [tmp_path / f"{i}.safetensors" for i in range(3)]
    for path, seed in zip(paths, (7, 7, 8), strict=False):
        subprocess.run([sys.executable, "-m", "mnt.export.cli", "init", "--preset", "tiny",
                        "--seed", str(seed), "-o", str(path)], check=True, capture_output=True)
    assert paths[0].read_bytes() == paths[1].read_bytes()
    assert paths[0].read_bytes() != paths[2].read_bytes()


def test_renamed_key_is_named(tiny_file, tmp_path):
    key = "generator.decoder.out.bias"

    def rename(tensors, _):
        tensors["generator.decoder.output.bias"] = tensors.pop(key)

    bad = _rewrite(tiny_file, tmp_path / "renamed.safetensors", rename)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(bad)
    assert f"missing: {key}" in str(err.value)
    assert "unexpected: generator.decoder.output.bias" in str(err.value)


def test_misshaped_key_is_named(tiny_file, tmp_path):
    key = "landmark_disentangler.mlp.2.weight"

    def shrink(tensors, _):
        tensors[key] = tensors[key][:10].clone()

    bad = _rewrite(tiny_file, tmp_path / "shape.safetensors", shrink)
    with pytest.raises(CheckpointError, match=rf"mis-shaped: {key} \(10, 64\) \(expected \(48, 64\)\)"):
        load_checkpoint(bad)


def test_config_that_disagrees_with_weights_is_refused(tiny_file, tmp_path):
    def paper_config(_, metadata):
        header = json.loads(metadata["mnt"])
        header["config"]["base_channels"] = 32
        metadata["mnt"] = json.dumps(header)

    bad = _rewrite(tiny_file, tmp_path / "config.safetensors", paper_config)
    with pytest.raises(CheckpointError, match="does not match its config; .*mis-shaped"):
        load_checkpoint(bad)


def test_corrupt_foreign_and_missing_files_are_refused(tiny_file, tmp_path):
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(tiny_file.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load_checkpoint(truncated)
    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign))
    with pytest.raises(CheckpointError, match="not an mnt checkpoint"):
        load_checkpoint(foreign)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.safetensors")


def test_loading_never_unpickles(tiny_file, tmp_path):
    # A torch pickle is not accepted, whatever its content.
    pickle = tmp_path / "model.pt"
    torch.save({"a": torch.zeros(1)}, pickle)
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load_checkpoint(pickle)
