"""Kernel features for the random-forest predictors (one forest per kernel type).

nn-Meter's features (conv/dwconv: HW, Cin, Cout, k, stride, FLOPs, params; fc: Cin, Cout, FLOPs;
se/activations/pooling/add: HW, C) plus what INT8 needs: the output size, and channel-alignment
features (C mod 8, C mod 16): INT8 kernels are vectorised over channel blocks, and the paper's
Fig. 9 shows latency steps at multiples of 8 (Pixel 4) and 16 (VNNI), which a forest can only learn
from a feature that exposes them. The activation is part of the kernel type, so each activation
gets its own forest.
"""
from __future__ import annotations

import numpy as np

from exporters.kernel_config import KernelConfig
from spaces.network import conv_out

CONV = ("hw", "cin", "cout", "kernel", "stride", "mflops", "kparams", "out_hw", "cin_mod8", "cin_mod16",
        "cout_mod8", "cout_mod16")
DWCONV = ("hw", "cin", "kernel", "stride", "mflops", "out_hw", "cin_mod8", "cin_mod16")
SE = ("hw", "cin", "mid", "cin_mod8", "cin_mod16")
ELEMENTWISE = ("hw", "cin", "cin_mod8", "cin_mod16")
POOL = ("hw", "cin")
FC = ("cin", "cout", "mflops")


def feature_names(kernel_type: str) -> tuple[str, ...]:
    op = kernel_type.split("-")[0]
    return {"conv": CONV, "dwconv": DWCONV, "se": SE, "add": ELEMENTWISE, "act": ELEMENTWISE, "global": POOL,
            "fc": FC, "maxpool": DWCONV, "avgpool": DWCONV, "concat": CONV}[op]


def _value(c: KernelConfig, name: str) -> float:
    o = conv_out(c.hw, c.kernel, c.stride)
    if name == "out_hw":
        return o
    if name == "mflops":
        if c.op == "conv":
            return c.kernel * c.kernel * c.cin * c.cout * o * o / 1e6
        if c.op in ("dwconv", "maxpool", "avgpool"):
            return c.kernel * c.kernel * c.cin * o * o / 1e6
        return c.cin * c.cout / 1e6
    if name == "kparams":
        return c.kernel * c.kernel * c.cin * c.cout / 1e3
    if name.endswith(("_mod8", "_mod16")):
        field, mod = name.split("_mod")
        return getattr(c, field) % int(mod)
    return getattr(c, name)


def features(configs: list[KernelConfig]) -> np.ndarray:
    """Feature matrix of configs that all share one kernel type."""
    if not configs:
        return np.zeros((0, 0))
    names = feature_names(configs[0].type)
    if any(c.type != configs[0].type for c in configs):
        raise ValueError("features: all configs must share one kernel type")
    return np.array([[_value(c, n) for n in names] for c in configs], dtype=np.float64)


def feature_ranges(kernel_type: str, X: np.ndarray) -> dict[str, list[float]]:
    """[min, max] of each size feature of the rows ``X`` (the alignment residues are left out: any value of
    them is inside their period)."""
    return {n: [float(X[:, i].min()), float(X[:, i].max())] for i, n in enumerate(feature_names(kernel_type))
            if "_mod" not in n}
