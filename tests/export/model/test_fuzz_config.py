"""Property-based fuzzing of a checkpoint's config: whatever its fields hold, loading gives
a model or one line naming the bad field (exit 1 through the command), never an internal
error. Bounded (a few dozen examples) so that it runs in CI; no example database is written."""

import json

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from mnt.export.cli import main as export_main
from mnt.export.errors import CheckpointError
from mnt.export.model.checkpoint import init_reference, load_checkpoint, save_checkpoint
from mnt.export.model.config import PRESETS, ModelConfig

# derandomize: the same examples on every run, so CI judges the change, not the draw
FUZZ = settings(max_examples=50, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
VALUES = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=True),
                   st.text(max_size=12), st.lists(st.integers(-3, 70), max_size=8),
                   st.dictionaries(st.text(max_size=6), st.integers(-3, 3), max_size=3))
SMALL = st.one_of(st.sampled_from([0, 1, 3, 4, 16, 31, 32, 64, 128, 2048, 4096]), VALUES)


@st.composite
def configs(draw):
    """The tiny preset's config with some fields (the backbone's too) changed, dropped or added."""
    config = json.loads(PRESETS["tiny"].to_json())
    for _ in range(draw(st.integers(1, 3))):
        target = config["backbone"] if draw(st.booleans()) and isinstance(config.get("backbone"), dict) \
            else config
        key = draw(st.one_of(st.sampled_from(sorted(target)), st.text(max_size=6)))
        if draw(st.integers(0, 5)) == 0:
            target.pop(key, None)
        else:
            target[key] = draw(SMALL)
    return config


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    save_checkpoint(init_reference(PRESETS["tiny"], seed=1), path)
    with safe_open(str(path), framework="pt") as handle:
        header = json.loads(handle.metadata()["mnt"])
    return load_file(str(path)), header


def _cheap(config: ModelConfig) -> bool:
    """A config whose model builds in a moment (the fuzz is about checks, not big models)."""
    return (config.image_size <= 256 and config.max_channels <= 256 and config.disentangler_hidden <= 256
            and config.backbone.width <= 64 and sum(config.backbone.layers) <= 8)


@FUZZ
@given(config=configs())
def test_a_fuzzed_config_loads_or_is_named_in_one_line(tiny, tmp_path_factory, config):
    try:
        parsed = ModelConfig.from_dict(json.loads(json.dumps(config)))
    except ValueError as err:
        text = str(err)
        assert text and "\n" not in text and " is " in text or "unknown" in text, text
        parsed = None
    if parsed is not None and not _cheap(parsed):
        return
    tensors, header = tiny
    path = tmp_path_factory.mktemp("fuzz") / "fuzzed.safetensors"
    save_file(tensors, str(path), metadata={"mnt": json.dumps({**header, "config": config})})
    try:
        load_checkpoint(path)
    except CheckpointError as err:
        assert "\n" not in err.one_line() and str(path) in str(err)
    if parsed is None:  # the command says the same, in one line, exit 1
        result = CliRunner().invoke(export_main, ["describe", "--checkpoint", str(path)])
        assert result.exit_code == 1, (result.output, result.exception)
        assert len(result.output.strip().splitlines()) == 1 and "internal error" not in result.output
    assert sorted(p.name for p in path.parent.iterdir()) == ["fuzzed.safetensors"]  # nothing written
