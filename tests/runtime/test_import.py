import subprocess
import sys

from tests.helpers import run_blocking


def test_runtime_imports_without_torch_export_or_calibration():
    # Every module of mnt.runtime, found by walking the package (a new one is covered too).
    code = (
        "import importlib, pkgutil, sys, mnt.runtime\n"
        "for m in pkgutil.walk_packages(mnt.runtime.__path__, 'mnt.runtime.'):\n"
        "    importlib.import_module(m.name)\n"
        "bad = [m for m in ('torch', 'face_alignment', 'tensorrt', 'mnt.export', 'mnt.calibration')"
        " if m in sys.modules]\n"
        "print(bad); sys.exit(1 if bad else 0)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_runtime_works_when_torch_cannot_be_imported():
    code = (
        "import numpy as np\n"
        "from mnt.runtime import rasterize, normalize, denormalize\n"
        "from mnt.runtime.landmarks import LandmarkTransformer\n"
        "pts = np.random.default_rng(0).uniform(20, 230, (68, 3))\n"
        "assert rasterize(pts).shape == (256, 256, 3)\n"
    )
    result = run_blocking(code)
    assert result.returncode == 0, result.stdout + result.stderr
