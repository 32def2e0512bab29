"""INT8 recipes for onnxruntime static quantization, and the per-CPU default.

String form (CLI, job payloads): ``<format>-<act><weight>[-pc][-rr]``, e.g. ``qdq-u8s8-pc-rr``:
format ``qdq`` or ``qoperator``; activation/weight types ``u8s8``, ``s8s8`` or ``u8u8``; ``pc``
per-channel weights; ``rr`` reduce_range (7-bit weights). ``auto`` picks :func:`default_recipe`.

Why the default differs per CPU: on x86 without VNNI, onnxruntime's U8S8 kernels use
``vpmaddubsw``, whose 16-bit intermediate sums can saturate; onnxruntime's documentation
recommends ``reduce_range`` there. With VNNI (``vpdpbusd``) there is no saturation and full range
is both faster and more accurate.
"""
from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel

from spaces import SpaceError

from .cpu import CpuInfo, cpu_info

_RE = re.compile(r"^(qdq|qoperator)-(u8s8|s8s8|u8u8)((?:-pc|-rr)*)$")


class QuantRecipe(BaseModel):
    format: Literal["qdq", "qoperator"] = "qdq"
    activation: Literal["u8", "s8"] = "u8"
    weight: Literal["s8", "u8"] = "s8"
    per_channel: bool = True
    reduce_range: bool = False

    def to_string(self) -> str:
        s = f"{self.format}-{self.activation}{self.weight}"
        return s + ("-pc" if self.per_channel else "") + ("-rr" if self.reduce_range else "")

    @classmethod
    def parse(cls, text: str, cpu: CpuInfo | None = None) -> "QuantRecipe":
        if text == "auto":
            return default_recipe(cpu)
        m = _RE.match(text.strip().lower())
        if not m:
            raise SpaceError("recipe", text, "'auto' or '<qdq|qoperator>-<u8s8|s8s8|u8u8>[-pc][-rr]', "
                             "e.g. 'qdq-u8s8-pc-rr'")
        flags = m.group(3)
        return cls(format=m.group(1), activation=m.group(2)[:2], weight=m.group(2)[2:],
                   per_channel="-pc" in flags, reduce_range="-rr" in flags)


def default_recipe(cpu: CpuInfo | None = None) -> QuantRecipe:
    """U8S8 QDQ per-channel everywhere; reduce_range on x86 CPUs without VNNI."""
    cpu = cpu or cpu_info()
    x86 = cpu.arch in ("x86_64", "AMD64", "i686")
    return QuantRecipe(reduce_range=x86 and not cpu.vnni)
