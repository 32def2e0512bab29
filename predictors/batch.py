"""Fast batch prediction for subnets of one search space (the search loops' hot path).

Parsing and resolving a subnet string costs ~300 us in Python, so throughput of hundreds of
thousands of subnets per second cannot go through strings. Instead:

* :class:`EncodedSubnets` holds N subnets as small integer arrays: resolution index, depth per stage,
  and per layer the index of its kernel, width and expand choice in that stage's tuples.
* :class:`LayerTable` predicts, once per (space, predictor), the latency of every layer the space can
  contain: (stage, first layer or not, resolution, input-width choice, width, kernel, expand), as
  the sum of its kernels' predictions. A few thousand layers, one vectorised forest call per kernel type.
* A subnet's latency is then a sum of table lookups (plus the stem/head entry), done with numpy
  over the whole batch.

Kernels the predictor does not know make their table entries NaN, so any subnet that uses them
predicts NaN (and :attr:`LayerTable.unknown_kernels` names them): never a silent 0 ms.
"""
from __future__ import annotations

import itertools

import numpy as np

from exporters.kernel_config import KernelConfig
from spaces import SearchSpace, Subnet
from spaces.kernels import layer_kernels
from spaces.network import _block_layer, _head_layers, conv_out

from .artifact import Predictor


class EncodedSubnets:
    """N subnets of one space as index arrays (see module doc)."""

    def __init__(self, space: SearchSpace, res: np.ndarray, depth: np.ndarray, k: np.ndarray, w: np.ndarray,
                 e: np.ndarray):
        self.space, self.res, self.depth, self.k, self.w, self.e = space, res, depth, k, w, e

    def __len__(self) -> int:
        return len(self.res)

    @classmethod
    def random(cls, space: SearchSpace, n: int, seed: int = 0) -> "EncodedSubnets":
        rng = np.random.default_rng(seed)
        ch = space.stage_choices()
        dmax = max(max(c.depths) for c in ch)
        res = rng.integers(0, len(space.hyperspace.resolutions), n, dtype=np.int8)
        depth = np.stack([rng.choice(np.array(c.depths, dtype=np.int8), n) for c in ch], 1)
        shape = (n, len(ch), dmax)
        k = np.stack([rng.integers(0, len(c.kernels), (n, dmax), dtype=np.int8) for c in ch], 1).reshape(shape)
        w = np.stack([rng.integers(0, len(c.widths), (n, dmax), dtype=np.int8) for c in ch], 1).reshape(shape)
        e = np.stack([rng.integers(0, len(c.expands), (n, dmax), dtype=np.int8) for c in ch], 1).reshape(shape)
        return cls(space, res, depth, k, w, e)

    @classmethod
    def from_subnets(cls, space: SearchSpace, subnets: list[Subnet]) -> "EncodedSubnets":
        ch = space.stage_choices()
        dmax = max(max(c.depths) for c in ch)
        n = len(subnets)
        res = np.zeros(n, np.int8)
        depth = np.zeros((n, len(ch)), np.int8)
        k, w, e = (np.zeros((n, len(ch), dmax), np.int8) for _ in range(3))
        for j, s in enumerate(subnets):
            res[j] = space.hyperspace.resolutions.index(s.resolution)
            for si, (layers, c) in enumerate(zip(s.stage_layers(), ch)):
                depth[j, si] = len(layers)
                for li, (kk, ww, ee) in enumerate(layers):
                    k[j, si, li], w[j, si, li] = c.kernels.index(kk), c.widths.index(ww)
                    e[j, si, li] = c.expands.index(float(ee or 0))
        return cls(space, res, depth, k, w, e)

    def subnet(self, j: int) -> Subnet:
        ch = self.space.stage_choices()
        stages = [[(c.kernels[self.k[j, si, li]], c.widths[self.w[j, si, li]], c.expands[self.e[j, si, li]])
                   for li in range(self.depth[j, si])] for si, c in enumerate(ch)]
        return Subnet.from_stage_layers(stages, self.space.hyperspace.resolutions[self.res[j]])


class LayerTable:
    def __init__(self, space: SearchSpace, predictor: Predictor):
        self.space = space
        hs = space.hyperspace
        ch = space.stage_choices()
        R = hs.resolutions
        layers, slots = [], []  # every distinct layer, and where its latency goes
        self.tables: list[np.ndarray] = []
        for si, (name, bt, widths, ks, es, _depths, stride) in enumerate(ch):
            prev = (3,) if si == 0 else ch[si - 1].widths
            cmax = max(len(prev), len(widths))
            table = np.full((2, len(R), cmax, len(widths), len(ks), len(es)), np.nan)
            self.tables.append(table)
            for ri, r in enumerate(R):
                hw = r
                for s in [c.stride for c in ch[:si]]:
                    hw = conv_out(hw, 3, s)
                for first in (1, 0):
                    cins = prev if first else widths
                    s_ = stride if first else 1
                    h = hw if first else conv_out(hw, 3, stride)
                    for (ci, cin), (wi, w), (ki, kk), (ei, ee) in itertools.product(
                            enumerate(cins), enumerate(widths), enumerate(ks), enumerate(es)):
                        layers.append(_block_layer(name, 0, bt, kk, cin, w, ee, s_, h))
                        slots.append((si, (first, ri, ci, wi, ki, ei)))
        last_w = ch[-1].widths
        self.head = np.full((len(R), len(last_w)), np.nan)
        head_layers = []
        for ri, r in enumerate(R):
            hw = r
            for s in [c.stride for c in ch]:
                hw = conv_out(hw, 3, s)
            for wi, w in enumerate(last_w):
                head_layers.append(((ri, wi), _head_layers(hs, w, hw)))
        kernels = [[KernelConfig.from_kernel(k) for k in layer_kernels(l)] for l in layers]
        head_kernels = [[KernelConfig.from_kernel(k) for l in hl for k in layer_kernels(l)] for _, hl in head_layers]
        flat = [c for ks in kernels + head_kernels for c in ks]
        lat, unknown = predictor.predict_kernels(flat)
        self.unknown_kernels = unknown
        pos = 0
        for (si, idx), ks in zip(slots, kernels):
            self.tables[si][idx] = lat[pos:pos + len(ks)].sum()
            pos += len(ks)
        for (idx, _), ks in zip(head_layers, head_kernels):
            self.head[idx] = lat[pos:pos + len(ks)].sum()
            pos += len(ks)
        self.n_layers = len(layers) + len(head_layers)
        # per model, in io_ms by resolution: the invocation overhead (profilers.collect.measure_overhead) and
        # the network's input quantize and output dequantize (profilers.boundary), as the predictor calibrates them
        from profilers.boundary import kernel_elements

        self.overhead_ms = 0.0
        n_out = kernel_elements(head_kernels[0][-1])[1] if head_kernels and head_kernels[0] else 0
        self.io_ms = np.array([float(predictor.fixed_ms(3 * r * r, n_out)) for r in R])

    def predict(self, enc: EncodedSubnets) -> np.ndarray:
        """Latency (ms) of every encoded subnet."""
        n = len(enc)
        rows = np.arange(n)
        res = enc.res.astype(np.intp)
        total = np.zeros(n)
        prev_last = np.zeros(n, np.intp)  # first_conv's input: the single 3-channel "width"
        for si, table in enumerate(self.tables):
            d = enc.depth[:, si]
            w = enc.w[:, si].astype(np.intp)
            k = enc.k[:, si].astype(np.intp)
            e = enc.e[:, si].astype(np.intp)
            total += table[1, res, prev_last, w[:, 0], k[:, 0], e[:, 0]]
            for li in range(1, w.shape[1]):
                active = d > li
                if not active.any():
                    break
                v = table[0, res, w[:, li - 1], w[:, li], k[:, li], e[:, li]]
                total += np.where(active, v, 0.0)
            prev_last = w[rows, d.astype(np.intp) - 1]
        return total + self.head[res, prev_last] + self.overhead_ms + self.io_ms[res]
