"""Probe-normalized latency: a network's records divided by the machine's speed in the same minutes.

Every round of an evaluation already keeps the reference probe that ran right after it (``probe_ms``: a fixed
256^3 float32 matmul on the measuring core, see :mod:`profilers.protocol`). On a shared VM the probe and the
networks slow down together: on the Intel host of family 6, model 167 (2026-11-25) blocks whose probe read 0.206-0.208 ms
had the kernel sum within +-3% of the measurement, blocks at 0.219-0.222 ms were 8-13% under it. A network's
*probe-normalized* latency is ``ref_ms x min over rounds of (round / probe after it)``: what the network would
take when the probe takes ``ref_ms``, the median probe of the predictor's own calibration set, so that the
comparison is made in the machine state the calibration was fitted in.

This is a diagnostic, reported beside the measured figures and never instead of them: a user's device runs
at whatever speed it has, and the acceptance figure is judged against that. What it tells is how much of a
miss is the VM's phase. It is not the anchor network of :mod:`predictors.anchor` (a small INT8 subnet measured
at the block's edges, which added noise on the Zen 4 host): the probe is measured after every round of every
network, on the same core, at no extra cost. Whether it helps is host-dependent and is measured, not assumed:
see the README's "Accuracy so far" for the hosts where it did and did not.
"""
from __future__ import annotations

import numpy as np


def probe_ratio(rec: dict) -> float | None:
    """The fastest over rounds of the network's latency over the probe after it; None without a probe per round."""
    r, p = rec.get("rounds_ms"), rec.get("probe_ms")
    if not r or not p or len(p) != len(r):  # pooled runs concatenate rounds, not probes: no pairing is left
        return None
    x = np.array(r, float) / np.array([v if v else np.nan for v in p], float)
    x = x[np.isfinite(x) & (x > 0)]
    return float(x.min()) if len(x) else None


def reference_probe_ms(recs: list[dict]) -> float | None:
    """The median probe over every round of a set of records: the machine state the set was measured in."""
    vals = [float(v) for r in recs for v in (r.get("probe_ms") or []) if v and np.isfinite(v)]
    return float(np.median(vals)) if vals else None


def normalized_ms(rec: dict, ref_ms: float) -> float | None:
    """The network's latency in the machine state where the probe takes ``ref_ms``; None without probes."""
    q = probe_ratio(rec)
    return None if q is None else ref_ms * q
