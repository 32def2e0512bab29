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
    cpu_family: int | None = None
    cpu_model_id: int | None = None
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
        # added later: part of the identity only where known, so that older records keep their hash
        key.update({k: getattr(self, k) for k in ("cpu_family", "cpu_model_id") if getattr(self, k) is not None})
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
        backend=backend, cpu_model=cpu.model, arch=cpu.arch, cpu_family=cpu.family, cpu_model_id=cpu.model_id,
        flags=cpu.flags, cores=cpu.cores, core=core,
        runtime=runtime, runtime_version=_version(dist), governor=_read(base + "scaling_governor"),
        freq_khz=as_int(_read(base + "scaling_cur_freq")), freq_min_khz=as_int(_read(base + "scaling_min_freq")),
        freq_max_khz=as_int(_read(base + "scaling_max_freq")),
        os=f"{platform.system()} {platform.release()}", hostname=socket.gethostname(),
    )


def microarchitecture(vendor: str, family: int | None, model: int | None) -> str | None:
    """The core generation behind x86 CPUID family/model, for the CPUs this project's hosts are drawn from
    (cloud EPYC and Xeon); ``f<family>m<model>`` for the rest, None when the family is unknown.

    Values: AMD's family 17h/19h/1Ah model ranges and Intel's family-6 server models, as listed in the
    Linux kernel (arch/x86/include/asm/intel-family.h) and AMD's Processor Programming Reference manuals."""
    if family is None:
        return None
    m = model if model is not None else -1
    if "amd" in vendor:
        if family == 26:
            return "zen5"
        if family == 25:
            return "zen4" if 0x10 <= m <= 0x1F or 0x60 <= m <= 0x7F or 0xA0 <= m <= 0xAF else (
                "zen3" if 0 <= m <= 0x0F or 0x20 <= m <= 0x5F else f"f25m{model}")
        if family == 23:
            return "zen2" if m >= 0x30 else ("zen1" if m >= 0 else "f23")
    if "intel" in vendor and family == 6:
        names = {0x55: "skylake-x", 0x6A: "icelake-x", 0x6C: "icelake-x", 0x8F: "sapphirerapids",
                 0xCF: "emeraldrapids", 0xAD: "graniterapids", 0xAE: "graniterapids", 0xAF: "sierraforest"}
        if m in names:
            return names[m]
    return f"f{family}" + (f"m{model}" if model is not None else "")


def device_slug(fp: Fingerprint) -> str:
    """A short, path-safe name for the hardware of a fingerprint, e.g. ``intel-xeon-2.80ghz-vnni`` or
    ``amd-epyc-avx2``: the folder that a device's kernel data and bundled predictors live in.

    Sessions of this project land on different machines (an AMD EPYC without VNNI, an Intel Xeon with
    AVX-512 VNNI, a Zen 4 and a Zen 5 EPYC that both call themselves "AMD EPYC"); data from one must never
    train the predictor of the other. Where the brand names no model, the core generation is added from
    CPUID family/model (``amd-epyc-zen4-vnni``); brands with a model or a clock keep their old name."""
    import re

    model = re.sub(r"\((r|tm)\)", "", fp.cpu_model.lower())
    model = re.sub(r"\b(processor|cpu|with radeon graphics)\b", " ", model)
    model = re.sub(r"[^a-z0-9.]+", "-", model).strip("-") or "unknown-cpu"
    if not re.search(r"\d", model):
        # a bare brand ("AMD EPYC", as cloud VMs report it) names no CPU: a Zen 4 and a Zen 5 host both said
        # "AMD EPYC" here, and a predictor measured on one must not answer for the other
        uarch = microarchitecture(model, fp.cpu_family, fp.cpu_model_id)
        if uarch:
            model = f"{model}-{uarch}"
    flags = set(fp.flags)
    isa = ("vnni" if flags & {"avx512_vnni", "avx_vnni", "amx_int8"} else "avx512" if "avx512f" in flags
           else "avx2" if "avx2" in flags else "dotprod" if "asimddp" in flags else fp.arch)
    if fp.android:
        model = re.sub(r"[^a-z0-9.]+", "-", (fp.android.get("model") or model).lower()).strip("-")
    # path- and URL-safe whatever the CPU or Android reports, and short enough for a device name column
    return re.sub(r"[^a-z0-9.+-]+", "-", f"{model[:48].strip('-.')}-{isa}".lower()).strip("-.")
