"""What the mnt-run tests share: the tiny FP32 artefacts, a private cache per test, and a
folder of inputs whose model is never loaded."""

import os
from fractions import Fraction

import cv2
import numpy as np
import pytest

from mnt.runtime import cli
from mnt.runtime.video import VideoWriter


@pytest.fixture(scope="module")
def artefacts(tiny_artefacts):
    return tiny_artefacts("fp32")


@pytest.fixture()
def env(tmp_path):
    return {**os.environ, "MNT_CACHE_DIR": str(tmp_path / "cache")}


@pytest.fixture()
def place(tmp_path, monkeypatch):
    """A folder with a driver video, a targets folder and an (unread) artefact folder; the
    model load and the default build fail loudly, so a check that comes too late shows."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MNT_CACHE_DIR", str(tmp_path / "cache"))

    def loaded(*args, **kwargs):
        raise AssertionError("loaded")

    monkeypatch.setattr("mnt.runtime.reenactor.Reenactor.__init__", loaded)
    monkeypatch.setattr(cli, "default_artifacts", loaded)
    writer = VideoWriter(tmp_path / "driver.mp4", Fraction(25), 64, 64)
    for _ in range(3):
        writer.write(np.zeros((64, 64, 3), np.uint8))
    writer.close()
    (tmp_path / "targets").mkdir()
    cv2.imwrite(str(tmp_path / "targets" / "p.jpg"), np.zeros((64, 64, 3), np.uint8))
    (tmp_path / "art").mkdir()
    return tmp_path
