"""Parity measurement: an exported component run on its backend against the PyTorch
reference in float64 on the same real-face inputs, judged by the gates (gates.py)."""

from __future__ import annotations

import copy
from dataclasses import asdict
from typing import Any

import numpy as np
import torch
from torch import nn

from mnt.export.onnx.gates import THRESHOLDS, Error, judge
from mnt.runtime.backends.base import Backend


def run_torch(module: nn.Module, inputs: tuple[np.ndarray, ...], dtype: torch.dtype) -> list[np.ndarray]:
    with torch.no_grad():
        out = module(*(torch.from_numpy(x).to(dtype) for x in inputs))
    return [t.double().numpy() for t in (out if isinstance(out, tuple) else (out,))]


def measure(module: nn.Module, backend: Backend, inputs_by_k: dict[int, tuple[np.ndarray, ...]],
            precision: str) -> tuple[dict[str, Any], dict[int, list[np.ndarray]]]:
    """Accuracy of `backend` for every K: worst case per output over K, with the
    float64 reference outputs (returned for the goldens)."""
    reference64 = copy.deepcopy(module).double()
    names = [t.name for t in backend.component.inputs]
    outputs = [t.name for t in backend.component.outputs]
    worst: dict[str, tuple[Error, Error]] = {}
    references: dict[int, list[np.ndarray]] = {}
    for k, inputs in inputs_by_k.items():
        ref = references[k] = run_torch(reference64, inputs, torch.float64)
        t32 = run_torch(module, inputs, torch.float32)
        got = backend.infer(dict(zip(names, inputs, strict=True)))
        for name, r, a, b in zip(outputs, ref, [got[n] for n in outputs], t32, strict=True):
            e, e32 = Error.between(a, r), Error.between(b, r)
            if name not in worst or e.psnr_db < worst[name][0].psnr_db:
                worst[name] = (e, e32)
    failures = [f for name, (e, e32) in worst.items() for f in judge(precision, name, e, e32)]
    per_output = {name: {**asdict(e), "torch_fp32": asdict(e32)} for name, (e, e32) in worst.items()}
    accuracy = {
        "reference": "torch-fp32",
        "computed_in": "float64",
        "k": sorted(inputs_by_k),
        "max_abs_error": max(e.max_abs_error for e, _ in worst.values()),
        "psnr_db": min(e.psnr_db for e, _ in worst.values()),
        "torch_fp32": {"max_abs_error": max(e.max_abs_error for _, e in worst.values()),
                       "psnr_db": min(e.psnr_db for _, e in worst.values())},
        "outputs": per_output,
        "thresholds": THRESHOLDS[precision],
        "passed": not failures,
        "failures": failures,
    }
    return accuracy, references
