"""The measurement record: one model, one backend, one run of the protocol.

Every field is kept (not only the headline latency) so that later analysis can re-derive any
statistic, and so that a record that is not trustworthy says so (``stable=False`` + ``reason``).
"""
from __future__ import annotations

from datetime import datetime, timezone

from pydantic import BaseModel, Field

from .fingerprint import Fingerprint


class Measurement(BaseModel):
    backend: str
    model: str
    model_sha256: str | None = None
    ok: bool = True
    error: str | None = None
    error_kind: str | None = None  # missing-file | not-a-model | crash | timeout | runtime-error
    # headline: the protocol's estimator (p10 by default, see profilers.protocol)
    latency_ms: float | None = None
    estimator: str = "p10"
    median_ms: float | None = None
    mean_ms: float | None = None
    std_ms: float | None = None
    min_ms: float | None = None
    p10_ms: float | None = None
    p90_ms: float | None = None
    n: int = 0
    outliers: int = 0
    rounds: int = 0
    runs_per_round: int = 0
    warmups: int = 0
    ci_low_ms: float | None = None
    ci_high_ms: float | None = None
    ci_half_pct: float | None = None
    round_spread_pct: float | None = None
    half_diff_pct: float | None = None
    load_factor: float | None = None  # reference probe time / its best in this worker (1.0 = fastest seen)
    probe_ms: float | None = None
    latency_norm_ms: float | None = None  # latency_ms / load_factor
    stable: bool = False
    reason: str | None = None
    duration_s: float = 0.0
    core: int | None = None
    fingerprint: Fingerprint | None = None
    device_state: dict | None = None  # what the device reported at the start (a phone: core frequency, governor, °C)
    started_at: str = Field(default_factory=lambda: datetime.now(timezone.utc).isoformat())

    @classmethod
    def failure(cls, backend: str, model: str, kind: str, error: str, **kw) -> "Measurement":
        return cls(backend=backend, model=model, ok=False, error=error, error_kind=kind, stable=False,
                   reason=f"{kind}: {error}", **kw)
