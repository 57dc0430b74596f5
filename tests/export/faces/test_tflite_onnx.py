"""The TFLite -> ONNX converter against the TFLite interpreter, on real faces."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from mnt.export.errors import ExportError
from mnt.export.faces import gates, tflite_onnx
from mnt.export.faces.models import DETECTOR, MESH, MODELS, model_path
from mnt.export.faces.parity import measure, samples
from tests import tolerances


def _session(model, fp16):
    converted = tflite_onnx.convert(model_path(model), model.input_name, model.outputs, model.output_shapes,
                                    fp16=fp16)
    session = ort.InferenceSession(converted.model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return converted, lambda x: dict(zip(names, session.run(None, {model.input_name: x}), strict=True))


@pytest.fixture(scope="module")
def inputs(face_photos):
    return samples(face_photos)


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.component)
def test_converted_networks_match_tflite_on_real_faces(model, precision, inputs):
    _, run = _session(model, precision == "fp16")
    data = inputs.detector if model is DETECTOR else inputs.mesh
    assert len(data) >= 3
    figures, raw, _ = measure(model, run, data)
    assert gates.judge(model.component, precision, figures) == []
    if precision == "fp32":  # float32 in another order: far inside the gate
        worst = figures["landmarks_max_px"] if model is MESH else figures["boxes_max_px"]
        assert worst < tolerances.FACE_FP32_MAX_PX


def test_every_op_of_both_models_is_converted(face_step):
    """The op counts the design notes list for the two files (read with the tflite package)."""
    detector, _ = _session(DETECTOR, False)
    mesh, _ = _session(MESH, False)
    assert detector.ops == {"DEQUANTIZE": 74, "CONV_2D": 21, "RELU": 17, "DEPTHWISE_CONV_2D": 16, "ADD": 16,
                            "PAD": 11, "MAX_POOL_2D": 3, "RESHAPE": 4, "CONCATENATION": 2}
    assert mesh.ops == {"DEQUANTIZE": 113, "CONV_2D": 25, "PRELU": 23, "DEPTHWISE_CONV_2D": 20, "ADD": 20,
                        "MAX_POOL_2D": 6, "PAD": 3}


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.component)
def test_weights_are_the_stored_float16_values_exactly(model, face_step):
    """FP16 keeps every float16 weight bit for bit; FP32 holds its exact widening."""
    fp16 = tflite_onnx.convert(model_path(model), model.input_name, model.outputs, model.output_shapes,
                               fp16=True).model
    fp32 = tflite_onnx.convert(model_path(model), model.input_name, model.outputs, model.output_shapes).model
    half, single = onnx.TensorProto.FLOAT16, onnx.TensorProto.FLOAT
    halves = [numpy_helper.to_array(t) for t in fp16.graph.initializer if t.data_type == half]
    singles = [numpy_helper.to_array(t) for t in fp32.graph.initializer if t.data_type == single]
    assert len(halves) == len(singles) > 40
    for half, single in zip(halves, singles, strict=True):
        assert np.array_equal(half.astype(np.float32), single)


def test_an_unsupported_op_is_refused_by_name(face_step, monkeypatch):
    monkeypatch.delitem(tflite_onnx.CONVERTERS, "PRELU")
    with pytest.raises(ExportError, match="TFLite op PRELU is not supported"):
        tflite_onnx.convert(model_path(MESH), MESH.input_name, MESH.outputs, MESH.output_shapes)


def test_same_padding_puts_the_odd_pixel_after():
    """TFLite's SAME: a 3x3 stride-2 conv over 128 pixels pads 0 before and 1 after."""
    assert tflite_onnx._same_pads(128, 3, 2) == (0, 1)
    assert tflite_onnx._same_pads(128, 5, 1) == (2, 2)
    assert tflite_onnx._same_pads(127, 2, 2) == (0, 1)
