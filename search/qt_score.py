"""The Q-T score of a search space (SpaceEvo eq. 2), vectorised over LUT samples.

Paper (section 3.2, eq. 2): ``Q(A, T_1..n) = sum_i Q(A, T_i)`` and ``Q(A, T_i)`` is the expected
quantized accuracy of the *top-tier* subnets of space ``A`` whose INT8 latency is under ``T_i``;
"we randomly sample 5k sub-networks and select top 20 that under the latency constraints".
Section 3.3: accuracy comes from the block-wise LUT ("we inverse the measured loss to approximate the
quantized accuracy"). Algorithm 1 adds a "latency_auc tradeoff alpha" that eq. 2 does not show; the
reference code (``BlockKDSearcher._eval_individual_one_latency``) defines it, and we follow it:

* sample ``n`` subnets (reference: 100,000; paper: 5,000). Each subnet draws one input resolution,
  then, per elastic stage, one LUT row of that stage's candidate at that resolution;
  latency = sum of stage latencies + the fixed part at that resolution; loss = sum of stage NSR losses.
* per constraint ``T``: ``share p = (#samples with latency <= T) / n + 1e-5`` (reference ``<=`` and
  epsilon); ``mean_top_loss`` = mean NSR loss of the ``top_k`` lowest-loss samples under ``T``
  (reference: 50; paper: 20); ``penalty = max(1, (t / p) ** a)`` with ``t = 0.1, a = 0.01``;
  ``Q(A, T) = 1 / (mean_top_loss * penalty)``. So the accuracy proxy is ``1 / mean_top_loss`` (the
  inverse of the averaged loss, as the reference does, not the average of inverses) and the penalty
  *divides* it: a space with fewer than 10% of its subnets under ``T`` loses a little (at p = 0.1%:
  4.7%), one with at least 10% loses nothing.
* no sample under ``T``: ``Q(A, T) = 0`` (the reference logs a warning and sets the loss to 1e5,
  i.e. a score of about 9e-6; 0 is the same ranking without the magic number).

One draw of ``n`` samples per space serves every constraint. All randomness comes from a
``numpy.random.Generator`` the caller seeds; :class:`LutEvaluator` seeds it from ``(seed, space)``, so
a space's score does not depend on when (or whether twice) it is evaluated.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from spaces import SearchSpace

from .lut import BlockLut, StageTable

#: Reference defaults (``BlockKDSearcher``): 100,000 samples, top 50, t = 0.1, a = 0.01.
REFERENCE_SAMPLES = 100_000
REFERENCE_TOP_K = 50
PAPER_SAMPLES = 5_000
PAPER_TOP_K = 20
LAT_T = 0.1
LAT_A = 0.01
P_EPS = 1e-5


@dataclass(frozen=True)
class QTSettings:
    """Everything the Q-T score of a space depends on, besides the space, the LUT and the seed."""

    constraints: tuple[float, ...]
    n_samples: int = REFERENCE_SAMPLES
    top_k: int = REFERENCE_TOP_K
    lat_t: float = LAT_T
    lat_a: float = LAT_A
    p_eps: float = P_EPS

    def __post_init__(self) -> None:
        if not self.constraints or any(not np.isfinite(c) or c <= 0 for c in self.constraints):
            raise ValueError(f"constraints: {self.constraints!r}; expected positive latencies in ms")
        if self.n_samples < 1 or not 1 <= self.top_k:
            raise ValueError(f"n_samples={self.n_samples}, top_k={self.top_k}; expected both >= 1")


def latency_penalty(p: float, t: float = LAT_T, a: float = LAT_A) -> float:
    """Reference latency loss ``max(1, (t / p) ** a)``: >1 only when fewer than a share ``t`` of the
    samples meet the constraint. ``p`` must be > 0 (callers add ``P_EPS``)."""
    return max(1.0, (t / p) ** a)


@dataclass(frozen=True)
class Samples:
    """``n`` subnets of one space drawn from the LUT (grouped by resolution; order carries no meaning)."""

    latency_ms: np.ndarray   # float32 [n]
    loss: np.ndarray         # float32 [n], summed NSR loss
    resolution: np.ndarray   # int32 [n]
    rows: np.ndarray | None = None  # int32 [n, stages]: row of each stage table (only with keep_rows)


def sample_subnets(tables: Sequence[StageTable], fixed_ms: dict[int, float], n: int, rng: np.random.Generator,
                   resolutions: Sequence[int], keep_rows: bool = False) -> Samples:
    """Draw ``n`` subnets: a uniform resolution each, then per stage a uniform row at that resolution.

    Drawing the per-resolution counts from a multinomial and then the rows resolution by resolution is
    the same distribution as drawing a resolution per subnet, but every draw is one scalar-bounded
    ``integers`` call and one gather per stage. ``keep_rows`` does not change what is drawn.
    """
    counts = rng.multinomial(n, np.full(len(resolutions), 1.0 / len(resolutions)))
    lat = np.empty(n, np.float32)
    loss = np.empty(n, np.float32)
    res = np.empty(n, np.int32)
    rows = np.empty((n, len(tables)), np.int32) if keep_rows else None
    pos = 0
    for r, m in zip(resolutions, counts.tolist()):
        seg = slice(pos, pos + m)
        lat_seg, loss_seg = lat[seg], loss[seg]
        lat_seg.fill(fixed_ms[r])
        loss_seg.fill(0.0)
        res[seg] = r
        for s, t in enumerate(tables):
            start, stop = t.slices[r]
            idx = rng.integers(start, stop, size=m)
            lat_seg += t.pred_int8_ms[idx]
            loss_seg += t.nsr_loss[idx]
            if rows is not None:
                rows[seg, s] = idx
        pos += m
    return Samples(lat, loss, res, rows)


@dataclass(frozen=True)
class ConstraintScore:
    """Figures of one latency constraint: ``score = 1 / (mean_top_loss * penalty)`` or 0 without samples."""

    constraint_ms: float
    n_under: int
    share: float            # p = n_under / n + p_eps
    penalty: float
    mean_top_loss: float | None
    acc_proxy: float        # 1 / mean_top_loss (0 without samples)
    score: float

    def to_json(self) -> dict:
        return {"constraint_ms": self.constraint_ms, "n_under": self.n_under, "share": self.share,
                "penalty": self.penalty, "mean_top_loss": self.mean_top_loss, "acc_proxy": self.acc_proxy,
                "score": self.score}


@dataclass(frozen=True)
class QTScore:
    score: float
    per_constraint: tuple[ConstraintScore, ...]
    min_ms: float  # smallest sampled latency (tells how far off a constraint is)

    def to_json(self) -> dict:
        return {"score": self.score, "min_sampled_ms": self.min_ms,
                "per_constraint": [c.to_json() for c in self.per_constraint]}


def top_under(latency_ms: np.ndarray, loss: np.ndarray, constraint: float, k: int) -> np.ndarray:
    """Indices of the (at most) ``k`` lowest-loss samples with latency <= constraint, best first."""
    under = np.flatnonzero(latency_ms <= constraint)
    if len(under) > k:
        under = under[np.argpartition(loss[under], k - 1)[:k]]
    return under[np.argsort(loss[under], kind="stable")]


def qt_score(samples: Samples, settings: QTSettings) -> QTScore:
    """Sum over the constraints of ``1 / (mean top-k loss under T * penalty)`` (see module doc)."""
    lat, loss = samples.latency_ms, samples.loss
    n = len(lat)
    parts = []
    for c in settings.constraints:
        mask = lat <= c
        n_under = int(np.count_nonzero(mask))
        p = n_under / n + settings.p_eps
        penalty = latency_penalty(p, settings.lat_t, settings.lat_a)
        if n_under == 0:
            parts.append(ConstraintScore(float(c), 0, p, penalty, None, 0.0, 0.0))
            continue
        sel = loss[mask]
        k = min(settings.top_k, n_under)
        top = np.partition(sel, k - 1)[:k] if k < n_under else sel
        mean_top = float(top.mean(dtype=np.float64))
        proxy = 1.0 / max(mean_top, 1e-12)
        parts.append(ConstraintScore(float(c), n_under, p, penalty, mean_top, proxy, proxy / penalty))
    return QTScore(float(sum(x.score for x in parts)), tuple(parts), float(lat.min()) if n else float("nan"))


def reference_qt_score(latency_ms: Sequence[float], loss: Sequence[float], settings: QTSettings) -> float:
    """A plain-Python transcription of the reference loop (sort by latency, binary search, sort the
    rest by loss, average the top, divide), for tests of the vectorised :func:`qt_score`."""
    samples = sorted(zip(map(float, latency_ms), map(float, loss)))
    total = 0.0
    for c in settings.constraints:
        end = sum(1 for s in samples if s[0] <= c)
        p = end / len(samples) + settings.p_eps
        penalty = max(1.0, (settings.lat_t / p) ** settings.lat_a)
        if end == 0:
            continue
        top = sorted(s[1] for s in samples[:end])[: settings.top_k]
        total += 1.0 / ((sum(top) / len(top)) * penalty)
    return total


# --- the LUT latency source ---------------------------------------------------------------------------
def space_key(space: SearchSpace) -> list[int]:
    """Entropy words of a space for its private random stream: hyperspace id, blocks, windows."""
    return [zlib.crc32(space.hyperspace.name.encode()), *space.blocks, *space.windows]


@dataclass
class LutEvaluator:
    """Q-T scores of spaces from the block LUT, memoised: ``evaluator(space) -> score``.

    Latency source ``lut``: stage latencies are the table's ``pred_int8_ms`` (the paper's predictor on
    the paper's device) and the fixed parts (first_conv, stage0, head) are ``fixed_ms[resolution]``,
    a stated assumption (default 0 ms: the LUT does not hold them; the reference predicts them for the
    smallest first_conv/stage0/head with its latency predictor).

    The samples of a space come from ``default_rng([seed, *space_key(space)])``: a re-evaluation gives
    the same score, and evolution and random search score a space they both meet identically.
    """

    lut: BlockLut
    settings: QTSettings
    fixed_ms: dict[int, float]
    seed: int = 0
    cache: dict[str, QTScore] = field(default_factory=dict, repr=False)
    on_evaluate: Callable[[SearchSpace, QTScore], None] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        missing = [r for r in self.lut.resolutions if r not in self.fixed_ms]
        if missing:
            raise ValueError(f"fixed_ms lacks resolutions {missing}; the LUT has rows at {list(self.lut.resolutions)}")

    def rng(self, space: SearchSpace) -> np.random.Generator:
        return np.random.default_rng([self.seed, *space_key(space)])

    def samples(self, space: SearchSpace, keep_rows: bool = False) -> Samples:
        return sample_subnets(self.lut.space_tables(space), self.fixed_ms, self.settings.n_samples, self.rng(space),
                              self.lut.resolutions, keep_rows)

    def evaluate(self, space: SearchSpace) -> QTScore:
        key = space.to_string()
        hit = self.cache.get(key)
        if hit is None:
            hit = self.cache[key] = qt_score(self.samples(space), self.settings)
            if self.on_evaluate is not None:
                self.on_evaluate(space, hit)
        return hit

    def __call__(self, space: SearchSpace) -> float:
        return self.evaluate(space).score

    def best_subnets(self, space: SearchSpace, per_constraint: int = 3) -> list[dict]:
        """The top subnets under each constraint (the same samples as the score), with their stage rows.

        The stage rows were drawn independently, so the widths of neighbouring stages need not chain;
        these are LUT subnets (stage architectures + resolution), not buildable subnet strings.
        """
        s = self.samples(space, keep_rows=True)
        assert s.rows is not None
        tables = self.lut.space_tables(space)
        out = []
        for c in self.settings.constraints:
            best = []
            for i in top_under(s.latency_ms, s.loss, c, per_constraint):
                rows = s.rows[i]
                best.append({
                    "resolution": int(s.resolution[i]),
                    "latency_ms": round(float(s.latency_ms[i]), 4),
                    "nsr_loss": round(float(s.loss[i]), 4),
                    "acc_proxy": round(1.0 / float(s.loss[i]), 6),
                    "mflops_stages": round(float(sum(t.mflops[r] for t, r in zip(tables, rows))), 2),
                    "stage_archs": [t.stage_arch[r] for t, r in zip(tables, rows)],
                })
            out.append({"constraint_ms": float(c), "subnets": best})
        return out
