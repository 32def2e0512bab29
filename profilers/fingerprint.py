"""Device fingerprint: what a measurement was taken on (CPU, flags, runtimes, frequency policy).

Stored with every record so that a predictor can refuse data from a different machine, and so that
the service can tell when a host differs from the one the bundled predictors were trained on.
"""
from __future__ import annotations

import hashlib
import json
import platform
import socket
from functools import lru_cache
from importlib import metadata
from pathlib import Path

from pydantic import BaseModel

from exporters.cpu import cpu_info


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


class Fingerprint(BaseModel):
    backend: str
    cpu_model: str
    arch: str
    flags: list[str]
    cores: int
    core: int | None = None
    runtime: str
    runtime_version: str | None
    governor: str | None = None
    freq_khz: int | None = None
    freq_min_khz: int | None = None
    freq_max_khz: int | None = None
    os: str
    hostname: str
    android: dict[str, str] | None = None

    def hash(self) -> str:
        """Identity of the hardware + runtime (not of the moment: frequency and host excluded)."""
        key = {k: getattr(self, k) for k in ("backend", "cpu_model", "arch", "flags", "runtime", "runtime_version")}
        if self.android:
            key["android"] = {k: self.android.get(k) for k in ("model", "soc")}
        return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


RUNTIMES = {"onnxruntime-cpu": ("onnxruntime", "onnxruntime"), "tflite-cpu": ("litert", "ai-edge-litert")}


@lru_cache(maxsize=8)
def local_fingerprint(backend: str, core: int | None = None) -> Fingerprint:
    cpu = cpu_info()
    runtime, dist = RUNTIMES.get(backend, (backend, backend))
    c = 0 if core is None else core
    base = f"/sys/devices/system/cpu/cpu{c}/cpufreq/"
    as_int = lambda s: int(s) if s and s.isdigit() else None  # noqa: E731
    return Fingerprint(
        backend=backend, cpu_model=cpu.model, arch=cpu.arch, flags=cpu.flags, cores=cpu.cores, core=core,
        runtime=runtime, runtime_version=_version(dist), governor=_read(base + "scaling_governor"),
        freq_khz=as_int(_read(base + "scaling_cur_freq")), freq_min_khz=as_int(_read(base + "scaling_min_freq")),
        freq_max_khz=as_int(_read(base + "scaling_max_freq")),
        os=f"{platform.system()} {platform.release()}", hostname=socket.gethostname(),
    )


def device_slug(fp: Fingerprint) -> str:
    """A short, path-safe name for the hardware of a fingerprint, e.g. ``intel-xeon-2.80ghz-vnni`` or
    ``amd-epyc-avx2``: the folder that a device's kernel data and bundled predictors live in.

    Sessions of this project land on different machines (an AMD EPYC without VNNI, an Intel Xeon with
    AVX-512 VNNI); data from one must never train the predictor of the other."""
    import re

    model = re.sub(r"\((r|tm)\)", "", fp.cpu_model.lower())
    model = re.sub(r"\b(processor|cpu|with radeon graphics)\b", " ", model)
    model = re.sub(r"[^a-z0-9.]+", "-", model).strip("-") or "unknown-cpu"
    flags = set(fp.flags)
    isa = ("vnni" if flags & {"avx512_vnni", "avx_vnni", "amx_int8"} else "avx512" if "avx512f" in flags
           else "avx2" if "avx2" in flags else "dotprod" if "asimddp" in flags else fp.arch)
    if fp.android:
        model = re.sub(r"[^a-z0-9.]+", "-", (fp.android.get("model") or model).lower()).strip("-")
    # path- and URL-safe whatever the CPU or Android reports, and short enough for a device name column
    return re.sub(r"[^a-z0-9.+-]+", "-", f"{model[:48].strip('-.')}-{isa}".lower()).strip("-.")
