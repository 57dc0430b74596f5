"""What the mnt-run tests share: the tiny FP32 artefacts and a private cache per test."""

import os

import pytest


@pytest.fixture(scope="module")
def artefacts(tiny_artefacts):
    return tiny_artefacts("fp32")


@pytest.fixture()
def env(tmp_path):
    return {**os.environ, "MNT_CACHE_DIR": str(tmp_path / "cache")}
