"""Probe-normalized latency (predictors.speed): the machine's speed, read by the reference probe after each round,
divided out of the ground truth as a diagnostic beside the measured figures."""
from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from predictors import speed
from predictors.evaluate import NORMALIZED, PROBE, agreement, report


def _recs(names, base_ms, phase, probe_ms=0.2, rng=None):
    """Records measured in a machine phase that slows the networks and the probe alike by ``phase``."""
    rng = rng or np.random.default_rng(0)
    out = []
    for n, b in zip(names, base_ms):
        rr = [float(b * phase * (1 + 0.005 * rng.standard_normal())) for _ in range(3)]
        out.append({"name": n, "ok": True, "rounds_ms": rr, "measured_ms": min(rr), "predicted_ms": b,
                    "probe_ms": [probe_ms * phase * (1 + 0.002 * rng.standard_normal()) for _ in rr]})
    return out


def test_normalized_latency_divides_out_a_slow_phase():
    slow, fast = _recs(["a"], [10.0], 1.2)[0], _recs(["a"], [10.0], 1.0)[0]
    assert slow["measured_ms"] == pytest.approx(12.0, rel=0.02)
    assert speed.normalized_ms(slow, 0.2) == pytest.approx(10.0, rel=0.02) == speed.normalized_ms(fast, 0.2)
    assert speed.reference_probe_ms([slow, fast]) == pytest.approx(0.22, rel=0.1)
    # no probe, or rounds pooled from several runs (more rounds than probes): nothing to pair, no figure
    assert speed.probe_ratio({"rounds_ms": [1.0]}) is None
    assert speed.probe_ratio({"rounds_ms": [1.0, 2.0], "probe_ms": [0.2]}) is None
    assert speed.probe_ratio({"rounds_ms": [1.0, 2.0], "probe_ms": [None, 0.25]}) == pytest.approx(8.0)
    assert speed.reference_probe_ms([{"rounds_ms": [1.0]}]) is None


def test_report_and_agreement_judge_probe_normalized_latencies(tmp_path):
    rng = np.random.default_rng(1)
    names = [f"onnxw-random-{i}" for i in range(16)]
    base = list(rng.uniform(3, 30, 16))
    # run 1: first half at the calibration's speed, second half 20% slow; run 2 the other way round
    run1 = _recs(names[:8], base[:8], 1.0, rng=rng) + _recs(names[8:], base[8:], 1.2, rng=rng)
    run2 = _recs(names[:8], base[:8], 1.15, rng=rng) + _recs(names[8:], base[8:], 1.0, rng=rng)
    for i, run in enumerate((run1, run2)):
        (tmp_path / f"r{i}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in run))
    s = report(tmp_path / "r0.jsonl", tmp_path / "rep", "t", probe_ref_ms=0.2)
    assert s["random"]["acc10"] == pytest.approx(0.5)  # the measured figure is not replaced
    assert s[f"{NORMALIZED} random"]["acc10"] == 1.0 and s[f"{NORMALIZED} random"]["n"] == 16
    assert s[PROBE]["ref_source"] == "calibration" and s[PROBE]["this_set_median_ms"] == pytest.approx(0.22, rel=0.1)
    md = (tmp_path / "rep" / "report.md").read_text()
    assert f"| {NORMALIZED} random | 16 |" in md and "0.2000 ms (calibration; this set's median probe" in md
    own = report(tmp_path / "r0.jsonl", tmp_path / "rep2", "t")  # no calibration reference: this set's median
    assert own[PROBE]["ref_source"] == "this set's median probe" and own[PROBE]["ref_ms"] == own[PROBE]["this_set_median_ms"]
    ag = agreement(tmp_path / "r0.jsonl", tmp_path / "r1.jsonl")
    assert ag["acc10"] < 0.2 and ag[NORMALIZED]["acc10"] == 1.0 and ag[NORMALIZED]["n"] == 16
    # records without probes (older evaluations) get no probe-normalized rows at all
    for r in run1:
        r.pop("probe_ms")
    (tmp_path / "old.jsonl").write_text("".join(json.dumps(r) + "\n" for r in run1))
    old = report(tmp_path / "old.jsonl", tmp_path / "rep3", "t", probe_ref_ms=0.2)
    assert PROBE not in old and not any(k.startswith(NORMALIZED) for k in old)
    assert NORMALIZED not in agreement(tmp_path / "old.jsonl", tmp_path / "r1.jsonl")


def test_calibration_records_the_machine_state_it_was_fitted_in(tmp_path, all_type_predictor):
    from predictors.__main__ import app
    from predictors.artifact import Predictor
    from predictors.evaluate import eval_set
    from spaces import resolve

    from .test_calibration import _truth

    raw_dir = all_type_predictor.save(tmp_path / "raw")
    items = eval_set(["onnxw", "mobilew"], 6, kind="calib")
    recs = [dict(r, space=s, arch=a) for (n, s, a) in items
            for r in _recs([n], [_truth(all_type_predictor, resolve(s, a))], 1.0, probe_ms=0.3)]
    results = tmp_path / "calib.jsonl"
    results.write_text("".join(json.dumps(r) + "\n" for r in recs))
    r = CliRunner().invoke(app, ["calibrate", str(raw_dir), "--results", str(results), "--out", str(tmp_path / "cal")])
    assert r.exit_code == 0, r.output
    assert "reference probe median 0.300" in " ".join(r.output.split())  # rich wraps long lines
    cal = Predictor.load(tmp_path / "cal").meta.calibration
    assert cal.probe_ref_ms == pytest.approx(0.3, rel=0.01)
