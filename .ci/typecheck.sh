#!/usr/bin/env bash
# mypy on the TensorRT code (pyproject [tool.mypy]) against tensorrt-stubs, on a machine
# without TensorRT. Usage: .ci/typecheck.sh [BIN [MYPY ARGS]], BIN holding pip and mypy
# (default .venv/bin).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-.venv/bin}

# The stubs pin tensorrt==10.13 (a placeholder that downloads from NVIDIA's own index, not
# reachable here): install them alone into .typing/, outside the environment.
"$bin/pip" install --quiet --no-deps --upgrade --target .typing tensorrt-stubs==10.13.0.35.1
# Two generator bugs in those stubs are syntax errors for mypy: parameters named `in` (a
# keyword) and a parameter without default after defaulted ones (add_scale_nd).
sed -i -E 's/(\(self(: [A-Za-z0-9]+)?), in: /\1, in_: /; s/channel_axis: int\) -> IScaleLayer/channel_axis: int = 0) -> IScaleLayer/' \
    .typing/tensorrt_bindings/tensorrt.pyi
# mnt.* is mapped from top-level folders by an import hook that mypy cannot see.
bash .ci/link-namespace.sh .typing
"$bin/mypy" "${@:2}"
