"""Profilers: protocol statistics, crash isolation, error records, resumable collection, fusion."""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from exporters.kernel_models import KernelConfig, export_kernel
from profilers.dataset import Dataset, KernelRecord
from profilers.fusion import test_fusion as run_fusion
from profilers.measurement import Measurement
from profilers.protocol import Protocol, quantile_ci, run_protocol
from profilers.samplers import fine_grained, kernel_pool, prior_configs
from profilers.worker import Profiler
from spaces import ONNXW, MOBILEW, resolve
from spaces.sampling import sample_subnet

FAST = Protocol(budget_s=1.5, min_rounds=3, min_duration_s=0.3)


class FakeClock:
    """A simulated clock: each call of ``fn`` advances it by the next duration."""

    def __init__(self, durations_ms):
        self.t = 0
        self.it = iter(durations_ms)

    def clock(self) -> int:
        return self.t

    def fn(self) -> None:
        self.t += int(next(self.it) * 1e6)


def test_protocol_tight_distribution_is_stable():
    rng = np.random.default_rng(0)
    c = FakeClock(10.0 + rng.exponential(0.05, 100000))
    st = run_protocol(c.fn, Protocol(), clock=c.clock)
    assert st["stable"] and st["reason"] is None
    assert st["ci_half_pct"] <= 2.0 and st["rounds"] >= 3 and st["warmups"] >= 10
    assert st["ci_low_ms"] <= st["latency_ms"] <= st["ci_high_ms"]
    assert 10.0 <= st["p10_ms"] <= st["median_ms"] <= st["p90_ms"] and st["min_ms"] >= 10.0


def test_protocol_flags_drift_with_reason():
    # the machine gets 60% slower early on: the second half never sees the fast floor again
    durations = np.concatenate([np.full(60, 10.0), np.full(100000, 16.0)])
    c = FakeClock(durations + np.random.default_rng(1).exponential(0.01, len(durations)))
    st = run_protocol(c.fn, Protocol(round_s=0.1, min_rounds=8, min_duration_s=3.0), clock=c.clock)
    assert not st["stable"] and "half disagree" in st["reason"]


def test_protocol_budget_ends_noisy_measurement():
    rng = np.random.default_rng(2)
    c = FakeClock(rng.uniform(5, 50, 100000))
    st = run_protocol(c.fn, Protocol(budget_s=2.0), clock=c.clock)
    assert not st["stable"] and "CI half-width" in st["reason"]


def test_outliers_do_not_move_mean():
    rng = np.random.default_rng(3)
    d = 10 + rng.exponential(0.05, 100000)
    d[3::7] = 500.0  # a descheduled run every 7
    c = FakeClock(d)
    st = run_protocol(c.fn, Protocol(), clock=c.clock)
    assert st["outliers"] > 0 and st["mean_ms"] < 11.0 and st["median_ms"] < 11.0


def test_quantile_ci_covers():
    rng = np.random.default_rng(4)
    true_p10 = np.percentile(rng.exponential(1.0, 2_000_000), 10)
    hits = sum(lo <= true_p10 <= hi for lo, hi in
               (quantile_ci(np.sort(rng.exponential(1.0, 300)), 0.1) for _ in range(400)))
    assert hits / 400 >= 0.9


@pytest.fixture(scope="module")
def small_models(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    cfg = KernelConfig(type="conv-bn-relu", hw=28, cin=32, cout=64, kernel=3)
    return {"onnx": Path(export_kernel(cfg, "onnx", d / "k.onnx").path),
            "tflite": Path(export_kernel(cfg, "tflite", d / "k.tflite").path), "dir": d}


@pytest.mark.parametrize("backend,key", [("onnxruntime-cpu", "onnx"), ("tflite-cpu", "tflite")])
def test_measure_real_kernel(small_models, backend, key):
    with Profiler(backend, protocol=FAST) as p:
        m = p.measure(small_models[key])
    assert m.ok and m.error is None and m.latency_ms > 0 and m.n >= 15 and m.rounds >= 1
    assert m.model_sha256 and len(m.model_sha256) == 64
    fp = m.fingerprint
    assert fp.backend == backend and fp.runtime_version and fp.cores >= 1 and fp.core == p.core
    assert m.stable or m.reason  # an unstable record always says why


def test_error_records_and_the_worker_survives(small_models, tmp_path, monkeypatch):
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(os.urandom(2048))
    garbage_tfl = tmp_path / "garbage.tflite"
    garbage_tfl.write_bytes(b"TFL3" + os.urandom(512))
    crash = tmp_path / "crash.onnx"
    crash.write_bytes(small_models["onnx"].read_bytes())
    monkeypatch.setenv("HIL_PROFILER_FAULT", "segv")
    with Profiler("onnxruntime-cpu", protocol=FAST) as p:
        missing = p.measure(tmp_path / "missing.onnx")
        assert not missing.ok and missing.error_kind == "missing-file" and "not found" in missing.error
        bad = p.measure(garbage)
        assert not bad.ok and bad.error_kind == "not-a-model" and "cannot load" in bad.error
        wrong = p.measure(small_models["tflite"])
        assert not wrong.ok and wrong.error_kind == "not-a-model" and ".onnx" in wrong.error
        crashed = p.measure(crash)
        assert not crashed.ok and crashed.error_kind == "crash" and "SIGSEGV" in crashed.error
        assert p.restarts == 1
        good = p.measure(small_models["onnx"])  # a fresh child serves the next request
        assert good.ok and good.latency_ms > 0
    with Profiler("tflite-cpu", protocol=FAST) as p:
        bad = p.measure(garbage_tfl)
        assert not bad.ok and bad.error_kind in ("not-a-model", "crash")
        assert p.measure(small_models["tflite"]).ok


def test_ten_repeats_agree_or_say_why(small_models):
    with Profiler("onnxruntime-cpu", protocol=Protocol(budget_s=2.0)) as p:
        ms = [p.measure(small_models["onnx"]) for _ in range(10)]
    lat = [m.latency_ms for m in ms]
    spread = max(lat) / min(lat) - 1
    unstable = [m for m in ms if not m.stable]
    assert all(m.reason for m in unstable)
    # records ~2 s apart; each record's own tests (CI, split halves) cannot see a drift slower than the record.
    # On the Zen 5 host the VM's speed drifted 4% between such records, all internally stable (and 4.6% between
    # two runs 15 minutes apart, see `predictors agreement`); on the Zen 4 host a fresh-clone CI run saw 11.2%
    # (2026-12-07), a slow VM phase of seconds. Such phases are why evaluations keep the fastest of interleaved
    # records: what must hold is that most records agree with the fastest, the VM's usual state.
    agree = [x for x in lat if x <= min(lat) * 1.06]
    assert len(agree) >= 6 or unstable, \
        f"only {len(agree)} of 10 records within 6% of the fastest (spread {spread:.1%}), all flagged stable"
    assert spread <= 0.5 or unstable, f"spread {spread:.1%} across 10 records, all flagged stable"


@pytest.mark.parametrize("space", ["onnxw-111111-000000", "mobilew-111111-000000"])
def test_mbv2_like_subnet_int8_and_fp32_on_both_backends(tmp_path, space):
    from exporters.calibration import Calibration
    from exporters.onnx_export import export_onnx
    from exporters.tflite_export import export_tflite

    net = resolve(space, sample_subnet(space, "min"))
    calib = Calibration((1, 3, 160, 160), 2)
    files = {("onnxruntime-cpu", "int8"): export_onnx(net, tmp_path / "i.onnx", calibration=calib).path,
             ("onnxruntime-cpu", "fp32"): export_onnx(net, tmp_path / "f.onnx", fp32=True).path,
             ("tflite-cpu", "int8"): export_tflite(net, tmp_path / "i.tflite", calibration=calib).path,
             ("tflite-cpu", "fp32"): export_tflite(net, tmp_path / "f.tflite", fp32=True).path}
    for backend in ("onnxruntime-cpu", "tflite-cpu"):
        with Profiler(backend, protocol=Protocol(budget_s=2.0)) as p:
            for prec in ("int8", "fp32"):
                m = p.measure(files[(backend, prec)])
                # a sanity range, not a speed claim: the Zen 5 host ran the min mobilew subnet in 0.47 ms (TFLite INT8)
                assert m.ok and 0.05 < m.latency_ms < 500, (backend, prec, m.error)


def test_samplers_draw_from_the_hyperspaces():
    pool = kernel_pool()
    assert {"conv-bn-relu", "conv-bn-hswish", "dwconv-bn-relu6", "dwconv-bn-swish", "se", "add", "fc"} <= set(pool)
    widths = set().union(*(st.widths for hs in (ONNXW, MOBILEW) for st in hs.stages),
                         ONNXW.first_conv.widths, MOBILEW.first_conv.widths)
    for c in prior_configs("conv-bn-relu6", 200):
        assert c.cout in widths or c.cin in widths  # expand convs go from a stage width to a hidden width
    assert prior_configs("se", 20, seed=1) == prior_configs("se", 20, seed=1)
    seeds = prior_configs("dwconv-bn-relu6", 10)
    new = fine_grained(seeds, per_seed=5, exclude=seeds)
    assert len(new) == len(set(new)) and not set(new) & set(seeds) and len(new) >= 20
    assert all(n.cout == n.cin for n in new)
    head = prior_configs("fc", 30)  # one config in the hyperspaces: padded with neighbours
    assert len(head) == len(set(head)) == 30 and all(c.type == "fc" for c in head)
    # the stem conv (3 input channels, stride 2, at the input resolution) is in every network: it comes first
    stems = [c for c in prior_configs("conv-bn-relu", 40) if c.cin == 3]
    assert len(stems) >= 8 and all(c.stride == 2 and c.hw >= 160 for c in stems)
    assert len(prior_configs("conv-bn-relu", 40)) == len(set(prior_configs("conv-bn-relu", 40))) == 40


def test_dataset_cuts_torn_line_and_refuses_duplicates(tmp_path):
    path = tmp_path / "m.jsonl"
    cfg = KernelConfig(type="se", hw=7, cin=64, mid=16)
    rec = KernelRecord(config=cfg, precision="int8", backend="tflite-cpu",
                       measurement=Measurement(backend="tflite-cpu", model="x", latency_ms=1.0))
    ds = Dataset(path)
    assert ds.append(rec) and not ds.append(rec)
    with open(path, "a") as f:
        f.write('{"config": {"type": "se", "hw"')  # killed mid-write
    ds2 = Dataset(path)
    assert len(ds2) == 1 and path.read_text().count("\n") == 1


def test_collection_survives_sigkill(tmp_path):
    out = tmp_path / "data"
    cmd = [sys.executable, "-m", "profilers", "collect", "--backend", "onnxruntime-cpu", "--kernels", "se,add",
           "--per-type", "4", "--precision", "int8,fp32", "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    data = out / "measurements.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and (not data.exists() or data.read_text().count("\n") < 3):
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # the collector and its measuring child
    proc.wait()
    n_before = data.read_text().count("\n")
    assert 3 <= n_before < 16
    subprocess.run(cmd, check=True, timeout=600, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    plan = json.loads((out / "plan.json").read_text())["items"]
    recs = list(Dataset(data))
    keys = [r.key() for r in recs]
    assert len(plan) == 16 and len(keys) == len(set(keys)) == 16
    assert {(KernelConfig(**c).slug(), p) for c, p in plan} == set(keys)
    assert all(r.measurement.ok for r in recs)


def test_fusion_rule_on_onnxruntime():
    from profilers.fusion import default_pairs

    pairs = {"conv-bn+relu": default_pairs()["conv-bn+relu"]}
    # Interleaved rounds, fastest kept: a single back-to-back pass failed in CI when a slow phase of the
    # shared VM landed on T12 alone (T12 0.20 ms vs T1 0.14 ms).
    rules = run_fusion("onnxruntime-cpu", pairs, protocol=Protocol(budget_s=2, min_duration_s=0.7), rounds=3)
    r = rules.pairs["conv-bn+relu"]
    assert r.t1_ms > 0 and r.t2_ms > 0 and r.t12_ms > 0
    assert r.fused == (r.t1_ms + r.t2_ms - r.t12_ms > 0.5 * min(r.t1_ms, r.t2_ms))
    assert r.fused  # onnxruntime fuses Conv+Relu (QDQ and FP32 alike)
    assert 3 <= r.rounds <= 6 and (r.rounds in (3, 6) or r.stable)  # more rounds only until the kept ones are stable
    assert rules.fingerprint["backend"] == "onnxruntime-cpu"


def test_fusion_rejects_bad_rounds():
    for kw in ({"rounds": 0}, {"rounds": 3, "max_rounds": 2}):
        with pytest.raises(ValueError, match="rounds"):
            run_fusion("onnxruntime-cpu", {}, **kw)


def test_cli_measure_and_errors(small_models, tmp_path):
    p = subprocess.run([sys.executable, "-m", "profilers", "measure", str(small_models["onnx"]), "--backend",
                        "onnxruntime-cpu", "--budget-s", "1"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    rec = json.loads(p.stdout)
    assert rec["ok"] and rec["latency_ms"] > 0 and rec["estimator"] == "p10"
    p = subprocess.run([sys.executable, "-m", "profilers", "measure", str(tmp_path / "nope.onnx"), "--backend",
                        "onnxruntime-cpu"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 1 and json.loads(p.stdout)["error_kind"] == "missing-file"
    p = subprocess.run([sys.executable, "-m", "profilers", "measure", str(small_models["onnx"]), "--backend", "gpu"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "onnxruntime-cpu" in p.stderr


def test_prefetcher_keeps_order_returns_errors_and_avoids_the_profiler_core():
    from profilers.prefetch import Prefetcher

    seen = []

    def fn(i):
        seen.append(os.sched_getaffinity(0))
        if i == 3:
            raise ValueError("bad export")
        return i * i

    avoid = max(os.sched_getaffinity(0))
    out = list(Prefetcher(fn, range(8), avoid_core=avoid, depth=2))
    assert [i for i, _ in out] == list(range(8))
    assert isinstance(out[3][1], ValueError) and [r for i, r in out if i != 3] == [i * i for i in range(8) if i != 3]
    if len(os.sched_getaffinity(0)) > 1:
        assert all(avoid not in s for s in seen)
    # breaking out early stops the worker
    it = Prefetcher(lambda i: i, range(10 ** 6), depth=1)
    for i, _ in it:
        if i == 5:
            break
    assert not any(t.is_alive() for t in it._threads)
    with pytest.raises(ValueError, match="depth"):
        Prefetcher(fn, [], depth=0)

    def items():  # the item source itself fails: the consumer hears of it after the items before
        yield from range(3)
        raise OSError("plan file unreadable")

    got = []
    with pytest.raises(OSError, match="unreadable"):
        for i, _ in Prefetcher(lambda i: i, items(), depth=2):
            got.append(i)
    assert got == [0, 1, 2]


def test_recycled_worker_replaces_its_process_and_fails_only_the_item_it_was_on():
    """Evaluations export in such a worker: TensorFlow's converter leaked 12 GB in one long-lived process."""
    import multiprocessing

    from profilers.prefetch import RecycledWorker
    from tests._worker_probe import probe

    avoid = max(os.sched_getaffinity(0))
    with RecycledWorker(probe, tasks_per_child=2, avoid_core=avoid) as w:
        pids = [w("pid") for _ in range(4)]
        assert pids[0] == pids[1] != pids[2] == pids[3] and os.getpid() not in pids
        for pid in (pids[1], pids[3]):  # replaced inside the call that ended its turn: exited, and no successor
            with pytest.raises(ProcessLookupError):  # spawned yet (a helper's must not start beside a measurement)
                os.kill(pid, 0)
        assert not [c for c in multiprocessing.active_children() if c.pid not in pids]
        if len(os.sched_getaffinity(0)) > 1:
            assert avoid not in w("affinity")
        with pytest.raises(RuntimeError, match="KeyError: 'no such kernel'"):
            w("raise")  # an exception comes back by name, whatever its type
        with pytest.raises(RuntimeError, match="worker process died"):
            w("die")
        assert w("pid") not in pids  # the next item gets a fresh child
    with RecycledWorker(probe, tasks_per_child=2, core=avoid) as w:
        assert w("affinity") == [avoid]  # a Prefetcher's helper runs on the profiler's core, and only there
    with pytest.raises(ValueError, match="tasks_per_child"):
        RecycledWorker(probe, tasks_per_child=0)


def test_recycled_worker_child_dies_with_its_parent():
    """A SIGTERM'd or killed evaluation must not leave its export child busy beside the next run's measurements."""
    import signal
    import subprocess
    import sys
    import time

    from tests.test_shutdown import _stat

    if not sys.platform.startswith("linux"):
        pytest.skip("PR_SET_PDEATHSIG is Linux's")
    script = ("from profilers.prefetch import RecycledWorker\nfrom tests._worker_probe import probe\n"
              "w = RecycledWorker(probe, tasks_per_child=4)\nprint(w('pid'), flush=True)\nw('sleep')\n")
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                              cwd=Path(__file__).resolve().parents[1])
    child = int(parent.stdout.readline())
    os.kill(child, 0)  # alive, and now busy with the long item
    parent.send_signal(signal.SIGKILL)  # no cleanup runs in the parent at all
    parent.wait(10)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if _stat(child) is None:
            return  # gone, or dead and waiting for the reaper that adopted it
        time.sleep(0.1)
    os.kill(child, signal.SIGKILL)
    pytest.fail(f"the worker child {child} outlived its killed parent")


def test_prefetcher_says_when_it_is_idle():
    """Evaluation rounds after the first wait for this: measured while nothing of ours runs beside them."""
    import threading

    from profilers.prefetch import Prefetcher

    gate = threading.Event()

    def slow(i):
        gate.wait(5)
        return i

    p = Prefetcher(slow, range(6), depth=2)
    it = iter(p)
    assert not p.wait_idle(0.3)  # the worker is busy (blocked inside an export)
    gate.set()
    assert next(it) == (0, 0)
    assert p.wait_idle(5)  # queue full: the worker waits for the consumer
    assert [i for i, _ in it] == [1, 2, 3, 4, 5] and p.wait_idle(0)  # done: idle for good


def test_prefetcher_helper_works_only_while_the_caller_waits_and_leaves_before_it_returns():
    """An evaluation lends its measuring core to a second exporter during quiet waits: the exports must be off that
    core again before the round is measured, and the order of results must not change."""
    import threading
    import time

    from profilers.prefetch import Prefetcher

    waiting = threading.Event()  # set by this test while it is blocked in the prefetcher: the measuring core is free
    in_hand = []  # helper items being computed now
    helper_saw = []  # for each helper item: was a caller waiting when it started and when it ended?

    def main(i):
        time.sleep(0.05)
        return ("main", i)

    def helper(i):
        in_hand.append(i)
        start = waiting.is_set()
        time.sleep(0.3 if i != 9 else 1.0)
        helper_saw.append(start and waiting.is_set())
        in_hand.remove(i)
        return ("helper", i)

    def blocked(call):
        waiting.set()
        try:
            return call()
        finally:
            assert not in_hand  # nothing of the helper's is left on the core when the consumer measures
            waiting.clear()

    p = Prefetcher(main, range(16), depth=4, helper=helper)
    it = iter(p)
    got = [blocked(lambda: next(it))]  # waiting for its first item, the consumer lends the core too
    seen = len(helper_saw)
    time.sleep(0.5)  # the consumer "measures": the helper takes nothing, the main worker fills the lookahead
    assert len(helper_saw) == seen and blocked(lambda: p.wait_idle(5))
    got += [blocked(lambda: next(it)) for _ in range(4)]
    assert blocked(lambda: p.wait_idle(10))  # 4 more ahead, shared by both
    got += [blocked(lambda: next(it)) for _ in range(4)]
    assert not blocked(lambda: p.wait_idle(0.01))  # timed out, yet returns only once the helper's item is done
    got += [blocked(lambda: next(it)) for _ in range(16 - len(got))]
    assert [i for i, _ in got] == list(range(16)) and all(r[1] == i for i, r in got)
    assert any(r[0] == "helper" for _, r in got) and helper_saw and all(helper_saw)
    with pytest.raises(StopIteration):
        next(it)


def test_device_slug_names_the_core_generation_of_a_bare_brand():
    """Two sessions' hosts both said "AMD EPYC" with AVX-512 VNNI: a Zen 5 (family 26) and a Zen 4 (family 25,
    model 17). Their kernels differ, so their predictors must live apart."""
    from exporters.cpu import cpu_info
    from profilers.fingerprint import Fingerprint, device_slug, microarchitecture

    base = dict(backend="onnxruntime-cpu", arch="x86_64", cores=2, runtime="onnxruntime", runtime_version="1",
                os="Linux", hostname="h", cpu_model="AMD EPYC", flags=["avx2", "avx512f", "avx512_vnni"])
    zen4, zen5 = Fingerprint(cpu_family=25, cpu_model_id=17, **base), Fingerprint(cpu_family=26, **base)
    assert (device_slug(zen4), device_slug(zen5)) == ("amd-epyc-zen4-vnni", "amd-epyc-zen5-vnni")
    assert zen4.hash() != zen5.hash()
    # records from before the family was read keep their slug and their hash (the hash as it was computed then)
    old = Fingerprint(**base)
    key = {k: getattr(old, k) for k in ("backend", "cpu_model", "arch", "flags", "runtime", "runtime_version")}
    before = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    assert device_slug(old) == "amd-epyc-vnni" and old.hash() == before
    # a brand with a model or a clock in it keeps its name (the Xeon folder is intel-xeon-2.80ghz-vnni)
    xeon = Fingerprint(**{**base, "cpu_model": "Intel(R) Xeon(R) Processor @ 2.80GHz"}, cpu_family=6, cpu_model_id=207)
    assert device_slug(xeon) == "intel-xeon-2.80ghz-vnni"
    assert microarchitecture("intel-xeon-processor", 6, 0xCF) == "emeraldrapids"
    assert microarchitecture("amd-epyc", 25, 1) == "zen3" and microarchitecture("amd-epyc", 25, 0x90) == "f25m144"
    assert microarchitecture("hygon", 24, None) == "f24" and microarchitecture("amd-epyc", None, None) is None
    # and this host's /proc/cpuinfo gives both numbers on x86
    info = cpu_info()
    if info.arch == "x86_64":
        assert info.family is not None and info.model_id is not None


def test_device_slug_separates_machines(tmp_path):
    from profilers.collect import collect
    from profilers.fingerprint import Fingerprint, device_slug, local_fingerprint

    base = dict(backend="onnxruntime-cpu", arch="x86_64", cores=2, runtime="onnxruntime", runtime_version="1",
                os="Linux", hostname="h")
    amd = Fingerprint(cpu_model="AMD EPYC", flags=["avx2", "fma"], **base)
    intel = Fingerprint(cpu_model="Intel(R) Xeon(R) Processor @ 2.80GHz", flags=["avx2", "avx512f", "avx512_vnni"],
                        **base)
    assert device_slug(amd) == "amd-epyc-avx2" and device_slug(intel) == "intel-xeon-2.80ghz-vnni"
    # a dataset measured on another machine refuses more records from this one
    other = amd if device_slug(local_fingerprint("onnxruntime-cpu")) != "amd-epyc-avx2" else intel
    (tmp_path / "overhead.json").write_text(json.dumps({"backend": "onnxruntime-cpu", "overhead_ms": 0.01,
                                                        "fingerprint": other.model_dump()}))
    with pytest.raises(ValueError, match="measured on"):
        collect("onnxruntime-cpu", ["se"], tmp_path, per_type=1)


def test_boundary_fit_on_onnxruntime():
    from profilers.boundary import measure_boundary

    b = measure_boundary(sizes=(8, 200704, 802816), rounds=1, protocol=Protocol(budget_s=0.6, min_duration_s=0.2))
    for fit in (b.quantize, b.dequantize):
        assert len(fit.points) == 3 and fit.points[2][1] > fit.points[0][1]
        assert 0.01 < fit.ns_per_element < 20  # a float<->uint8 conversion: well under a cycle to a few ns
    assert b.kernel_ms(1_000_000, 0) == pytest.approx(b.quantize.ns_per_element)  # 1e6 elements x ns = ms
    with pytest.raises(ValueError, match="allowed: onnxruntime-cpu"):
        measure_boundary("tflite-cpu")
