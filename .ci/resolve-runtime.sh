#!/usr/bin/env bash
# The runtime's dependency set (the core, `cpu`, `human-check`: no PyTorch, no mediapipe)
# must resolve where users run it: a Jetson (aarch64, Python 3.10, JetPack 6) and x86-64
# PCs with Python 3.10 to 3.13. pip's dry run resolves it for those platforms from wheels
# alone, without installing; it fails (and so does CI) if anything has no wheel there.
set -euo pipefail
cd "$(dirname "$0")/.."
python="${1:-.venv/bin/python}"
mapfile -t requirements < <("$python" - <<'PY'
import tomllib
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
extras = project["optional-dependencies"]
for requirement in project["dependencies"] + extras["cpu"] + extras["human-check"]:
    print(requirement)
PY
)
resolve() {  # python-version platform...
  local version="$1"; shift
  local platforms=()
  for p in "$@"; do platforms+=(--platform "$p"); done
  "$python" -m pip install --quiet --dry-run --ignore-installed --only-binary=:all: \
    --python-version "$version" "${platforms[@]}" --target "$(mktemp -d)" \
    --report - "${requirements[@]}" 2> >(grep -v "is ignored: it is neither" >&2) |
    "$python" -c "import json, sys; print('$version $1:', ', '.join(f\"{i['metadata']['name']} {i['metadata']['version']}\" for i in json.load(sys.stdin)['install']))"
}
resolve 3.10 manylinux_2_28_aarch64 manylinux_2_17_aarch64 manylinux2014_aarch64
resolve 3.10 manylinux_2_28_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64
resolve 3.13 manylinux_2_28_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64
