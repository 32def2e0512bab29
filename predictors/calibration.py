"""Model-level calibration: per-kernel-type scales fitted on whole subnets measured end to end.

Why: nn-Meter predicts a network as the sum of its kernels, each measured alone. Inside a network a
kernel does not cost quite what it costs alone: its input arrives from the previous kernel (hot in
cache, in the layout that kernel left), onnxruntime schedules nodes with a per-node cost that an
isolated kernel model pays once, and graph transformations can reach across kernel boundaries. The
forests are unbiased for isolated kernels, so the sum inherits a systematic error *per kernel type*.
We saw it on the Xeon: mobilew subnets measured 1.13x their predicted sum, onnxw 1.01x (docs/eval).

The correction is linear and has few parameters, so the sum of kernels stays the prediction:

    latency = c0 + a_io * io + d * n_kernels + sum over kernel types t of a_t * S_t

where ``S_t`` is the summed prediction of the network's kernels of type ``t``, ``io`` the
network's own input quantize and output dequantize (see :mod:`profilers.boundary`) and ``d`` a cost
per kernel: the invocation overhead removed from every kernel in training was measured on a one-node
model, so it holds one node's dispatch, which a network pays for each of its nodes. The
coefficients minimise the squared *relative* error (the acceptance is relative) plus a ridge
``lam * sum (a - 1)^2`` that pulls a scale the calibration set says little about back to 1; ``lam``
is chosen by K-fold cross-validation, the scales are bounded to [1/4, 4], ``d`` to [0, 50 us] and
``c0`` to [0, 5 ms]. With no calibration (``a = 1``, ``d = 0``, ``c0 = overhead_ms``) the prediction is
the plain kernel sum. Applied per kernel (scaled, plus ``d``), so every path that sums kernels (the batch
tables, the service's stage latencies, any ONNX model) gets the same correction.

The calibration set must not overlap the evaluation set: ``predictors eval --set calib`` measures
subnets drawn with other seeds and named ``<hyperspace>-calib-<i>`` (see :func:`predictors.evaluate.eval_set`).

**Session calibration** (:func:`session_calibrate`, ``predictors calibrate --session``). On a shared VM what moves
between sessions is not only the speed but the per-kernel cost: on the Zen 4 host the calibrated ``d`` was 4.4 us
on 2026-11-24 and 1.6 us on 2026-12-04 (the neighbours' use of the shared cache; a float-matmul probe does not see
it), and a calibration fitted in one state missed the bar in the other (80-93% within 10% where 96-98% held in its
own). The per-type scales describe the runtime and stay; a session refits two numbers on top of them from a
handful of networks measured at its start (the ``calib-small`` set, minutes):

    latency = g * (sum over t of a_t * S_t + a_io * io + c0) + d * n_kernels

``g`` and ``d`` minimise the squared relative error plus a ridge toward the base (``g = 1``, ``d = d0``), its
weight chosen by leave-one-out. The result is folded into an ordinary calibration (scales ``g * a_t``, ``d``,
``g * c0``), so every prediction path and every reader of the format predicts with it unchanged; the base it was
fitted on is kept in ``session.base`` and a later session refits from that base, never from an earlier session.
"""
from __future__ import annotations

import hashlib
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from pydantic import BaseModel, Field

IO = "io"  # the pseudo kernel type of the network's input quantize / output dequantize
LAMBDAS = (1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)
SCALE_BOUNDS = (0.25, 4.0)
FIXED_MAX_MS = 5.0
PER_KERNEL_MAX_MS = 0.05
SESSION_LAMBDAS = (0.0, 1e-3, 1e-2, 1e-1, 1.0, 10.0)
SESSION_SCALE_BOUNDS = (0.5, 2.0)  # a session this far off its base is another machine, not another state
SESSION_MIN_MODELS = 5


class ModelCalibration(BaseModel):
    """The fitted correction, stored in a predictor's metadata.json (format hil-predictor/3)."""

    method: str = "relative-least-squares, ridge toward 1, K-fold lambda"
    scales: dict[str, float]  # per kernel type; a type not listed keeps scale 1
    io_scale: float = 1.0
    per_kernel_ms: float = Field(0.0, ge=0)  # added to every kernel
    fixed_ms: float = Field(0.0, ge=0)  # per model, replaces the kernel-model overhead
    lam: float
    n_models: int
    data: dict = {}  # path and sha256 of the measured subnets
    cv: dict = {}  # K-fold metrics of the raw sum and of the calibrated sum, on the calibration set
    fitted_at: str = ""
    # Fitted to anchored latencies (predictors/anchor.py): the anchor network's median latency over the calibration
    # set, the machine state that this predictor's numbers are in; an evaluation of it anchors to the same value.
    anchor: str | None = None  # "<space>:<arch>" of the anchor network
    anchor_ref_ms: float | None = None
    # The median reference probe over the calibration set's rounds (predictors/speed.py): the machine state the fit
    # was made in, recorded so that an evaluation can report its measurements normalized to the same state.
    probe_ref_ms: float | None = None
    # Set by a session calibration: the two numbers refitted for one session, and the calibration they refit.
    session: SessionFit | None = None


class SessionFit(BaseModel):
    """What a session calibration refitted (see the module's docstring), stored in ``ModelCalibration.session``."""

    method: str = "relative least squares of g and d on the base calibration; ridge toward g=1, d=d0, LOO lambda"
    scale: float  # g
    per_kernel_ms: float  # d (the base's d0 is base.per_kernel_ms)
    lam: float
    n_models: int
    data: dict = {}  # path and sha256 of the session's measured networks
    cv: dict = {}  # on the session's networks: the base calibration, and the session fit leave-one-out
    measured_from: str | None = None  # the session's first and last record (measured_at)
    measured_to: str | None = None
    probe_ms: float | None = None  # the session's median reference probe (predictors/speed.py)
    fitted_at: str = ""
    warnings: list[str] = []  # a fit at a bound: the session is not a state of the base's machine
    base: ModelCalibration

    def summary(self) -> dict:
        """What an answer or a report says of the session (GET /predictors' ``accuracy.session``, eval.json)."""
        return {"n_models": self.n_models, "measured_from": self.measured_from, "measured_to": self.measured_to,
                "scale": round(self.scale, 5), "per_kernel_ms": round(self.per_kernel_ms, 6),
                "base_per_kernel_ms": round(self.base.per_kernel_ms, 6), "source": self.data.get("source"),
                "warnings": self.warnings}


def design(predictor, nets: list) -> tuple[np.ndarray, list[str]]:
    """Per network: [S_t for each kernel type..., io, n_kernels, 1], from *uncalibrated* kernel predictions."""
    from exporters.kernel_config import KernelConfig

    return design_kernels(predictor, [[KernelConfig.from_kernel(k) for k in net.kernels()] for net in nets])


def design_kernels(predictor, per_net: list[list]) -> tuple[np.ndarray, list[str]]:
    """:func:`design` from each network's kernel list (KernelConfigs, e.g. detected in a model file)."""
    from profilers.boundary import kernel_elements

    if not all(per_net):
        raise ValueError("calibration: a network without kernels")
    flat = [c for cs in per_net for c in cs]
    lat, unknown = predictor.predict_kernels(flat, calibrated=False)
    if unknown:
        raise ValueError(f"calibration: kernel types without a forest in this predictor: {', '.join(unknown)}")
    types = sorted({c.type for c in flat})
    col = {t: i for i, t in enumerate(types)}
    X = np.zeros((len(per_net), len(types) + 3))
    pos = 0
    for i, cs in enumerate(per_net):
        for c, v in zip(cs, lat[pos:pos + len(cs)]):
            X[i, col[c.type]] += v
        pos += len(cs)
        X[i, -3] = float(predictor.meta.boundary_ms(kernel_elements(cs[0])[0], kernel_elements(cs[-1])[1]))
        X[i, -2] = len(cs)
        X[i, -1] = 1.0
    return X, types


def _solve(X: np.ndarray, y: np.ndarray, lam: float) -> np.ndarray:
    from scipy.optimize import lsq_linear

    p = X.shape[1]
    A = np.vstack([X / y[:, None], np.sqrt(lam) * np.eye(p)[:-2]])  # scales toward 1; no ridge on d and c0
    b = np.concatenate([np.ones(len(y)), np.sqrt(lam) * np.ones(p - 2)])
    lo = np.r_[np.full(p - 2, SCALE_BOUNDS[0]), 0.0, 0.0]
    hi = np.r_[np.full(p - 2, SCALE_BOUNDS[1]), PER_KERNEL_MAX_MS, FIXED_MAX_MS]
    # clipped: at an active bound BVLS can return the bound minus rounding (fixed_ms -4e-16 on the Zen 4 host without
    # AVX-512, whose BLAS rounds differently), which ModelCalibration's ge=0 then refuses
    return np.clip(lsq_linear(A, b, bounds=(lo, hi), method="bvls").x, lo, hi)


def _metrics(y: np.ndarray, pred: np.ndarray) -> dict:
    from .train import metrics

    return metrics(y, pred)


def fit(X: np.ndarray, y: np.ndarray, types: list[str], overhead_ms: float = 0.0, folds: int = 5,
        seed: int = 0) -> tuple[np.ndarray, float, dict]:
    """Coefficients (one per column of ``X``), the chosen lambda, and K-fold metrics (raw vs calibrated)."""
    y = np.asarray(y, float)
    if len(y) < 2 * folds:
        raise ValueError(f"calibration: {len(y)} measured networks; at least {2 * folds} are needed")
    if not np.all(np.isfinite(X)) or not np.all(y > 0):
        raise ValueError("calibration: predictions must be finite and measurements positive")
    idx = np.random.default_rng(seed).permutation(len(y))
    parts = np.array_split(idx, folds)
    best = None
    for lam in LAMBDAS:
        oof = np.empty(len(y))
        for k in range(folds):
            te = parts[k]
            tr = np.concatenate([parts[j] for j in range(folds) if j != k])
            oof[te] = X[te] @ _solve(X[tr], y[tr], lam)
        m = _metrics(y, oof)
        if best is None or m["rmspe"] < best[1]["rmspe"]:
            best = (lam, m)
    lam, cv = best
    raw = X[:, :-2].sum(1) + overhead_ms
    return _solve(X, y, lam), lam, {"raw": _metrics(y, raw), "calibrated_out_of_fold": cv}


def _provenance(paths: list[Path]) -> dict:
    """Where the calibration's measurements came from: one run as {path, sha256}; several as {runs: [...]}."""
    runs = [{"path": str(p), "sha256": hashlib.sha256(p.read_bytes()).hexdigest()} for p in paths]
    return runs[0] if len(runs) == 1 else {"runs": runs, "pooled": "fastest record per network"}


def calibrate(predictor, results: str | Path | list[str | Path], folds: int = 5,
              anchored: bool = False) -> ModelCalibration:
    """Fit the calibration of ``predictor`` from measured subnets (an eval results.jsonl) and return it.

    Several results files are runs of the same calibration set, pooled network by network (the fastest record,
    :func:`predictors.evaluate.pool_results`), so that the fit does not carry one session's machine state.

    With ``anchored`` and records measured beside an anchor network, the targets are anchored latencies at the
    set's median anchor (see :mod:`predictors.anchor`), which is stored with the calibration."""
    from spaces import resolve

    from . import anchor as anc
    from .evaluate import pool_results
    from .speed import reference_probe_ms

    paths = [Path(x) for x in (results if isinstance(results, list) else [results])]
    recs = [r for r in pool_results(paths).values() if r.get("ok") and r.get("measured_ms") and r.get("space")]
    if not recs:
        raise ValueError(f"calibration: {', '.join(map(str, paths))} has no measured subnets (ok, with measured_ms "
                         "and space)")
    ref = anc.reference_ms(recs) if anchored else None
    if ref is not None:
        recs = [r for r in recs if anc.ratio(r) is not None]
        y = np.array([anc.anchored_ms(r, ref) for r in recs])
        a_id = recs[0].get("anchor")
    else:
        y = np.array([r["measured_ms"] for r in recs])
        a_id = None
    nets = [resolve(r["space"], r["arch"]) for r in recs]
    X, types = design(predictor, nets)
    beta, lam, cv = fit(X, y, types, predictor.meta.overhead_ms, folds)
    return ModelCalibration(scales={t: float(a) for t, a in zip(types, beta)}, io_scale=float(beta[-3]),
                            per_kernel_ms=float(beta[-2]), fixed_ms=float(beta[-1]), lam=lam, n_models=len(y),
                            data=_provenance(paths),
                            cv=cv, fitted_at=datetime.now(timezone.utc).isoformat(), anchor=a_id, anchor_ref_ms=ref,
                            probe_ref_ms=reference_probe_ms(recs))


def plain_sum(predictor) -> ModelCalibration:
    """The calibration that predicts the plain kernel sum (what a predictor without one predicts)."""
    return ModelCalibration(method="none: the plain kernel sum", scales={}, fixed_ms=predictor.meta.overhead_ms,
                            lam=0.0, n_models=0)


def session_base(predictor) -> ModelCalibration:
    """The calibration a session refits: the predictor's own, the base of its session where it holds one (sessions
    never compound), the plain kernel sum where it has none."""
    cal = predictor.meta.calibration
    return cal.session.base if cal is not None and cal.session is not None else (cal or plain_sum(predictor))


def session_design(predictor, nets: list, base: ModelCalibration, kernels: bool = False) -> tuple[np.ndarray,
                                                                                                  np.ndarray]:
    """Per network: ``B``, what ``base`` predicts without its per-kernel cost, and ``n``, its number of kernels; a
    session's prediction is ``g * B + d * n``. ``nets`` are subnets, or kernel lists with ``kernels``."""
    X, types = design_kernels(predictor, nets) if kernels else design(predictor, nets)
    a = np.array([base.scales.get(t, 1.0) for t in types])
    return X[:, :len(types)] @ a + base.io_scale * X[:, -3] + base.fixed_ms, X[:, -2]


def _session_solve(B: np.ndarray, n: np.ndarray, y: np.ndarray, lam: float, d0: float, m: float) -> np.ndarray:
    """(g, d) minimising sum ((g B + d n) / y - 1)^2 + lam ((g - 1)^2 + (m (d - d0))^2).

    ``m`` (kernels per ms of a typical network) puts d's ridge in the same units as g's: the share of a network's
    latency that d moves."""
    from scipy.optimize import lsq_linear

    A = np.vstack([np.c_[B / y, n / y], np.sqrt(lam) * np.diag([1.0, m])])
    b = np.r_[np.ones(len(y)), np.sqrt(lam) * np.array([1.0, m * d0])]
    lo, hi = [SESSION_SCALE_BOUNDS[0], 0.0], [SESSION_SCALE_BOUNDS[1], PER_KERNEL_MAX_MS]
    return np.clip(lsq_linear(A, b, bounds=(lo, hi), method="bvls").x, lo, hi)  # rounding at a bound: see _solve


def fit_session(B: np.ndarray, n: np.ndarray, y: np.ndarray, d0: float) -> tuple[float, float, float, dict]:
    """g, d, the chosen lambda, and metrics on the session's networks: the base (g=1, d=d0), the session fit
    leave-one-out (each network predicted by a fit without it) and in-sample."""
    B, n, y = (np.asarray(v, float) for v in (B, n, y))
    if len(y) < SESSION_MIN_MODELS:
        raise ValueError(f"session calibration: {len(y)} measured networks; at least {SESSION_MIN_MODELS} are needed")
    if not (np.all(np.isfinite(B)) and np.all(B > 0) and np.all(y > 0)):
        raise ValueError("session calibration: predictions must be finite and positive, measurements positive")
    m = float(np.median(n / y))
    best = None
    for lam in SESSION_LAMBDAS:
        loo = np.empty(len(y))
        for i in range(len(y)):
            keep = np.arange(len(y)) != i
            g, d = _session_solve(B[keep], n[keep], y[keep], lam, d0, m)
            loo[i] = g * B[i] + d * n[i]
        met = _metrics(y, loo)
        if best is None or met["rmspe"] < best[1]["rmspe"] - 1e-12:
            best = (lam, met)
    lam, loo_m = best
    g, d = _session_solve(B, n, y, lam, d0, m)
    return float(g), float(d), lam, {"base": _metrics(y, B + d0 * n), "session_leave_one_out": loo_m,
                                     "session_in_sample": _metrics(y, g * B + d * n)}


def session_calibrate(predictor, results: str | Path | list[str | Path]) -> ModelCalibration:
    """Refit ``predictor``'s calibration for this session from networks measured in it (an eval results.jsonl,
    normally of ``--set calib-small``) and return it: only a global scale ``g`` and the per-kernel cost ``d``
    move. The base is the predictor's calibration (the plain kernel sum where it has none); where the predictor
    already holds a session calibration, its base, so sessions never compound."""
    from .evaluate import pool_results

    paths = [Path(x) for x in (results if isinstance(results, list) else [results])]
    return session_calibrate_records(predictor, list(pool_results(paths).values()), _provenance(paths))


def session_calibrate_records(predictor, recs: list[dict], data: dict) -> ModelCalibration:
    """:func:`session_calibrate` from records (name, space, arch, measured_ms, optionally ok, probe_ms and
    measured_at), e.g. posted by a device agent; ``data`` says where they came from.

    Every record must be the network of the calibration sets that its name says (checked before anything is
    resolved, so a client's strings never reach the search-space parser): a session fitted on evaluation networks
    would judge the predictor on what it was fitted to. Records that failed (``ok`` false) are checked, not fitted."""
    from spaces import resolve

    from .evaluate import set_mismatches
    from .speed import reference_probe_ms

    bad = set_mismatches(recs)
    if bad:
        raise ValueError(f"session calibration: {len(bad)} records are not networks of the calibration sets (calib, "
                         f"calib-small; the evaluation set is refused): {'; '.join(bad[:3])}")
    n_given = len(recs)
    recs = [r for r in recs if r.get("ok", True) and r.get("measured_ms") and r.get("space")]
    if not recs:
        raise ValueError(f"session calibration: none of the {n_given} records is a measured subnet (ok, with "
                         "measured_ms and space)")
    base = session_base(predictor)
    y = np.array([r["measured_ms"] for r in recs])
    B, n = session_design(predictor, [resolve(r["space"], r["arch"]) for r in recs], base)
    g, d, lam, cv = fit_session(B, n, y, base.per_kernel_ms)
    times = sorted(r["measured_at"] for r in recs if r.get("measured_at"))
    session = SessionFit(warnings=bound_warnings(g, d), scale=g, per_kernel_ms=d, lam=lam, n_models=len(y), data=data,
                         cv=cv, measured_from=times[0] if times else None, measured_to=times[-1] if times else None,
                         probe_ms=reference_probe_ms(recs), fitted_at=datetime.now(timezone.utc).isoformat(),
                         base=base)
    return fold_session(predictor, session)


def bound_warnings(g: float, d: float) -> list[str]:
    """A session fit at a bound: its networks are not a state of the base's machine."""
    if min(abs(g - b) for b in SESSION_SCALE_BOUNDS) < 1e-6 or abs(d - PER_KERNEL_MAX_MS) < 1e-9:
        lo, hi = SESSION_SCALE_BOUNDS
        return [f"the fit reached a bound (g {g:.3f}, allowed {lo}-{hi}; d {d * 1e3:.1f} us, allowed "
                f"0-{PER_KERNEL_MAX_MS * 1e3:.0f}): these networks ran far from what the base calibration predicts, "
                "as on other hardware; a predictor trained on this device's own kernels is needed for numbers to trust"]
    return []


def fold_session(predictor, session: SessionFit) -> ModelCalibration:
    """``session`` (g and d over its base) folded into an ordinary calibration that every prediction path reads."""
    base, g, d = session.base, session.scale, session.per_kernel_ms
    every = sorted(set(predictor.meta.kernels) | set(base.scales))
    return base.model_copy(update={
        "scales": {t: g * base.scales.get(t, 1.0) for t in every}, "io_scale": g * base.io_scale,
        "per_kernel_ms": d, "fixed_ms": g * base.fixed_ms, "anchor": None, "anchor_ref_ms": None,
        # the predictor's numbers are now in this session's machine state
        "probe_ref_ms": session.probe_ms, "session": session})


ModelCalibration.model_rebuild()
