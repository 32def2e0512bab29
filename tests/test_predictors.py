"""Predictor artifacts: train from a measurement dataset, save without pickle, load, predict."""
from __future__ import annotations

import json
import zipfile
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from exporters.kernel_models import KernelConfig
from predictors.artifact import Predictor
from predictors.targets import TARGETS
from predictors.train import train
from profilers.dataset import Dataset, KernelRecord
from profilers.measurement import Measurement
from profilers.samplers import prior_configs


def _synthetic_dataset(path, n=60):
    """Latencies from a known formula (with the INT8 channel-alignment penalty) so learning is checkable."""
    ds = Dataset(path)
    for t in ("conv-bn-relu", "se"):
        for c in prior_configs(t, n, seed=3):
            ms = 1e-4 * c.hw * c.hw * c.cin * max(c.cout, 1) * c.kernel ** 2 / c.stride ** 2 / 1e3 + 0.01
            ms *= 1.0 if c.cin % 8 == 0 else 1.3
            ds.append(KernelRecord(config=c, precision="int8", backend="onnxruntime-cpu",
                                   measurement=Measurement(backend="onnxruntime-cpu", model="m", latency_ms=ms,
                                                           stable=True)))
    return ds


def test_train_save_load_predict(tmp_path):
    ds = _synthetic_dataset(tmp_path / "m.jsonl")
    pred = train(ds.path, device="test-device")
    assert set(pred.kernel_types) == {"conv-bn-relu", "se"}
    for info in pred.meta.kernels.values():
        assert info.metrics["n"] >= 2 and info.target in TARGETS and info.features
    out = pred.save(tmp_path / "pred")
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["format"] == "hil-predictor/3" and meta["training_data"]["sha256"] and meta["library_versions"]
    with zipfile.ZipFile(out / "forests.npz") as z:
        assert all(n.endswith(".npy") for n in z.namelist())
    loaded = Predictor.load(out)
    cfgs = prior_configs("conv-bn-relu", 30, seed=9) + [KernelConfig(type="fc", hw=1, cin=8, cout=8)]
    a, unknown_a = pred.predict_kernels(cfgs)
    b, unknown_b = loaded.predict_kernels(cfgs)
    assert np.array_equal(a, b, equal_nan=True)
    assert unknown_a == unknown_b == ["fc"] and np.isnan(a[-1]) and np.all(a[:-1] > 0)


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a predictor directory"):
        Predictor.load(tmp_path)
    with pytest.raises(ValueError, match="no usable int8 records"):
        train(Dataset(tmp_path / "empty.jsonl").path, device="x")


def test_predictor_loads_and_predicts_without_scikit_learn(tmp_path):
    """The guarantee behind "loads under another scikit-learn version": loading and predicting never
    import scikit-learn (blocked here), so its version cannot matter; numbers are bit-identical."""
    import subprocess
    import sys

    # nor torch: loading a predictor stays cheap (~0.2 s instead of ~3 s) for the service and the CLI
    ds = _synthetic_dataset(tmp_path / "m.jsonl", n=30)
    pred = train(ds.path, device="test-device")
    out = pred.save(tmp_path / "pred")
    cfgs = prior_configs("se", 20, seed=5)
    expected, _ = pred.predict_kernels(cfgs)
    (tmp_path / "cfgs.json").write_text(json.dumps([c.model_dump() for c in cfgs]))
    code = (
        "import sys, json; sys.modules['sklearn'] = None\n"
        "from exporters.kernel_config import KernelConfig\n"
        "from predictors.artifact import Predictor\n"
        f"p = Predictor.load({str(out)!r})\n"
        f"cfgs = [KernelConfig(**c) for c in json.load(open({str(tmp_path / 'cfgs.json')!r}))]\n"
        "y, unknown = p.predict_kernels(cfgs)\n"
        "loaded = {m.split('.')[0] for m in sys.modules if sys.modules[m] is not None}\n"
        "assert not {'sklearn', 'torch', 'tensorflow'} & loaded, loaded\n"
        "print(json.dumps([float(v).hex() for v in y]))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(r.stdout.strip().splitlines()[-1]) == [float(v).hex() for v in expected]


def _all_type_predictor(tmp_path):
    """A predictor knowing every kernel type of both hyperspaces (synthetic latencies).

    Training it takes ~19 s on a CI core, so tests take the session-wide `all_type_predictor` fixture
    (tests/conftest.py) instead of calling this; predictors are read-only once trained."""
    from profilers.samplers import kernel_pool

    ds = Dataset(tmp_path / "all.jsonl")
    for t, pool in kernel_pool().items():
        cfgs = list(pool[:40])
        while len(cfgs) < 12:  # head kernels have few configs: add neighbours
            c = cfgs[len(cfgs) % len(pool)]
            cfgs.append(c.model_copy(update={"cin": c.cin + 8 * len(cfgs)}))
        for c in cfgs:
            ms = 1e-7 * c.hw * c.hw * c.cin * max(c.cout, 1) * c.kernel ** 2 + 0.001 * c.cin / 8 + 0.005
            ds.append(KernelRecord(config=c, precision="int8", backend="onnxruntime-cpu",
                                   measurement=Measurement(backend="onnxruntime-cpu", model="m", latency_ms=ms, stable=True)))
    return train(ds.path, device="synthetic", min_records=10)


def test_batch_table_equals_kernel_sum(all_type_predictor):
    from predictors.batch import EncodedSubnets, LayerTable
    from spaces import SearchSpace, resolve

    pred = all_type_predictor
    for space in ("onnxw-151122-023231", "mobilew-122222-155400"):
        sp = SearchSpace.parse(space)
        table = LayerTable(sp, pred)
        assert table.unknown_kernels == []
        enc = EncodedSubnets.random(sp, 200, seed=1)
        fast = table.predict(enc)
        for j in range(0, 200, 20):
            net = resolve(sp, enc.subnet(j))
            lat, unknown = pred.predict_kernels([KernelConfig.from_kernel(k) for k in net.kernels()])
            assert not unknown and fast[j] == pytest.approx(lat.sum(), rel=1e-9)
        again = EncodedSubnets.from_subnets(sp, [enc.subnet(j) for j in range(10)])
        assert np.allclose(table.predict(again), fast[:10], rtol=1e-12)


def test_batch_unknown_kernels_are_nan_not_zero(tmp_path):
    from predictors.batch import EncodedSubnets, LayerTable
    from spaces import SearchSpace

    pred = train(_synthetic_dataset(tmp_path / "m.jsonl").path, device="partial")  # conv-bn-relu and se only
    table = LayerTable(SearchSpace.parse("onnxw-151122-023231"), pred)
    assert "fc" in table.unknown_kernels and "conv-bn-hswish" in table.unknown_kernels
    assert np.isnan(table.predict(EncodedSubnets.random(table.space, 5))).all()


def test_predictors_cli(tmp_path):
    import subprocess
    import sys

    _synthetic_dataset(tmp_path / "data" / "measurements.jsonl")
    run = lambda *a: subprocess.run([sys.executable, "-m", "predictors", *a], capture_output=True, text=True,  # noqa: E731
                                    timeout=300)
    r = run("train", "--data", str(tmp_path / "data"), "--device", "cli-test", "--out", str(tmp_path / "p"))
    assert r.returncode == 0, r.stderr
    assert "conv-bn-relu" in r.stdout and "RMSPE" in r.stdout
    assert json.loads(run("info", str(tmp_path / "p")).stdout)["device"] == "cli-test"
    arch = "d1#1#2#2#2#2#2#1_k3#3#3#3#3#3#3#3#3#3#3#3#3_w16#16#32#32#64#64#112#112#144#144#240#240#320" \
           "_e0#0.5#4.0#4.0#1.0#1.0#4.0#4.0#4.0#4.0#4.0#4.0#4.0_r160"
    r = run("predict", str(tmp_path / "p"), "--space", "onnxw-151122-023231", "--arch", arch)
    doc = json.loads(r.stdout)
    assert r.returncode == 1 and doc["latency_ms"] is None and "fc" in doc["unknown_kernels"]  # never a partial sum
    r = run("predict", str(tmp_path / "p"), "--space", "onnxw-151122-023231", "--arch", arch.replace("_r160", "_r100"))
    assert r.returncode == 2 and "resolution" in r.stderr
    r = run("train", "--data", str(tmp_path / "nothing"), "--device", "x", "--out", str(tmp_path / "q"))
    assert r.returncode == 2 and "measurements.jsonl" in r.stderr
    r = run("info", str(tmp_path / "nowhere"))
    assert r.returncode == 2 and "local:<backend>" in r.stderr  # names what a predictor name may be
    r = run("info", "local:no-such-backend")
    assert r.returncode == 2 and "no predictor for this host" in r.stderr and "python -m predictors train" in r.stderr


def test_predict_onnx_model_and_errors(tmp_path, all_type_predictor):
    import subprocess
    import sys

    from exporters.onnx_export import export_onnx
    from predictors.artifact import predict_model
    from spaces import resolve
    from spaces.sampling import sample_subnet

    pred = all_type_predictor
    space = "onnxw-151122-023231"
    net = resolve(space, sample_subnet(space, "min"))
    path = export_onnx(net, tmp_path / "m.onnx", fp32=True).path
    res = predict_model(pred, path)
    expected, _ = pred.predict_kernels([KernelConfig.from_kernel(k) for k in net.kernels()])
    assert res.warnings == [] and res.latency_ms == pytest.approx(expected.sum(), rel=1e-9)
    partial = train(_synthetic_dataset(tmp_path / "p.jsonl").path, device="partial")
    res = predict_model(partial, path)
    assert res.latency_ms is None and "fc" in res.unknown_kernels and res.warnings
    pdir = pred.save(tmp_path / "pred")
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x08\x01garbage" * 10)
    r = subprocess.run([sys.executable, "-m", "predictors", "predict-model", str(pdir), str(garbage)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "not a readable model" in r.stderr


def test_worst_configs_feed_the_refine_sampler(tmp_path):
    from predictors.train import worst_configs
    from profilers.collect import make_plan

    ds = _synthetic_dataset(tmp_path / "m.jsonl")
    pred = train(ds.path, device="t")
    bad = worst_configs(ds.path, pred, threshold=0.02)
    assert bad and all(e > 0.02 for e, _ in bad) and [e for e, _ in bad] == sorted((e for e, _ in bad), reverse=True)
    seeds = [c for _, c in bad[:5]]
    plan = make_plan([], per_type=0, precisions=("int8",), refine=seeds)
    assert plan and not {c for c, _ in plan} & set(seeds)  # neighbours of the bad configs, never the configs again


@pytest.mark.slow
def test_adaptive_round_measures_around_worst_configs(tmp_path):
    """One real round on onnxruntime: seed data, train, refine around the worst, retrain."""
    from predictors.adaptive import adaptive_train
    from profilers.collect import collect

    data = tmp_path / "k"
    collect("onnxruntime-cpu", ["se", "add"], data, per_type=12)
    n0 = len(Dataset(data / "measurements.jsonl"))
    pred, hist = adaptive_train("onnxruntime-cpu", data, "t", rounds=1, refine_top=6, round_budget_s=25,
                                threshold=0.0)
    assert len(Dataset(data / "measurements.jsonl")) > n0 and len(hist) == 2 and all(h > 0 for h in hist)
    assert set(pred.kernel_types) <= {"se", "add"}


@pytest.mark.slow
def test_eval_harness_end_to_end_and_resume(tmp_path, all_type_predictor):
    from predictors.evaluate import eval_set, evaluate, report

    pred = all_type_predictor
    items = eval_set(["onnxw"], 3, seed=1)
    from profilers.protocol import Protocol

    fast = Protocol(budget_s=1.0, min_duration_s=0.3)
    out = tmp_path / "r" / "results.jsonl"
    out.parent.mkdir()
    out.write_text(json.dumps({"name": items[2][0], "ok": False, "error": "the runtime crashed (signal SIGABRT)",
                               "measured_ms": None, "predicted_ms": 1.0}) + "\n")  # an earlier run's failure
    evaluate(pred, "onnxruntime-cpu", items, out, protocol=fast, rounds=2, block=2, anchor=True)
    recs = [json.loads(l) for l in out.read_text().splitlines()][1:]
    assert [r["name"] for r in recs] == [n for n, _, _ in items] and all(r["ok"] and r["predicted_ms"] > 0 for r in recs)
    assert all(len(r["rounds_ms"]) == 2 and r["measured_ms"] == min(r["rounds_ms"]) for r in recs)
    assert all(len(r["probe_ms"]) == 2 and all(p > 0 for p in r["probe_ms"]) for r in recs)  # machine state
    assert all(datetime.fromisoformat(r["measured_at"]).tzinfo is not None for r in recs)  # when, for drift
    assert all(len(r["anchor_rounds_ms"]) == 3 and r["anchor"].startswith("onnxw-151122-023231:") for r in recs)
    evaluate(pred, "onnxruntime-cpu", items, out, protocol=fast)  # resumed: nothing measured twice
    assert len(out.read_text().splitlines()) == 4
    summary = report(out, tmp_path / "r", "test")
    assert summary["all"]["n"] == 3 and (tmp_path / "r" / "scatter.png").stat().st_size > 1000


def test_overhead_is_removed_per_kernel_and_added_once_per_model(tmp_path, all_type_predictor):
    from predictors.artifact import Predictor
    from predictors.batch import EncodedSubnets, LayerTable
    from spaces import SearchSpace

    ds = Dataset(tmp_path / "d" / "m.jsonl")
    for c in prior_configs("se", 20, seed=1):  # a constant latency: the forest must return it exactly
        ds.append(KernelRecord(config=c, precision="int8", backend="onnxruntime-cpu",
                               measurement=Measurement(backend="onnxruntime-cpu", model="m", latency_ms=0.05,
                                                       stable=True)))
    (tmp_path / "d" / "overhead.json").write_text(json.dumps({"overhead_ms": 0.01}))
    pred = train(ds.path, device="t")
    y, _ = pred.predict_kernels(prior_configs("se", 5, seed=2))
    assert pred.meta.overhead_ms == 0.01 and np.allclose(y, 0.04)
    plain = all_type_predictor
    with_oh = Predictor(plain.meta.model_copy(update={"overhead_ms": 0.5}), plain.forests)
    sp = SearchSpace.parse("onnxw-151122-023231")
    enc = EncodedSubnets.random(sp, 20, seed=3)
    assert np.allclose(LayerTable(sp, with_oh).predict(enc) - LayerTable(sp, plain).predict(enc), 0.5)


def test_boundary_is_removed_per_kernel_by_size_and_added_once_per_model(tmp_path, all_type_predictor):
    """Each kernel model pays quantize(inputs) + dequantize(output); a network pays its own I/O once."""
    from predictors.batch import EncodedSubnets, LayerTable
    from profilers.boundary import kernel_elements
    from spaces import SearchSpace

    ds = Dataset(tmp_path / "d" / "m.jsonl")
    q_ns, dq_ns = 0.2, 0.1
    cfgs = prior_configs("se", 20, seed=1)
    for c in cfgs:  # measured = 0.05 ms of kernel + the boundary of its own size
        n_in, n_out = kernel_elements(c)
        ms = 0.05 + (q_ns * n_in + dq_ns * n_out) * 1e-6
        ds.append(KernelRecord(config=c, precision="int8", backend="onnxruntime-cpu",
                               measurement=Measurement(backend="onnxruntime-cpu", model="m", latency_ms=ms,
                                                       stable=True)))
    (tmp_path / "d" / "overhead.json").write_text(json.dumps(
        {"overhead_ms": 0.0, "boundary": {"quantize": {"ns_per_element": q_ns, "intercept_ms": 0, "points": []},
                                          "dequantize": {"ns_per_element": dq_ns, "intercept_ms": 0, "points": []}}}))
    pred = train(ds.path, device="t")
    assert pred.meta.boundary_ns_per_element == {"quantize": q_ns, "dequantize": dq_ns}
    y, _ = pred.predict_kernels(prior_configs("se", 5, seed=2))
    assert np.allclose(y, 0.05)
    plain = all_type_predictor
    with_b = Predictor(plain.meta.model_copy(update={"boundary_ns_per_element": {"quantize": q_ns,
                                                                                 "dequantize": dq_ns}}), plain.forests)
    sp = SearchSpace.parse("onnxw-151122-023231")
    enc = EncodedSubnets.random(sp, 20, seed=3)
    res = np.array(sp.hyperspace.resolutions)[enc.res]
    expect = (q_ns * 3 * res ** 2 + dq_ns * 1000) * 1e-6  # the network's input quantize and logits dequantize
    assert np.allclose(LayerTable(sp, with_b).predict(enc) - LayerTable(sp, plain).predict(enc), expect)


def test_kernel_elements():
    from profilers.boundary import kernel_elements

    assert kernel_elements(KernelConfig(type="conv-bn-relu", hw=56, cin=16, cout=32, kernel=3, stride=2)) == \
        (56 * 56 * 16, 28 * 28 * 32)
    assert kernel_elements(KernelConfig(type="dwconv-bn-hswish", hw=15, cin=8, kernel=5, stride=2)) == \
        (15 * 15 * 8, 8 * 8 * 8)
    assert kernel_elements(KernelConfig(type="add", hw=7, cin=4, cout=4)) == (2 * 7 * 7 * 4, 7 * 7 * 4)
    assert kernel_elements(KernelConfig(type="concat", hw=7, cin=4, cout=6)) == (7 * 7 * 10, 7 * 7 * 10)
    assert kernel_elements(KernelConfig(type="fc", hw=1, cin=1280, cout=1000)) == (1280, 1000)
    assert kernel_elements(KernelConfig(type="global-avgpool", hw=7, cin=960)) == (7 * 7 * 960, 960)


def test_per_work_target_extrapolates_where_plain_forests_cannot():
    """A forest averages what it saw; dividing out the work first lets it answer for larger convs."""
    from predictors.targets import from_target, to_target, work

    small = [KernelConfig(type="conv-bn-relu", hw=hw, cin=c, cout=2 * c, kernel=3)
             for hw in (7, 14, 28) for c in (16, 24, 32, 40, 48)]
    big = [KernelConfig(type="conv-bn-relu", hw=56, cin=64, cout=128, kernel=3)]
    y = 0.002 * work(small)  # a kernel with a constant efficiency
    with pytest.raises(ValueError, match="allowed"):
        to_target("seconds", y, small)
    for name in TARGETS:  # exact round trip
        assert np.allclose(from_target(name, to_target(name, y, small), small), y)
    from sklearn.ensemble import RandomForestRegressor

    from predictors.features import features

    preds = {}
    for name in ("log_ms", "log_ms_per_work"):
        rf = RandomForestRegressor(n_estimators=20, random_state=0).fit(features(small), to_target(name, y, small))
        preds[name] = from_target(name, rf.predict(features(big)), big)[0]
    truth = 0.002 * work(big)[0]
    assert abs(preds["log_ms_per_work"] / truth - 1) < 0.01 and preds["log_ms"] < 0.5 * truth


def test_report_states_the_repeatability_of_its_ground_truth(tmp_path):
    """Accuracy against a measurement is bounded by how repeatable the measurement is: the report says it."""
    from predictors.evaluate import NOISE, report

    recs = [{"name": f"onnxw-random-{i}", "ok": True, "predicted_ms": 10.0, "measured_ms": m, "rounds_ms": r}
            for i, (m, r) in enumerate([(10.0, [10.0, 10.5, 10.2]), (9.0, [9.0, 12.0, 9.5]), (10.5, [10.5, 10.6, 10.5])])]
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    s = report(tmp_path / "results.jsonl", tmp_path, "t")
    assert s[NOISE]["n"] == 3 and s[NOISE]["rounds"] == 3 and s[NOISE]["within10"] == pytest.approx(2 / 3)
    assert s[NOISE]["spread_median"] == pytest.approx(0.05) and s["random onnxw"]["acc10"] == pytest.approx(2 / 3)
    assert "all their records within 10%" in (tmp_path / "report.md").read_text()


def test_report_shows_how_the_error_wanders_over_the_run(tmp_path):
    """A machine that slows down for a while shifts every network measured then: the report's drift curve
    (median error per block of networks in measurement order) shows it, and says what removing it would leave."""
    from predictors.evaluate import DRIFT, DRIFT_BLOCK, drift_blocks, report

    rng = np.random.default_rng(0)
    errs = np.concatenate([rng.uniform(-0.04, 0.04, 2 * DRIFT_BLOCK), rng.uniform(-0.04, 0.04, DRIFT_BLOCK) - 0.16])
    recs = [{"name": f"onnxw-random-{i}", "ok": True, "predicted_ms": 10.0 * (1 + e), "measured_ms": 10.0,
             "rounds_ms": [10.0]} for i, e in enumerate(errs)]
    d = drift_blocks(recs)
    assert d["blocks"] == 3 and d["median_error_min"] == pytest.approx(-0.16, abs=0.03)
    assert d["median_error_max"] == pytest.approx(0.0, abs=0.03) and d["acc10_block_median_removed"] == 1.0
    assert drift_blocks(recs[:DRIFT_BLOCK + 3]) is None  # one block has no drift to show
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    s = report(tmp_path / "results.jsonl", tmp_path, "t")
    assert s[DRIFT]["blocks"] == 3 and "curve" not in s[DRIFT] and s["all"]["acc10"] == pytest.approx(2 / 3)
    assert "Drift over the run (3 blocks of 16" in (tmp_path / "report.md").read_text()
    assert "probe_error_corr" not in s[DRIFT]  # no probes kept: nothing said about the machine's speed
    # the same run with a probe per round that read 16% slower in the last block: the error walked with the machine
    for i, r in enumerate(recs):
        r["probe_ms"] = [0.30 * (1.16 if i >= 2 * DRIFT_BLOCK else 1.0) * (1 + 0.01 * (i % 3))]
    d = drift_blocks(recs)
    assert d["probe_curve"][2] == pytest.approx(1.16 * d["probe_curve"][0], rel=0.02) and d["probe_error_corr"] > 0.9
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    s = report(tmp_path / "results.jsonl", tmp_path, "t")
    assert s[DRIFT]["probe_error_corr"] > 0.9 and "probe_curve" not in s[DRIFT]
    assert "correlate +" in (tmp_path / "report.md").read_text()


def test_a_retried_network_counts_once_with_its_last_record(tmp_path):
    """A resumed evaluation appends a failed network's retry; the report and agreement read the last record."""
    from predictors.evaluate import agreement, load_results, report

    lines = [{"name": "onnxw-random-0", "ok": False, "error": "crashed", "measured_ms": None, "predicted_ms": 10.0},
             {"name": "onnxw-random-1", "ok": True, "measured_ms": 10.0, "predicted_ms": 10.0, "rounds_ms": [10.0]},
             {"name": "onnxw-random-0", "ok": True, "measured_ms": 12.0, "predicted_ms": 10.0, "rounds_ms": [12.0]}]
    path = tmp_path / "results.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in lines) + '{"name": "torn')
    assert load_results(path)["onnxw-random-0"]["measured_ms"] == 12.0 and len(load_results(path)) == 2
    s = report(path, tmp_path, "t")
    assert s["all"]["n"] == 2 and s["all"]["acc10"] == pytest.approx(0.5)
    assert agreement(path, path)["n"] == 2


def test_agreement_of_two_measurement_runs(tmp_path):
    from typer.testing import CliRunner

    from predictors.__main__ import app

    def run(path, ms):
        path.write_text("".join(json.dumps({"name": f"n{i}", "ok": True, "measured_ms": m}) + "\n" for i, m in enumerate(ms)))
        return path

    a = run(tmp_path / "a.jsonl", [10.0, 10.0, 10.0, 10.0])
    b = run(tmp_path / "b.jsonl", [10.4, 10.6, 11.3, 10.5])  # drift 1.055; one network 13% off
    r = CliRunner().invoke(app, ["agreement", str(a), str(b), "--out", str(tmp_path / "ag.json")])
    assert r.exit_code == 0, r.output
    ag = json.loads((tmp_path / "ag.json").read_text())
    assert ag["n"] == 4 and ag["drift"] == pytest.approx(1.055) and ag["acc10"] == 0.75 and ag["acc5"] == 0.25
    assert ag["acc10_drift_removed"] == 1.0
    r = CliRunner().invoke(app, ["agreement", str(a), str(run(tmp_path / "c.jsonl", [1.0][:0]))])
    assert r.exit_code == 2 and "at least 2" in r.output
    # the second run's first 32 networks in a state 15% slower, for two stretches of 16: the run's drift leaves
    # them out, each stretch's own drift does not
    a = run(tmp_path / "a.jsonl", [10.0] * 80)
    b = run(tmp_path / "b.jsonl", [11.5] * 32 + [10.0] * 48)
    r = CliRunner().invoke(app, ["agreement", str(a), str(b), "--out", str(tmp_path / "ag.json")])
    assert r.exit_code == 0, r.output
    ag = json.loads((tmp_path / "ag.json").read_text())
    assert ag["acc10_drift_removed"] == pytest.approx(0.6)
    loc = ag["local drift removed"]
    assert loc["acc10"] == 1.0 and loc["blocks"] == 5 and loc["drift_max"] == pytest.approx(1.15)
    assert "each stretch of 16 networks" in r.output


def test_records_of_one_run_are_selected_and_an_earlier_runs_networks_measured_again(tmp_path):
    """A 6-round run answers what 3 rounds would have given and how two halves of it agree; --like re-measures an
    earlier run's networks (the small ones with --measured-below)."""
    from typer.testing import CliRunner

    from predictors.__main__ import app
    from predictors.evaluate import agreement, items_like, select_records

    recs = [{"name": "onnxw-random-0", "space": "s0", "arch": "a0", "ok": True, "measured_ms": 4.0,
             "rounds_ms": [5.0, 4.4, 4.6, 4.0, 4.1, 4.2], "probe_ms": [1, 2, 3, 4, 5, 6]},
            {"name": "onnxw-random-1", "space": "s1", "arch": "a1", "ok": True, "measured_ms": 20.0,
             "rounds_ms": [20.0, 20.5, 21.0, 20.2, 20.1, 20.3]},
            {"name": "onnxw-random-2", "space": "s2", "arch": "a2", "ok": False, "measured_ms": None, "error": "x"},
            {"name": "keras:MobileNetV2", "space": None, "arch": None, "ok": True, "measured_ms": 8.0,
             "rounds_ms": [8.0]}]
    path = tmp_path / "results.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    first = select_records(path, slice(0, 3))
    assert first["onnxw-random-0"]["measured_ms"] == 4.4 and first["onnxw-random-0"]["probe_ms"] == [1, 2, 3]
    assert "onnxw-random-2" not in first and "keras:MobileNetV2" in first
    assert "keras:MobileNetV2" not in select_records(path, slice(3, None))  # no record in the slice: left out
    ag = agreement(path, path, (slice(0, 3), slice(3, 6)))
    # records 0-2 vs 3-5: 4.4 -> 4.0 ms and 20.0 -> 20.1 ms
    assert ag["n"] == 2 and ag["drift"] == pytest.approx((4.0 / 4.4 + 20.1 / 20.0) / 2) and ag["acc5"] == 0.5
    r = CliRunner().invoke(app, ["agreement", str(path), str(path), "--first-records", "0:3", "--second-records", "3:",
                                 "--out", str(tmp_path / "ag.json")])
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "ag.json").read_text())["second_records"] == "3:"
    r = CliRunner().invoke(app, ["agreement", str(path), str(path), "--first-records", "3:1"])
    assert r.exit_code == 2 and "--first-records" in r.output and "A:B" in r.output

    assert items_like(path) == [("onnxw-random-0", "s0", "a0"), ("onnxw-random-1", "s1", "a1"),
                                ("onnxw-random-2", "s2", "a2"), ("keras:MobileNetV2", "", "")]
    assert items_like(path, measured_below_ms=10) == [("onnxw-random-0", "s0", "a0"), ("keras:MobileNetV2", "", "")]
    with pytest.raises(ValueError, match="no records"):
        items_like(tmp_path / "missing.jsonl")
    r = CliRunner().invoke(app, ["eval", "local:onnxruntime-cpu", "--backend", "onnxruntime-cpu", "--out",
                                 str(tmp_path / "e"), "--measured-below", "10"])
    assert r.exit_code == 2 and "--like" in r.output
    r = CliRunner().invoke(app, ["eval", "local:onnxruntime-cpu", "--backend", "onnxruntime-cpu", "--out",
                                 str(tmp_path / "e"), "--records", "0:3"])
    assert r.exit_code == 2 and "--repredict" in r.output


def test_kernels_outside_the_training_range_are_flagged_and_the_range_comes_back_from_the_data(all_type_predictor,
                                                                                               tmp_path):
    """A forest answers any input with its nearest leaves: keras MobileNetV3's 224x224 hard-swish stem got 1.6 ms
    on the Zen 5 host (its ReLU twin measures 0.05 ms) because no hard-swish conv of our hyperspaces is 3x3."""
    from predictors.artifact import Predictor, predict_kernel_list
    from predictors.train import record_ranges
    from profilers.samplers import kernel_pool

    pred = all_type_predictor
    rng = pred.meta.kernels["conv-bn-hswish"].feature_range
    assert rng is not None and "cin_mod8" not in rng and rng["hw"][0] <= rng["hw"][1]
    inside = list(kernel_pool()["conv-bn-hswish"][:3])  # configs it was trained on
    stem = KernelConfig(type="conv-bn-hswish", hw=int(rng["hw"][1]) * 3, cin=3, cout=16, kernel=3, stride=2)
    near = KernelConfig(type="conv-bn-hswish", hw=int(rng["hw"][1]) + 8, cin=int(rng["cin"][1]),
                        cout=int(rng["cout"][0]))
    assert pred.outside_training(inside + [near]) == []  # a little beyond the range: the per-work target scales it
    flags = pred.outside_training(inside + [stem, stem])
    assert len(flags) == 1 and flags[0].startswith(stem.slug())
    assert f"hw {stem.hw}, trained {rng['hw'][0]:g}-{rng['hw'][1]:g}" in flags[0]
    g = predict_kernel_list(pred, inside + [stem])
    assert g.latency_ms is not None and g.warnings == [] and g.extrapolated == flags  # flagged, still predicted
    # a predictor trained before ranges were kept: they come back from its own training data, forests untouched
    bare = Predictor(pred.meta.model_copy(update={"kernels": {t: i.model_copy(update={"feature_range": None})
                                                              for t, i in pred.meta.kernels.items()}}), pred.forests)
    assert bare.outside_training([stem]) == []
    again = record_ranges(bare)
    assert {t: i.feature_range for t, i in again.meta.kernels.items()} == \
        {t: i.feature_range for t, i in pred.meta.kernels.items()}
    other = tmp_path / "other.jsonl"
    other.write_text(Path(pred.meta.training_data["path"]).read_text().splitlines()[0] + "\n")
    with pytest.raises(ValueError, match="not the data this predictor was trained on"):
        record_ranges(bare, other)


def test_ranges_cli_rewrites_only_the_metadata(all_type_predictor, tmp_path):
    from typer.testing import CliRunner

    from predictors.__main__ import app

    pred = all_type_predictor
    bare = Predictor(pred.meta.model_copy(update={"kernels": {t: i.model_copy(update={"feature_range": None})
                                                              for t, i in pred.meta.kernels.items()}}), pred.forests)
    d = bare.save(tmp_path / "p")
    forests = (d / "forests.npz").read_bytes()
    r = CliRunner().invoke(app, ["ranges", str(d)])
    assert r.exit_code == 0, r.output
    assert (d / "forests.npz").read_bytes() == forests
    assert Predictor.load(d).meta.kernels["fc"].feature_range == pred.meta.kernels["fc"].feature_range
    r = CliRunner().invoke(app, ["ranges", str(tmp_path)])
    assert r.exit_code == 2 and "not a predictor directory" in r.output


def test_the_kernel_statistic_a_forest_learns_is_chosen_and_validated(tmp_path):
    """``min`` is offered beside p10 for hosts whose slow phases last whole seconds (Emerald Rapids, 2026-12-06):
    there a record's p10 can sit in a slow phase while its fastest run does not."""
    from predictors.train import STATISTICS, _statistic

    m = Measurement(backend="tflite-cpu", model="m", latency_ms=2.0, p10_ms=2.0, min_ms=1.5, median_ms=2.5,
                    mean_ms=2.6, stable=True)
    assert [_statistic(m, s) for s in ("p10", "min", "median", "mean")] == [2.0, 1.5, 2.5, 2.6]
    assert _statistic(Measurement(backend="tflite-cpu", model="m", latency_ms=2.0, stable=True), "min") == 2.0
    with pytest.raises(ValueError, match="allowed: " + ", ".join(STATISTICS)):
        _statistic(m, "p5")
    ds = _synthetic_dataset(tmp_path / "m.jsonl")
    assert train(ds.path, device="d", statistic="min").meta.training_data["statistic"] == "min"
