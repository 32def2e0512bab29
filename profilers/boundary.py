"""The quantize/dequantize boundary that every onnxruntime kernel model pays and a whole network does not.

A kernel is profiled as its own QDQ model: float input -> QuantizeLinear -> kernel -> DequantizeLinear ->
float output. Inside a network the kernels pass uint8 tensors to each other, so the two conversions
happen once per network, not once per kernel. Their cost grows with the tensor: summed over the ~50
kernels of a subnet it came to ~2 ms of a 12-40 ms prediction in the first evaluation
(docs/eval/amd-epyc-avx2/onnxruntime-cpu-first), a positive bias that no forest can learn away.

We measure it directly instead of guessing: standalone Quantize and Dequantize models over a range of
tensor sizes, a straight line per op (intercept + ns per element), fitted on the fastest of interleaved
rounds. Predictors subtract ``quantize(in) + dequantize(out)`` from each kernel's measurement and add
the network's own input quantize and output dequantize back once. TFLite kernel models have int8
input and output (see exporters.tflite_export), so that backend has no boundary to remove.
"""
from __future__ import annotations

import math
import tempfile
from pathlib import Path

import numpy as np
from pydantic import BaseModel

from exporters.kernel_config import KernelConfig

from .protocol import Protocol
from .worker import Profiler

# element counts from a tiny tensor to the largest activation of both hyperspaces (112x112x96)
SIZES = (8, 4096, 25088, 100352, 200704, 401408, 802816, 1204224)


class BoundaryFit(BaseModel):
    intercept_ms: float
    ns_per_element: float
    points: list[tuple[int, float]]  # (elements, ms)


class BoundaryCost(BaseModel):
    """Cost of the QuantizeLinear at a kernel model's inputs and the DequantizeLinear at its outputs."""

    backend: str
    quantize: BoundaryFit
    dequantize: BoundaryFit

    def kernel_ms(self, in_elements: np.ndarray | int, out_elements: np.ndarray | int):
        """The part of a kernel model's latency spent converting its float input and output (intercepts
        excluded: the per-model overhead already holds a runtime invocation)."""
        return (self.quantize.ns_per_element * np.asarray(in_elements)
                + self.dequantize.ns_per_element * np.asarray(out_elements)) * 1e-6


def kernel_elements(cfg: KernelConfig) -> tuple[int, int]:
    """Elements of a kernel model's float inputs (all of them) and of its output."""
    n_in = sum(math.prod(s) for s in cfg.input_shapes())
    op = cfg.op
    if op == "fc":
        return n_in, cfg.cout
    if op == "global":  # global-avgpool
        return n_in, cfg.cin
    hw = -(-cfg.hw // cfg.stride) if op in ("conv", "dwconv", "maxpool", "avgpool") else cfg.hw
    c = cfg.cout if op == "conv" else cfg.cin + cfg.cout if op == "concat" else cfg.cin
    return n_in, c * hw * hw


def boundary_model(op: str, elements: int, path: Path) -> Path:
    """A one-node ONNX model: QuantizeLinear (float -> uint8) or DequantizeLinear (uint8 -> float)."""
    import onnx
    from onnx import TensorProto, helper

    if op not in ("quantize", "dequantize"):
        raise ValueError(f"op: {op!r} is not allowed; allowed: quantize, dequantize")
    src, dst = (TensorProto.FLOAT, TensorProto.UINT8) if op == "quantize" else (TensorProto.UINT8, TensorProto.FLOAT)
    node = helper.make_node("QuantizeLinear" if op == "quantize" else "DequantizeLinear", ["x", "s", "z"], ["y"])
    graph = helper.make_graph(
        [node], op, [helper.make_tensor_value_info("x", src, [1, elements])],
        [helper.make_tensor_value_info("y", dst, [1, elements])],
        initializer=[helper.make_tensor("s", TensorProto.FLOAT, [], [0.02]),
                     helper.make_tensor("z", TensorProto.UINT8, [], [128])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def _fit(points: list[tuple[int, float]]) -> BoundaryFit:
    n = np.array([p[0] for p in points], float)
    t = np.array([p[1] for p in points], float)
    slope, intercept = np.polyfit(n, t, 1)
    return BoundaryFit(intercept_ms=float(intercept), ns_per_element=float(max(slope, 0.0)) * 1e6, points=points)


def measure_boundary(backend: str = "onnxruntime-cpu", sizes: tuple[int, ...] = SIZES, rounds: int = 2,
                     protocol: Protocol | None = None, core: int | None = None) -> BoundaryCost:
    """Measure and fit the boundary cost (onnxruntime only; see the module docstring)."""
    if backend != "onnxruntime-cpu":
        raise ValueError(f"backend: {backend!r} has no quantize boundary to measure; allowed: onnxruntime-cpu")
    best: dict[tuple[str, int], float] = {}
    with Profiler(backend, core=core, protocol=protocol or Protocol(budget_s=2.0, min_duration_s=0.5)) as prof, \
            tempfile.TemporaryDirectory() as tmp:
        paths = {(op, n): boundary_model(op, n, Path(tmp) / f"{op}-{n}.onnx")
                 for op in ("quantize", "dequantize") for n in sizes}
        for _ in range(rounds):  # interleaved, fastest kept: slow phases of this VM last seconds
            for key, p in paths.items():
                m = prof.measure(p)
                if not m.ok:
                    raise RuntimeError(f"boundary model {p.name}: {m.error}")
                best[key] = min(best.get(key, math.inf), m.latency_ms)
    fits = {op: _fit([(n, best[(op, n)]) for n in sizes]) for op in ("quantize", "dequantize")}
    return BoundaryCost(backend=backend, **fits)
