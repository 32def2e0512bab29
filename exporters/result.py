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


def onnx_ops(path: str | Path) -> dict[str, int]:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return dict(Counter(n.op_type for n in model.graph.node).most_common())


def tflite_ops(path: str | Path) -> dict[str, int]:
    return dict(Counter(op["op_name"] for op in tflite_op_details(path)).most_common())


def tflite_op_details(path: str | Path) -> list[dict]:
    """Ops of the flatbuffer as the interpreter sees them, without the XNNPACK delegate rewriting them."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    it = Interpreter(model_path=str(path), num_threads=1,
                     experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    it.allocate_tensors()
    tensors = {t["index"]: t for t in it.get_tensor_details()}
    ops = it._get_ops_details()  # noqa: SLF001 - the public API has no op list
    for op in ops:
        op["input_dtypes"] = [tensors[i]["dtype"].__name__ if i >= 0 else None for i in op["inputs"]]
        op["output_dtypes"] = [tensors[i]["dtype"].__name__ for i in op["outputs"]]
    return ops
