"""Online session calibration: each network predicted from a session fit on the networks measured just before it.

Why: a session calibration (:mod:`predictors.calibration`) follows the machine state it was measured in, and on
the shared Zen 4 VM that state moved 4% within 35 minutes (README, "Accuracy so far"): a fit from the start of an
evaluation made it worse (92.0% within 10% where the bundled predictor had 94.7%), one from its end made it 99.3%.
A service in the loop of a search does not have to measure calibration networks to know the state: the devices
measure networks all the time, and each measurement says how the machine runs *now*. This module asks what such a
service would predict, *prequentially*: network ``i`` is predicted by ``g * B_i + d * n_i`` (the session
calibration's form) with ``g`` and ``d`` fitted on the last ``window`` networks measured before it, no older than
``max_age_min``; with fewer than :data:`predictors.calibration.SESSION_MIN_MODELS` such networks it gets the
base prediction. No network is ever in its own fit, and no fit sees a network measured after (or beside, in the
same interleaved block as) the one it predicts, so the figure is what the service would have answered then.

It is a different claim from a predictor's held-out figure and is reported beside it, never instead: it says how
well a predictor *kept current by the device's own measurements* predicts the next network, which is what a
search loop that measures its best candidates gets. The defaults were set before any evaluation was replayed: 16
networks (two of the evaluation's interleaved blocks, about 3 minutes of onnxruntime measuring on the Zen 4 host,
enough for the two numbers) and 30 minutes (the time in which that host's state was seen to move by 4%).
"""
from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
from pydantic import BaseModel, Field

from .calibration import SESSION_MIN_MODELS, fit_session, session_base, session_design

WINDOW = 16
MAX_AGE_MIN = 30.0


class OnlineSettings(BaseModel):
    """Which earlier networks a prediction is fitted on (kept in a report's records as ``online``)."""

    window: int = Field(WINDOW, ge=SESSION_MIN_MODELS, description="the last this many networks measured before")
    max_age_min: float = Field(MAX_AGE_MIN, gt=0, description="none measured longer than this before")


def _stamp(r: dict) -> datetime | None:
    """When the record was measured; None for a record from before evaluations kept it (2026-11-23)."""
    t = r.get("measured_at")
    if t is None:
        return None
    try:
        return datetime.fromisoformat(t)
    except (TypeError, ValueError):
        raise ValueError(f"online calibration: record {r.get('name')!r}: measured_at {t!r} is not an ISO time "
                         "(e.g. 2026-12-05T18:44:41+00:00)") from None


def online_predict(predictor, recs: list[dict], settings: OnlineSettings | None = None) -> list[dict]:
    """``recs`` (an evaluation's records) with ``predicted_ms`` replaced by the online session calibration's and
    ``online`` set to the fit that predicted each: ``{"n_models", "scale", "per_kernel_ms", "lam"}`` (``n_models``
    0: the base prediction). Records without a subnet (keras.applications) are returned unchanged; their
    measurements are not fitted either (the fit's ``B`` comes from a subnet's kernel list). A record without
    ``measured_at`` cannot be placed in time: it gets the base prediction (``"untimed": true``) and is not fitted."""
    from spaces import resolve

    settings = settings or OnlineSettings()
    sub = [r for r in recs if r.get("space")]
    if not sub:
        return [dict(r) for r in recs]
    stamps = [_stamp(r) for r in sub]
    timed = [i for i, t in enumerate(stamps) if t is not None]
    order = sorted(timed, key=lambda i: stamps[i])  # stable: a block's records keep their file order
    base = session_base(predictor)
    B, n = session_design(predictor, [resolve(r["space"], r["arch"]) for r in sub], base)
    y = np.array([r["measured_ms"] if r.get("ok", True) and r.get("measured_ms") else np.nan for r in sub])
    age = timedelta(minutes=settings.max_age_min)
    out: dict[int, dict] = {}
    for i, r in enumerate(sub):
        if stamps[i] is None:
            out[id(r)] = dict(r, predicted_ms=float(B[i] + base.per_kernel_ms * n[i]),
                              online={"n_models": 0, "untimed": True})
    fits: dict[datetime, dict] = {}
    for i in order:
        t = stamps[i]
        if t not in fits:
            prior = [j for j in order if stamps[j] < t and stamps[j] >= t - age and np.isfinite(y[j])]
            prior = np.array(prior[-settings.window:], int)
            if len(prior) >= SESSION_MIN_MODELS:
                g, d, lam, _ = fit_session(B[prior], n[prior], y[prior], base.per_kernel_ms)
                fits[t] = {"n_models": int(len(prior)), "scale": g, "per_kernel_ms": d, "lam": lam}
            else:
                fits[t] = {"n_models": 0, "scale": 1.0, "per_kernel_ms": base.per_kernel_ms, "lam": None}
        f = fits[t]
        out[id(sub[i])] = dict(sub[i], predicted_ms=float(f["scale"] * B[i] + f["per_kernel_ms"] * n[i]),
                               online=dict(f, window=settings.window, max_age_min=settings.max_age_min))
    return [out.get(id(r), dict(r)) for r in recs]


def replay(predictor, results, out, settings: OnlineSettings | None = None):
    """``predictors eval --repredict R --online W``: :func:`online_predict` over the records of ``results`` (an
    evaluation's results.jsonl, in the order measured), written to ``out``; nothing is measured."""
    from pathlib import Path

    from .evaluate import read_json_lines, write_results

    recs = list(read_json_lines(Path(results)))  # a killed run's torn last line is skipped
    return write_results(online_predict(predictor, recs, settings), out)
