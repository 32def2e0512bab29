"""End-to-end evaluation throughput with and without lending the measuring core to a second exporter.

    python bench/eval_bench.py [--backend tflite-cpu] [--n 8] [--predictor local:tflite-cpu]

Runs :func:`predictors.evaluate.evaluate` twice in one process on the same ``2 x n`` networks of the calibration
set (results go to a temporary folder; nothing is committed): first with ``lend_core=False`` (every export on the
non-measuring core, the measuring core idle while quiet rounds wait), then with ``lend_core=True`` (a second export
process on the measuring core while nothing is measured). Prints networks per minute for both and their ratio, and
how the two runs' measurements of the same networks compare (median ratio, share within 10%): lending changes only
the waiting, never what a round shares its core with, so the measurements should agree as well as any two runs do.
The baseline runs first; the VM's speed can change between the runs, so read the ratio with the agreement line.
"""
from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from exporters.cpu import cpu_info
from predictors.bundled import load_predictor
from predictors.evaluate import eval_set, evaluate, load_results


def run(pred, backend: str, items, out: Path, lend: bool, block: int) -> tuple[float, dict[str, dict]]:
    t0 = time.perf_counter()
    evaluate(pred, backend, items, out, lend_core=lend, block=block)
    return time.perf_counter() - t0, load_results(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backend", default="tflite-cpu", choices=["tflite-cpu", "onnxruntime-cpu"])
    ap.add_argument("--n", type=int, default=8, help="networks per hyperspace (two hyperspaces)")
    ap.add_argument("--block", type=int, default=8)
    ap.add_argument("--predictor", help="default: this host's bundled predictor for --backend")
    args = ap.parse_args()
    cpu = cpu_info()
    print(f"machine: {cpu.model} (family {cpu.family}, model {cpu.model_id}), {cpu.cores} cores, "
          f"Python {platform.python_version()}; backend {args.backend}")
    pred = load_predictor(args.predictor or f"local:{args.backend}")
    items = eval_set(["onnxw", "mobilew"], args.n, kind="calib")
    with tempfile.TemporaryDirectory() as tmp:
        t_off, off = run(pred, args.backend, items, Path(tmp) / "off.jsonl", False, args.block)
        t_on, on = run(pred, args.backend, items, Path(tmp) / "on.jsonl", True, args.block)
    n = len(items)
    both = [k for k in off if off[k].get("ok") and on.get(k, {}).get("ok")]
    ratio = np.array([on[k]["measured_ms"] / off[k]["measured_ms"] for k in both])
    figures = {
        "networks": n, "lend_off_s": round(t_off, 1), "lend_on_s": round(t_on, 1),
        "lend_off_per_min": round(60 * n / t_off, 2), "lend_on_per_min": round(60 * n / t_on, 2),
        "speedup": round(t_off / t_on, 3), "measured_on_over_off_median": round(float(np.median(ratio)), 4),
        "measured_within_10pct": round(float(np.mean(np.abs(ratio - 1) <= 0.10)), 3), "compared": len(both),
    }
    print(f"lend off: {n} networks in {t_off:.0f} s ({figures['lend_off_per_min']:.2f}/min)")
    print(f"lend on:  {n} networks in {t_on:.0f} s ({figures['lend_on_per_min']:.2f}/min)")
    print(f"speedup: {figures['speedup']:.2f}x; measured (on/off) median {figures['measured_on_over_off_median']:.3f}, "
          f"{figures['measured_within_10pct']:.0%} of {len(both)} within 10%")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
