"""Detect nn-Meter-style kernels in any TFLite model (INT8 or FP32), mirroring onnx_graph.

The flatbuffer is read with the schema module that ships with ai-edge-litert (no TensorFlow import).
Fused activations are operator options (``CONV_2D`` with ``RELU6``); separate ones are patterns:
conv -> ``HARD_SWISH``; conv -> ``LOGISTIC`` and ``MUL(x, sigmoid)`` (swish). SE: ``MEAN`` -> ``CONV_2D``
-> ``CONV_2D`` -> ``MUL`` (by 1/6: Keras' hard-sigmoid folds its +3 and ReLU6 into the second conv)
-> ``MUL(x, gate)``. ``PAD`` before a strided conv (our Keras twin pads explicitly) belongs to that conv;
``RESHAPE``, ``QUANTIZE``, ``DEQUANTIZE`` and the shape arithmetic of dynamic-batch models (``SHAPE``,
``STRIDED_SLICE``, ``PACK`` on a few int32 values) cost nothing. Other ops are returned in ``unsupported``.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path

from exporters.kernel_config import KernelConfig

from .onnx_graph import DetectedGraph

FREE = {"RESHAPE", "QUANTIZE", "DEQUANTIZE", "SQUEEZE", "PAD", "SHAPE", "STRIDED_SLICE", "PACK"}  # shape plumbing
ACT_OPT = {0: "", 1: "-relu", 3: "-relu6"}


def detect_tflite(path: str | Path) -> DetectedGraph:
    from ai_edge_litert import schema_py_generated as schema

    buf = Path(path).read_bytes()
    model = schema.ModelT.InitFromPackedBuf(buf, 0)
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    codes = [max(c.builtinCode, c.deprecatedBuiltinCode) for c in model.operatorCodes]
    sg = model.subgraphs[0]
    ops = [(names.get(codes[op.opcodeIndex], "?"), op) for op in sg.operators]
    shape = lambda t: list(sg.tensors[t].shape)  # noqa: E731
    consumers: dict[int, list] = {}
    for name, op in ops:
        for t in op.inputs:
            if t >= 0:
                consumers.setdefault(t, []).append((name, op))
    producers = {t: (name, op) for name, op in ops for t in op.outputs}
    is_const = lambda t: t not in producers and sg.tensors[t].buffer > 0 and bool(model.buffers[sg.tensors[t].buffer].data is not None and len(model.buffers[sg.tensors[t].buffer].data))  # noqa: E731,E501

    def through_pad(t: int) -> int:
        p = producers.get(t)
        return p[1].inputs[0] if p and p[0] == "PAD" else t

    def act_after(t: int):
        cs = consumers.get(t, [])
        if len(cs) == 1 and cs[0][0] == "HARD_SWISH":
            return "-hswish", [cs[0][1]]
        if len(cs) == 2:
            sig = next((c for c in cs if c[0] == "LOGISTIC"), None)
            mul = next((c for c in cs if c[0] == "MUL"), None)
            if sig and mul and sig[1].outputs[0] in mul[1].inputs:
                return "-swish", [sig[1], mul[1]]
        return None

    int8 = {schema.TensorType.INT8, schema.TensorType.UINT8}
    out, used, unsupported = DetectedGraph(int8=any(t.type in int8 for t in sg.tensors)), set(), Counter()
    for name, op in ops:
        if id(op) in used:
            continue
        used.add(id(op))
        if name in FREE:
            continue
        x = shape(through_pad(op.inputs[0]))
        if name in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            w = shape(op.inputs[1])
            opts = op.builtinOptions
            act = ACT_OPT.get(opts.fusedActivationFunction, "")
            extra = act_after(op.outputs[0]) if not act else None
            if extra:
                act = extra[0]
                used.update(id(o) for o in extra[1])
            if name == "DEPTHWISE_CONV_2D":
                out.kernels.append(KernelConfig(type=f"dwconv-bn{act}", hw=x[1], cin=x[3], cout=x[3], kernel=w[1],
                                                stride=opts.strideH))
            else:
                out.kernels.append(KernelConfig(type=f"conv-bn{act}", hw=x[1], cin=x[3], cout=w[0], kernel=w[1],
                                                stride=opts.strideH))
        elif name == "MEAN":
            chain = _se_chain(op, consumers)
            if chain is not None and op.inputs[0] in list(chain[-1].inputs):
                used.update(id(c) for c in chain)
                out.kernels.append(KernelConfig(type="se", hw=x[1], cin=x[3], cout=x[3], mid=shape(chain[0].inputs[1])[0]))
            else:
                out.kernels.append(KernelConfig(type="global-avgpool", hw=x[1], cin=x[3], cout=x[3]))
        elif name == "ADD" and not any(is_const(t) for t in op.inputs):
            act = ACT_OPT.get(op.builtinOptions.fusedActivationFunction if op.builtinOptions else 0, "")
            out.kernels.append(KernelConfig(type=f"add{act}", hw=x[1], cin=x[3], cout=x[3]))
        elif name == "FULLY_CONNECTED":
            out.kernels.append(KernelConfig(type="fc", hw=1, cin=x[-1], cout=shape(op.inputs[1])[0]))
        elif name in ("MAX_POOL_2D", "AVERAGE_POOL_2D"):
            o = op.builtinOptions
            out.kernels.append(KernelConfig(type="maxpool" if name == "MAX_POOL_2D" else "avgpool", hw=x[1],
                                            cin=x[3], kernel=o.filterHeight, stride=o.strideH))
        elif name == "CONCATENATION" and len(op.inputs) == 2:
            out.kernels.append(KernelConfig(type="concat", hw=x[1], cin=x[3], cout=shape(op.inputs[1])[3]))
        elif name in ("RELU", "RELU6", "HARD_SWISH", "LOGISTIC"):
            sw = act_after(op.inputs[0]) if name == "LOGISTIC" else None
            a = {"RELU": "relu", "RELU6": "relu6", "HARD_SWISH": "hswish", "LOGISTIC": "swish"}[name]
            if sw:
                used.update(id(o) for o in sw[1])
            out.kernels.append(KernelConfig(type=f"act-{a}", hw=x[1] if len(x) == 4 else 1,
                                            cin=x[3] if len(x) == 4 else x[-1]))
        else:
            unsupported[name] += 1
    out.unsupported = dict(unsupported)
    return out


def _se_chain(mean, consumers):
    chain, t = [], mean.outputs[0]
    for want in ("CONV_2D", "CONV_2D", "MUL", "MUL"):
        cs = consumers.get(t, [])
        if len(cs) != 1 or cs[0][0] != want:
            return None
        chain.append(cs[0][1])
        t = cs[0][1].outputs[0]
    return chain
