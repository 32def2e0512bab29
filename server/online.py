"""Online calibration: every INT8 model a device's agent measures refits the device's served predictor to the
machine's state now.

Why: on a shared host the state that a predictor's calibration describes moves within half an hour (the Zen 4
VM ran the same small networks 4% faster after 35 minutes, README "Accuracy so far"), and replaying every
committed evaluation with :mod:`predictors.online` showed that a fit on the last 16 networks measured before
each one keeps onnxruntime within the bar in six sessions of seven (96.0-98.3% within 10%, where the bundled
predictor had 78.3-97.3%; 94.5% against 92.5% in the seventh, whose small networks were noisy). A search loop
measures its best candidates through ``POST /jobs`` anyway; those measurements are the session set, for free.

What is fitted: the two numbers of a session calibration (:func:`predictors.calibration.fit_session`: a global
scale ``g`` and the per-kernel cost ``d`` over the predictor's base calibration) on the device's last
``window`` model measurements no older than ``max_age_s``. A measured model counts only when its prediction
means something: INT8 (an FP32 model runs another path of the runtime), every op covered, every kernel type
with a forest, no kernel beyond its forest's training data (its error is the forest's, not the state's). The fit
is an overlay on the installed version (:meth:`server.registry.Registry.overlay`), never saved as a version:
it is derived from the measurements table, so a restart rebuilds it from the database (nothing to lose), and
it falls back to the installed predictor when its measurements age out (a state no longer seen is not assumed).
"""
from __future__ import annotations

import logging
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from sqlalchemy import select

from .models import Blob, MeasurementRow
from .registry import Loaded, Registry

log = logging.getLogger("hil.server")


@dataclass(frozen=True)
class Point:
    """One stored model measurement of a device."""

    at: float
    sha256: str
    measured_ms: float
    job_id: int


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="seconds")


class OnlineCalibrator:
    """Per device: recent model measurements and the overlay fitted on them."""

    def __init__(self, sessions, registry: Registry, window: int, max_age_s: float):
        self.sessions, self.registry = sessions, registry
        self.window, self.max_age_s = window, max_age_s
        self._points: dict[str, list[Point]] = {}
        # (predictor path, version, sha256) -> (B, n) or why the model is not fitted; kept small by pruning
        self._design: dict[tuple[str, int, str], tuple[float, float] | str] = {}
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.window > 0

    def rebuild(self) -> None:
        """At start: the recent model measurements of every device, from the database, and their fits."""
        if not self.enabled:
            return
        since = time.time() - self.max_age_s
        with self.sessions() as s:
            rows = s.scalars(select(MeasurementRow).where(MeasurementRow.kind == "model",
                                                          MeasurementRow.latency_ms.is_not(None),
                                                          MeasurementRow.created_at >= since)
                             .order_by(MeasurementRow.created_at)).all()
        with self._lock:
            self._points = {}
            for r in rows:
                self._points.setdefault(r.device, []).append(Point(r.created_at, r.model_sha256, r.latency_ms,
                                                                   r.job_id))
        for device in list(self._points):
            self.refit(device)

    def observe(self, row: MeasurementRow) -> None:
        """A stored job result: a model measurement joins its device's window and the device is refitted."""
        if not self.enabled or row.kind != "model" or row.latency_ms is None or not row.model_sha256:
            return
        with self._lock:
            self._points.setdefault(row.device, []).append(Point(row.created_at, row.model_sha256, row.latency_ms,
                                                                 row.job_id))
        self.refit(row.device)

    def refit(self, device: str) -> dict | None:
        """Fit the device's overlay on its current window and serve it (or drop it); returns its summary. Never
        raises: a model that cannot be read is skipped with its reason logged, a failing fit leaves the served
        predictor as it was."""
        try:
            return self._refit(device)
        except Exception as e:  # noqa: BLE001 - a result is stored whatever happens here
            log.error("online calibration of %s: %s", device, e)
            return None

    def _refit(self, device: str) -> dict | None:
        from predictors.calibration import (SESSION_MIN_MODELS, SessionFit, bound_warnings, fit_session,
                                            fold_session, session_base)

        loaded = self.registry.get(device)
        if loaded is None:
            return None
        installed = loaded.installed or loaded
        now = time.time()
        with self._lock:
            pts = [p for p in self._points.get(device, []) if p.at >= now - self.max_age_s]
            self._points[device] = pts
        rows = []
        for p in pts:
            v = self._model_design(installed, p.sha256)
            if isinstance(v, tuple):
                rows.append((p, *v))
        rows = rows[-self.window:]
        if len(rows) < SESSION_MIN_MODELS:
            if loaded.installed is not None:  # its measurements aged out: serve the installed predictor again
                self.registry.overlay(device, installed, None)
            return None
        base = session_base(installed.predictor)
        B, n = np.array([r[1] for r in rows]), np.array([r[2] for r in rows])
        y = np.array([r[0].measured_ms for r in rows])
        g, d, lam, cv = fit_session(B, n, y, base.per_kernel_ms)
        session = SessionFit(method="online: the device's last model measurements (server.online), fitted as a "
                             "session", scale=g, per_kernel_ms=d, lam=lam, n_models=len(rows),
                             data={"source": "online", "jobs": [r[0].job_id for r in rows],
                                   "window": self.window, "max_age_min": self.max_age_s / 60},
                             cv=cv, measured_from=_iso(rows[0][0].at), measured_to=_iso(rows[-1][0].at),
                             fitted_at=_iso(now), warnings=bound_warnings(g, d), base=base)
        cal = fold_session(installed.predictor, session)
        self.registry.overlay(device, installed, cal)
        log.info("online calibration of %s: g %.4f, d %.2f us from %d measured models", device, g, d * 1e3, len(rows))
        return session.summary()

    def _model_design(self, installed: Loaded, sha: str) -> tuple[float, float] | str:
        """(B, n) of a stored model against ``installed``'s base calibration, or why it is not fitted."""
        key = (str(installed.path), installed.version, sha)
        hit = self._design.get(key)
        if hit is not None:
            return hit
        v = self._read_model(installed, sha)
        if isinstance(v, str):
            log.info("online calibration: model %s not fitted: %s", sha[:12], v)
        with self._lock:
            if len(self._design) > 4096:
                self._design.clear()
            self._design[key] = v
        return v

    def _read_model(self, installed: Loaded, sha: str) -> tuple[float, float] | str:
        from predictors.calibration import session_base, session_design

        with self.sessions() as s:
            blob = s.get(Blob, sha)
            if blob is None:
                return "its file is not stored"
            fmt, data = blob.format, blob.data
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"model.{fmt}"
            path.write_bytes(data)
            try:
                if fmt == "onnx":
                    from predictors.onnx_graph import detect_onnx as detect
                else:
                    from predictors.tflite_graph import detect_tflite as detect
                det = detect(path)
            except Exception as e:  # noqa: BLE001 - a client's file
                return f"unreadable ({type(e).__name__}: {str(e)[:120]})"
        pred = installed.predictor
        if not det.int8:
            return "not INT8 (the predictor's measurements are INT8)"
        if det.unsupported:
            return f"unsupported ops {', '.join(det.unsupported)}"
        if not det.kernels:
            return "no kernels"
        missing = sorted({c.type for c in det.kernels} - set(pred.kernel_types))
        if missing:
            return f"kernel types without a forest: {', '.join(missing)}"
        beyond = pred.outside_training(det.kernels)
        if beyond:
            return f"{len(beyond)} kernels beyond their forest's training data"
        B, n = session_design(pred, [det.kernels], session_base(pred), kernels=True)
        return float(B[0]), float(n[0])
