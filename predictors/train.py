"""Train one random forest per kernel type from a measurement dataset (see profilers.dataset).

nn-Meter's settings are the starting point of a small per-kernel search, not the answer: for each
kernel type we try a few forests (trees, depth, features per split) and two targets (ms, log ms),
score them on a held-out split of configs by RMSPE, keep the best, and refit it on all data.
Only successful, stable INT8 records are used by default; unstable ones are kept in the dataset
for analysis but would teach the forest the machine's noise.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
from sklearn.ensemble import RandomForestRegressor

from profilers.boundary import kernel_elements
from profilers.dataset import Dataset

from .artifact import KernelModelInfo, Predictor, PredictorMeta
from .features import feature_names, feature_ranges, features
from .forest import ArrayForest
from .targets import TARGETS, from_target, to_target

GRID = [
    {"n_estimators": 100, "max_depth": None, "max_features": 1.0, "min_samples_leaf": 1},
    {"n_estimators": 200, "max_depth": 40, "max_features": 0.6, "min_samples_leaf": 1},
    {"n_estimators": 200, "max_depth": None, "max_features": 0.8, "min_samples_leaf": 2},
]


def metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict:
    rel = (y_pred - y_true) / y_true
    return {"rmse_ms": float(np.sqrt(np.mean((y_pred - y_true) ** 2))), "rmspe": float(np.sqrt(np.mean(rel ** 2))),
            "acc5": float(np.mean(np.abs(rel) <= 0.05)), "acc10": float(np.mean(np.abs(rel) <= 0.10)),
            "n": int(len(y_true))}


def dataset_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


STATISTICS = ("p10", "min", "median", "mean")


def train(dataset: str | Path, device: str, precision: str = "int8", stable_only: bool = True,
          statistic: str = "p10",
          min_records: int = 10, seed: int = 0, progress=None) -> Predictor:
    ds = Dataset(Path(dataset))
    by_type, backend, fingerprint = _rows(ds, precision, stable_only, statistic)
    if not by_type:
        raise ValueError(f"dataset {dataset}: no usable {precision} records (ok{' and stable' if stable_only else ''})")
    overhead, boundary = 0.0, {}
    oh_path = Path(dataset).parent / "overhead.json"
    if oh_path.is_file():  # see profilers.collect.measure_overhead and profilers.boundary
        doc = json.loads(oh_path.read_text())
        overhead = float(doc["overhead_ms"])
        boundary = {op: float(f["ns_per_element"]) for op, f in (doc.get("boundary") or {}).items()
                    if op in ("quantize", "dequantize")}
    probe = PredictorMeta(device=device, backend=backend or "", kernels={}, boundary_ns_per_element=boundary)
    rng = np.random.default_rng(seed)
    forests, infos = {}, {}
    for t, (cs, ys) in sorted(by_type.items()):
        if len(cs) < min_records:
            continue
        elems = np.array([kernel_elements(c) for c in cs], float)
        X = features(cs)
        fixed = overhead + probe.boundary_ms(elems[:, 0], elems[:, 1])  # what the kernel model paid around it
        y = np.maximum(np.asarray(ys) - fixed, 1e-4)
        idx = rng.permutation(len(y))
        n_test = max(2, len(y) // 5)
        te, tr = idx[:n_test], idx[n_test:]
        yts = {target: to_target(target, y, cs) for target in TARGETS}  # once, not once per grid point
        cs_te = [cs[i] for i in te]
        best = None
        for hp in GRID:
            for target, yt in yts.items():
                rf = RandomForestRegressor(random_state=seed, n_jobs=1, **hp).fit(X[tr], yt[tr])
                pred = from_target(target, rf.predict(X[te]), cs_te)
                # judged on what was measured: for small kernels the part left after removing the fixed
                # costs is a small difference of two noisy numbers, and its relative error says little
                m = metrics(y[te] + fixed[te], pred + fixed[te])
                if best is None or m["rmspe"] < best[0]["rmspe"]:
                    best = (m, hp, target)
        m, hp, target = best
        rf = RandomForestRegressor(random_state=seed, n_jobs=1, **hp).fit(X, yts[target])
        forests[t] = ArrayForest.from_sklearn(rf)
        infos[t] = KernelModelInfo(features=list(feature_names(t)), target=target, hyperparams=hp,
                                   metrics={**m, "n_train": int(len(tr))}, feature_range=feature_ranges(t, X))
        if progress:
            progress(t, infos[t])
    meta = PredictorMeta(device=device, backend=backend, fingerprint=fingerprint, kernels=infos,
                         training_data={"path": str(dataset), "sha256": dataset_sha256(ds.path), "records": len(ds),
                                        "precision": precision, "stable_only": stable_only, "statistic": statistic},
                         overhead_ms=overhead, boundary_ns_per_element=boundary)
    return Predictor(meta, forests)


def _rows(ds: Dataset, precision: str, stable_only: bool, statistic: str):
    """The records a forest is fitted on, by kernel type: ``{type: (configs, latencies)}``, backend, fingerprint."""
    by_type: dict[str, tuple[list, list]] = {}
    backend, fingerprint = None, None
    for r in ds:
        m = r.measurement
        if r.precision != precision or not m.ok or (stable_only and not m.stable):
            continue
        backend = backend or r.backend
        fingerprint = fingerprint or (m.fingerprint.model_dump() if m.fingerprint else None)
        cs, ys = by_type.setdefault(r.config.type, ([], []))
        cs.append(r.config)
        ys.append(_statistic(m, statistic))
    return by_type, backend, fingerprint


def record_ranges(predictor: Predictor, dataset: str | Path | None = None) -> Predictor:
    """The predictor with each forest's training range recorded from its own training data, which must be the
    dataset it was trained on (SHA-256 checked): for predictors trained before ranges were recorded. The forests
    and every number they predict are unchanged."""
    td = predictor.meta.training_data
    ds = Dataset(Path(dataset or td.get("path", "")))
    if not ds.path.is_file() or dataset_sha256(ds.path) != td.get("sha256"):
        raise ValueError(f"dataset: {ds.path} is not the data this predictor was trained on (sha256 "
                         f"{str(td.get('sha256'))[:12]}...); give its training data ({td.get('path')})")
    by_type, _, _ = _rows(ds, td.get("precision", "int8"), td.get("stable_only", True), td.get("statistic", "p10"))
    kernels = {t: info.model_copy(update={"feature_range": feature_ranges(t, features(by_type[t][0]))})
               for t, info in predictor.meta.kernels.items()}
    return Predictor(predictor.meta.model_copy(update={"kernels": kernels}), predictor.forests)


def _statistic(m, statistic: str) -> float:
    """The kernel latency a forest learns: ``p10`` (the protocol's estimator), ``min``, ``median`` or ``mean``.

    ``min`` is for hosts whose slow phases last seconds (Emerald Rapids on 2026-12-06: the probe alternated
    between 0.230 and 0.345 ms second by second), where a 2 s record's p10 can fall in a slow phase and its
    fastest run still sees the fast state; a record without ``min_ms`` falls back to ``latency_ms``."""
    if statistic not in STATISTICS:
        raise ValueError(f"statistic: {statistic!r} is not allowed; allowed: {', '.join(STATISTICS)}")
    v = {"p10": m.p10_ms if m.p10_ms is not None else m.latency_ms, "min": m.min_ms, "median": m.median_ms,
         "mean": m.mean_ms}[statistic]
    return float(v if v is not None else m.latency_ms)


def worst_configs(dataset: str | Path, predictor, threshold: float = 0.10, folds: int = 5, seed: int = 0,
                  precision: str = "int8") -> list[tuple[float, "object"]]:
    """Configs whose out-of-fold prediction misses the measurement by more than ``threshold``.

    Each kernel type's forest (the predictor's chosen hyper-parameters and target) is refit on
    k-1 folds and asked about the held-out fold, so every config gets an honest error. The result,
    worst first, is what ``python -m profilers collect --refine`` takes to add neighbours there:
    the adaptive half of nn-Meter's sampler.
    """
    from sklearn.model_selection import KFold

    by_type: dict[str, tuple[list, list]] = {}
    for r in Dataset(Path(dataset)):
        m = r.measurement
        if r.precision == precision and m.ok and m.stable and r.config.type in predictor.meta.kernels:
            cs, ys = by_type.setdefault(r.config.type, ([], []))
            cs.append(r.config)
            ys.append(m.latency_ms)
    out = []
    for t, (cs, ys) in by_type.items():
        info = predictor.meta.kernels[t]
        X, y = features(cs), np.asarray(ys)
        if len(y) < folds:
            continue
        yt = to_target(info.target, y, cs)
        pred = np.empty(len(y))
        for tr, te in KFold(folds, shuffle=True, random_state=seed).split(X):
            rf = RandomForestRegressor(random_state=seed, n_jobs=1, **info.hyperparams).fit(X[tr], yt[tr])
            pred[te] = rf.predict(X[te])
        pred = from_target(info.target, pred, cs)
        rel = np.abs(pred - y) / y
        out += [(float(e), c) for e, c in zip(rel, cs) if e > threshold]
    return sorted(out, key=lambda p: -p[0])
