"""Kernel detection in exported ONNX graphs matches the spaces kernel list of the same network."""
from __future__ import annotations

from collections import Counter

import onnx
import pytest

from exporters.calibration import Calibration
from exporters.kernel_models import KernelConfig
from exporters.onnx_export import export_onnx
from predictors.onnx_graph import detect_onnx
from spaces import resolve
from spaces.sampling import sample_subnet


def _expected(net):
    def slug(k):
        c = KernelConfig.from_kernel(k)
        return c.slug().replace("dwconv_", "dwconv-bn_")  # an inner stacked 3x3 dwconv is a plain dwconv-bn in ONNX

    return Counter(slug(k) for k in net.kernels())


SLOW = pytest.mark.slow  # TFLite conversions take ~30 s each


@pytest.mark.parametrize("fmt,space", [("onnx", "onnxw-151122-023231"), ("onnx", "onnxw-243005-123123"),
                                       ("onnx", "mobilew-122222-155400"),
                                       pytest.param("tflite", "onnxw-151122-023231", marks=SLOW),
                                       pytest.param("tflite", "mobilew-243005-123123", marks=SLOW)])
@pytest.mark.parametrize("fp32", [True, False], ids=["fp32", "int8"])
def test_detected_kernels_equal_space_kernels(tmp_path, fmt, space, fp32):
    from exporters.tflite_export import export_tflite
    from predictors.tflite_graph import detect_tflite

    net = resolve(space, sample_subnet(space, "random", seed=4))
    export, detect = (export_onnx, detect_onnx) if fmt == "onnx" else (export_tflite, detect_tflite)
    res = export(net, tmp_path / f"m.{fmt}", fp32=fp32,
                 calibration=None if fp32 else Calibration((1, 3, net.resolution, net.resolution), 2))
    det = detect(res.path)
    assert det.unsupported == {}
    detected = Counter(k.slug() for k in det.kernels)
    expected = _expected(net)
    if fmt == "onnx" and not fp32:  # a ReLU6 folded into the output quantization may read as ReLU: same kernel
        detected, expected = _relu6_as_relu(detected), _relu6_as_relu(expected)
    assert detected == expected


def _relu6_as_relu(c: Counter) -> Counter:
    out: Counter = Counter()
    for k, v in c.items():
        out[k.replace("-relu6_", "-relu_")] += v
    return out


def test_unsupported_ops_are_reported(tmp_path):
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 8, 4, 4])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 8, 4, 4])
    g = onnx.helper.make_graph([onnx.helper.make_node("Erf", ["x"], ["e"]), onnx.helper.make_node("Relu", ["e"], ["y"])],
                               "g", [x], [y])
    det = detect_onnx(onnx.helper.make_model(g))
    assert det.unsupported == {"Erf": 1} and [k.type for k in det.kernels] == ["act-relu"]

