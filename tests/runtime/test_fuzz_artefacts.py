"""Property-based fuzzing of what an artefact folder and the target cache hand the runtime:
whatever is changed, the answer is the contract of every untrusted input: a one-line
error of mnt's type (exit 1 through the commands), never a traceback or an internal error
(exit 4), nothing written outside the output. Bounded (a few dozen examples each) so that
it runs in CI; no example database is written."""

import json
import math
import shutil
from contextlib import contextmanager

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mnt.export.cli import main as export_main
from mnt.export.model.checkpoint import load_checkpoint
from mnt.export.onnx.samples import posed_landmarks
from mnt.runtime.errors import MntError
from mnt.runtime.files import sha256_file
from mnt.runtime.input_checks import state_problem
from mnt.runtime.manifest import MANIFEST_NAME, STATS_NAME, load_manifest
from mnt.runtime.reenactor import Reenactor

# derandomize: the same examples on every run, so CI judges the change, not the draw
FUZZ = settings(max_examples=50, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

# JSON values a hostile or broken manifest may hold where another was expected
PATHS = st.sampled_from(["../outside.bin", "/etc/passwd", "..\\x.onnx", "C:/x.onnx", "", " ", "a/../../b",
                         "link-out.bin", "generator.onnx", "nested/deep.onnx", "\0"])
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-2**63, 2**63), st.floats(allow_nan=True),
                    st.text(max_size=20), PATHS)
VALUES = st.recursive(
    SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                     st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=8)


def _locations(data, prefix=()):
    """Every (path of keys, value) in a JSON tree."""
    yield prefix, data
    if isinstance(data, dict):
        for key, value in data.items():
            yield from _locations(value, (*prefix, key))
    elif isinstance(data, list):
        for i, value in enumerate(data):
            yield from _locations(value, (*prefix, i))


@st.composite
def edits(draw, data):
    """A manifest with one to three of its values replaced, deleted or added to."""
    data = json.loads(json.dumps(data))
    for _ in range(draw(st.integers(1, 3))):
        where, _ = draw(st.sampled_from(list(_locations(data))[1:]))
        parent = data
        for key in where[:-1]:
            parent = parent[key]
        action = draw(st.sampled_from(["replace", "replace", "delete", "add"]))
        if action == "delete" and isinstance(parent, dict):
            del parent[where[-1]]
        elif action == "add" and isinstance(parent, dict):
            parent[draw(st.one_of(PATHS, st.text(max_size=8)))] = draw(VALUES)
        else:
            parent[where[-1]] = draw(VALUES)
    return data


@pytest.fixture(scope="module")
def folder(tiny_artefacts, tmp_path_factory):
    """A copy of the tiny artefacts beside a file outside it and a link out of it."""
    root = tmp_path_factory.mktemp("fuzz")
    copy = root / "artefact"
    shutil.copytree(tiny_artefacts("fp32"), copy)
    shutil.copyfile(copy / "generator.onnx", root / "outside.bin")
    (copy / "link-out.bin").symlink_to(root / "outside.bin")
    return copy


def _listing(root):
    return sorted((str(p.relative_to(root)), p.stat().st_mtime_ns if p.is_file() else 0)
                  for p in root.rglob("*") if not p.is_symlink())


@contextmanager
def restored(path):
    """`path`'s bytes put back afterwards, whatever the example did to it."""
    whole = path.read_bytes()
    try:
        yield
    finally:
        path.write_bytes(whole)


def _one_line(err):
    text = err.one_line() if isinstance(err, MntError) else str(err)
    assert text and "\n" not in text and "Traceback" not in text, text


def _clean_exit(result, allowed):
    assert result.exit_code in allowed, (result.exit_code, result.output, result.exception)
    assert "Traceback" not in result.output and "internal error" not in result.output, result.output
    if result.exit_code == 1:  # the error in one line (verify's table may come before it)
        errors = [line for line in result.output.splitlines() if line.startswith("mnt-export: error")]
        assert len(errors) == 1 and result.output.rstrip().endswith(errors[0]), result.output


@FUZZ
@given(data=st.data())
def test_a_fuzzed_manifest_loads_or_is_refused_in_one_line(folder, data):
    manifest = folder / MANIFEST_NAME
    edited = data.draw(edits(json.loads(manifest.read_text())))
    with restored(manifest):
        manifest.write_text(json.dumps(edited))
        try:
            loaded = load_manifest(folder)
        except MntError as err:
            _one_line(err)
            return
        root = folder.resolve()
        for where, name in loaded.paths().items():  # what loads names nothing outside
            assert (folder / name).resolve().is_relative_to(root), where


@settings(FUZZ, max_examples=15)
@given(data=st.data())
def test_fuzzed_manifests_through_the_commands(folder, tmp_path, data):
    manifest = folder / MANIFEST_NAME
    edited = data.draw(edits(json.loads(manifest.read_text())))
    out = tmp_path / "repo"
    shutil.rmtree(out, ignore_errors=True)
    with restored(manifest):
        manifest.write_text(json.dumps(edited))
        before, around = _listing(folder), _listing(tmp_path)
        _clean_exit(CliRunner().invoke(export_main, ["inspect", str(folder)]), {0, 1})
        _clean_exit(CliRunner().invoke(export_main, ["verify", str(folder)]), {0, 1, 3})
        triton = ["triton", "--artifacts", str(folder), "--out", str(out)]
        _clean_exit(CliRunner().invoke(export_main, triton), {0, 1})
        assert _listing(folder) == before  # inspect, verify and triton write nothing here
    shutil.rmtree(out, ignore_errors=True)
    assert _listing(tmp_path) == around  # triton wrote its --out only


@st.composite
def damaged_stats(draw, arrays):
    arrays = dict(arrays)
    name = draw(st.sampled_from(sorted(arrays)))
    action = draw(st.sampled_from(["values", "shape", "delete", "dtype"]))
    if action == "delete":
        del arrays[name]
    elif action == "shape":
        arrays[name] = np.zeros(draw(st.lists(st.integers(0, 5), max_size=3)))
    elif action == "dtype":
        arrays[name] = arrays[name].astype(draw(st.sampled_from(["int8", "bool", "complex64", "U3"])))
    else:
        value = draw(st.sampled_from([math.nan, math.inf, -math.inf, 0.0, 1e308, -1e-300]))
        flat = arrays[name].astype(np.float64).reshape(-1).copy()
        if flat.size:
            flat[draw(st.integers(0, flat.size - 1))] = value
        arrays[name] = flat.reshape(arrays[name].shape)
    return arrays


@settings(FUZZ, max_examples=30)
@given(data=st.data(), rehash=st.booleans())
def test_fuzzed_statistics_are_refused_in_one_line(folder, data, rehash):
    stats, manifest = folder / STATS_NAME, folder / MANIFEST_NAME
    with np.load(stats) as loaded:
        arrays = data.draw(damaged_stats({k: np.array(v) for k, v in loaded.items()}))
    with restored(stats), restored(manifest):
        with open(stats, "wb") as handle:
            np.savez(handle, **arrays)
        if rehash:  # what a careful attacker does: the hash then agrees
            edited = json.loads(manifest.read_text())
            edited["files"][STATS_NAME] = sha256_file(stats)
            manifest.write_text(json.dumps(edited))
        try:
            with Reenactor(folder, backend="onnxruntime-cpu") as model:
                assert np.all(np.isfinite(model.stats.mean))  # loaded: it was sane after all
        except MntError as err:
            _one_line(err)


@pytest.fixture(scope="module")
def model(folder):
    with Reenactor(folder, backend="onnxruntime-cpu") as loaded:
        yield loaded


@pytest.fixture(scope="module")
def targets(tiny_checkpoint, parity_faces):
    stats = load_checkpoint(tiny_checkpoint).stats
    return parity_faces[:2], [posed_landmarks(stats, 256, None, yaw) for yaw in (0.0, 0.2)]


@st.composite
def damaged_entry(draw, arrays):
    arrays = dict(arrays)
    for _ in range(draw(st.integers(1, 3))):
        name = draw(st.sampled_from(sorted(arrays)))
        action = draw(st.sampled_from(["values", "values", "shape", "delete", "dtype", "add"]))
        if action == "delete":
            del arrays[name]
        elif action == "add":
            arrays[draw(st.text("abcxyz_", min_size=1, max_size=6))] = np.zeros(2, np.float32)
        elif action == "shape":
            arrays[name] = np.zeros(draw(st.lists(st.integers(0, 4), max_size=3)), np.float32)
        elif action == "dtype":
            arrays[name] = arrays[name].astype(draw(st.sampled_from(["int32", "float16", "bool", "int64"])))
        else:
            value = draw(st.sampled_from([math.nan, math.inf, -math.inf, 1e30, 0.0]))
            changed = arrays[name].astype(np.float64).copy()
            if changed.size:
                changed.reshape(-1)[draw(st.integers(0, changed.size - 1))] = value
            arrays[name] = changed.astype(arrays[name].dtype) if name != "k" else changed
    return arrays


@settings(FUZZ, max_examples=40)
@given(data=st.data(), garbage=st.binary(max_size=64))
def test_a_fuzzed_cache_entry_is_used_only_when_sane(model, targets, tmp_path_factory, data, garbage):
    faces, points = targets
    cache = tmp_path_factory.mktemp("cache")
    good, _ = model.encode_targets(faces, points, cache=cache)
    entry = cache / f"{good.key}.npz"
    with np.load(entry) as loaded:
        arrays = {k: np.array(v) for k, v in loaded.items()}
    if data.draw(st.booleans()):
        with open(entry, "wb") as handle:
            np.savez(handle, **data.draw(damaged_entry(arrays)))
    else:
        entry.write_bytes(garbage)
    said = []
    state, hit = model.encode_targets(faces, points, cache=cache, say=said.append)
    expected = tuple(t for t in model.manifest.components["generator"].inputs if t.name != "driver_landmarks")
    assert state_problem(state.feeds, state.identity, state.k, 2, expected) is None
    assert hit != bool(said)  # a refused entry is noted, and recomputed
    if said:
        _one_line(MntError(said[0]))
        assert all(np.array_equal(state.feeds[n], good.feeds[n]) for n in good.feeds)
    frame = model.generate(state, model.driver_landmarks(state, faces[0], points[0]))
    assert frame.dtype == np.uint8 and frame.shape == (256, 256, 3)
    assert sorted(p.name for p in cache.iterdir()) == [entry.name]  # nothing else written
