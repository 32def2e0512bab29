"""Operator study: INT8-over-FP32 speedup on our devices, next to the SpaceEvo paper's.

Reproduces the paper's analyses with the same configurations:

* Table 1: average speedup per operator (Conv, DWConv, SE, Hardswish, Swish) over the distinct
  operator instances of an MBv3 subnet at resolution 224 (the paper averages over MobileNetV3).
* Table 8: Conv and DWConv, H=W=56, Cin=Cout=96, kernel 1/3/5/7.
* Fig. 3: Conv1x1 over channel counts, HW=28, Cout=4*Cin.
* Fig. 9: DWConv3x3 over channel counts, HW=56 (the multiple-of-8/16 step pattern).

``python -m profilers study --backend B --out docs/study`` writes ``<backend>.json`` (every record),
``<backend>.md`` (tables) and PNG plots; speedup = FP32 latency / INT8 latency (> 1: INT8 faster).
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path
from statistics import mean

from exporters.kernel_config import KernelConfig
from spaces import resolve
from spaces.sampling import sample_subnet

from .collect import measure_kernel
from .protocol import Protocol
from .worker import Profiler

PAPER_TABLE1 = {"Conv": (2.6, 2.5), "DWConv": (1.2, 2.0), "SE": (0.7, 1.4), "Hardswish": (0.7, 0.5), "Swish": (0.8, 2.1)}
PAPER_TABLE8 = {1: (3.5, 2.7, 2.6, 0.9), 3: (3.6, 1.4, 4.0, 2.8), 5: (3.8, 1.1, 3.9, 1.1), 7: (4.0, 0.8, 3.8, 1.1)}
STUDY_PROTOCOL = Protocol(budget_s=3.0, min_duration_s=1.0)


def table1_configs(max_per_op: int = 6) -> dict[str, list[KernelConfig]]:
    """Distinct operator instances of an MBv3 (hswish + SE) subnet at r224, like MobileNetV3."""
    sp = "onnxw-222222-000000"
    arch = sample_subnet(sp, "min").to_string().replace("_r160", "_r224")
    ks = resolve(sp, arch).kernels()
    ops: dict[str, list[KernelConfig]] = {"Conv": [], "DWConv": [], "SE": [], "Hardswish": [], "Swish": []}
    for k in ks:
        if k.type == "conv-bn" and k.kernel == 1:
            ops["Conv"].append(KernelConfig(type="conv-bn", hw=k.hw, cin=k.cin, cout=k.cout))
        elif k.op == "dwconv":
            ops["DWConv"].append(KernelConfig(type="dwconv-bn", hw=k.hw, cin=k.cin, cout=k.cin, kernel=k.kernel,
                                              stride=k.stride))
            o = KernelConfig.from_kernel(k)
            ops["Hardswish"].append(KernelConfig(type="act-hswish", hw=k.out_hw, cin=o.cin))
            ops["Swish"].append(KernelConfig(type="act-swish", hw=k.out_hw, cin=o.cin))
        elif k.type == "se":
            ops["SE"].append(KernelConfig.from_kernel(k))
    return {op: list(dict.fromkeys(v))[:max_per_op] for op, v in ops.items()}


def run_study(backend: str, out: str | Path, channels_step: int = 4, protocol: Protocol | None = None,
              core: int | None = None, progress=None) -> dict:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    proto = protocol or STUDY_PROTOCOL
    records: list[dict] = []
    jobs: list[tuple[str, str, KernelConfig]] = []
    for op, cfgs in table1_configs().items():
        jobs += [("table1", op, c) for c in cfgs]
    for k in (1, 3, 5, 7):
        jobs.append(("table8", f"Conv k{k}", KernelConfig(type="conv-bn", hw=56, cin=96, cout=96, kernel=k)))
        jobs.append(("table8", f"DWConv k{k}", KernelConfig(type="dwconv-bn", hw=56, cin=96, cout=96, kernel=k)))
    for c in range(16, 161, 8):
        jobs.append(("fig3", str(c), KernelConfig(type="conv-bn", hw=28, cin=c, cout=4 * c)))
    for c in range(16, 161, channels_step):
        jobs.append(("fig9", str(c), KernelConfig(type="dwconv-bn", hw=56, cin=c, cout=c, kernel=3)))
    with Profiler(backend, core=core, protocol=proto) as prof, tempfile.TemporaryDirectory() as tmp:
        for i, (study, label, cfg) in enumerate(jobs):
            rec = {"study": study, "label": label, "config": cfg.model_dump()}
            for prec in ("int8", "fp32"):
                m = measure_kernel(prof, cfg, prec, Path(tmp))
                rec[prec] = {"latency_ms": m.latency_ms, "median_ms": m.median_ms, "stable": m.stable, "ok": m.ok,
                             "error": m.error}
            if rec["int8"]["ok"] and rec["fp32"]["ok"]:
                rec["speedup"] = rec["fp32"]["latency_ms"] / rec["int8"]["latency_ms"]
            records.append(rec)
            if progress:
                progress(i + 1, len(jobs), rec)
        fp = prof.fingerprint.model_dump()
    result = {"backend": backend, "fingerprint": fp, "protocol": proto.model_dump(), "records": records}
    (out / f"{backend}.json").write_text(json.dumps(result, indent=1))
    write_report(result, out)
    return result


def _speedups(records, study):
    return [r for r in records if r["study"] == study and "speedup" in r]


def write_report(result: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    be, recs = result["backend"], result["records"]
    paper_col = 0 if be == "onnxruntime-cpu" else 1
    paper_dev = "Intel VNNI (onnxruntime)" if paper_col == 0 else "Pixel4 (TFLite)"
    fp = result["fingerprint"]
    lines = [f"# INT8 speedup over FP32: {be}", "",
             f"Device: {fp['cpu_model']} ({fp['arch']}, flags {', '.join(fp['flags']) or 'none'}), "
             f"{fp['runtime']} {fp['runtime_version']}, one core, batch 1. Speedup = FP32 / INT8 latency "
             f"(estimator {result['protocol']['estimator']}). Paper column: {paper_dev}.", "",
             "## Per operator (paper Table 1)", "", "| operator | ours | paper | instances |", "|---|---|---|---|"]
    for op, paper in PAPER_TABLE1.items():
        s = [r["speedup"] for r in _speedups(recs, "table1") if r["label"] == op]
        lines.append(f"| {op} | {mean(s):.2f}x | {paper[paper_col]}x | {len(s)} |" if s else f"| {op} | n/a | | 0 |")
    lines += ["", "## Per kernel size, H=W=56, C=96 (paper Table 8)", "",
              "| kernel | Conv ours | Conv paper | DWConv ours | DWConv paper |", "|---|---|---|---|---|"]
    t8 = {r["label"]: r["speedup"] for r in _speedups(recs, "table8")}
    for k, paper in PAPER_TABLE8.items():
        pc, pd = (paper[0], paper[1]) if paper_col == 0 else (paper[2], paper[3])
        lines.append(f"| {k} | {t8.get(f'Conv k{k}', float('nan')):.2f}x | {pc}x | "
                     f"{t8.get(f'DWConv k{k}', float('nan')):.2f}x | {pd}x |")
    for study, title, fname in (("fig3", "Conv1x1, HW=28, Cout=4Cin (paper Fig. 3)", f"{be}-conv1x1.png"),
                                ("fig9", "DWConv3x3, HW=56 (paper Fig. 9)", f"{be}-dwconv3x3.png")):
        rs = _speedups(recs, study)
        cs = [int(r["label"]) for r in rs]
        fig, ax = plt.subplots(1, 2, figsize=(9, 3.2))
        ax[0].plot(cs, [r["int8"]["latency_ms"] for r in rs], "o-", ms=3, label="INT8")
        ax[0].plot(cs, [r["fp32"]["latency_ms"] for r in rs], "s-", ms=3, label="FP32")
        ax[0].set_xlabel("channels (Cin)")
        ax[0].set_ylabel("latency (ms)")
        ax[0].legend()
        ax[1].plot(cs, [r["speedup"] for r in rs], "o-", ms=3, color="C2")
        ax[1].axhline(1.0, color="grey", lw=0.8)
        ax[1].set_xlabel("channels (Cin)")
        ax[1].set_ylabel("INT8 speedup (x)")
        fig.suptitle(f"{title}: {be}", fontsize=10)
        fig.tight_layout()
        fig.savefig(out / fname, dpi=80)
        plt.close(fig)
        lines += ["", f"## {title}", "", f"![{study}]({fname})", "",
                  "| Cin | INT8 ms | FP32 ms | speedup |", "|---|---|---|---|"]
        lines += [f"| {r['label']} | {r['int8']['latency_ms']:.4f} | {r['fp32']['latency_ms']:.4f} | {r['speedup']:.2f}x |"
                  for r in rs]
    unstable = sum(1 for r in recs for p in ("int8", "fp32") if not r[p]["stable"])
    lines += ["", f"{len(recs)} configurations, {2 * len(recs)} measurements, {unstable} flagged unstable "
              "(kept, marked in the JSON)."]
    (out / f"{be}.md").write_text("\n".join(lines) + "\n")
