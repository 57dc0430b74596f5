"""The exported repository's stateful model loads where OpenCV cannot (Triton's server
images have no libGL for the non-headless wheel): importing it imports no cv2, and its
initialize names the headless wheel instead of failing deep inside an import."""

import subprocess
import sys
import textwrap

from mnt.export.triton.repository import MODEL_PY

# cv2 fails to import as it does in Triton's image (libGL missing), whatever is installed.
BLOCK_CV2 = textwrap.dedent("""
    import sys

    class NoLibGL:
        def find_spec(self, name, path=None, target=None):
            if name == "cv2" or name.startswith("cv2."):
                raise ImportError("libGL.so.1: cannot open shared object file: No such file or directory")

    sys.meta_path.insert(0, NoLibGL())
""")


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCK_CV2 + textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=120)


def test_the_stateful_model_imports_without_opencv(tmp_path):
    (tmp_path / "model.py").write_text(MODEL_PY)  # what the repository's 1/model.py holds
    done = _run(f"""
        sys.path.insert(0, {str(tmp_path)!r})
        import model
        assert model.TritonPythonModel is not None
        assert "cv2" not in sys.modules, "cv2 was imported"
        print("imported")
    """)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "imported"


def test_without_opencv_initialize_names_the_headless_wheel():
    done = _run("""
        import types
        sys.modules["triton_python_backend_utils"] = types.ModuleType("triton_python_backend_utils")
        from mnt.runtime.errors import RuntimeStageError
        from mnt.runtime.serve.bls import TritonPythonModel
        try:
            TritonPythonModel().initialize({"model_repository": "/nowhere", "model_version": "1",
                                            "model_config": "{}"})
        except RuntimeStageError as err:
            print(err.one_line())
    """)
    assert done.returncode == 0, done.stderr
    assert "libGL.so.1" in done.stdout and "opencv-contrib-python-headless>=4.9,<4.12" in done.stdout
