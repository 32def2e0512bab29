"""An anchor network measured beside every block of an evaluation: ground truth that a VM's slow phases do not move.

Why: on a shared VM the machine as a whole gets faster or slower for minutes at a time. The AMD EPYC Zen 5
calibration set was measured twice by the same protocol, 15 minutes apart; the two runs agreed within +-10% for only
77.5% of the 80 networks. Their disagreement was mostly shared by the networks measured together: grouped in the
blocks of 8 that :func:`predictors.evaluate.evaluate` measures interleaved, the log-ratio second/first had a standard
deviation of 0.058 between block medians against 0.036 within blocks, and dividing out each block's median left
96% of networks agreeing within +-10%. A block's own median cannot be used on one network, but a fixed network
measured in the same minutes can: the *anchor*. It is measured at the start of every round of a block and once after
the last, and each round of a network is divided by the geometric mean of the anchor before and after it.

``anchored_ms = ref_ms * median over rounds of (network / anchor)``: the latency the network would have had with
the machine in the state in which the anchor took ``ref_ms``. A calibration records the median anchor of its own
set as ``ref_ms`` (:class:`predictors.calibration.ModelCalibration.anchor_ref_ms`), and an evaluation of that
predictor uses the same ``ref_ms``, so calibration and evaluation are judged in one machine state. Raw latencies
are kept beside the anchored ones in every record and report.

Measured on the AMD EPYC Zen 4 host (onnxruntime, 40 calibration networks measured twice 15 minutes apart), it did
*not* help. The raw fastest-of-3 agreed with itself within +-10% for 85.0% of the networks; anchored, for 62.5%.
A calibration fitted to anchored latencies reached 75.0% out of fold, against 93.8% fitted to raw ones. The anchor
moved from 2.54 to 3.05 ms (p10-p90) from second to second, like the networks themselves, so dividing by it added
its noise. It is therefore off by default (``eval --anchor``, ``calibrate --anchored``), kept so that the test can be
repeated on a host whose noise is in slow phases.
"""
from __future__ import annotations

import math

import numpy as np

# A small, fixed subnet per backend: the min subnet of the published search space of the backend's hyperspace
# (SEQnet@vnni-A0's and SEQnet@pixel4-A0's space), about 4 ms and 1.4 ms on the Zen 4: cheap to measure every round.
ANCHOR_SPACES = {"onnxruntime-cpu": "onnxw-151122-023231", "tflite-cpu": "mobilew-122222-155400"}


def anchor_item(backend: str) -> tuple[str, str, str]:
    """(name, space, arch) of ``backend``'s anchor network."""
    from spaces import SearchSpace
    from spaces.sampling import sample_subnet

    if backend not in ANCHOR_SPACES:
        raise ValueError(f"anchor: no anchor network for backend {backend!r}; allowed: {', '.join(ANCHOR_SPACES)}")
    sp = SearchSpace.parse(ANCHOR_SPACES[backend])
    return "anchor", sp.to_string(), sample_subnet(sp, "min").to_string()


def brackets(anchor_rounds_ms: list[float]) -> list[float]:
    """The anchor's latency during each round: geometric mean of its measurement before and after the round."""
    a = anchor_rounds_ms
    return [math.sqrt(a[i] * a[i + 1]) if a[i] and a[i + 1] else float("nan") for i in range(len(a) - 1)]


def ratio(rec: dict) -> float | None:
    """Median over rounds of the network's latency over the anchor's in the same round; None without anchors."""
    a = rec.get("anchor_rounds_ms")
    r = rec.get("rounds_ms")
    if not a or not r or len(a) < len(r) + 1:
        return None
    x = np.array(r) / np.array(brackets(a)[:len(r)])
    x = x[np.isfinite(x)]
    return float(np.median(x)) if len(x) else None


def reference_ms(recs: list[dict]) -> float | None:
    """The median anchor latency over a set of records: each record's brackets, so a block weighs as its networks."""
    vals = [v for r in recs if r.get("anchor_rounds_ms") for v in brackets(r["anchor_rounds_ms"]) if np.isfinite(v)]
    return float(np.median(vals)) if vals else None


def anchored_ms(rec: dict, ref_ms: float) -> float | None:
    """The network's latency in the machine state where the anchor takes ``ref_ms``; None without anchors."""
    q = ratio(rec)
    return None if q is None else ref_ms * q
