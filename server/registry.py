"""Loaded predictors, one per device, and the prediction paths the API serves.

A device's predictor is swapped atomically (one dict assignment) when a newer version is trained or found in
the database: requests already running keep the object they took, new ones get the new one, and none is
dropped. Per predictor, a :class:`predictors.batch.LayerTable` is built once per search space (about 1 s) and
kept in a small LRU, so a search loop that asks about one space millions of times pays it once.
"""
from __future__ import annotations

import threading
from functools import lru_cache
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from predictors.artifact import Predictor, predict_kernel_list
from predictors.batch import EncodedSubnets, LayerTable
from spaces import SearchSpace, SpaceError, Subnet, network_from_json, resolve
from spaces.encoding import format_expand
from spaces.kernels import network_kernels

MAX_TABLES = 32


@dataclass
class Loaded:
    device: str
    version: int
    path: Path
    predictor: Predictor
    trained_at: float
    accuracy: dict[str, Any]
    tables: OrderedDict = field(default_factory=OrderedDict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    # an online calibration's overlay (server.online): the version as installed, and the fit's summary
    installed: "Loaded | None" = None
    online: dict[str, Any] | None = None

    def info(self) -> dict[str, Any]:
        return {"version": self.version, "trained_at": self.trained_at, "accuracy": self.accuracy,
                "path": str(self.path), "backend": self.predictor.meta.backend,
                "kernel_types": sorted(self.predictor.kernel_types), "online": self.online}

    def table(self, space: SearchSpace) -> LayerTable:
        key = space.to_string()
        with self.lock:
            t = self.tables.get(key)
            if t is not None:
                self.tables.move_to_end(key)
                return t
        t = LayerTable(space, self.predictor)  # outside the lock: two first requests may both build it
        with self.lock:
            self.tables[key] = t
            while len(self.tables) > MAX_TABLES:
                self.tables.popitem(last=False)
        return t


def accuracy_summary(p: Predictor, path: Path | None = None) -> dict[str, Any]:
    """What a caller should know about how far to trust the numbers: held-out kernel errors per type, and
    the end-to-end evaluation when one was run for this predictor (``eval`` in its metadata folder)."""
    ks = {t: float(i.metrics.get("rmspe", float("nan"))) for t, i in p.meta.kernels.items()}
    ks = {t: round(v, 4) if np.isfinite(v) else None for t, v in ks.items()}  # JSON has no NaN
    vals = [v for v in ks.values() if v is not None]
    out: dict[str, Any] = {"kernel_rmspe_median": round(float(np.median(vals)), 4) if vals else None,
                           "kernel_rmspe": ks}
    ev = Path(path) / "eval.json" if path is not None else None
    if ev is not None and ev.is_file():
        import json

        doc = json.loads(ev.read_text())
        sets = doc.get("sets", {})
        out["end_to_end"] = {name: {k: round(v, 4) if isinstance(v, float) else v for k, v in m.items()}
                             for name, m in sets.items()}
    else:
        out["end_to_end"] = None  # never evaluated on whole networks: trust the kernel errors only
    cal = p.meta.calibration
    if cal is not None and cal.session is not None:  # refitted to one session's machine state: say which
        out["session"] = cal.session.summary()
    return out


class Registry:
    def __init__(self) -> None:
        self._by_device: dict[str, Loaded] = {}

    def devices(self) -> list[str]:
        return sorted(self._by_device)

    def get(self, device: str) -> Loaded | None:
        return self._by_device.get(device)

    def install(self, device: str, version: int, path: Path, trained_at: float) -> Loaded:
        p = Predictor.load(path)
        cur = self._by_device.get(device)
        if cur is not None and cur.version >= version:
            return cur
        loaded = Loaded(device, version, Path(path), p, trained_at, accuracy_summary(p, path))
        self._by_device[device] = loaded  # the swap
        return loaded

    def overlay(self, device: str, installed: Loaded, calibration) -> Loaded | None:
        """Serve ``installed`` with another calibration (an online fit, :mod:`server.online`), or as installed
        with ``None``. Nothing is saved; the forests and their raw-latency cache are shared. A version installed
        meanwhile wins: the overlay of an older one is dropped."""
        cur = self._by_device.get(device)
        if cur is None or (cur.installed or cur) is not installed:
            return cur
        if calibration is None:
            self._by_device[device] = installed
            return installed
        base = installed.predictor
        p = Predictor(base.meta.model_copy(update={"calibration": calibration}), base.forests)
        p._cache, p._outside = base._cache, base._outside  # raw kernel latencies: the calibration is applied after
        loaded = Loaded(device, installed.version, installed.path, p, installed.trained_at, installed.accuracy,
                        installed=installed, online=calibration.session.summary())
        self._by_device[device] = loaded  # the swap
        return loaded


class ArchError(ValueError):
    """A bad arch in a batch: which one and why (mapped to HTTP 422)."""

    def __init__(self, index: int, err: Exception, field: str = "archs"):
        self.index, self.field = index, f"{field}[{index}]"
        super().__init__(f"{self.field}: {err}")


@lru_cache(maxsize=256)
def parse_space(text: str) -> SearchSpace:
    return SearchSpace.parse(text)


@lru_cache(maxsize=256)
def _index_maps(space: SearchSpace):
    """Per-stage arrays mapping a choice's value to its index (-1 where not allowed): kernels and widths by
    value, expand ratios by 2x value (every ratio of both hyperspaces is a multiple of 0.5), depths as a mask."""
    ch = space.stage_choices()
    kmax = max(max(c.kernels) for c in ch) + 1
    wmax = max(max(c.widths) for c in ch) + 1
    emax = int(max(max(c.expands) for c in ch) * 2) + 1
    dmax = max(max(c.depths) for c in ch) + 1
    km, wm, em = (np.full((len(ch), m), -1, np.int16) for m in (kmax, wmax, emax))
    dm = np.zeros((len(ch), dmax), bool)
    for si, c in enumerate(ch):
        km[si, list(c.kernels)] = np.arange(len(c.kernels))
        wm[si, list(c.widths)] = np.arange(len(c.widths))
        em[si, [int(round(e * 2)) for e in c.expands]] = np.arange(len(c.expands))
        dm[si, list(c.depths)] = True
    return ch, km, wm, em, dm


_INT_CHARS = frozenset("0123456789#")


def _ints(parts: list[str], expected: int) -> np.ndarray:
    """All '#'-separated integers of many strings in one C-level parse; ValueError unless exactly ``expected``.
    Checking the characters first means ``np.fromstring`` never meets a token it would stop at; an empty
    token ('1##2') only shortens the result, which the count catches."""
    text = "#".join(parts)
    if not set(text) <= _INT_CHARS:
        raise ValueError
    v = np.fromstring(text.replace("#", " "), dtype=np.int64, sep=" ")
    if len(v) != expected:
        raise ValueError
    return v


@lru_cache(maxsize=256)
def _expand_tokens(space: SearchSpace) -> dict[str, float]:
    """Spellings of the allowed expand ratios ('4.0', '4', '0', '0.5', ...); other spellings take the slow path."""
    out = {}
    for c in space.stage_choices():
        for e in c.expands:
            for t in (str(float(e)), f"{e:g}", format_expand(e)):
                out[t] = float(e)
    return out


def encode_strings(space: SearchSpace, archs: list[str]) -> EncodedSubnets:
    """Parse and validate subnet strings straight into index arrays, vectorized over the batch (a few µs per
    string instead of ~30 µs for a Python loop per layer). A batch with a bad string is re-checked string by
    string with :func:`spaces.resolve`, whose error names the field and the allowed values."""
    ch, km, wm, em, dm = _index_maps(space)
    S = len(ch)
    n = len(archs)
    bad = np.zeros(n, bool)
    try:
        parts = [a.split("_") for a in archs]
        if any(len(p) != 5 or p[0][:1] != "d" or p[1][:1] != "k" or p[2][:1] != "w" or p[3][:1] != "e"
               or p[4][:1] != "r" for p in parts):
            raise ValueError
        if any(p[0].count("#") != S - 1 for p in parts):
            raise ValueError
        depth = _ints([p[0][1:] for p in parts], n * S).reshape(n, S)
        L = depth.sum(1)
        for col in (1, 2, 3):
            if (np.array([p[col].count("#") + 1 for p in parts]) != L).any():
                raise ValueError
        total = int(L.sum())
        kv = _ints([p[1][1:] for p in parts], total)
        wv = _ints([p[2][1:] for p in parts], total)
        ev = np.array(list(map(_expand_tokens(space).__getitem__, "#".join(p[3][1:] for p in parts).split("#"))))
        if len(ev) != total:
            raise ValueError
        rv = _ints([p[4][1:] for p in parts], n)
    except (ValueError, AttributeError, TypeError, KeyError):
        return _encode_slow(space, archs)  # finds the first bad string and raises its exact error
    res_lut = _lookups(space)[1]
    res = np.array([res_lut.get(int(r), -1) for r in rv], np.int8)
    bad |= res < 0
    stage_ok = dm[np.arange(S), np.clip(depth, 0, dm.shape[1] - 1)] & (depth >= 0) & (depth < dm.shape[1])
    bad |= ~stage_ok.all(1)
    flat_d = np.clip(depth, 0, None).ravel()
    stage = np.repeat(np.tile(np.arange(S), n), flat_d)
    arch = np.repeat(np.arange(n), L)
    starts = np.repeat(np.cumsum(flat_d) - flat_d, flat_d)
    li = np.arange(len(stage)) - starts
    e2 = ev * 2
    e_int = np.rint(e2).astype(np.int64)

    def lookup(m, v, ok_extra=True):
        inb = (v >= 0) & (v < m.shape[1]) & ok_extra
        idx = np.where(inb, m[stage, np.where(inb, v, 0)], -1)
        return idx

    ki = lookup(km, kv)
    wi = lookup(wm, wv)
    ei = lookup(em, e_int, np.abs(e2 - e_int) < 1e-9)
    layer_bad = (ki < 0) | (wi < 0) | (ei < 0)
    if layer_bad.any():
        bad[arch[layer_bad]] = True
    if bad.any():
        j = int(np.argmax(bad))
        _raise_for(space, archs[j], j)
    dmax = dm.shape[1] - 1
    k, w, e = (np.zeros((n, S, dmax), np.int8) for _ in range(3))
    k[arch, stage, li], w[arch, stage, li], e[arch, stage, li] = ki, wi, ei
    return EncodedSubnets(space, res, depth.astype(np.int8), k, w, e)


def _raise_for(space: SearchSpace, text, j: int) -> None:
    try:
        resolve(space, text)
    except SpaceError as err:
        raise ArchError(j, err) from None
    raise ArchError(j, ValueError(f"{text!r} does not fit space {space}"))


def _encode_slow(space: SearchSpace, archs: list) -> EncodedSubnets:
    subnets = []
    for j, text in enumerate(archs):
        try:
            net = Subnet.parse(text)
            resolve(space, net)
        except SpaceError as err:
            raise ArchError(j, err) from None
        subnets.append(net)
    return EncodedSubnets.from_subnets(space, subnets)


SMALL_BATCH = 16  # up to here, strings go through the scalar path below (numpy's per-call cost dominates)


def _layer_lists(table: LayerTable) -> tuple[list, list, list[float]]:
    """The table's arrays as nested Python lists (built once per table): scalar indexing of lists costs tens of
    nanoseconds, of numpy arrays a few hundred."""
    cached = getattr(table, "_lists", None)
    if cached is None:
        cached = ([t.tolist() for t in table.tables], table.head.tolist(), table.io_ms.tolist())
        table._lists = cached
    return cached


def predict_small(table: LayerTable, space: SearchSpace, archs: list[str]) -> list[float]:
    """Latencies of a few subnet strings, one at a time in plain Python: the same table lookups and the same
    summation order as :meth:`LayerTable.predict`, so the same numbers (a test checks), about 10x faster for
    one string. A string that does not parse or fit gets :func:`spaces.resolve`'s exact error."""
    ch = space.stage_choices()
    look = _lookups(space)
    res_idx = look[-1]
    tables, head, io = _layer_lists(table)
    out = []
    for j, text in enumerate(archs):
        try:
            d_, k_, w_, e_, r_ = text.split("_")
            if d_[:1] != "d" or k_[:1] != "k" or w_[:1] != "w" or e_[:1] != "e" or r_[:1] != "r":
                raise ValueError
            ds = [int(x) for x in d_[1:].split("#")]
            ks, ws, es = k_[1:].split("#"), w_[1:].split("#"), e_[1:].split("#")
            ri = res_idx[int(r_[1:])]
            if len(ds) != len(ch) or not (len(ks) == len(ws) == len(es) == sum(ds)):
                raise ValueError
            total, prev, pos = 0.0, 0, 0
            for si, (d, (kl, wl, el, dl)) in enumerate(zip(ds, look[0])):
                if d not in dl:
                    raise ValueError
                t = tables[si]
                wi_prev = prev
                for li in range(d):
                    ki, wi, ei = kl[int(ks[pos])], wl[int(ws[pos])], el[float(es[pos])]
                    total += t[1][ri][wi_prev][wi][ki][ei] if li == 0 else t[0][ri][wi_prev][wi][ki][ei]
                    wi_prev = wi
                    pos += 1
                prev = wi_prev
            out.append(total + head[ri][prev] + table.overhead_ms + io[ri])
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            _raise_for(space, text, j)  # the exact error, from spaces.resolve
    return out


@lru_cache(maxsize=256)
def _lookups(space: SearchSpace):
    per_stage = [({k: i for i, k in enumerate(c.kernels)}, {w: i for i, w in enumerate(c.widths)},
                  {float(e): i for i, e in enumerate(c.expands)}, set(c.depths)) for c in space.stage_choices()]
    return per_stage, {r: i for i, r in enumerate(space.hyperspace.resolutions)}


def predict_archs(loaded: Loaded, archs: list[str | dict], space: str | None, detail: bool
                  ) -> tuple[list[float | None], list[list[dict]] | None, list[str]]:
    """Latencies (ms) of a batch of archs: subnet strings (need ``space``) or layer-JSON objects. Returns
    (latencies, kernels per arch when ``detail``, warnings). Unknown kernels give None, never 0."""
    p = loaded.predictor
    strings = [i for i, a in enumerate(archs) if isinstance(a, str)]
    out: list[float | None] = [None] * len(archs)
    kernels: list[list[dict]] | None = [[] for _ in archs] if detail else None
    warnings: list[str] = []
    sp = None
    if strings:
        if space is None:
            raise ArchError(strings[0], SpaceError("space", None, "a search space such as 'onnxw-151122-023231'",
                                                   hint="subnet strings need the space they belong to"))
        sp = parse_space(space) if isinstance(space, str) else SearchSpace.parse(space)
    if strings and not detail:
        table = loaded.table(sp)
        if table.unknown_kernels:
            warnings.append(f"kernel types without a forest in this predictor: {', '.join(table.unknown_kernels)}")
        try:
            picked = [archs[i] for i in strings]
            if len(picked) <= SMALL_BATCH:
                lat = predict_small(table, sp, picked)
            else:
                lat = table.predict(encode_strings(sp, picked)).tolist()
        except ArchError as err:
            raise ArchError(strings[err.index], err.__cause__ or ValueError(str(err).split(": ", 1)[1])) from None
        for i, v in zip(strings, lat):
            out[i] = None if v != v else v
    for i, a in enumerate(archs):
        if isinstance(a, str) and not detail:
            continue
        try:
            net = resolve(sp, a) if isinstance(a, str) else network_from_json(a)
        except SpaceError as err:
            raise ArchError(i, err) from None
        from exporters.kernel_config import KernelConfig

        gp = predict_kernel_list(p, [KernelConfig.from_kernel(kk) for kk in network_kernels(net)])
        out[i] = gp.latency_ms
        if kernels is not None:
            kernels[i] = gp.kernels
        warnings += [f"archs[{i}]: {w}" for w in gp.warnings]
    return out, kernels, warnings


def _stage_layers(hs, item) -> list:
    """The layers of one stand-alone stage (see :class:`server.schemas.StageItem`); SpaceError names what is
    wrong."""
    from spaces.hyperspace import STAGE_NAMES
    from spaces.network import _block_layer, _head_layers, conv_out

    c, hw = item.input
    if not (1 <= c <= 4096 and 1 <= hw <= 1024):
        raise SpaceError("input", list(item.input), "channels 1-4096 and height 1-1024")
    if item.stage == "head":
        return _head_layers(hs, c, hw)
    if item.stage in ("first_conv", "stage0"):
        fixed = getattr(hs, item.stage)
        bt, stride = fixed.block, fixed.stride
    else:
        spec = hs.stages[STAGE_NAMES.index(item.stage) - 2]
        if item.block is None or not 0 <= item.block < len(hs.blocks):
            raise SpaceError(f"{item.stage} block", item.block, [f"{b.digit}={b.name}" for b in hs.blocks])
        bt, stride = hs.blocks[item.block], spec.stride
    layers = []
    for i, group in enumerate(item.arch.split("_") if item.arch else []):
        parts = group.split("#")
        try:
            k, w = int(parts[0]), int(parts[1])
            e = 0.0 if len(parts) < 3 or parts[2] in ("None", "", "0") else float(parts[2])
        except (ValueError, IndexError):
            raise SpaceError(f"{item.stage} layer {i}", group, "'k#w#e', e.g. 5#32#4 (e None or 0 for no ratio)") \
                from None
        if k not in bt.kernels:
            raise SpaceError(f"{item.stage} layer {i} kernel", k, bt.kernels, hint=f"kernel sizes of block {bt.name}")
        allowed_e = bt.expands or (0.0,)
        if e not in allowed_e:
            raise SpaceError(f"{item.stage} layer {i} expand", e, allowed_e, hint=f"expand ratios of block {bt.name}")
        if not 1 <= w <= 4096:
            raise SpaceError(f"{item.stage} layer {i} width", w, "1-4096")
        layer = _block_layer(item.stage, i, bt, k, c, w, e, stride if i == 0 else 1, hw)
        layers.append(layer)
        c, hw = layer.cout, layer.out_hw
    if not layers:
        raise SpaceError(f"{item.stage} arch", item.arch, "one 'k#w#e' group per layer, joined by '_'")
    return layers


def predict_stages(loaded: Loaded, hyperspace: str, items: list) -> tuple[list[float | None], list[str]]:
    """Latency (ms) of stand-alone stages: the sum of their kernels' predictions, without the per-model
    overhead or input/output conversion (a whole network adds those once; see LayerTable). Kernel configs
    repeat a lot across a lookup table's rows, so each distinct one is predicted once."""
    from exporters.kernel_config import KernelConfig
    from spaces import get_hyperspace
    from spaces.kernels import layer_kernels

    hs = get_hyperspace(hyperspace)
    index: dict = {}
    per_item: list[list[int]] = []
    for j, item in enumerate(items):
        try:
            layers = _stage_layers(hs, item)
        except SpaceError as err:
            raise ArchError(j, err, "stages") from None
        per_item.append([index.setdefault(KernelConfig.from_kernel(k), len(index))
                         for l in layers for k in layer_kernels(l)])
    lat, unknown = loaded.predictor.predict_kernels(list(index))
    out = []
    for ids in per_item:
        v = float(lat[ids].sum()) if ids else 0.0
        out.append(v if v == v else None)
    warnings = [f"kernel types without a forest in this predictor: {', '.join(unknown)}"] if unknown else []
    return out, warnings
