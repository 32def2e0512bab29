"""Agent soak: does a device agent's memory stay flat over many jobs?

Starts a server and one agent as real processes on loopback, submits N measurement jobs (a small INT8 ONNX
model, re-uploaded under a new byte so every job downloads and loads a model afresh), and samples the
resident memory of the agent and of its pinned measuring child after every batch. Prints the RSS series and
the growth per 100 jobs after warm-up. The protocol budget is cut to keep a job short (~0.5 s): this measures
the agent's bookkeeping, not latency.

    python bench/agent_soak.py --jobs 300
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except FileNotFoundError:
        pass
    return 0


def children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except FileNotFoundError:
        return []


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=300)
    ap.add_argument("--batch", type=int, default=25)
    args = ap.parse_args()
    from exporters.kernel_models import KernelConfig, export_kernel

    tmp = Path(tempfile.mkdtemp(prefix="hil-soak-"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp / 'hil.db'}", "HIL_ADMIN_TOKEN": "soak",
           "HIL_VAR": str(tmp / "var"), "PYTHONPATH": str(ROOT)}
    server = subprocess.Popen([sys.executable, "-m", "server", "serve", "--port", str(port)], env=env, cwd=tmp,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    agent = None
    try:
        http = httpx.Client(base_url=url, headers={"Authorization": "Bearer soak"}, timeout=30)
        for _ in range(300):
            try:
                if http.get("/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        model = tmp / "k.onnx"
        export_kernel(KernelConfig(type="conv-bn-relu", hw=28, cin=32, cout=32, kernel=3), "onnx", model)
        base = model.read_bytes()
        agent = subprocess.Popen([sys.executable, "-m", "profilers", "agent", "--server", url, "--backend",
                                  "onnxruntime-cpu", "--token", "soak", "--wait-s", "1", "--spool", str(tmp / "spool")],
                                 env={**env, "HIL_SOAK": "1"}, cwd=tmp, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
        device = None
        while device is None:
            devs = [d for d in http.get("/devices").json() if d["agents_online"]]
            device = devs[0]["name"] if devs else None
            time.sleep(0.3)
        series = []
        t0 = time.monotonic()
        submitted = 0
        while submitted < args.jobs:
            ids = []
            for _ in range(args.batch):
                # a distinct model per job (an ONNX doc_string differs), so every job downloads and loads anew
                import onnx

                m = onnx.load_model_from_string(base)
                m.doc_string = f"soak {submitted}"
                sha = http.post("/models", params={"format": "onnx"}, content=m.SerializeToString()).json()["sha256"]
                ids.append(http.post("/jobs", json={"device": device, "model_sha256": sha, "protocol": {
                    "budget_s": 0.3, "min_duration_s": 0.1, "min_rounds": 2, "warmups": 2}}).json()["id"])
                submitted += 1
            while any(http.get(f"/jobs/{i}").json()["state"] not in ("done", "failed") for i in ids[-1:]):
                time.sleep(0.5)
            kids = children(agent.pid)
            point = {"jobs": submitted, "agent_kb": rss_kb(agent.pid), "child_kb": sum(rss_kb(k) for k in kids),
                     "s": round(time.monotonic() - t0, 1)}
            series.append(point)
            print(json.dumps(point), flush=True)
        warm = [p for p in series if p["jobs"] >= min(100, args.jobs // 3)]
        if len(warm) >= 2:
            dj = warm[-1]["jobs"] - warm[0]["jobs"]
            ga = (warm[-1]["agent_kb"] - warm[0]["agent_kb"]) / dj * 100
            print(f"agent RSS growth after warm-up: {ga:+.0f} kB per 100 jobs "
                  f"({warm[0]['agent_kb'] / 1024:.0f} -> {warm[-1]['agent_kb'] / 1024:.0f} MB over {dj} jobs); "
                  f"measuring child at most {max(p['child_kb'] for p in series) / 1024:.0f} MB (recycled every 100 jobs)")
    finally:
        for p in (agent, server):
            if p is not None and p.poll() is None:
                p.kill()


if __name__ == "__main__":
    main()
