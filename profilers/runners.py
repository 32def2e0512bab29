"""Runtime runners, used inside the pinned child process: load a model, run it once per call.

``onnxruntime-cpu``: one intra-op and one inter-op thread, sequential execution, all graph
optimizations, spinning off (a spinning thread would burn the core that the next run needs).
``tflite-cpu``: the LiteRT interpreter with one thread and its default XNNPACK delegate.
"""
from __future__ import annotations

import numpy as np

BACKENDS = ("onnxruntime-cpu", "tflite-cpu")
SUFFIX = {"onnxruntime-cpu": ".onnx", "tflite-cpu": ".tflite"}


class ModelLoadError(Exception):
    """The file exists but the runtime cannot load it as a model."""


def _random_input(shape, dtype, rng: np.random.Generator) -> np.ndarray:
    shape = [int(d) if isinstance(d, (int, np.integer)) and int(d) > 0 else 1 for d in shape]  # dynamic dims -> 1
    dtype = np.dtype(dtype)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return rng.integers(max(info.min, -128), min(info.max, 127) + 1, size=shape, dtype=dtype)
    return rng.standard_normal(shape).astype(dtype)


class OrtRunner:
    def __init__(self, path: str):
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        so.add_session_config_entry("session.inter_op.allow_spinning", "0")
        so.log_severity_level = 3
        try:
            self.sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own exception types
            raise ModelLoadError(f"onnxruntime cannot load {path}: {str(e).splitlines()[0][:300]}") from e
        types = {"tensor(float)": np.float32, "tensor(uint8)": np.uint8, "tensor(int8)": np.int8,
                 "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(float16)": np.float16}
        rng = np.random.default_rng(0)
        self.feeds = {i.name: _random_input(i.shape, types.get(i.type, np.float32), rng) for i in self.sess.get_inputs()}

    def __call__(self):
        return self.sess.run(None, self.feeds)


class TfliteRunner:
    """``op_resolver`` names a LiteRT ``OpResolverType``: ``AUTO`` (default, with XNNPACK) is what every agent
    measures; ``BUILTIN_WITHOUT_DEFAULT_DELEGATES`` (LiteRT's own kernels) is for comparing the two
    (bench/litert_delegate.py)."""

    def __init__(self, path: str, op_resolver: str = "AUTO"):
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        try:
            self.it = Interpreter(model_path=path, num_threads=1,
                                  experimental_op_resolver_type=getattr(OpResolverType, op_resolver))
            self.it.allocate_tensors()
        except Exception as e:
            raise ModelLoadError(f"LiteRT cannot load {path}: {str(e).splitlines()[0][:300]}") from e
        rng = np.random.default_rng(0)
        for d in self.it.get_input_details():
            self.it.set_tensor(d["index"], _random_input(d["shape"], d["dtype"], rng))

    def __call__(self):
        self.it.invoke()


def make_runner(backend: str, path: str):
    if backend == "onnxruntime-cpu":
        return OrtRunner(path)
    if backend == "tflite-cpu":
        return TfliteRunner(path)
    raise ValueError(f"backend: {backend!r} is not allowed; allowed: {', '.join(BACKENDS)}")
