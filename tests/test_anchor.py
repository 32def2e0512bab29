"""The anchor network (predictors.anchor): slow phases of the machine divided out of the ground truth."""
from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from predictors import anchor as anc
from predictors.evaluate import ANCHOR, agreement, report


def _block(names, base_ms, phase, anchor_ms=4.0, pred=None, rounds=3, rng=None):
    """Records of one block measured in a machine phase that slows everything by ``phase`` (round by round)."""
    rng = rng or np.random.default_rng(0)
    ph = np.asarray(phase, dtype=float)  # rounds + 1 anchor points
    a = list(anchor_ms * ph)
    out = []
    for n, b in zip(names, base_ms):
        rr = [float(b * np.sqrt(ph[i] * ph[i + 1]) * (1 + 0.005 * rng.standard_normal())) for i in range(rounds)]
        out.append({"name": n, "ok": True, "rounds_ms": rr, "measured_ms": min(rr), "predicted_ms": pred or b,
                    "anchor": "s:a", "anchor_rounds_ms": a})
    return out


def test_anchor_item_is_a_fixed_small_subnet_of_each_backend():
    from spaces import resolve

    name, space, arch = anc.anchor_item("onnxruntime-cpu")
    assert name == "anchor" and space == "onnxw-151122-023231" and anc.anchor_item("onnxruntime-cpu")[2] == arch
    assert resolve(space, arch).flops() < 200e6 and anc.anchor_item("tflite-cpu")[1].startswith("mobilew")
    with pytest.raises(ValueError, match="allowed: onnxruntime-cpu, tflite-cpu"):
        anc.anchor_item("coreml")


def test_anchored_latency_divides_out_a_slow_phase():
    slow = _block(["onnxw-random-0"], [10.0], [1.2, 1.2, 1.2, 1.2])[0]
    fast = _block(["onnxw-random-0"], [10.0], [1.0, 1.0, 1.0, 1.0])[0]
    assert slow["measured_ms"] == pytest.approx(12.0, rel=0.02)
    assert anc.anchored_ms(slow, 4.0) == pytest.approx(10.0, rel=0.02) == anc.anchored_ms(fast, 4.0)
    assert anc.brackets([4.0, 9.0, 0.0]) == [6.0, pytest.approx(float("nan"), nan_ok=True)]
    assert anc.ratio({"rounds_ms": [1.0]}) is None and anc.ratio({"rounds_ms": [1.0], "anchor_rounds_ms": [1.0]}) is None


def test_report_and_agreement_judge_anchored_latencies(tmp_path):
    rng = np.random.default_rng(1)
    names = [f"onnxw-random-{i}" for i in range(16)]
    base = list(rng.uniform(3, 30, 16))
    # run 1: first block in a normal phase, second block 20% slow; the predictor is exact at the normal phase
    run1 = _block(names[:8], base[:8], [1, 1, 1, 1], rng=rng) + _block(names[8:], base[8:], [1.2] * 4, rng=rng)
    for r, b in zip(run1, base):
        r["predicted_ms"] = b
    run2 = _block(names[:8], base[:8], [1.15] * 4, rng=rng) + _block(names[8:], base[8:], [1, 1.02, 1, 1], rng=rng)
    for i, run in enumerate((run1, run2)):
        (tmp_path / f"r{i}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in run))
    s = report(tmp_path / "r0.jsonl", tmp_path / "rep", "t", anchor_ref_ms=4.0)
    assert s["all"]["acc10"] == pytest.approx(0.5) and s["anchored all"]["acc10"] == 1.0
    assert s[ANCHOR]["ref_source"] == "calibration" and s[ANCHOR]["this_set_median_ms"] == pytest.approx(4.4, rel=0.1)
    assert "anchored all" in (tmp_path / "rep" / "report.md").read_text()
    ag = agreement(tmp_path / "r0.jsonl", tmp_path / "r1.jsonl")
    assert ag["acc10"] < 0.2 and ag["anchored"]["acc10"] == 1.0 and ag["anchored"]["n"] == 16


def test_calibration_fits_anchored_latencies_and_records_the_reference(tmp_path, all_type_predictor):
    from predictors.__main__ import app
    from predictors.artifact import Predictor
    from predictors.evaluate import eval_set
    from spaces import resolve

    from .test_calibration import _truth

    pred = all_type_predictor
    raw_dir = pred.save(tmp_path / "raw")
    items = eval_set(["onnxw", "mobilew"], 12, kind="calib")
    recs = []
    for j in range(0, len(items), 8):  # every other block measured in a phase 25% slower
        blk = items[j:j + 8]
        truth = [_truth(pred, resolve(s, a)) for _, s, a in blk]
        for r, (_, s, a) in zip(_block([n for n, _, _ in blk], truth, [1.25 if j % 16 else 1.0] * 4), blk):
            recs.append(dict(r, space=s, arch=a))
    results = tmp_path / "calib.jsonl"
    results.write_text("".join(json.dumps(r) + "\n" for r in recs))
    for flag, name in (("--anchored", "anch"), ("--raw", "rawfit")):
        r = CliRunner().invoke(app, ["calibrate", str(raw_dir), "--results", str(results), "--out", str(tmp_path / name),
                                     flag])
        assert r.exit_code == 0, r.output
    anch, rawfit = (Predictor.load(tmp_path / n).meta.calibration for n in ("anch", "rawfit"))
    assert anch.anchor == "s:a" and anch.anchor_ref_ms == pytest.approx(4.0, rel=0.05) and rawfit.anchor_ref_ms is None
    assert anch.cv["calibrated_out_of_fold"]["acc10"] > rawfit.cv["calibrated_out_of_fold"]["acc10"]
    assert anch.cv["calibrated_out_of_fold"]["acc10"] == 1.0
