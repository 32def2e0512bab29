"""CPU facts that decide the INT8 recipe (and that profilers put into a device fingerprint)."""
from __future__ import annotations

import platform
from functools import lru_cache
from pathlib import Path

from pydantic import BaseModel

INTERESTING_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8", "avx512_bf16",
                     "asimddp", "i8mm")


class CpuInfo(BaseModel):
    model: str
    arch: str
    flags: list[str]
    cores: int
    #: x86 CPUID family and model (``cpu family`` / ``model`` in /proc/cpuinfo). Cloud VMs often report a bare
    #: brand ("AMD EPYC"): then these are what tells a Zen 4 from a Zen 5, whose INT8 kernels differ.
    family: int | None = None
    model_id: int | None = None

    @property
    def vnni(self) -> bool:
        return "avx512_vnni" in self.flags or "avx_vnni" in self.flags or "amx_int8" in self.flags


@lru_cache(maxsize=1)
def cpu_info(cpuinfo_path: str = "/proc/cpuinfo") -> CpuInfo:
    model, flags = platform.processor() or "unknown", set()
    family = model_id = None
    p = Path(cpuinfo_path)
    if p.exists():
        for line in p.read_text(errors="replace").splitlines():
            key, _, val = line.partition(":")
            key = key.strip().lower()
            if key in ("model name", "hardware", "cpu model") and model in ("unknown", "", platform.processor()):
                model = val.strip()
            elif key in ("flags", "features"):
                flags.update(val.split())
            elif key == "cpu family" and family is None and val.strip().isdigit():
                family = int(val)
            elif key == "model" and model_id is None and val.strip().isdigit():
                model_id = int(val)
    import os

    return CpuInfo(model=model, arch=platform.machine(), flags=sorted(f for f in flags if f in INTERESTING_FLAGS),
                   cores=os.cpu_count() or 1, family=family, model_id=model_id)
