"""TFLite export (Keras twin -> TFLite full-integer INT8 with int8 input/output, or FP32).

The Keras model is built from the same :class:`spaces.Network` as the torch model and receives the
torch weights, so the ONNX and TFLite files of one subnet are the same network.
"""
from __future__ import annotations

import contextlib
import io
import os
import tempfile
import time
from pathlib import Path

from spaces import Network

from .calibration import Calibration, MultiCalibration
from .result import ExportResult, tflite_ops, xnnpack_problems

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@contextlib.contextmanager
def quiet_converter():
    """Swallow the converter's chatter (Keras prints every captured variable; MLIR logs to fd 2),
    but keep it to attach to the error if conversion fails."""
    py_out = io.StringIO()
    with tempfile.TemporaryFile(mode="w+b") as err_file:
        saved = os.dup(2)
        os.dup2(err_file.fileno(), 2)
        try:
            with contextlib.redirect_stdout(py_out):
                yield
        except Exception as e:
            os.dup2(saved, 2)
            err_file.seek(0)
            tail = err_file.read().decode(errors="replace")[-2000:]
            raise RuntimeError(f"TFLite conversion failed: {e}\n--- converter log (tail) ---\n{tail}") from e
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def convert_keras(keras_model, out: str | Path, fp32: bool = False,
                  calibration: Calibration | MultiCalibration | None = None) -> Path:
    """Convert a Keras model; INT8 uses the representative dataset and int8 input/output tensors.

    The model is traced once, at batch 1, into a concrete function that the converter freezes.
    ``from_keras_model`` does the same work through a Keras SavedModel export archive (seven traced
    functions, written to disk and read back): measured on two random subnets, 2.3-2.6x slower in all
    (onnxw-random-1: 55.9 s to 21.1 s, mobilew-random-0: 54.5 s to 23.8 s, build included, one core shared
    with a profiling campaign), with bit-identical outputs and the same ops (``tests/test_export.py``)."""
    import tensorflow as tf

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    sig = [tf.TensorSpec([1, *i.shape[1:]], i.dtype) for i in keras_model.inputs]
    fn = tf.function(lambda *xs: keras_model(xs[0] if len(xs) == 1 else list(xs), training=False),
                     input_signature=sig)
    with quiet_converter():
        conv = tf.lite.TFLiteConverter.from_concrete_functions([fn.get_concrete_function()])
        if not fp32:
            conv.optimizations = [tf.lite.Optimize.DEFAULT]
            conv.representative_dataset = calibration.tflite_dataset
            conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            conv.inference_input_type = tf.int8
            conv.inference_output_type = tf.int8
        data = conv.convert()
    out.write_bytes(data)
    return out


def _nchw(keras_shape) -> tuple[int, ...]:
    s = tuple(1 if d is None else int(d) for d in keras_shape)  # unknown batch -> 1
    return (s[0], s[3], s[1], s[2]) if len(s) == 4 else s


def export_tflite_model(keras_model, out: str | Path, fp32: bool = False,
                        calibration: Calibration | MultiCalibration | None = None) -> ExportResult:
    """Convert any Keras model (subnet or single kernel); shapes are read from its inputs."""
    t0 = time.perf_counter()
    shapes = [_nchw(i.shape) for i in keras_model.inputs]
    calib = None if fp32 else MultiCalibration.of(calibration, shapes)
    out = convert_keras(keras_model, out, fp32, calib)
    return ExportResult(path=str(out), format="tflite", precision="fp32" if fp32 else "int8",
                        size_bytes=out.stat().st_size, ops=tflite_ops(out),
                        warnings=[] if fp32 else xnnpack_problems(out),
                        calibration=calib.describe() if calib else None, input_shape=list(shapes[0]),
                        seconds=round(time.perf_counter() - t0, 3))


def export_tflite(net: Network, out: str | Path, fp32: bool = False, calibration: Calibration | None = None,
                  seed: int = 0, torch_model=None) -> ExportResult:
    """Build ``net`` in torch (trained-like weights), copy them into the Keras twin, convert."""
    from .keras_builder import build_keras_from_torch
    from .onnx_export import net_fields
    from .torch_builder import build_torch

    tm = torch_model if torch_model is not None else build_torch(net, seed=seed)
    km = build_keras_from_torch(tm, net)
    try:
        return export_tflite_model(km, out, fp32, calibration).model_copy(update=net_fields(net))
    finally:
        release_keras()


def release_keras() -> None:
    """Drop Keras' global state after converting a model that this process built only to convert.

    Keras keeps every model it builds in its global state, and TF keeps their traced graphs: an evaluation
    exporting subnet after subnet in one process grew to 24 GB and was killed by the OOM killer after 150
    networks (Zen 4 host). Called by the functions that build their own model (not by
    :func:`export_tflite_model`, whose caller owns the model and may still use it)."""
    import gc

    import keras

    keras.backend.clear_session(free_memory=True)
    gc.collect()
