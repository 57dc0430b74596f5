#!/usr/bin/env bash
# The kernels' GPU check, one script for a GPU machine (nvcc + PyTorch with CUDA, no network,
# a copy of the repository as the working folder, $OUT writable):
#   1. builds the library with `python -m mnt.export.cli kernels --out $OUT/kernels`,
#   2. runs `pytest -m "gpu or tensorrt" tests/kernels` against it: the CUDA cases of the per-op
#      tests (test_warp.py, test_cross_attention.py: against PyTorch and the host reference),
#      the timings and the kernels' own shape guards (test_gpu_kernels.py: the op PTX
#      launched directly, as TensorRT's AOT plugins do, with refused shapes: NaN output, no
#      hang; needs cuda-python), and the TensorRT plugin cases where TensorRT is installed
#      (they skip, saying so, where it is not),
#   3. leaves in $OUT: kernels/ (library, PTX, kernels.json), kernel_timings.json,
#      gpu_check.log (everything printed) and junit.xml.
# Usage: OUT=/some/folder bash tests/kernels/gpu_check.sh   (PYTHON=... to pick the interpreter)
set -uo pipefail
cd "$(dirname "$0")/../.."
: "${OUT:?set OUT to a writable folder}"
PY=${PYTHON:-python3}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/gpu_check.log") 2>&1

# The mnt namespace without installing the repo (no network for build dependencies): a
# folder whose mnt/<name> links point at the top-level folders, as pyproject.toml maps them.
NS=$(mktemp -d)
mkdir "$NS/mnt"
for name in export runtime calibration kernels; do ln -s "$PWD/$name" "$NS/mnt/$name"; done
export PYTHONPATH="$NS:$PWD${PYTHONPATH:+:$PYTHONPATH}"

echo "== machine"
nvidia-smi --query-gpu=name,driver_version,compute_cap --format=csv,noheader || true
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda,
          'gpu', torch.cuda.is_available() and torch.cuda.get_device_name())" || exit 1
command -v nvcc || ls /usr/local/cuda/bin/nvcc || true

# mnt.runtime (the base of every mnt error type) imports OpenCV at package import; the kernel
# tests never call it. If this machine has no cv2, a stub that fails on any use stands in.
if ! "$PY" -c "import cv2" 2>/dev/null; then
    echo "note: no cv2 here; using a stub module (the kernel tests do not use OpenCV)"
    mkdir -p "$NS/stubs/cv2"
    printf 'def __getattr__(name):\n    raise ImportError("cv2 stub: OpenCV is not installed here")\n' \
        > "$NS/stubs/cv2/__init__.py"
    export PYTHONPATH="$PYTHONPATH:$NS/stubs"
fi

echo "== build"
started=$(date +%s)
if "$PY" -c "import click" 2>/dev/null; then
    "$PY" -m mnt.export.cli kernels --out "$OUT/kernels" --force || exit 1
else
    echo "note: no click here; building through mnt.kernels.build directly"
    "$PY" -c "import sys; from pathlib import Path; from mnt.kernels.build import build_kernels;
build_kernels(Path(sys.argv[1]), force=True)" "$OUT/kernels" || exit 1
fi
echo "build took $(( $(date +%s) - started )) s"
ls -l "$OUT/kernels"

echo "== gpu tests"
export MNT_KERNELS_DIR="$OUT/kernels" MNT_KERNEL_TIMINGS="$OUT/kernel_timings.json"
export MNT_CACHE_DIR="$OUT/cache"  # the host reference build and any TensorRT engines
# --noconftest: tests/conftest.py builds export fixtures these tests do not use.
"$PY" -m pytest -m "gpu or tensorrt" tests/kernels -q -rs --noconftest -p no:cacheprovider \
    --junitxml="$OUT/junit.xml"
status=$?
echo "== timings ($MNT_KERNEL_TIMINGS)"
cat "$MNT_KERNEL_TIMINGS" 2>/dev/null || echo "no timings written"
exit $status
