"""Batch latency prediction throughput for random onnxw subnets, against the nn-Meter way.

    python bench/predict_bench.py [--predictor DIR] [--n 200000]

* ours: :class:`predictors.batch.LayerTable` built once per space (timed separately), then
  ``predict`` over an :class:`EncodedSubnets` batch.
* nn-Meter way (same process, same forests): per subnet, resolve the string, list its kernels, call
  the kernel type's scikit-learn forest once per kernel, sum.
Without ``--predictor`` a predictor is trained on synthetic latencies for every kernel type (speed
does not depend on the values). Prints subnets/s for both and their ratio.
"""
from __future__ import annotations

import argparse
import platform
import random
import tempfile
import time
from pathlib import Path

import numpy as np
from sklearn.ensemble import RandomForestRegressor

from exporters.cpu import cpu_info
from exporters.kernel_models import KernelConfig
from predictors.artifact import Predictor
from predictors.batch import EncodedSubnets, LayerTable
from predictors.features import features
from predictors.train import train
from profilers.dataset import Dataset, KernelRecord
from profilers.measurement import Measurement
from profilers.samplers import kernel_pool
from spaces import SearchSpace, resolve
from spaces.sampling import sample_subnet

SPACE = "onnxw-151122-023231"


def synthetic_records(path: Path) -> Path:
    ds = Dataset(path)
    for t, pool in kernel_pool().items():
        cfgs = list(pool[:200])
        while len(cfgs) < 12:
            c = cfgs[len(cfgs) % len(pool)]
            cfgs.append(c.model_copy(update={"cin": c.cin + 8 * len(cfgs)}))
        for c in cfgs:
            ms = 1e-7 * c.hw * c.hw * c.cin * max(c.cout, 1) * c.kernel ** 2 + 0.001 * c.cin / 8 + 0.005
            ds.append(KernelRecord(config=c, precision="int8", backend="onnxruntime-cpu",
                                   measurement=Measurement(backend="onnxruntime-cpu", model="m", latency_ms=ms,
                                                           stable=True)))
    return ds.path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--predictor", type=Path)
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--baseline-n", type=int, default=50)
    args = ap.parse_args()
    cpu = cpu_info()
    print(f"machine: {cpu.model}, {cpu.cores} cores, {platform.python_version()}")
    with tempfile.TemporaryDirectory() as tmp:
        data = synthetic_records(Path(tmp) / "d.jsonl")
        pred = Predictor.load(args.predictor) if args.predictor else train(data, device="synthetic")
        sp = SearchSpace.parse(SPACE)
        t0 = time.perf_counter()
        table = LayerTable(sp, pred)
        t_table = time.perf_counter() - t0
        enc = EncodedSubnets.random(sp, args.n, seed=0)
        table.predict(EncodedSubnets.random(sp, 1000, seed=1))  # warm-up
        t0 = time.perf_counter()
        lat = table.predict(enc)
        t_batch = time.perf_counter() - t0
        ours = args.n / t_batch
        # nn-Meter way: one sklearn forest call per kernel of each subnet (same training data and settings)
        recs = [r for r in Dataset(data)]
        forests = {}
        for t in pred.kernel_types:
            cs = [r.config for r in recs if r.config.type == t]
            ys = np.array([r.measurement.latency_ms for r in recs if r.config.type == t])
            hp = pred.meta.kernels[t].hyperparams
            forests[t] = RandomForestRegressor(random_state=0, n_jobs=1, **hp).fit(features(cs), ys)
        rng = random.Random(0)
        subs = [sample_subnet(sp, "random", rng).to_string() for _ in range(args.baseline_n)]
        t0 = time.perf_counter()
        for s in subs:
            total = 0.0
            for k in resolve(sp, s).kernels():
                c = KernelConfig.from_kernel(k)
                total += float(forests[c.type].predict(features([c]))[0])
        t_base = time.perf_counter() - t0
        base = args.baseline_n / t_base
    print(f"space {SPACE}; predictor: {args.predictor or 'synthetic (all kernel types)'}")
    print(f"layer table: {table.n_layers} layers predicted in {t_table:.2f} s (once per space and predictor)")
    print(f"ours (batch of {args.n}): {ours:,.0f} subnets/s  ({t_batch * 1e3:.0f} ms; mean {np.nanmean(lat):.2f} ms)")
    print(f"nn-Meter way ({args.baseline_n} subnets, sklearn forest per kernel): {base:,.1f} subnets/s")
    print(f"ratio: {ours / base:,.0f}x")


if __name__ == "__main__":
    main()
