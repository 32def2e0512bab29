"""What a kernel forest learns: the latency, its log, or the log of latency per unit of work.

A forest predicts by averaging training targets, so it cannot extrapolate: asked about a conv twice
as large as any it saw, a forest on ``ms`` answers with the largest latency it knows. ``log_ms_per_work``
divides out a crude work count first (MFLOPs plus millions of elements read and written), so what
the forest averages is an *efficiency*, which changes slowly with shape; the exact work count of the
asked config is multiplied back in. Training picks, per kernel type, whichever target has the
lowest held-out RMSPE, and the choice is stored in the artifact.
"""
from __future__ import annotations

import numpy as np

from exporters.kernel_config import KernelConfig

TARGETS = ("ms", "log_ms", "log_ms_per_work")


def work(configs: list[KernelConfig]) -> np.ndarray:
    """MFLOPs (multiply-adds) plus millions of elements read and written, per config."""
    from profilers.boundary import kernel_elements

    from .features import _value

    out = np.empty(len(configs))
    for i, c in enumerate(configs):
        n_in, n_out = kernel_elements(c)
        mflops = _value(c, "mflops") if c.op in ("conv", "dwconv", "fc", "maxpool", "avgpool") else 0.0
        if c.op == "se":
            mflops = 2 * c.cin * c.mid / 1e6
        out[i] = mflops + (n_in + n_out) / 1e6
    return np.maximum(out, 1e-6)


def to_target(name: str, y_ms: np.ndarray, configs: list[KernelConfig]) -> np.ndarray:
    if name == "ms":
        return y_ms
    if name == "log_ms":
        return np.log(y_ms)
    if name == "log_ms_per_work":
        return np.log(y_ms / work(configs))
    raise ValueError(f"target: {name!r} is not allowed; allowed: {', '.join(TARGETS)}")


def from_target(name: str, t: np.ndarray, configs: list[KernelConfig]) -> np.ndarray:
    if name == "ms":
        return t
    if name == "log_ms":
        return np.exp(t)
    if name == "log_ms_per_work":
        return np.exp(t) * work(configs)
    raise ValueError(f"target: {name!r} is not allowed; allowed: {', '.join(TARGETS)}")
