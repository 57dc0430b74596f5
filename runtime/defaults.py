"""The one cache folder of mnt, and the built-in model that commands fall back on."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from mnt.runtime.errors import RuntimeStageError

INSTALL_EXPORT_HINT = "install the export side: pip install torch==2.13.0 && pip install 'mnt[export,cpu]'"
DEFAULT_MODEL = "small-demo.safetensors"  # trained by mnt-export train; see export/pretrained/README.md
# What the default folder holds, in its name: a folder cached before the face components
# existed is not reused (it would run its landmarks on mediapipe), but built anew.
DEFAULT_BUILD = "fp32-faces"


def cache_dir() -> Path:
    """$MNT_CACHE_DIR, else $XDG_CACHE_HOME/mnt, else ~/.cache/mnt: engines, kernels, targets."""
    root = os.environ.get("MNT_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "mnt")
    return Path(root)


def default_checkpoint() -> Path:
    """The built-in trained model, shipped with the export side (found without importing it)."""
    spec = importlib.util.find_spec("mnt.export")
    if spec is None:
        raise RuntimeStageError("the built-in model comes with the export side, which is not installed",
                                hint=INSTALL_EXPORT_HINT)
    for location in spec.submodule_search_locations or []:
        path = Path(location) / "pretrained" / DEFAULT_MODEL
        if path.is_file():
            return path
    raise RuntimeStageError(f"the built-in model pretrained/{DEFAULT_MODEL} is missing from mnt.export",
                            hint="reinstall mnt, or pass --artifacts DIR")


def cache_folder(name: str) -> Path:
    """cache_dir() / name, created; a clear error where it cannot be."""
    folder = cache_dir() / name
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle, probe = tempfile.mkstemp(prefix=".probe-", dir=folder)  # (unique: threads call too)
        os.close(handle)
        os.unlink(probe)
    except OSError as err:
        raise RuntimeStageError(f"cannot write the cache folder {folder}: {err.strerror or err}",
                                hint="set MNT_CACHE_DIR to a writable folder") from err
    return folder


def default_artifacts(say: Callable[[str], None]) -> Path:
    """The built-in default: the shipped demo checkpoint exported to FP32 ONNX in the cache
    folder on first use. Built by the mnt-export command in a child process, so that the
    runtime itself never imports the export side (or torch); built once, however many
    processes ask at the same time (the others wait for it)."""
    from mnt.runtime.files import exclusive, sha256_file

    checkpoint = default_checkpoint()
    name = f"default-{checkpoint.stem}-{sha256_file(checkpoint)[:12]}-{DEFAULT_BUILD}"
    folder = cache_dir() / "artifacts" / name
    if (folder / "manifest.json").is_file():
        return folder
    cache_folder("artifacts")
    # (a lock of its own: the child's build takes the folder's lock)
    with exclusive(folder.with_name(f"{folder.name}-default"), RuntimeStageError, waiting=say):
        if (folder / "manifest.json").is_file():  # built by the process we waited for
            return folder
        say(f"no --artifacts given: building the built-in model ({checkpoint.name}) into {folder}; "
            "this happens once")
        _build(["--checkpoint", str(checkpoint), "--precision", "fp32", "--out", str(folder), "--force"])
    return folder


def _build(arguments: list[str]) -> None:
    """`mnt-export build ARGUMENTS` in a child; stopped (SIGTERM: it cleans up) if we are."""
    child = subprocess.Popen([sys.executable, "-m", "mnt.export.cli", "build", *arguments],
                             stderr=subprocess.PIPE, text=True)
    try:
        _, errors = child.communicate()
    except BaseException:
        child.terminate()
        try:
            child.wait(timeout=60)
        except subprocess.TimeoutExpired:
            child.kill()
        raise
    if child.returncode != 0:
        detail = (errors.strip().splitlines() or ["failed"])[-1]
        raise RuntimeStageError(f"could not build the default artefacts: {detail}",
                                hint=f"{INSTALL_EXPORT_HINT}, or pass --artifacts DIR")
