"""Issue 7 end to end on loopback: server (process) + agent (process, `--backend tflite-android`) + the ADB
device peer (tests/adb_peer.py). A submitted INT8 .tflite is pushed, benchmarked, parsed and stored with the
profile and the phone's facts; a phone that drops mid-run, refuses the key or answers garbage gives a clear
error, a re-queued job and a live agent."""
from __future__ import annotations

import struct
import subprocess
import sys
import time

import pytest

from profilers.android.profiles import load_profile
from tests.adb_peer import AdbPeer
from tests.test_service_e2e import Service, _submit, wait_for

DEVICE = "tflite-android@pixel-4-aarch64"


@pytest.fixture(scope="module")
def tflite_model(tmp_path_factory) -> bytes:
    from exporters.kernel_models import KernelConfig, export_kernel

    path = tmp_path_factory.mktemp("m") / "conv.tflite"
    export_kernel(KernelConfig(type="conv-bn-relu", hw=16, cin=16, cout=16, kernel=3), "tflite", path)
    return path.read_bytes()


@pytest.fixture
def setup(tmp_path):
    peer = AdbPeer(tmp_path / "phone")
    peer.__enter__()
    svc = Service(tmp_path, f"sqlite:///{tmp_path / 'hil.db'}")
    svc.start_server()
    prof = load_profile("pixel4")
    fast = prof.model_copy(update={"benchmark": prof.benchmark.model_copy(update={
        "warmup_runs": 3, "warmup_min_secs": 0.02, "num_runs": 10, "min_secs": 0.05})})
    (tmp_path / "pixel4-fast.json").write_text(fast.model_dump_json())
    binary = tmp_path / "benchmark_model"  # the peer emulates whatever is pushed under this name
    binary.write_bytes(b"\x7fELF\x02\x01\x01" + bytes(9) + struct.pack("<HH", 2, 183) + bytes(64))
    log = open(tmp_path / "agent.log", "a")
    agent = subprocess.Popen(
        [sys.executable, "-m", "profilers", "agent", "--server", svc.url, "--backend", "tflite-android",
         "--adb", f"127.0.0.1:{peer.port}", "--profile", str(tmp_path / "pixel4-fast.json"),
         "--benchmark-model", str(binary), "--token", svc.token("agent", "phone-agent"), "--wait-s", "1",
         "--spool", str(tmp_path / "spool")],
        env={**svc.env, "XDG_CONFIG_HOME": str(tmp_path / "config")}, cwd=tmp_path, stdout=log,
        stderr=subprocess.STDOUT)
    svc.agents.append(agent)
    yield svc, peer, agent
    svc.close()
    peer.__exit__(None, None, None)


def _upload(svc: Service, model: bytes) -> int:
    sha = svc.http.post("/models", params={"format": "tflite"}, content=model).json()["sha256"]
    r = svc.http.post("/jobs", json={"device": DEVICE, "model_sha256": sha})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def _done(svc: Service, job: int, timeout: float = 120):
    return wait_for(lambda: (j := svc.http.get(f"/jobs/{job}").json())["state"] in ("done", "failed") and j,
                    timeout, f"job {job}", svc.tmp / "agent.log")


def test_phone_measures_and_survives_faults(setup, tflite_model):
    svc, peer, agent = setup
    wait_for(lambda: any(d["name"] == DEVICE and d["agents_online"] for d in svc.http.get("/devices").json()),
             90, "phone agent online", svc.tmp / "agent.log")
    d = svc.http.get(f"/devices/{DEVICE}").json()
    assert d["fingerprint"]["android"]["model"] == "Pixel 4" and d["fingerprint"]["android"]["profile"]

    # 1. measured on the phone: pushed, benchmarked (taskset on the profile's core), parsed, stored
    j = _done(svc, _upload(svc, tflite_model))
    assert j["state"] == "done", j
    rec = j["result"]["record"]
    assert rec["ok"] and rec["backend"] == "tflite-android" and rec["n"] >= 10 and rec["latency_ms"] > 0
    assert rec["fingerprint"]["android"]["soc"] and rec["device_state"]["profile"] == "pixel4"
    assert [m for m, _ in peer.tasksets] == ["80"] and any("benchmark_model" in c and "--num_threads=1" in c for c in peer.commands)

    # 2. the phone drops mid-run: error result, job re-queued and then measured, agent alive
    peer.faults.drop_on, peer.faults.drop_after_bytes, peer.faults.times = "benchmark_model", 200, 1
    j = _done(svc, _upload(svc, tflite_model + b""), 180)
    outcomes = [h["outcome"] for h in j["history"]]
    assert j["state"] == "done" and any(o.startswith("error: AndroidError") for o in outcomes), outcomes
    assert agent.poll() is None

    # 3. garbage on the wire: same story
    peer.faults.garbage_on, peer.faults.times = "benchmark_model", 1
    j = _done(svc, _upload(svc, tflite_model), 180)
    assert j["state"] == "done" and j["attempts"] == 2, j["history"]
    assert agent.poll() is None

    # 4. the phone forgets the key and nobody taps Allow: the agent says so, waits, and carries on when allowed
    peer.trusted_keys.clear() if hasattr(peer, "trusted_keys") else None
    peer.faults.refuse_auth = True
    peer.drop_connections()
    job = _upload(svc, tflite_model)
    wait_for(lambda: "tap Allow" in (svc.tmp / "agent.log").read_text(), 90, "the tap-Allow message")
    assert svc.http.get(f"/jobs/{job}").json()["state"] == "queued"  # not leased while the phone is away
    peer.faults.refuse_auth = False
    j = _done(svc, job, 180)
    assert j["state"] == "done" and agent.poll() is None
