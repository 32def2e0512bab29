"""Export time per format for the min and max subnets of the two published search spaces.

    python bench/export_bench.py [--repeats 1]

Prints one row per (space, subnet, format) with build+export seconds and file size. Export time is
dominated by calibration (INT8) and by TF's converter (TFLite); each row runs in this one process,
so rows are comparable with each other on the same machine.
"""
from __future__ import annotations

import argparse
import platform
import tempfile
import time
import warnings
from pathlib import Path

warnings.simplefilter("ignore")

from spaces import resolve  # noqa: E402
from spaces.sampling import sample_subnet  # noqa: E402
from exporters.calibration import Calibration  # noqa: E402
from exporters.cpu import cpu_info  # noqa: E402
from exporters.onnx_export import export_onnx  # noqa: E402
from exporters.tflite_export import export_tflite  # noqa: E402
from exporters.torch_builder import build_torch  # noqa: E402

SPACES = {"vnni": "onnxw-151122-023231", "pixel4": "mobilew-122222-155400"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--calib-samples", type=int, default=16)
    args = ap.parse_args()
    cpu = cpu_info()
    print(f"machine: {cpu.model}, {cpu.cores} cores, flags {','.join(cpu.flags)}, {platform.python_version()}")
    print(f"calibration: {args.calib_samples} random samples; best of {args.repeats}")
    print(f"{'space':8} {'subnet':6} {'MFLOPs':>8} {'format':12} {'seconds':>8} {'MB':>7}")
    # Warm the imports (TF import alone is several seconds) so the first row is not penalised.
    with tempfile.TemporaryDirectory() as tmp:
        net = resolve(SPACES["pixel4"], sample_subnet(SPACES["pixel4"], "min"))
        export_tflite(net, Path(tmp) / "warm.tflite", fp32=True)
        for name, space in SPACES.items():
            for mode in ("min", "max"):
                net = resolve(space, sample_subnet(space, mode))
                r = net.resolution
                for fmt, fp32 in (("onnx-int8", False), ("onnx-fp32", True), ("tflite-int8", False),
                                  ("tflite-fp32", True)):
                    best = float("inf")
                    for _ in range(args.repeats):
                        calib = Calibration((1, 3, r, r), args.calib_samples)
                        t0 = time.perf_counter()
                        model = build_torch(net)
                        out = Path(tmp) / f"m.{fmt.split('-')[0]}"
                        if fmt.startswith("onnx"):
                            res = export_onnx(net, out, fp32=fp32, calibration=calib, torch_model=model)
                        else:
                            res = export_tflite(net, out, fp32=fp32, calibration=calib, torch_model=model)
                        best = min(best, time.perf_counter() - t0)
                    print(f"{name:8} {mode:6} {net.flops() / 1e6:8.0f} {fmt:12} {best:8.2f} {res.size_bytes / 1e6:7.2f}",
                          flush=True)


if __name__ == "__main__":
    main()
