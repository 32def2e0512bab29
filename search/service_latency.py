"""``--latency-source service``: the lookup table's stage latencies re-predicted on a real device's predictor.

The LUT's ``pred_int8_ms`` column is the paper's device. To search a space for *your* device, every stage
row of the table is sent once to ``POST /predict_latency/stages`` (in large batches) and the answers replace
the column; they are cached on disk per (service, device, predictor version, LUT files), so a second search
asks nothing.

The fixed parts come from the same service, with no constant assumed:
* **front** (first_conv + one stage0 layer, width = the stage-1 row's input channels, at its resolution) is
  added to every stage-1 row: stage 1's input width says what the front produced;
* **head** (1x1 conv to 1280, pooling conv to 1920, classifier) is added to every stage-6 row: its input is
  that row's last width at the row's output size;
* **per-model costs** (runtime invocation, input quantize and output dequantize) are ``fixed_ms[r]``:
  a whole subnet's prediction at resolution ``r`` minus the sum of its parts, from the service.
So a sampled subnet's latency is exactly what the service would predict for it (a test checks the sum).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Callable

import numpy as np

from spaces import SearchSpace, get_hyperspace
from spaces.network import conv_out

from .client import LatencyClient, ServiceError
from .lut import BlockLut, StageTable


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "hil-latency" / "search"


def _e(expand: float) -> str:
    return "None" if not expand else str(float(expand))


def _row_input(shape: str) -> tuple[int, int]:
    _, c, h, _w = (int(x) for x in shape.split("x"))
    return c, h


def _out_hw(hs, stage: int, arch: str, hw: int) -> tuple[int, int]:
    """(last width, output size) of a stage row: the head's input when the stage is the last."""
    groups = arch.split("_")
    stride = hs.stages[stage - 1].stride
    out = hw
    for i, g in enumerate(groups):
        k = int(g.split("#")[0])
        out = conv_out(out, k, stride if i == 0 else 1)
    return int(groups[-1].split("#")[1]), out


def _front_items(hs, c: int, r: int) -> list[dict]:
    fc, s0 = hs.first_conv, hs.stage0
    hw0 = conv_out(r, fc.block.kernels[0], fc.stride)
    e0 = s0.block.expands[0] if s0.block.expands else 0.0
    return [{"stage": "first_conv", "arch": f"{fc.block.kernels[0]}#{c}#None", "input": [3, r]},
            {"stage": "stage0", "arch": f"{s0.block.kernels[0]}#{c}#{_e(e0)}", "input": [c, hw0]}]


def service_lut(lut: BlockLut, client: LatencyClient, device: str, use_cache: bool = True,
                progress: Callable[[str], None] | None = None) -> tuple[BlockLut, dict[int, float], dict]:
    """The LUT with every stage latency re-predicted on ``device``; returns (lut, fixed_ms, source info)."""
    hs = lut.hyperspace
    info = client.device(device)  # ServiceError naming the known devices, or saying it has no predictor
    pred = info["predictor"]
    sig = hashlib.sha256(json.dumps([client.url, device, pred["version"], pred["trained_at"], hs.name,
                                     sorted((t.name, len(t)) for t in lut.tables.values())]).encode()).hexdigest()[:16]
    cache = cache_dir() / f"{hs.name}-{sig}.npz"
    keys = sorted(lut.tables)
    if use_cache and cache.is_file():
        data = np.load(cache, allow_pickle=False)
        new = {k: data[lut.tables[k].name] for k in keys}
        fixed = {int(r): float(v) for r, v in zip(data["fixed_res"], data["fixed_ms"])}
        front = {int(r): float(v) for r, v in zip(data["front_res"], data["front_ms"])}
        cached = True
    else:
        items, owner = [], []
        for k in keys:
            t = lut.tables[k]
            for arch, shape in zip(t.stage_arch, t.input_shape):
                items.append({"stage": f"stage{t.stage}", "block": t.block, "arch": arch, "input": list(_row_input(shape))})
            owner.append((k, len(t)))
        # front per (input width of stage 1, resolution) and head per (last width, size): few distinct ones
        front_keys = sorted({(_row_input(s)[0], r) for (st, _, _), t in lut.tables.items() if st == 1
                             for s, r in zip(t.input_shape, t.resolution.tolist())})
        head_keys = sorted({_out_hw(hs, t.stage, a, _row_input(s)[1]) for (st, _, _), t in lut.tables.items()
                            if st == len(hs.stages) for a, s in zip(t.stage_arch, t.input_shape)})
        extra = [it for c, r in front_keys for it in _front_items(hs, c, r)]
        extra += [{"stage": "head", "input": [w, hw]} for w, hw in head_keys]
        if progress:
            progress(f"re-predicting {len(items):,} stage rows of the {hs.name} LUT on {device} "
                     f"(predictor v{pred['version']})")
        lat, _ = client.predict_stages(device, hs.name, items + extra)
        if any(v is None for v in lat):
            raise ServiceError(f"device {device}'s predictor cannot predict every stage of the {hs.name} LUT "
                               "(a kernel type has no forest); train it with all kernel types")
        rows, ext = np.asarray(lat[:len(items)], np.float64), lat[len(items):]
        front_ms = {key: ext[2 * i] + ext[2 * i + 1] for i, key in enumerate(front_keys)}
        head_ms = {key: v for key, v in zip(head_keys, ext[2 * len(front_keys):])}
        new, pos = {}, 0
        for k, n in owner:
            t = lut.tables[k]
            v = rows[pos:pos + n].copy()
            pos += n
            if t.stage == 1:
                v += [front_ms[(_row_input(s)[0], r)] for s, r in zip(t.input_shape, t.resolution.tolist())]
            if t.stage == len(hs.stages):
                v += [head_ms[_out_hw(hs, t.stage, a, _row_input(s)[1])] for a, s in zip(t.stage_arch, t.input_shape)]
            new[k] = v.astype(np.float32)
        fixed = _per_model_ms(client, device, hs, lut.resolutions)
        front = {r: min(v for (c, rr), v in front_ms.items() if rr == r) for r in lut.resolutions}
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp.npz")
        np.savez(tmp, **{lut.tables[k].name: new[k] for k in keys},
                 fixed_res=np.array(list(fixed)), fixed_ms=np.array(list(fixed.values())),
                 front_res=np.array(list(front)), front_ms=np.array(list(front.values())))
        os.replace(tmp, cache)
        cached = False
    tables = {k: dataclasses.replace(lut.tables[k], pred_int8_ms=new[k]) for k in keys}
    source = {"latency_source": "service", "service": client.url, "device": device,
              "predictor": {k: pred.get(k) for k in ("version", "trained_at", "backend")},
              "predictor_accuracy": pred.get("accuracy", {}).get("end_to_end"),
              "fixed_part_ms": {str(r): round(v, 4) for r, v in fixed.items()},
              "front_ms_min": {str(r): round(v, 4) for r, v in front.items()},
              "fixed_part_note": ("from the service: first_conv + stage0 are added to each stage-1 row (width = its "
                                  "input channels), the head to each stage-6 row (its last width); fixed_part_ms is "
                                  "the per-model cost (invocation, input quantize, output dequantize) per resolution"),
              "cache": str(cache), "cached": cached}
    return dataclasses.replace(lut, tables=tables), fixed, source


def stage_items(space: SearchSpace, net) -> list[dict]:
    """A resolved subnet as ``POST /predict_latency/stages`` items: each stage with its block digit, input
    (channels, height) and ``k#w#e`` layers, then the head."""
    groups: dict[str, list] = {}
    for layer in net.body:
        groups.setdefault(layer.stage, []).append(layer)
    items = []
    for name, ls in groups.items():
        block = space.blocks[int(name[-1]) - 1] if name not in ("first_conv", "stage0") else None
        items.append({"stage": name, "block": block, "input": [ls[0].cin, ls[0].in_hw],
                      "arch": "_".join(f"{x.kernel}#{x.cout}#{_e(x.expand)}" for x in ls)})
    items.append({"stage": "head", "input": [net.body[-1].cout, net.body[-1].out_hw]})
    return items


def _per_model_ms(client: LatencyClient, device: str, hs, resolutions) -> dict[int, float]:
    """Per resolution: a whole subnet's prediction minus the sum of its stage predictions (front and head
    included): the costs a model pays once."""
    from spaces import resolve
    from spaces.sampling import random_space, sample_subnet

    space: SearchSpace = random_space(hs, seed=0)
    out = {}
    for r in resolutions:
        arch = str(sample_subnet(space, "min")).rsplit("_r", 1)[0] + f"_r{r}"
        net = resolve(space, arch)
        whole = client.predict(device, str(space), [arch])[0]
        parts, _ = client.predict_stages(device, hs.name, stage_items(space, net))
        out[r] = float(whole - sum(parts))
    return out
