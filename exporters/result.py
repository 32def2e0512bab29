"""What an export wrote, as printed by the CLI and stored with measurements."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

from pydantic import BaseModel


class ExportResult(BaseModel):
    path: str
    format: str  # onnx | tflite
    precision: str  # int8 | fp32
    size_bytes: int
    ops: dict[str, int]
    flops: int | None = None
    params: int | None = None
    space: str | None = None
    arch: str | None = None
    recipe: str | None = None
    calibration: str | None = None
    input_shape: list[int]
    seconds: float
    #: what will go wrong on the target runtime although the export itself succeeded (see xnnpack_problems)
    warnings: list[str] = []


def onnx_ops(path: str | Path) -> dict[str, int]:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return dict(Counter(n.op_type for n in model.graph.node).most_common())


def tflite_ops(path: str | Path) -> dict[str, int]:
    return dict(Counter(op["op_name"] for op in tflite_op_details(path)).most_common())


def _ops_and_tensors(path: str | Path) -> tuple[list[dict], dict[int, dict]]:
    """Ops and tensors (by index) of the flatbuffer as the interpreter sees them, without the XNNPACK
    delegate rewriting them."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    it = Interpreter(model_path=str(path), num_threads=1,
                     experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    it.allocate_tensors()
    tensors = {t["index"]: t for t in it.get_tensor_details()}
    return it._get_ops_details(), tensors  # noqa: SLF001 - the public API has no op list


def tflite_op_details(path: str | Path) -> list[dict]:
    """Ops of the flatbuffer as the interpreter sees them, with their input and output dtypes."""
    ops, tensors = _ops_and_tensors(path)
    for op in ops:
        op["input_dtypes"] = [tensors[i]["dtype"].__name__ if i >= 0 else None for i in op["inputs"]]
        op["output_dtypes"] = [tensors[i]["dtype"].__name__ for i in op["outputs"]]
    return ops


#: XNNPACK's quantized conv/FC operators refuse an output requantization scale (input scale x weight scale /
#: output scale) outside [2**-32, 256) (``xnn_create_convolution2d_nhwc_qs8``/``qc8``). LiteRT then fails to
#: create the delegate's runtime and refuses the *whole* model, on x86 as on a phone.
XNNPACK_MAX_REQUANT = 256.0


def xnnpack_problems(path: str | Path) -> list[str]:
    """Ops of an INT8 TFLite model whose quantization XNNPACK refuses, each named with its scale and the
    likely cause; empty when LiteRT will load the model with XNNPACK."""
    import numpy as np

    ops, tensors = _ops_and_tensors(path)
    out = []
    for op in ops:
        if op["op_name"] not in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV"):
            continue
        x, w, y = (tensors[i] for i in (op["inputs"][0], op["inputs"][1], op["outputs"][0]))
        sx, sw, sy = (np.asarray(t["quantization_parameters"]["scales"]) for t in (x, w, y))
        if not (len(sx) and len(sw) and len(sy)) or w["dtype"] != np.int8:
            continue  # float op: nothing to requantize
        r = sx[0] * sw / sy[0]
        if r.max() >= XNNPACK_MAX_REQUANT or r.min() < 2.0 ** -32:
            out.append(f"{op['op_name']} #{op['index']} ({y['name'][:80]}): requantization scale "
                       f"{r.min():.3g}..{r.max():.3g} outside XNNPACK's [2^-32, 256); output scale {sy[0]:.3g}, "
                       f"so its output was (nearly) constant on the calibration data, e.g. a ReLU dead for "
                       f"every sample. LiteRT with XNNPACK will refuse to load this model.")
    return out
