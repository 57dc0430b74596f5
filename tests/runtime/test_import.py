import subprocess
import sys


def test_runtime_imports_without_torch_export_or_calibration():
    code = (
        "import sys, mnt.runtime, mnt.runtime.console, mnt.runtime.files, mnt.runtime.manifest;"
        "import mnt.runtime.backends.onnxruntime, mnt.runtime.video, mnt.runtime.reenactor;"
        "import mnt.runtime.cli, mnt.runtime.pipeline, mnt.runtime.faces, mnt.runtime.demo;"
        "import mnt.runtime.fan, mnt.runtime.gpu;"
        "import mnt.runtime.backends.tensorrt, mnt.runtime.backends.mnt_ops;"
        "bad = [m for m in ('torch', 'face_alignment', 'tensorrt', 'mnt.export', 'mnt.calibration')"
        " if m in sys.modules];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_runtime_works_when_torch_cannot_be_imported():
    # A meta-path finder that refuses torch simulates an environment without PyTorch.
    code = (
        "import sys\n"
        "class NoTorch:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'torch' or name.startswith('torch.'):\n"
        "            raise ImportError('torch is blocked')\n"
        "sys.meta_path.insert(0, NoTorch())\n"
        "import numpy as np\n"
        "from mnt.runtime import rasterize, normalize, denormalize\n"
        "from mnt.runtime.landmarks import LandmarkTransformer\n"
        "pts = np.random.default_rng(0).uniform(20, 230, (68, 3))\n"
        "assert rasterize(pts).shape == (256, 256, 3)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
