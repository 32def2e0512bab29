"""Predictor artifacts: a directory that outlives library upgrades.

Layout (format ``hil-predictor/3``)::

    <dir>/metadata.json   device, backend, fingerprint, training-data hash, library versions,
                          overhead_ms and boundary_ns_per_element (added once per model), and per
                          kernel type: feature names, target transform (predictors.targets: ms, log_ms,
                          log_ms_per_work), hyper-parameters, metrics, optionally ``feature_range``
                          (the training rows' [min, max] per size feature); optionally ``calibration``
                          (predictors.calibration: per-type scales fitted on measured whole networks)
    <dir>/forests.npz     per kernel type ``<type>.left|right|feature|threshold|value|roots|meta``
                          (plain .npy members; loaded with allow_pickle=False)

Nothing is pickled: loading needs numpy and this module only, so a predictor trained under one
scikit-learn loads and predicts identically under any other (see :mod:`predictors.forest`).
"""
from __future__ import annotations

from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Iterable

import numpy as np
from pydantic import BaseModel

from exporters.kernel_config import KernelConfig

from .calibration import ModelCalibration
from .features import feature_names, features
from .forest import ArrayForest
from .targets import from_target

FORMAT = "hil-predictor/3"
# /1 had targets ms and log_ms only; /2 adds log_ms_per_work and boundary_ns_per_element; /3 adds the optional
# model-level calibration. A reader accepts every format it knows; an older reader refuses a newer format
# instead of misreading it (a /2 reader would silently ignore a calibration and predict other numbers).
READABLE = ("hil-predictor/1", "hil-predictor/2", FORMAT)
# Predictor.outside_training: the features that describe a kernel's shape, and how far beyond the trained range
# of a map size or channel count a prediction still counts as interpolated
SHAPE_FEATURES = ("hw", "cin", "cout", "mid", "kernel", "stride")
EXTRAPOLATION_FACTOR = 2.0


class KernelModelInfo(BaseModel):
    features: list[str]
    target: str  # one of predictors.targets.TARGETS
    hyperparams: dict
    metrics: dict
    # [min, max] of each size feature over the rows the forest was fitted on (optional: predictors trained before
    # 2026-12-04 get it from their dataset with `predictors ranges`). A forest cannot extrapolate: outside this box
    # it answers with its nearest leaves, so a prediction there is flagged (see Predictor.outside_training).
    feature_range: dict[str, list[float]] | None = None


class PredictorMeta(BaseModel):
    format: str = FORMAT
    device: str
    backend: str
    fingerprint: dict | None = None
    created_at: str = ""
    training_data: dict = {}
    library_versions: dict = {}
    kernels: dict[str, KernelModelInfo]
    overhead_ms: float = 0.0  # per-model invocation overhead, removed from each kernel, added once per model
    # ns per element of the float<->int8 conversions at a kernel model's inputs and output ("quantize",
    # "dequantize"; onnxruntime only, see profilers.boundary): removed from each kernel, added once per model
    boundary_ns_per_element: dict[str, float] = {}
    calibration: ModelCalibration | None = None

    def boundary_ms(self, in_elements, out_elements):
        """Conversion cost of float inputs of ``in_elements`` and outputs of ``out_elements`` elements."""
        b = self.boundary_ns_per_element
        return (b.get("quantize", 0.0) * np.asarray(in_elements, float)
                + b.get("dequantize", 0.0) * np.asarray(out_elements, float)) * 1e-6


def library_versions() -> dict[str, str]:
    out = {}
    for dist in ("scikit-learn", "numpy", "onnxruntime", "ai-edge-litert"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out


class Predictor:
    """Kernel-level latency predictor of one device; the latency of a network is the sum of its kernels."""

    def __init__(self, meta: PredictorMeta, forests: dict[str, ArrayForest]):
        self.meta, self.forests = meta, forests
        self._cache: dict[KernelConfig, float] = {}
        self._outside: dict[KernelConfig, str | None] = {}  # outside_training's verdict per config

    # --- persistence -------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        meta = self.meta.model_copy(update={"created_at": self.meta.created_at or datetime.now(timezone.utc).isoformat(),
                                            "library_versions": self.meta.library_versions or library_versions()})
        arrays = {}
        for t, f in self.forests.items():
            arrays.update(f.to_arrays(f"{t}."))
        np.savez_compressed(path / "forests.npz", **arrays)
        (path / "metadata.json").write_text(meta.model_dump_json(indent=1))
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Predictor":
        path = Path(path)
        if not (path / "metadata.json").is_file():
            raise FileNotFoundError(f"predictor: {path} has no metadata.json (not a predictor directory)")
        meta = PredictorMeta.model_validate_json((path / "metadata.json").read_text())
        if meta.format not in READABLE:
            raise ValueError(f"predictor format: {meta.format!r} is not supported; allowed: {', '.join(READABLE)}")
        with np.load(path / "forests.npz", allow_pickle=False) as z:
            forests = {t: ArrayForest.from_arrays(z, f"{t}.") for t in meta.kernels}
        return cls(meta, forests)

    # --- prediction ------------------------------------------------------------------------------
    @property
    def kernel_types(self) -> list[str]:
        return list(self.forests)

    def predict_kernels(self, configs: Iterable[KernelConfig], calibrated: bool = True) -> tuple[np.ndarray, list[str]]:
        """Latency (ms) of each config; unknown kernel types get NaN and are listed, never counted as 0.

        With a calibration, each kernel's forest prediction is multiplied by its type's scale and the per-kernel
        cost is added: the kernel's cost inside a network (``calibrated=False`` gives the isolated kernel's, which the calibration is fitted on)."""
        configs = list(configs)
        todo: dict[str, list[KernelConfig]] = {}
        for c in configs:
            if c not in self._cache and c.type in self.forests:
                todo.setdefault(c.type, []).append(c)
        for t, cs in todo.items():
            cs = list(dict.fromkeys(cs))
            y = from_target(self.meta.kernels[t].target, self.forests[t].predict(features(cs)), cs)
            self._cache.update(zip(cs, y.tolist()))
        unknown = sorted({c.type for c in configs if c.type not in self.forests})
        y = np.array([self._cache.get(c, np.nan) for c in configs])
        cal = self.meta.calibration
        if calibrated and cal is not None:
            y = y * np.array([cal.scales.get(c.type, 1.0) for c in configs]) + cal.per_kernel_ms
        return y, unknown

    def outside_training(self, configs: Iterable[KernelConfig]) -> list[str]:
        """One line per distinct config whose shape lies beyond its forest's training data.

        Why: a random forest answers any input with the leaves nearest to it. keras.applications' MobileNetV3-Small
        was predicted +74% on the Zen 5 host because its stem is a 3x3 stride-2 hard-swish conv at 224x224 from 3
        channels, and every hard-swish conv of our hyperspaces (which the kernels are sampled from) is a 1x1 at
        104x104 or less from 16 channels or more: the forest gave that 5 MMAC conv 1.6 ms, 30x its ReLU twin.
        Judged on the shape only: a kernel size or stride the forest never saw, or a map size or channel count more
        than :data:`EXTRAPOLATION_FACTOR` times beyond the trained range. Work-derived features (MFLOPs, params)
        are left out because the per-work targets already scale a prediction by the kernel's own work: with them
        a plain box flagged 545 of the 600 held-out subnets on the Zen 4 LiteRT predictor, which predicts 98.5%
        of them within 10%."""
        configs = list(dict.fromkeys(configs))
        todo: dict[str, list[KernelConfig]] = {}
        for c in configs:  # cached like the latencies: the service's detail path asks this once per subnet
            if c not in self._outside:
                todo.setdefault(c.type, []).append(c)
        for t, cs in todo.items():
            info = self.meta.kernels.get(t)
            if info is None or not info.feature_range:
                self._outside.update(dict.fromkeys(cs))
                continue
            for c, x in zip(cs, features(cs)):
                bad = []
                for n, v in zip(info.features, x):
                    if n not in info.feature_range or n not in SHAPE_FEATURES:
                        continue
                    lo, hi = info.feature_range[n]
                    f = 1.0 if n in ("kernel", "stride") else EXTRAPOLATION_FACTOR
                    if not lo / f <= v <= hi * f:
                        bad.append(f"{n} {v:g}, trained {lo:g}" + (f"-{hi:g}" if hi > lo else " only"))
                self._outside[c] = (f"{c.slug()}: beyond its forest's training data ({'; '.join(bad)}); extrapolated"
                                    if bad else None)
        return [m for c in configs if (m := self._outside[c]) is not None]

    def fixed_ms(self, in_elements, out_elements):
        """Per-model cost: the invocation overhead plus the network's input quantize and output dequantize
        (``in_elements``/``out_elements`` floats), as calibrated when the predictor has a calibration."""
        io = self.meta.boundary_ms(in_elements, out_elements)
        cal = self.meta.calibration
        if cal is None:
            return io + self.meta.overhead_ms
        return cal.io_scale * io + cal.fixed_ms


def check_features(kernel_type: str, names: list[str]) -> None:
    if list(feature_names(kernel_type)) != names:
        raise ValueError(f"{kernel_type}: stored features {names} differ from this version's "
                         f"{list(feature_names(kernel_type))}; retrain the predictor")


class GraphPrediction(BaseModel):
    """Prediction for a whole model graph: total only when every op is covered."""

    latency_ms: float | None
    kernels: list[dict]
    unknown_kernels: list[str]
    unsupported_ops: dict[str, int]
    warnings: list[str]
    # kernels beyond their forest's training data: the total is still given, but it rests on an extrapolation
    extrapolated: list[str] = []


def predict_model(predictor: Predictor, model: str | Path) -> GraphPrediction:
    """Detect the kernels of an ONNX or TFLite model and sum their predictions.

    The total is given only when every op is covered; otherwise ``latency_ms`` is None and the
    warnings name each unsupported op and each kernel type without a forest."""
    path = Path(model)
    if path.suffix == ".onnx":
        from .onnx_graph import detect_onnx as detect
    elif path.suffix == ".tflite":
        from .tflite_graph import detect_tflite as detect
    else:
        raise ValueError(f"model: {path.name!r} is not allowed; allowed: .onnx or .tflite files")
    det = detect(path)
    return predict_kernel_list(predictor, det.kernels, det.unsupported)


def predict_kernel_list(predictor: Predictor, kernels: list[KernelConfig],
                        unsupported: dict[str, int] | None = None) -> GraphPrediction:
    """A model's latency from its kernels: their sum plus the per-model overhead once; no total when an op
    or a kernel type is not covered (each is named in ``warnings``)."""
    unsupported = unsupported or {}
    lat, unknown = predictor.predict_kernels(kernels)
    warnings = [f"unsupported op {op} x{n}: no kernel predictor, not counted" for op, n in unsupported.items()]
    warnings += [f"kernel type {t} has no forest in this predictor" for t in unknown]
    ok = not warnings
    fixed = float(predictor.fixed_ms(0, 0))
    if kernels:  # the network's own input quantize and output dequantize, once
        from profilers.boundary import kernel_elements

        fixed = float(predictor.fixed_ms(kernel_elements(kernels[0])[0], kernel_elements(kernels[-1])[1]))
    return GraphPrediction(latency_ms=float(np.nansum(lat)) + fixed if ok else None,
                           kernels=[{**c.model_dump(), "latency_ms": None if np.isnan(v) else float(v)}
                                    for c, v in zip(kernels, lat)],
                           unknown_kernels=unknown, unsupported_ops=unsupported, warnings=warnings,
                           extrapolated=predictor.outside_training(kernels))
