"""Model-level calibration (predictors.calibration): fit, storage, and every prediction path using it."""
from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from exporters.kernel_models import KernelConfig
from predictors.artifact import Predictor, predict_kernel_list
from predictors.calibration import fit
from spaces import SearchSpace, resolve


SCALE = {"dwconv-bn-relu6": 1.3, "dwconv-bn-swish": 0.8}  # the synthetic "in-network" truth
FIXED = 0.2


def test_fit_recovers_known_scales():
    rng = np.random.default_rng(0)
    X = np.c_[rng.uniform(0.5, 5, (80, 4)), rng.uniform(0, 0.05, 80), rng.integers(40, 120, 80), np.ones(80)]
    beta = np.array([1.3, 0.8, 1.0, 2.0, 1.0, 0.004, 0.3])
    est, lam, cv = fit(X, X @ beta, ["a", "b", "c", "d"])
    assert np.allclose(est[:4], beta[:4], rtol=0.01) and est[-1] == pytest.approx(0.3, abs=0.02)
    assert est[-2] == pytest.approx(0.004, abs=3e-4)
    assert cv["calibrated_out_of_fold"]["acc10"] == 1.0 and cv["raw"]["acc10"] < 0.5
    with pytest.raises(ValueError, match="at least 10 are needed"):
        fit(X[:6], (X @ beta)[:6], ["a", "b", "c", "d"])


def _truth(pred: Predictor, net) -> float:
    cfgs = [KernelConfig.from_kernel(k) for k in net.kernels()]
    lat, _ = pred.predict_kernels(cfgs, calibrated=False)
    return float(sum(v * SCALE.get(c.type, 1.0) for c, v in zip(cfgs, lat))) + FIXED


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory, all_type_predictor):
    """A predictor, the calibration set measured as the synthetic truth, and the calibrated predictor."""
    from predictors.__main__ import app
    from predictors.evaluate import eval_set

    tmp = tmp_path_factory.mktemp("cal")
    pred = all_type_predictor
    raw_dir = pred.save(tmp / "raw")
    lines = []
    for name, space, arch in eval_set(["onnxw", "mobilew"], 20, kind="calib"):
        lines.append(json.dumps({"name": name, "space": space, "arch": arch, "ok": True,
                                 "measured_ms": _truth(pred, resolve(space, arch)), "predicted_ms": 0.0}))
    results = tmp / "calib" / "results.jsonl"
    results.parent.mkdir()
    results.write_text("\n".join(lines) + "\n")
    r = CliRunner().invoke(app, ["calibrate", str(raw_dir), "--results", str(results), "--out", str(tmp / "cal")])
    assert r.exit_code == 0, r.output
    return pred, Predictor.load(tmp / "cal"), tmp, results


def test_calibration_is_stored_and_predicts_held_out_networks(calibrated):
    from predictors.evaluate import eval_set

    raw, cal, tmp, _ = calibrated
    meta = json.loads((tmp / "cal" / "metadata.json").read_text())
    assert meta["format"] == "hil-predictor/3" and meta["calibration"]["n_models"] == 40
    assert meta["calibration"]["data"]["sha256"]
    c = cal.meta.calibration
    # the kernel types' sums are nearly collinear across networks, so a scale is only loosely identified (the
    # ridge pulls it toward 1); what must hold is its direction and the accuracy on networks not fitted
    assert c.scales["dwconv-bn-relu6"] > 1.1 and c.scales["dwconv-bn-swish"] < 0.9
    errs_raw, errs_cal = [], []
    for name, space, arch in eval_set(["onnxw", "mobilew"], 5):  # the held-out set: other seeds
        net = resolve(space, arch)
        y = _truth(raw, net)
        cfgs = [KernelConfig.from_kernel(k) for k in net.kernels()]
        errs_cal.append(predict_kernel_list(cal, cfgs).latency_ms / y - 1)
        errs_raw.append(predict_kernel_list(raw, cfgs).latency_ms / y - 1)
    assert max(map(abs, errs_cal)) < 0.03 < max(map(abs, errs_raw))


def test_batch_table_uses_the_calibration(calibrated):
    from predictors.batch import EncodedSubnets, LayerTable

    _, cal, _, _ = calibrated
    sp = SearchSpace.parse("onnxw-151122-023231")
    enc = EncodedSubnets.random(sp, 30, seed=4)
    fast = LayerTable(sp, cal).predict(enc)
    for j in range(0, 30, 6):
        cfgs = [KernelConfig.from_kernel(k) for k in resolve(sp, enc.subnet(j)).kernels()]
        assert fast[j] == pytest.approx(predict_kernel_list(cal, cfgs).latency_ms, rel=1e-9)


def test_calibration_and_evaluation_sets_are_disjoint_and_misuse_is_refused(calibrated, tmp_path):
    from predictors.__main__ import app
    from predictors.evaluate import eval_set

    _, _, tmp, results = calibrated
    ev = eval_set(["onnxw", "mobilew"], 50)
    cal = eval_set(["onnxw", "mobilew"], 50, kind="calib")
    assert not {(s, a) for _, s, a in ev} & {(s, a) for _, s, a in cal}
    assert all("-random-" in n for n, _, _ in ev) and all("-calib-" in n for n, _, _ in cal)
    bad = tmp_path / "results.jsonl"
    bad.write_text(results.read_text().replace("-calib-", "-random-"))
    r = CliRunner().invoke(app, ["calibrate", str(tmp / "raw"), "--results", str(bad)])
    assert r.exit_code == 2 and "use --set calib" in r.output
    r = CliRunner().invoke(app, ["eval", str(tmp / "raw"), "--backend", "onnxruntime-cpu", "--set", "train",
                                 "--out", str(tmp_path)])
    assert r.exit_code == 2 and "allowed: random, calib, calib-small" in r.output


def test_runs_of_the_calibration_set_are_pooled_by_their_fastest_record(calibrated, tmp_path):
    """A second session measured the same networks with the whole machine 10% faster (one network failed):
    pooled, every network keeps its fastest record and the fit follows the faster state."""
    from predictors.__main__ import app
    from predictors.evaluate import pool_results

    raw, _, tmp, results = calibrated
    first = [json.loads(l) for l in results.read_text().splitlines()]
    second = [dict(r, measured_ms=r["measured_ms"] * 0.9, rounds_ms=[r["measured_ms"] * 0.9]) for r in first]
    second[0] = dict(second[0], ok=False, measured_ms=None, error="the runtime crashed (signal SIGABRT)")
    run2 = tmp_path / "run2.jsonl"
    run2.write_text("".join(json.dumps(r) + "\n" for r in second))
    pooled = pool_results([results, run2])
    assert pooled[first[0]["name"]]["measured_ms"] == first[0]["measured_ms"] and pooled[first[0]["name"]]["runs"] == 1
    assert all(pooled[r["name"]]["measured_ms"] == pytest.approx(r["measured_ms"] * 0.9) for r in first[1:])
    assert all(pooled[r["name"]]["runs"] == 2 for r in first[1:])
    r = CliRunner().invoke(app, ["calibrate", str(tmp / "raw"), "--results", str(results), "--results", str(run2),
                                 "--out", str(tmp_path / "pooled")])
    assert r.exit_code == 0, r.output
    c = Predictor.load(tmp_path / "pooled").meta.calibration
    assert [d["path"] for d in c.data["runs"]] == [str(results), str(run2)] and c.n_models == len(first)
    net = resolve(first[5]["space"], first[5]["arch"])
    cfgs = [KernelConfig.from_kernel(k) for k in net.kernels()]
    assert predict_kernel_list(Predictor.load(tmp_path / "pooled"), cfgs).latency_ms == \
        pytest.approx(first[5]["measured_ms"] * 0.9, rel=0.05)
    r = CliRunner().invoke(app, ["calibrate", str(tmp / "raw"), "--results", str(results), "--results",
                                 str(tmp_path / "nowhere.jsonl")])
    assert r.exit_code == 2 and "nowhere.jsonl not found" in r.output


def test_the_small_calibration_set_is_small_disjoint_and_reported_apart():
    """calib-small exists because a calibration set drawn like the evaluation set had too few small networks to
    separate a per-kernel cost from the scales (Zen 4: 6 of 80 under 6 ms). Its subnets must come from the lower
    MACs range, share nothing with the other sets, and not be counted as the "calib" set in a report."""
    from predictors.evaluate import SMALL_QUANTILE, _groups, eval_set
    from spaces import resolve
    from spaces.flops import network_macs

    small = eval_set(["onnxw", "mobilew"], 20, kind="calib-small")
    assert small == eval_set(["onnxw", "mobilew"], 20, kind="calib-small")  # reproducible: resumable runs
    calib = eval_set(["onnxw", "mobilew"], 60, kind="calib")
    ev = eval_set(["onnxw", "mobilew"], 60)
    assert [n for n, _, _ in small[:2]] == ["onnxw-calib-small-0", "mobilew-calib-small-0"]
    pairs = {(s, a) for _, s, a in small}
    assert len(pairs) == 40 and not pairs & {(s, a) for _, s, a in calib + ev}
    for hs in ("onnxw", "mobilew"):
        macs = lambda items: np.array([network_macs(resolve(s, a)) for n, s, a in items if n.startswith(hs + "-")])
        m_small, m_calib = macs(small), macs(calib)
        # below the calibration distribution's lower third (an estimate from other draws: allow its sampling error)
        assert np.median(m_small) < np.quantile(m_calib, SMALL_QUANTILE)
        assert np.max(m_small) < np.quantile(m_calib, 0.5)
    recs = [{"name": n} for n, _, _ in calib[:4] + small[:6]]
    g = _groups(recs)
    assert len(g["calib"]) == 4 and len(g["calib-small"]) == 6 and len(g["calib-small mobilew"]) == 3
