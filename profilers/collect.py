"""Resumable kernel data collection: plan -> export each kernel model -> measure -> append.

``out/plan.json`` fixes the list of (config, precision) to measure (written once, atomically);
``out/measurements.jsonl`` is the :class:`profilers.dataset.Dataset`. Restarting with the same
``out`` continues where the last run stopped: done keys are skipped, a torn last line is cut, and
at most the kernel that was in flight when the process died is measured again.
"""
from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterable

from exporters.kernel_models import KernelConfig, export_kernel

from .boundary import measure_boundary
from .fingerprint import Fingerprint, device_slug, local_fingerprint
from .prefetch import Prefetcher, under_prefetch
from .dataset import Dataset, KernelRecord, record_key, write_json_atomic
from .measurement import Measurement
from .protocol import Protocol
from .runners import BACKENDS
from .samplers import fine_grained, prior_configs
from .worker import Profiler

FORMAT = {"onnxruntime-cpu": "onnx", "tflite-cpu": "tflite", "tflite-android": "tflite"}
KERNEL_PROTOCOL = Protocol(budget_s=3.0, min_rounds=3, min_duration_s=1.0)


def make_plan(kernel_types: Iterable[str], per_type: int, precisions: Iterable[str], seed: int = 0,
              refine: Iterable[KernelConfig] = ()) -> list[tuple[KernelConfig, str]]:
    return _plan(kernel_types, per_type, precisions, seed, refine)[0]


def _plan(kernel_types, per_type, precisions, seed, refine):
    """(plan, the configs added around ``refine``): priors interleaved by type, then refine neighbours."""
    configs: list[KernelConfig] = []
    for t in kernel_types:
        configs += prior_configs(t, per_type, seed)
    extra = fine_grained(list(refine), exclude=configs, seed=seed)
    configs += extra
    # interleave types so that a short budget still covers every type
    by_type: dict[str, list[KernelConfig]] = {}
    for c in configs:
        by_type.setdefault(c.type, []).append(c)
    order: list[KernelConfig] = []
    while any(by_type.values()):
        for t in list(by_type):
            if by_type[t]:
                order.append(by_type[t].pop(0))
    return [(c, p) for c in order for p in precisions], set(extra)


def export_kernel_model(cfg: KernelConfig, precision: str, backend: str, workdir: Path) -> Path:
    path = workdir / f"{cfg.slug()}.{precision}.{FORMAT[backend]}"
    export_kernel(cfg, FORMAT[backend], path, fp32=precision == "fp32")
    return path


def measure_exported(profiler: Profiler, exported: Path | Exception, protocol: Protocol | None = None) -> Measurement:
    """Measure a kernel model exported by :func:`export_kernel_model` (an export failure is data too)."""
    if isinstance(exported, Exception):
        return Measurement.failure(profiler.backend, "", "export-error", f"{type(exported).__name__}: {exported}")
    try:
        return profiler.measure(exported, protocol)
    finally:
        exported.unlink(missing_ok=True)


def measure_kernel(profiler: Profiler, cfg: KernelConfig, precision: str, workdir: Path,
                   protocol: Protocol | None = None) -> Measurement:
    try:
        exported: Path | Exception = export_kernel_model(cfg, precision, profiler.backend, workdir)
    except Exception as e:  # an export failure is data too: record it, keep going
        exported = e
    return measure_exported(profiler, exported, protocol)


OVERHEAD_KERNEL = KernelConfig(type="act-relu", hw=1, cin=8)


def measure_overhead(backend: str, out: str | Path, core: int | None = None) -> dict:
    """Per-invocation overhead of the runtime: the latency of a near-empty INT8 model.

    Every kernel is measured as its own model and pays this once; a whole network pays it once too,
    not once per kernel. Predictors subtract it from each kernel and add it back per model.
    Written to ``out/overhead.json``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with Profiler(backend, core=core, protocol=KERNEL_PROTOCOL) as prof, tempfile.TemporaryDirectory() as tmp:
        ms = [measure_kernel(prof, OVERHEAD_KERNEL, "int8", Path(tmp)) for _ in range(3)]
    ok = [m.latency_ms for m in ms if m.ok]
    if not ok:
        raise RuntimeError(f"overhead measurement failed on {backend}: {ms[0].error}")
    doc = {"backend": backend, "overhead_ms": min(ok), "runs": ok, "config": OVERHEAD_KERNEL.model_dump(),
           "fingerprint": ms[0].fingerprint.model_dump() if ms[0].fingerprint else None}
    if backend == "onnxruntime-cpu":
        doc["boundary"] = measure_boundary(backend, core=core).model_dump()
    write_json_atomic(out / "overhead.json", doc)
    return doc


def update_boundary(out: str | Path, core: int | None = None) -> dict:
    """Add (or re-measure) the quantize/dequantize boundary of an onnxruntime dataset's overhead.json."""
    path = Path(out) / "overhead.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no overhead.json (run collect, which measures it first)")
    doc = json.loads(path.read_text())
    check_same_device(Path(out), doc["backend"], core)  # a boundary belongs to the machine the kernels ran on
    doc["boundary"] = measure_boundary(doc["backend"], core=core).model_dump()
    write_json_atomic(path, doc)
    return doc


def check_same_device(out: Path, backend: str, core: int | None = None) -> None:
    """Refuse to mix devices in one dataset: its overhead.json names the device it was measured on."""
    oh = out / "overhead.json"
    if not oh.is_file():
        return
    fp = json.loads(oh.read_text()).get("fingerprint")
    if not fp:
        return
    theirs, ours = device_slug(Fingerprint(**fp)), device_slug(local_fingerprint(backend, core))
    if theirs != ours:
        raise ValueError(f"{out}: this dataset was measured on {theirs!r}, this host is {ours!r}; "
                         f"collect into data/kernels/{ours}/{backend} instead")


def collect(backend: str, kernel_types: list[str], out: str | Path, per_type: int = 50,
            precisions: tuple[str, ...] = ("int8",), budget_s: float | None = None, seed: int = 0,
            refine: Iterable[KernelConfig] = (), protocol: Protocol | None = None, core: int | None = None,
            progress: Callable[[int, int, KernelRecord | None], None] | None = None) -> Dataset:
    if backend not in BACKENDS:
        raise ValueError(f"backend: {backend!r} is not allowed; allowed: {', '.join(BACKENDS)}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    plan_path = out / "plan.json"
    plan, refined = _plan(kernel_types, per_type, precisions, seed, refine)
    if plan_path.exists():
        old = json.loads(plan_path.read_text())
        known = {(json.dumps(c, sort_keys=True), p) for c, p in old["items"]}
        plan = [(KernelConfig(**c), p) for c, p in old["items"]] + [
            (c, p) for c, p in plan if (json.dumps(c.model_dump(), sort_keys=True), p) not in known]
    write_json_atomic(plan_path, {"backend": backend, "seed": seed, "items": [(c.model_dump(), p) for c, p in plan]})
    ds = Dataset(out / "measurements.jsonl")
    oh = out / "overhead.json"
    check_same_device(out, backend, core)
    if not oh.exists():
        measure_overhead(backend, out, core)
    elif backend == "onnxruntime-cpu" and "boundary" not in json.loads(oh.read_text()):
        update_boundary(out, core)
    todo = [(c, p) for c, p in plan if record_key(c, p) not in ds]
    # what this call asks for comes first: refine neighbours, then the requested types, then leftovers of
    # earlier plans in the same folder
    requested = set(kernel_types)
    todo.sort(key=lambda cp: (cp[0] not in refined, cp[0].type not in requested))
    deadline = time.monotonic() + budget_s if budget_s else None
    done = len(plan) - len(todo)
    if progress:
        progress(done, len(plan), None)
    with Profiler(backend, core=core, protocol=under_prefetch(protocol or KERNEL_PROTOCOL)) as prof, \
            tempfile.TemporaryDirectory() as tmp:
        # the next kernels are exported on the other cores while this one is measured (see prefetch)
        for (cfg, prec), exported in Prefetcher(lambda cp: export_kernel_model(cp[0], cp[1], backend, Path(tmp)),
                                                todo, avoid_core=prof.core):
            if deadline is not None and time.monotonic() > deadline:
                break
            m = measure_exported(prof, exported)
            rec = KernelRecord(config=cfg, precision=prec, backend=backend, measurement=m)
            ds.append(rec)
            done += 1
            if progress:
                progress(done, len(plan), rec)
    return ds
