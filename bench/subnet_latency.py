"""End-to-end INT8 vs FP32 latency of MobileNetV2-like and SEQnet subnets on both local backends.

    python bench/subnet_latency.py [--budget-s 10]

Each model is measured with the profilers' protocol (one pinned core, p10 of >= 2 s of runs); INT8
and FP32 of one subnet are measured back to back in the same worker, so their ratio is the figure to
read on this shared machine, more than the absolute milliseconds.
"""
from __future__ import annotations

import argparse
import tempfile
import warnings
from pathlib import Path

warnings.simplefilter("ignore")

from exporters.calibration import Calibration  # noqa: E402
from exporters.onnx_export import export_onnx  # noqa: E402
from exporters.tflite_export import export_tflite  # noqa: E402
from profilers.protocol import Protocol  # noqa: E402
from profilers.worker import Profiler  # noqa: E402
from spaces import resolve  # noqa: E402
from spaces.sampling import sample_subnet  # noqa: E402

MODELS = {
    "MBv2 onnxw (111111-000000, min)": "onnxw-111111-000000",
    "MBv2 mobilew (111111-000000, min)": "mobilew-111111-000000",
    "SEQnet@vnni-A0": "onnxw-151122-023231",
    "SEQnet@pixel4-A0": "mobilew-122222-155400",
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--budget-s", type=float, default=10.0)
    args = ap.parse_args()
    proto = Protocol(budget_s=args.budget_s)
    print(f"{'model':36} {'MFLOPs':>7} {'backend':16} {'INT8 ms':>8} {'FP32 ms':>8} {'speedup':>8}  stable")
    with tempfile.TemporaryDirectory() as tmp:
        for name, space in MODELS.items():
            net = resolve(space, sample_subnet(space, "min"))
            calib = Calibration((1, 3, net.resolution, net.resolution), 8)
            files = {
                "onnxruntime-cpu": (export_onnx(net, Path(tmp) / "i.onnx", calibration=calib).path,
                                    export_onnx(net, Path(tmp) / "f.onnx", fp32=True).path),
                "tflite-cpu": (export_tflite(net, Path(tmp) / "i.tflite", calibration=calib).path,
                               export_tflite(net, Path(tmp) / "f.tflite", fp32=True).path),
            }
            for backend, (i8, f32) in files.items():
                with Profiler(backend, protocol=proto) as p:
                    mi, mf = p.measure(i8), p.measure(f32)
                print(f"{name:36} {net.flops() / 1e6:7.0f} {backend:16} {mi.latency_ms:8.2f} {mf.latency_ms:8.2f} "
                      f"{mf.latency_ms / mi.latency_ms:7.2f}x  {mi.stable}/{mf.stable}", flush=True)


if __name__ == "__main__":
    main()
