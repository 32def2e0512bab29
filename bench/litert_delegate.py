"""LiteRT's default XNNPACK delegate against its built-in kernels, per INT8 kernel, on this CPU.

Why: on the Intel Emerald Rapids host (2026-12-06) LiteRT 2.3 ran our INT8 networks 2-11x slower than the Zen 5
host did, and the kernel records put nearly all of it in 7x7 depthwise convolutions. Whether that is the
delegate or the CPU decides the deployment recipe (keep XNNPACK, or keep 7x7 depthwise out of the search space),
so this measures the same .tflite file both ways, interleaved, each record under the profilers' protocol with
its load probe, and prints the fastest of ``--rounds`` records per side and their ratio.

    python bench/litert_delegate.py [--rounds 3] [--core 1] [--out docs/study/<device>/litert-delegate.json]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
from pathlib import Path

from exporters.kernel_config import KernelConfig
from profilers.collect import export_kernel_model
from profilers.protocol import LoadProbe, Protocol, run_protocol
from profilers.runners import TfliteRunner

# The paper's Table 8 depthwise convs (H=W=56, C=96, kernel 3/5/7), the 7x7 depthwise kernels that cost the most
# in the Emerald Rapids calibration networks, and the narrow high-resolution 1x1 conv whose record was 13x Zen 5's.
CONFIGS = [KernelConfig(type="dwconv-bn-relu6", hw=56, cin=96, cout=96, kernel=k, stride=1) for k in (3, 5, 7)] + [
    KernelConfig(type="dwconv-bn-relu6", hw=12, cin=816, cout=816, kernel=7, stride=2),
    KernelConfig(type="dwconv-bn-swish", hw=48, cin=120, cout=120, kernel=7, stride=1),
    KernelConfig(type="conv-bn-relu", hw=56, cin=96, cout=96, kernel=1, stride=1),
    KernelConfig(type="conv-bn", hw=96, cin=8, cout=16, kernel=1, stride=1),
]
SIDES = {"xnnpack": "AUTO", "builtin": "BUILTIN_WITHOUT_DEFAULT_DELEGATES"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3, help="records per side, interleaved; the fastest counts")
    ap.add_argument("--core", type=int, default=os.cpu_count() - 1, help="CPU core to pin to")
    ap.add_argument("--out", type=Path, help="also write the records as JSON here")
    a = ap.parse_args()
    os.sched_setaffinity(0, {a.core})
    protocol, probe = Protocol(), LoadProbe()
    probe.calibrate()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for cfg in CONFIGS:
            path = export_kernel_model(cfg, "int8", "tflite-cpu", Path(tmp))
            runners = {s: TfliteRunner(str(path), op_resolver=r) for s, r in SIDES.items()}
            recs = {s: [] for s in SIDES}
            for _ in range(a.rounds):
                for s, run in runners.items():
                    st = run_protocol(run, protocol, probe=probe)
                    recs[s].append({k: st.get(k) for k in ("latency_ms", "min_ms", "probe_ms", "stable")})
            best = {s: min(r["latency_ms"] for r in v) for s, v in recs.items()}
            rows.append({"config": cfg.model_dump(), "xnnpack_ms": best["xnnpack"], "builtin_ms": best["builtin"],
                         "xnnpack_over_builtin": best["xnnpack"] / best["builtin"], "records": recs})
            print(f"{cfg.slug():48s} xnnpack {best['xnnpack']:8.3f} ms  builtin {best['builtin']:8.3f} ms  "
                  f"xnnpack/builtin {best['xnnpack'] / best['builtin']:6.2f}", flush=True)
    from ai_edge_litert import __version__ as litert_version
    from profilers.fingerprint import device_slug, local_fingerprint

    doc = {"device": device_slug(local_fingerprint("tflite-cpu")), "litert": litert_version,
           "cpu": platform.processor() or platform.machine(), "rounds": a.rounds, "rows": rows}
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(doc, indent=1))
        print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
