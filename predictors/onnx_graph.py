"""Detect nn-Meter-style kernels in any ONNX model (FP32 or INT8 QDQ/QOperator) for prediction.

The graph is read through its QuantizeLinear/DequantizeLinear pairs (they are edges, not kernels),
with shapes from ONNX shape inference. Patterns: Conv (+ Relu | Clip(0,6) | HardSwish |
HardSigmoid*x | Sigmoid*x) -> ``conv-bn[-act]`` / ``dwconv-bn[-act]``; ReduceMean/GlobalAveragePool ->
Conv -> Relu -> Conv -> HardSigmoid -> Mul -> ``se``; Add (+ Relu) -> ``add[-relu]``; Gemm/MatMul ->
``fc``; a lone pooling -> ``global-avgpool`` / ``maxpool`` / ``avgpool``; Concat -> ``concat``; lone
activations -> ``act-<name>``. Shape-only ops (Flatten, Reshape, ...) cost nothing. Any other op is
returned in ``unsupported`` with its count, so a prediction never silently treats it as 0 ms.
In QDQ models onnxruntime's quantizer removes a Relu/Clip(0,6) after a Conv: the output QuantizeLinear,
whose zero point sits at the type's minimum, clamps instead. We read that back (zero point at the
minimum: relu; and a range of 6: relu6), likewise after Add, and let the SE chain's Relu be folded.
A folded ReLU6 whose calibration data never reached 6 reads as relu: both run as the same kernel
(the clamp is free), so nothing is lost for prediction.
Which activations fuse on a device is the fusion tester's job: a ``conv-bn-hswish`` kernel is
measured as conv followed by hswish, so its latency includes the unfused activation either way.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import onnx
from onnx import numpy_helper

from exporters.kernel_config import KernelConfig

QDQ = {"QuantizeLinear", "DequantizeLinear"}
FREE = {"Flatten", "Reshape", "Squeeze", "Unsqueeze", "Identity", "Transpose", "Shape", "Constant"}
ACT = {"Relu": "relu", "HardSwish": "hswish", "HardSigmoid": "hsigmoid"}


@dataclass
class DetectedGraph:
    kernels: list[KernelConfig] = field(default_factory=list)
    unsupported: dict[str, int] = field(default_factory=dict)
    # quantized (QDQ or QOperator ONNX, int8 TFLite tensors): what the INT8 predictors' measurements are of; the
    # kernels of an FP32 model are detected alike, but its measured latency is another runtime path's
    int8: bool = False


def _attr(node, name, default=None):
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def detect_onnx(model: str | Path | onnx.ModelProto) -> DetectedGraph:
    m = model if isinstance(model, onnx.ModelProto) else onnx.load(str(model))
    m = onnx.shape_inference.infer_shapes(m)
    g = m.graph
    inits = {i.name: i for i in g.initializer}
    shapes = {}
    for vi in list(g.input) + list(g.value_info) + list(g.output):
        dims = [d.dim_value for d in vi.type.tensor_type.shape.dim]
        if dims and all(d > 0 for d in dims):
            shapes[vi.name] = dims
    alias = {n.output[0]: n.input[0] for n in g.node if n.op_type in QDQ}
    const_nodes = {n.output[0]: n for n in g.node if n.op_type == "Constant"}

    def src(t: str) -> str:
        while t in alias:
            t = alias[t]
        return t

    quant_of = {n.input[0]: n for n in g.node if n.op_type == "QuantizeLinear"}
    nodes = [n for n in g.node if n.op_type not in QDQ]
    consumers: dict[str, list] = {}
    for n in nodes:
        for t in n.input:
            consumers.setdefault(src(t), []).append(n)

    def shape(t: str):
        t0 = t
        for cand in (t0, src(t0)):
            if cand in shapes:
                return shapes[cand]
        return None

    def weight_dims(t: str):
        s = src(t)
        if s in inits:
            return list(inits[s].dims)
        if s in const_nodes:
            return list(numpy_helper.to_array(_attr(const_nodes[s], "value")).shape)
        return None

    def const_value(t: str):
        s = src(t)
        if s in inits:
            return numpy_helper.to_array(inits[s])
        if s in const_nodes:
            return numpy_helper.to_array(_attr(const_nodes[s], "value"))
        return None

    def is_const(t: str) -> bool:
        s = src(t)
        return s in inits or s in const_nodes

    def only(t: str):
        cs = consumers.get(src(t), [])
        return cs[0] if len(cs) == 1 else None

    def gate_act(t: str):
        """x -> {HardSigmoid|Sigmoid}(x) and Mul(x, that): hswish / swish. Returns (name, nodes)."""
        cs = consumers.get(src(t), [])
        if len(cs) != 2:
            return None
        gate = next((c for c in cs if c.op_type in ("HardSigmoid", "Sigmoid")), None)
        mul = next((c for c in cs if c.op_type == "Mul"), None)
        if gate is None or mul is None or src(gate.output[0]) not in {src(i) for i in mul.input}:
            return None
        if gate.op_type == "HardSigmoid" and abs(_attr(gate, "alpha", 0.2) - 1 / 6) > 1e-3:
            return None
        return ("hswish" if gate.op_type == "HardSigmoid" else "swish"), [gate, mul]

    def folded_clamp(t: str):
        """relu / relu6 folded into the output quantization of ``t`` (QDQ models), else None."""
        q = quant_of.get(t)
        if q is None or len(q.input) < 3:
            return None
        zp, scale = const_value(q.input[2]), const_value(q.input[1])
        if zp is None or scale is None or zp.size != 1:
            return None
        lo, hi = (0, 255) if zp.dtype.kind == "u" else (-128, 127)
        if int(zp.item()) != lo:
            return None
        return "relu6" if abs(float(scale.item()) * (hi - lo) - 6.0) < 0.06 else "relu"

    def single_act(t: str):
        n = only(t)
        if n is None:
            return gate_act(t)
        if n.op_type == "Relu":
            return "relu", [n]
        if n.op_type == "Clip":
            bounds = [const_value(i) for i in n.input[1:] if i]
            bounds = [float(b) for b in bounds if b is not None]
            if bounds[:2] == [0.0, 6.0] or (_attr(n, "min") == 0.0 and _attr(n, "max") == 6.0):
                return "relu6", [n]
        if n.op_type == "HardSwish":
            return "hswish", [n]
        return None

    out = DetectedGraph(int8=any(n.op_type in QDQ or n.op_type.startswith("QLinear") or n.op_type.endswith("Integer")
                                 for n in g.node))
    used: set[int] = set()
    unsupported: Counter = Counter()
    for n in nodes:
        if id(n) in used:
            continue
        op = n.op_type
        used.add(id(n))
        x = shape(n.input[0]) if n.input else None
        if op in FREE:
            continue
        if op == "Conv":
            w = weight_dims(n.input[1])
            group = _attr(n, "group", 1)
            k, stride = w[2], (_attr(n, "strides", [1, 1]) or [1])[0]
            act = single_act(n.output[0])
            if act:
                used.update(id(a) for a in act[1])
            elif folded_clamp(n.output[0]):
                act = (folded_clamp(n.output[0]), [])
            suffix = f"-{act[0]}" if act else ""
            if group > 1 and group == x[1]:
                out.kernels.append(KernelConfig(type=f"dwconv-bn{suffix}", hw=x[2], cin=x[1], cout=x[1], kernel=k,
                                                stride=stride))
            else:
                out.kernels.append(KernelConfig(type=f"conv-bn{suffix}", hw=x[2], cin=x[1], cout=w[0], kernel=k,
                                                stride=stride))
        elif op in ("ReduceMean", "GlobalAveragePool"):
            chain = _se_chain(n, only, src)
            if chain:
                used.update(id(c) for c in chain)
                mid = weight_dims(chain[0].input[1])[0]
                out.kernels.append(KernelConfig(type="se", hw=x[2], cin=x[1], cout=x[1], mid=mid))
            else:
                out.kernels.append(KernelConfig(type="global-avgpool", hw=x[2], cin=x[1], cout=x[1]))
        elif op == "Add" and not any(is_const(i) for i in n.input):
            nxt = only(n.output[0])
            relu = nxt is not None and nxt.op_type == "Relu"
            if relu:
                used.add(id(nxt))
            relu = relu or folded_clamp(n.output[0]) is not None
            out.kernels.append(KernelConfig(type="add-relu" if relu else "add", hw=x[2], cin=x[1], cout=x[1]))
        elif op in ("Gemm", "MatMul"):
            w = weight_dims(n.input[1])
            cout = w[0] if (op == "Gemm" and _attr(n, "transB", 0)) else w[-1]
            out.kernels.append(KernelConfig(type="fc", hw=1, cin=x[-1], cout=cout))
        elif op in ("MaxPool", "AveragePool"):
            k = _attr(n, "kernel_shape")[0]
            out.kernels.append(KernelConfig(type="maxpool" if op == "MaxPool" else "avgpool", hw=x[2], cin=x[1],
                                            kernel=k, stride=(_attr(n, "strides", [1]) or [1])[0]))
        elif op == "Concat" and len(n.input) == 2:
            y = shape(n.input[1])
            out.kernels.append(KernelConfig(type="concat", hw=x[2], cin=x[1], cout=y[1]))
        elif op in ACT or op in ("Clip", "Sigmoid"):
            act = gate_act(n.input[0]) if op in ("HardSigmoid", "Sigmoid") else None
            name = {"Clip": "relu6", "Sigmoid": "swish"}.get(op, ACT.get(op))
            if act:
                used.update(id(a) for a in act[1])
                name = act[0]
            out.kernels.append(KernelConfig(type=f"act-{name}", hw=x[2] if x and len(x) == 4 else 1,
                                            cin=x[1] if x else 1))
        else:
            unsupported[op] += 1
    out.unsupported = dict(unsupported)
    return out


def _se_chain(pool, only, src):
    """pool -> Conv -> [Relu] -> Conv -> HardSigmoid -> Mul(x, gate), x being the pool's input
    (the Relu is folded into the quantization in QDQ models)."""
    chain, t = [], pool.output[0]
    for want in ("Conv", "Relu", "Conv", "HardSigmoid", "Mul"):
        n = only(t)
        if want == "Relu" and n is not None and n.op_type == "Conv":
            continue
        if n is None or n.op_type != want:
            return None
        chain.append(n)
        t = n.output[0]
    if src(pool.input[0]) not in {src(i) for i in chain[-1].input}:
        return None
    return chain
