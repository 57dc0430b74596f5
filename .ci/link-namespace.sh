#!/usr/bin/env bash
# The mnt.* namespace as a plain folder tree, for tools that cannot see the editable
# install's import hook (mypy, pyright, IDE indexers): DIR/mnt/<part> -> ./<part> for each
# of the design card's folders. Usage: .ci/link-namespace.sh DIR (then put DIR on the tool's
# search path, e.g. mypy_path).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: .ci/link-namespace.sh DIR}
mkdir -p "$out/mnt"
for part in export runtime calibration kernels; do
    ln -sfn "$PWD/$part" "$out/mnt/$part"
done
