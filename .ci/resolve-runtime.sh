#!/usr/bin/env bash
# What docs/deploy.md tells each target to install must resolve where it runs. pip's dry run
# resolves each set for that target's platform and Python from wheels alone, without
# installing; it fails (and so does CI) if anything has no wheel there.
#   runtime: the core, `cpu`, `human-check` (no PyTorch, no mediapipe): Jetson and x86-64 PCs
#   rtx:     + the `rtx` extra (TensorRT-RTX, cuda-python 12.x): RTX PCs, Linux and Windows
#   jetson:  runtime + cuda-python 12.x (JetPack 6: driver 540, CUDA 12.6; TensorRT from apt)
#   server:  the core, `gpu`, `human-check` (onnxruntime-gpu, cuda-python 12.x): x86-64 servers
#   triton:  the core and `human-check` with headless OpenCV, in the NGC image's Python 3.12
set -euo pipefail
cd "$(dirname "$0")/.."
python="${1:-.venv/bin/python}"
requirements() {  # set name -> its requirements, one per line
  "$python" - "$1" <<'PY'
import sys, tomllib
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
extras = project["optional-dependencies"]
core = project["dependencies"]
headless = [r.replace("opencv-contrib-python", "opencv-contrib-python-headless") for r in core if "opencv" in r]
sets = {
    "runtime": core + extras["cpu"] + extras["human-check"],
    # tensorrt-rtx-cu12 is a source-only metapackage: resolve the wheels it installs instead
    "rtx": core + extras["cpu"] + extras["human-check"] + [
        part for r in extras["rtx"] for part in (
            [r.replace("tensorrt-rtx-cu12", f"tensorrt-rtx-cu12-{w}") for w in ("bindings", "libs")]
            if r.startswith("tensorrt-rtx-cu12") else [r])],
    "jetson": core + extras["cpu"] + extras["human-check"] + ["cuda-python>=12.4,<13"],
    "server": core + extras["gpu"] + extras["human-check"],
    "triton": [r for r in core if "opencv" not in r] + headless + extras["human-check"],
}
print("\n".join(sets[sys.argv[1]]))
PY
}
resolve() {  # set python-version platform...
  local name="$1" version="$2"; shift 2
  local platforms=() wanted
  for p in "$@"; do platforms+=(--platform "$p"); done
  mapfile -t wanted < <(requirements "$name")
  "$python" -m pip install --quiet --dry-run --ignore-installed --only-binary=:all: \
    --python-version "$version" "${platforms[@]}" --target "$(mktemp -d)" \
    --report - "${wanted[@]}" 2> >(grep -v "is ignored: it is neither" >&2) |
    "$python" -c "import json, sys; print('$name $version $1:', ', '.join(f\"{i['metadata']['name']} {i['metadata']['version']}\" for i in json.load(sys.stdin)['install']))"
}
linux_arm=(manylinux_2_28_aarch64 manylinux_2_17_aarch64 manylinux2014_aarch64)
linux_x86=(manylinux_2_28_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64)
if [[ -n "${ONLY:-}" ]]; then resolve $ONLY; exit; fi  # ONLY="rtx 3.12 win_amd64": one set
resolve runtime 3.10 "${linux_arm[@]}"
resolve runtime 3.10 "${linux_x86[@]}"
resolve runtime 3.13 "${linux_x86[@]}"
resolve jetson 3.10 "${linux_arm[@]}"
resolve rtx 3.12 "${linux_x86[@]}"
resolve rtx 3.12 win_amd64
resolve server 3.10 "${linux_x86[@]}"
resolve triton 3.12 "${linux_x86[@]}"
