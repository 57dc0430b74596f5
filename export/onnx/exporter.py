"""PyTorch -> ONNX for one component, FP32 or typed FP16 with FP32 islands.

Opset 18: GridSample is then version 16 with mode="bilinear". From opset 20 the mode is
spelled "linear", which TensorRT's ONNX parser has imported as nearest; the build checks
the exported GridSample nodes (see `grid_sample_modes`).
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import signal
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

import onnx
import torch
from torch import nn

from mnt.export.errors import ExportError
from mnt.export.model.blocks import plugin_ops
from mnt.export.model.components import ComponentSpec
from mnt.export.onnx.custom_ops import TRANSLATIONS

OPSET = 18
DTYPES = {"fp32": torch.float32, "fp16": torch.float16}


def example_inputs(spec: ComponentSpec, dtype: torch.dtype, k: int = 2) -> tuple[torch.Tensor, ...]:
    """Placeholder inputs for tracing (values do not matter; K=2 keeps K symbolic)."""
    return tuple(torch.zeros([k if isinstance(d, str) else d for d in t.shape], dtype=dtype)
                 for t in spec.inputs)


@contextlib.contextmanager
def _noting_ctrl_c() -> Iterator[list[int]]:
    """Records SIGINT while the exporter runs: torch.export can catch the KeyboardInterrupt
    and raise its own error instead, which would read as a broken model, not as Ctrl-C."""
    hits: list[int] = []
    previous = signal.getsignal(signal.SIGINT)
    if threading.current_thread() is not threading.main_thread() or not callable(previous):
        yield hits  # (only the main thread can set handlers; an ignored SIGINT stays ignored)
        return

    def note(signum: int, frame: FrameType | None) -> None:
        hits.append(signum)
        previous(signum, frame)

    signal.signal(signal.SIGINT, note)
    try:
        yield hits
    finally:
        signal.signal(signal.SIGINT, previous)


def export_component(module: nn.Module, spec: ComponentSpec, precision: str, path: Path,
                     plugins: bool = False) -> None:
    """Trace `module` (spectral norm already folded) in the precision's dtype and write
    a checked ONNX model to `path`, with the spec's names and dynamic axes. `plugins`:
    warp and attention as `mnt::` custom nodes (export/onnx/custom_ops.py)."""
    dtype = DTYPES[precision]
    traced = copy.deepcopy(module).to(dtype).eval()
    dims = {name: torch.export.Dim(name, min=lo, max=hi) for name, (lo, hi) in spec.dims.items()}
    dynamic = tuple({i: dims[d] for i, d in enumerate(t.shape) if isinstance(d, str)} or None
                    for t in spec.inputs)
    quiet = io.StringIO()
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    ctrl_c: list[int] = []
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(quiet), torch.no_grad(), \
                (plugin_ops() if plugins else contextlib.nullcontext()), _noting_ctrl_c() as ctrl_c:
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                traced, example_inputs(spec, dtype), dynamo=True, opset_version=OPSET,
                input_names=[t.name for t in spec.inputs],
                output_names=[t.name for t in spec.outputs],
                dynamic_shapes=dynamic, external_data=False, verbose=False,
                custom_translation_table=TRANSLATIONS if plugins else None)
    except Exception as err:  # the exporter raises many types; all mean the same to a user
        if ctrl_c:
            raise KeyboardInterrupt from err
        raise ExportError(f"{spec.name}: torch.onnx.export failed: {str(err).splitlines()[0]}") from err
    model = program.model_proto
    model.producer_name = "mnt-export"
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))


def grid_sample_modes(path: Path) -> list[str]:
    """The `mode` of every GridSample node (must be "bilinear" at opset < 20)."""
    model = onnx.load(str(path), load_external_data=False)
    modes = []
    for node in model.graph.node:
        if node.op_type == "GridSample":
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            mode = attrs.get("mode", b"bilinear")
            modes.append(mode.decode() if isinstance(mode, bytes) else str(mode))
    return modes
