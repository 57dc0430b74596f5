"""The 3D-FAN landmark backend's checks, which run before anything is built (its weights
cannot be downloaded here, so the network itself is not run in these tests)."""

from __future__ import annotations

import pytest

from mnt.runtime.errors import RuntimeStageError
from mnt.runtime.landmarkers.fan import FILES, WEIGHTS_ENV, FanLandmarks, check_weights, weights_folder


def test_missing_folder_and_files_are_named_with_where_to_get_them(tmp_path):
    with pytest.raises(RuntimeStageError, match="does not exist"):
        check_weights(tmp_path / "absent")
    first = next(iter(FILES))
    (tmp_path / first).write_bytes(b"x")
    with pytest.raises(RuntimeStageError) as err:
        check_weights(tmp_path)
    message = err.value.one_line()
    assert first not in str(err.value)
    for name in list(FILES)[1:]:
        assert name in str(err.value) and FILES[name] in message


def test_option_beats_environment(tmp_path, monkeypatch):
    monkeypatch.delenv(WEIGHTS_ENV, raising=False)
    assert weights_folder(None) is None
    monkeypatch.setenv(WEIGHTS_ENV, str(tmp_path / "env"))
    assert weights_folder(None) == tmp_path / "env"
    assert weights_folder(tmp_path / "given") == tmp_path / "given"


def test_without_face_alignment_the_install_line_is_given(tmp_path, monkeypatch):
    import importlib.util

    if importlib.util.find_spec("face_alignment") is not None:
        pytest.skip("face-alignment is installed here")
    for name in FILES:
        (tmp_path / name).write_bytes(b"x")
    with pytest.raises(RuntimeStageError) as err:
        FanLandmarks(tmp_path)
    assert "face-alignment" in str(err.value) and "--no-deps" in err.value.one_line()


def test_mnt_run_names_a_missing_weights_folder(tmp_path):
    import os
    import subprocess

    from tests.helpers import console_script

    result = subprocess.run([console_script("mnt-run"), "--demo", "--fan-weights", str(tmp_path / "fan"),
                             "-o", str(tmp_path / "out.mp4")], capture_output=True, text=True,
                            env={**os.environ, "MNT_CACHE_DIR": str(tmp_path / "cache")})
    assert result.returncode == 1, result.stderr
    assert "3D-FAN weights folder" in result.stderr and not (tmp_path / "out.mp4").exists()
