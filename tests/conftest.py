"""Session-wide fixtures: one tiny checkpoint and its artefacts, built once per precision
and shared by the export and runtime tests."""

from __future__ import annotations

import pytest

from tests.helpers import SHARED_DATA


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory):
    """The tests' own mnt cache folder (engines, kernels, targets), never the user's."""
    import os

    saved = os.environ.get("MNT_CACHE_DIR")
    os.environ["MNT_CACHE_DIR"] = str(tmp_path_factory.mktemp("mnt-cache"))
    yield
    if saved is None:
        os.environ.pop("MNT_CACHE_DIR", None)
    else:
        os.environ["MNT_CACHE_DIR"] = saved


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    from mnt.export.model.checkpoint import init_reference, save_checkpoint
    from mnt.export.model.config import PRESETS

    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    save_checkpoint(init_reference(PRESETS["tiny"], seed=0), path)
    return path


@pytest.fixture(scope="session")
def parity_faces():
    """Frames of the shared driver videos when they are beside the checkout, else the
    astronaut photo shipped with scikit-image."""
    from mnt.export.onnx.samples import default_faces, faces_from

    driving = SHARED_DATA / "driving"
    return faces_from([driving], 256) if driving.exists() else default_faces(256)


@pytest.fixture(scope="session")
def tiny_artefacts(tiny_checkpoint, parity_faces, tmp_path_factory):
    """precision -> an artefact folder of the tiny checkpoint, built on first request."""
    from mnt.export.onnx.build import build

    built = {}

    def get(precision: str):
        if precision not in built:
            out = tmp_path_factory.mktemp(precision) / "artefact"
            build(tiny_checkpoint, precision, out, faces=parity_faces, log=lambda line: None)
            built[precision] = out
        return built[precision]

    return get
