"""Server and agents as real processes on loopback: a client's INT8 model is measured by an agent; an agent
killed with -9 mid-job loses nothing (a second agent finishes the job after the lease expires, and the
dataset holds exactly one result); a server killed with -9 comes back with every stored result; the main
job (`python -m server up`) profiles this host, trains its predictor and serves it."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from exporters.kernel_models import KernelConfig, export_kernel

ROOT = Path(__file__).resolve().parents[1]
ADMIN = "e2e-admin-token"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Service:
    def __init__(self, tmp: Path, db_url: str):
        self.tmp, self.db_url = tmp, db_url
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "DATABASE_URL": db_url, "HIL_ADMIN_TOKEN": ADMIN, "HIL_VAR": str(tmp / "var"),
                    "HIL_LEASE_S": "4", "HIL_HEARTBEAT_S": "1", "PYTHONPATH": str(ROOT)}
        self.server: subprocess.Popen | None = None
        self.agents: list[subprocess.Popen] = []
        self.http = httpx.Client(base_url=self.url, timeout=30, headers={"Authorization": f"Bearer {ADMIN}"})

    def start_server(self) -> None:
        log = open(self.tmp / "server.log", "a")
        self.server = subprocess.Popen([sys.executable, "-m", "server", "serve", "--port", str(self.port)],
                                       env=self.env, cwd=self.tmp, stdout=log, stderr=subprocess.STDOUT)
        wait_for(lambda: self._ok("/healthz"), 60, "server start", self.tmp / "server.log")

    def _ok(self, path: str) -> bool:
        try:
            return self.http.get(path).status_code == 200
        except httpx.TransportError:
            return False

    def token(self, role: str, name: str) -> str:
        out = subprocess.run([sys.executable, "-m", "server", "token", "create", "--role", role, "--name", name],
                             env=self.env, cwd=self.tmp, capture_output=True, text=True, check=True)
        return out.stdout.strip()

    def start_agent(self, token: str, name: str) -> subprocess.Popen:
        log = open(self.tmp / f"{name}.log", "a")
        p = subprocess.Popen([sys.executable, "-m", "profilers", "agent", "--server", self.url, "--backend",
                              "onnxruntime-cpu", "--token", token, "--wait-s", "1", "--spool",
                              str(self.tmp / f"spool-{name}")],
                             env=self.env, cwd=self.tmp, stdout=log, stderr=subprocess.STDOUT)
        self.agents.append(p)
        return p

    def close(self) -> None:
        for p in [*self.agents, self.server]:
            if p is not None and p.poll() is None:
                p.kill()
                p.wait(10)
        self.http.close()


def wait_for(cond, timeout: float, what: str, log: Path | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(0.2)
    tail = log.read_text()[-3000:] if log and log.exists() else ""
    pytest.fail(f"timed out waiting for {what}\n{tail}")


@pytest.fixture
def service(tmp_path):
    svc = Service(tmp_path, f"sqlite:///{tmp_path / 'hil.db'}")
    svc.start_server()
    yield svc
    svc.close()


@pytest.fixture(scope="module")
def int8_model(tmp_path_factory) -> bytes:
    path = tmp_path_factory.mktemp("m") / "conv.onnx"
    export_kernel(KernelConfig(type="conv-bn-relu", hw=56, cin=64, cout=64, kernel=3), "onnx", path)
    return path.read_bytes()


def _submit(svc: Service, model: bytes, device: str) -> int:
    sha = svc.http.post("/models", params={"format": "onnx"}, content=model).json()["sha256"]
    r = svc.http.post("/jobs", json={"device": device, "model_sha256": sha})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def _device(svc: Service) -> str:
    devs = wait_for(lambda: [d for d in svc.http.get("/devices").json() if d["agents_online"]], 90, "agent online",
                    svc.tmp / "a1.log")
    return devs[0]["name"]


def test_measure_kill_agent_kill_server(service, int8_model):
    svc = service
    token = svc.token("agent", "a1")
    a1 = svc.start_agent(token, "a1")
    device = _device(svc)

    # 1. a client's model is measured by the agent
    job = _submit(svc, int8_model, device)
    done = wait_for(lambda: (j := svc.http.get(f"/jobs/{job}").json())["state"] == "done" and j, 120, "first job",
                    svc.tmp / "a1.log")
    rec = done["result"]["record"]
    assert done["result"]["latency_ms"] > 0 and rec["ok"] and rec["fingerprint"]["backend"] == "onnxruntime-cpu"
    assert rec["model_sha256"] == svc.http.get(f"/jobs/{job}").json()["model_sha256"]

    # 2. kill -9 the agent while it holds a job; a second agent finishes it after the lease expires
    job2 = _submit(svc, int8_model, device)
    wait_for(lambda: svc.http.get(f"/jobs/{job2}").json()["state"] == "leased", 60, "lease")
    a1.send_signal(signal.SIGKILL)
    a1.wait(10)
    assert svc.http.get(f"/jobs/{job2}").json()["state"] in ("leased", "queued")
    svc.start_agent(svc.token("agent", "a2"), "a2")
    j2 = wait_for(lambda: (j := svc.http.get(f"/jobs/{job2}").json())["state"] == "done" and j, 120, "second job",
                  svc.tmp / "a2.log")
    outcomes = [h["outcome"] for h in j2["history"]]
    assert "lease expired" in outcomes and outcomes[-1] == "done", outcomes
    assert j2["attempts"] == 2 and j2["result"]["agent_id"] == j2["history"][-1]["agent"]

    # 3. kill -9 the server: every stored result is there after a restart
    before = {j: svc.http.get(f"/jobs/{j}").json()["result"] for j in (job, job2)}
    svc.server.send_signal(signal.SIGKILL)
    svc.server.wait(10)
    svc.start_server()
    after = {j: svc.http.get(f"/jobs/{j}").json()["result"] for j in (job, job2)}
    assert after == before
    metrics = svc.http.get("/metrics").text
    assert f'hil_measurements{{device="{device}",kind="model"}} 2.0' in metrics  # nothing measured twice

    # 4. and the same model gets a prediction (bundled predictor; this host's own comes from the main job)
    from predictors.bundled import bundled_predictors

    slug, backend = bundled_predictors("onnxruntime-cpu")[0].split("/")
    r = svc.http.post(f"/predict_latency/onnx?device={backend}@{slug}", content=int8_model)
    assert r.status_code == 200 and r.json()["latency_ms"] > 0


def test_agent_survives_server_outage_and_garbage(service, int8_model):
    """The server goes away and comes back: the agent reconnects with backoff and carries on; a model the runtime cannot load fails as a job (bounded retries), not as the agent."""
    svc = service
    a = svc.start_agent(svc.token("agent", "a1"), "a1")
    device = _device(svc)
    svc.server.send_signal(signal.SIGKILL)
    svc.server.wait(10)
    time.sleep(3)
    assert a.poll() is None  # still alive, backing off
    svc.start_server()
    job = _submit(svc, int8_model, device)
    wait_for(lambda: svc.http.get(f"/jobs/{job}").json()["state"] == "done", 120, "job after outage",
             svc.tmp / "a1.log")
    # an ONNX file that passes the checker but that onnxruntime refuses to run (unknown op domain)
    import onnx
    from onnx import TensorProto, helper

    g = helper.make_graph([helper.make_node("NoSuchOp", ["x"], ["y"], domain="hil.bogus")], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("hil.bogus", 1)])
    bad = _submit(svc, m.SerializeToString(), device)
    j = wait_for(lambda: (x := svc.http.get(f"/jobs/{bad}").json())["state"] == "failed" and x, 120, "bad job",
                 svc.tmp / "a1.log")
    assert j["attempts"] == 3 and "last error" in j["error"]
    assert a.poll() is None
    job3 = _submit(svc, int8_model, device)
    wait_for(lambda: svc.http.get(f"/jobs/{job3}").json()["state"] == "done", 120, "job after bad job")


def test_main_job_profiles_trains_and_serves(tmp_path):
    """`python -m server up` on a fresh folder: a small profiling campaign on this host, then its predictor
    is trained and served (and still served after a restart)."""
    port = _free_port()
    # HIL_SERVE_BUNDLED=0: this host may have a bundled predictor (the session that measured it ran here)
    env = {**os.environ, "HIL_VAR": str(tmp_path / "var"), "PYTHONPATH": str(ROOT), "HIL_SERVE_BUNDLED": "0"}
    env.pop("DATABASE_URL", None)
    out = subprocess.run([sys.executable, "-m", "server", "up", "--port", str(port), "--per-type", "5",
                          "--kernel-types", "conv-bn-relu,global-avgpool,fc", "--backends", "onnxruntime-cpu",
                          "--exit-when-ready"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "predictor v1 is served" in out.stderr
    svc = Service(tmp_path, f"sqlite:///{tmp_path / 'var' / 'hil.db'}")
    svc.env["HIL_SERVE_BUNDLED"] = "0"
    try:
        svc.start_server()
        from profilers.fingerprint import device_slug, local_fingerprint

        device = f"onnxruntime-cpu@{device_slug(local_fingerprint('onnxruntime-cpu'))}"
        p = svc.http.get(f"/predictors/{device}").json()
        assert p["active"]["version"] == 1 and set(p["active"]["kernel_types"]) == {"conv-bn-relu",
                                                                                    "global-avgpool", "fc"}
        path = tmp_path / "k.onnx"
        export_kernel(KernelConfig(type="conv-bn-relu", hw=28, cin=32, cout=64, kernel=3), "onnx", path)
        r = svc.http.post(f"/predict_latency/onnx?device={device}", content=path.read_bytes())
        assert r.status_code == 200 and r.json()["latency_ms"] > 0, r.text
        d = svc.http.get(f"/devices/{device}").json()
        assert d["profiling"]["state"] == "finished" and d["jobs"]["done"] == 16
    finally:
        svc.close()


def _session_agent(svc: Service, *extra: str):
    """A device with a predictor (any bundled onnxruntime one, recorded as another server process would) and an
    agent started on it with ``--session 3`` and ``extra``; returns the spool and the first session's version."""
    import shutil

    from sqlalchemy import create_engine
    from sqlalchemy.orm import Session

    from predictors.bundled import BUNDLED, bundled_predictors
    from profilers.fingerprint import local_fingerprint
    from server.models import PredictorRow

    fp = local_fingerprint("onnxruntime-cpu").model_dump()
    r = svc.http.post("/agents/register", json={"backend": "onnxruntime-cpu", "device": "lab-ses", "fingerprint": fp,
                                                "hostname": "h"})
    assert r.status_code == 200, r.text
    src = svc.tmp / "preds" / "lab-ses-v1"
    shutil.copytree(BUNDLED / bundled_predictors("onnxruntime-cpu")[0], src)
    with Session(create_engine(svc.db_url)) as s:
        s.add(PredictorRow(device="lab-ses", version=1, path=str(src), trained_at=time.time(), records=0, accuracy={}))
        s.commit()
    wait_for(lambda: (svc.http.get("/predictors/lab-ses").json()["active"] or {}).get("version") == 1, 30,
             "predictor v1 picked up", svc.tmp / "server.log")
    log = open(svc.tmp / "ses.log", "a")
    spool = svc.tmp / "spool-ses"
    svc.agents.append(subprocess.Popen(
        [sys.executable, "-m", "profilers", "agent", "--server", svc.url, "--backend", "onnxruntime-cpu", "--device",
         "lab-ses", "--token", svc.token("agent", "ses"), "--wait-s", "1", "--spool", str(spool), "--session", "3",
         *extra], env=svc.env, cwd=svc.tmp, stdout=log, stderr=subprocess.STDOUT))
    active = wait_for(lambda: (a := svc.http.get("/predictors/lab-ses").json()["active"]) and a["version"] == 2 and a,
                      300, "session version", svc.tmp / "ses.log")
    return spool, active


def test_agent_calibrates_its_session_at_start_up(service):
    """`profilers agent --session 3`: the agent measures 6 calib-small networks with the evaluation's protocol,
    posts them, and the device is served a predictor refitted to this session (the next version)."""
    import json

    svc = service
    spool, active = _session_agent(svc)
    ses = active["accuracy"]["session"]
    assert ses["n_models"] == 6 and "agent" in ses["source"] and 0.5 <= ses["scale"] <= 2
    posted = list(spool.glob("*/session-lab-ses-*/posted.jsonl"))
    assert len(posted) == 1
    recs = [json.loads(line) for line in posted[0].read_text().splitlines()]
    assert sorted(r["name"] for r in recs) == sorted(f"{h}-calib-small-{i}" for h in ("onnxw", "mobilew")
                                                     for i in range(3))
    assert all(len(r["rounds_ms"]) == 3 and r["predicted_ms"] is None for r in recs)
    text = (svc.tmp / "ses.log").read_text()
    assert "session calibration of lab-ses: predictor v2" in text
    # the predictor given may be another host's (the first bundled one): a fit at its bound says so
    assert ("reached a bound" in text) == bool(ses["warnings"]) == (ses["scale"] in (0.5, 2.0))


@pytest.mark.slow
def test_agent_measures_its_session_again_when_idle(service):
    """`--session-every`: with no job waiting, the agent measures the state again: the next version."""
    svc = service
    spool, active = _session_agent(svc, "--session-every", "0.01")
    again = wait_for(lambda: (a := svc.http.get("/predictors/lab-ses").json()["active"]) and a["version"] == 3 and a,
                     300, "second session version", svc.tmp / "ses.log")
    assert again["accuracy"]["session"]["measured_from"] > active["accuracy"]["session"]["measured_to"]
    assert len(list(spool.glob("*/session-lab-ses-*/posted.jsonl"))) == 2
