"""The device-agent daemon: registers this host's backends with a latency server, heartbeats, leases
measurement jobs for its devices, measures them with the profilers protocol and posts the results.

    python -m profilers agent --server http://127.0.0.1:8000 --backend onnxruntime-cpu --token $HIL_AGENT_TOKEN

Why it is built this way:
* **One agent per measuring core.** Two agents measuring at once on one core would corrupt each other's
  timings, so one process serves several backends (``--backend`` repeated) in turn, on one pinned core.
* **Nothing is lost.** A result is written to a spool file before it is posted and removed only when the
  server has answered; a restarted agent posts what is left in its spool first (results are idempotent per
  job on the server). While the server is away the agent retries with exponential backoff and jitter.
  A job whose agent dies is re-leased by the server when its lease expires (heartbeats extend it).
* **Runs for hours.** Measurements run in the profilers' pinned child process, which a crashing model
  only restarts, and which is recycled every ``recycle_every`` jobs so the runtime's memory cannot creep.
"""
from __future__ import annotations

import json
import logging
import os
import random
import socket
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import httpx

from .fingerprint import local_fingerprint
from .worker import Profiler, pick_core

log = logging.getLogger("hil.agent")
SUFFIX = {"onnxruntime-cpu": ".onnx", "tflite-cpu": ".tflite", "tflite-android": ".tflite"}
AGENT_BACKENDS = tuple(SUFFIX)
SESSION_BACKENDS = ("onnxruntime-cpu", "tflite-cpu")
SESSION_MAX_AGE_S = 3600.0


class AgentFatal(Exception):
    """A condition retrying cannot fix (bad token, refused registration): the agent exits with its message."""


def default_spool() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "hil-latency" / "agent"


@dataclass
class Registration:
    backend: str
    device: str
    agent_id: str
    lost: bool = False  # the server forgot us (404): register again


@dataclass
class Backoff:
    """Exponential backoff with full jitter, reset on success."""

    base: float = 0.5
    cap: float = 30.0
    attempt: int = 0

    def next(self) -> float:
        self.attempt += 1
        return random.uniform(0, min(self.cap, self.base * 2 ** self.attempt))

    def reset(self) -> None:
        self.attempt = 0


@dataclass
class DeviceAgent:
    server: str
    backends: list[str]
    token: str
    device: str | None = None
    core: int | None = None
    wait_s: float = 10.0
    spool: Path = field(default_factory=default_spool)
    recycle_every: int = 100
    adb: str | None = None  # tflite-android: HOST:PORT (or usb[:SERIAL]) of the phone
    profile: str | None = None  # tflite-android: device profile name or JSON path (profilers/android/profiles)
    benchmark_binary: Path | None = None  # tflite-android: TFLite's benchmark_model for the phone's ABI
    # calib-small networks per hyperspace to measure at start-up and post as a session calibration (0: none)
    session_n: int = 0
    # ... and again after this many minutes, at the next moment without a job (None: at start-up only)
    session_every_min: float | None = None
    on_event: Callable[[str], None] | None = None
    stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        if not self.backends:
            raise ValueError("backend: at least one is needed")
        if self.session_n < 0:
            raise ValueError(f"session: {self.session_n} networks per hyperspace; allowed: 0 (none) or more")
        if self.session_every_min is not None and (self.session_every_min <= 0 or not self.session_n):
            raise ValueError(f"session-every: {self.session_every_min} min; allowed: more than 0, with --session N")
        if self.session_n and not set(self.backends) & set(SESSION_BACKENDS):
            raise ValueError(f"session: a session calibration measures on this host; allowed with "
                             f"{', '.join(SESSION_BACKENDS)}, not {', '.join(self.backends)}")
        if self.device and len(self.backends) > 1:
            raise ValueError("device: a name applies to one backend; give one --backend with --device")
        bad = [b for b in self.backends if b not in AGENT_BACKENDS]
        if bad:
            raise ValueError(f"backend: {', '.join(bad)} not allowed; allowed: {', '.join(AGENT_BACKENDS)}")
        self.android = None
        if "tflite-android" in self.backends:
            from .android.device import AndroidDevice
            from .android.profiles import load_profile

            if not (self.adb and self.profile and self.benchmark_binary):
                raise ValueError("tflite-android needs --adb HOST:PORT, --profile NAME and --benchmark-model PATH")
            self.android = AndroidDevice(self.adb, load_profile(self.profile), self.benchmark_binary)
        self.core = pick_core() if self.core is None else self.core
        self.http = httpx.Client(base_url=self.server.rstrip("/"), timeout=httpx.Timeout(60.0, connect=5.0),
                                 headers={"Authorization": f"Bearer {self.token}"})
        self.regs: list[Registration] = []
        self.heartbeat_s = 5.0
        self.profilers: dict[str, Profiler] = {}
        self.jobs_done = 0
        self._since_recycle = 0
        # one spool per (backends, device): agents of one host never post each other's results
        self.spool = Path(self.spool) / ("+".join(sorted(self.backends)) + (f"@{self.device}" if self.device else ""))
        self.spool.mkdir(parents=True, exist_ok=True)

    # --- plumbing -----------------------------------------------------------------------------------
    def _say(self, msg: str) -> None:
        log.info(msg)
        if self.on_event:
            self.on_event(msg)

    def _request(self, method: str, url: str, *, retry: bool = True, **kw) -> httpx.Response:
        """One HTTP call; connection errors and 5xx are retried with backoff (until stopped) when ``retry``."""
        b = Backoff()
        while True:
            try:
                r = self.http.request(method, url, **kw)
                if r.status_code < 500:
                    if r.status_code in (401, 403):
                        raise AgentFatal(f"server refused the token ({r.status_code}): {_detail(r)}")
                    return r
                why = f"server error {r.status_code}: {_detail(r)}"
            except httpx.TransportError as e:
                why = f"server unreachable ({type(e).__name__}: {e})"
            if not retry or self.stop.is_set():
                raise ConnectionError(why)
            delay = b.next()
            self._say(f"{why}; retrying in {delay:.1f} s")
            if self.stop.wait(delay):
                raise ConnectionError(why)

    def register(self) -> None:
        self.regs = []
        for backend in self.backends:
            fp = self._connected_android().fingerprint() if backend == "tflite-android" else \
                local_fingerprint(backend, self.core)
            body = {"backend": backend, "device": self.device, "fingerprint": fp.model_dump(),
                    "hostname": socket.gethostname(), "info": {"pid": os.getpid(), "core": self.core}}
            r = self._request("POST", "/agents/register", json=body)
            if r.status_code != 200:
                raise AgentFatal(f"registration of {backend} refused ({r.status_code}): {_detail(r)}")
            doc = r.json()
            self.heartbeat_s = float(doc["heartbeat_s"])
            self.regs.append(Registration(backend, doc["device"], doc["agent_id"]))
            self._say(f"registered {backend} as device {doc['device']} (agent {doc['agent_id']})")

    def _heartbeats(self) -> None:
        while not self.stop.wait(self.heartbeat_s):
            for reg in list(self.regs):
                try:
                    r = self.http.post(f"/agents/{reg.agent_id}/heartbeat")
                    if r.status_code == 404:
                        reg.lost = True
                except httpx.TransportError:
                    pass  # the main loop notices and backs off; heartbeats resume when the server is back

    # --- spool: results survive server outages and agent restarts -----------------------------------
    def _spool_path(self, job_id: int) -> Path:
        return self.spool / f"{job_id}.json"

    def _post_result(self, job_id: int, result: dict[str, Any], device: str) -> str:
        path = self._spool_path(job_id)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"job_id": job_id, "device": device, "result": result}))
        os.replace(tmp, path)
        r = self._request("POST", f"/jobs/{job_id}/result", json=result)
        path.unlink(missing_ok=True)
        if r.status_code == 200:
            return r.json()["status"]
        return f"refused ({r.status_code}): {_detail(r)}"

    def flush_spool(self) -> int:
        """Post results a previous run measured but could not deliver."""
        n = 0
        for path in sorted(self.spool.glob("*.json")):
            doc = json.loads(path.read_text())
            reg = next((r for r in self.regs if r.device == doc["device"]), None)
            if reg is None:
                self._say(f"job {doc['job_id']}: spooled result for device {doc['device']}, which this agent does "
                          f"not serve now; kept in {path}")
                continue
            doc["result"]["agent_id"] = reg.agent_id  # measured under an earlier registration of this device
            status = self._post_result(doc["job_id"], doc["result"], doc["device"])
            self._say(f"job {doc['job_id']}: spooled result posted ({status})")
            n += 1
        return n

    # --- measuring ----------------------------------------------------------------------------------
    def _connected_android(self):
        """The phone, connected (reconnecting with backoff while it is away; the agent stays alive)."""
        from .android.device import AndroidError

        b = Backoff(base=1.0, cap=60.0)
        while True:
            try:
                if self.android.dev is None:
                    self.android.connect()
                    self._say(f"phone {self.android.target}: {self.android.facts.get('model')} "
                              f"({self.android.facts.get('soc')}), Android {self.android.facts.get('release')}")
                return self.android
            except AndroidError as e:
                if not e.retryable or self.stop.is_set():
                    raise AgentFatal(str(e)) from None
                delay = b.next()
                self._say(f"{e}; retrying in {delay:.1f} s")
                if self.stop.wait(delay):
                    raise AgentFatal(str(e)) from None

    def _profiler(self, backend: str):
        if backend == "tflite-android":
            return self._connected_android()
        p = self.profilers.get(backend)
        if p is None:
            p = self.profilers[backend] = Profiler(backend, core=self.core)
        return p

    def _recycle(self) -> None:
        self._since_recycle += 1
        if self._since_recycle >= self.recycle_every:
            for p in self.profilers.values():
                p.close()
            self._since_recycle = 0

    def measure_job(self, reg: Registration, job: dict[str, Any], workdir: Path) -> dict[str, Any]:
        """Run one job; returns the result body (never raises for a job's own failure)."""
        kind = job["kind"]
        base = {"agent_id": reg.agent_id}
        try:
            from .protocol import Protocol

            proto = Protocol(**job["payload"]["protocol"]) if job.get("payload", {}).get("protocol") else None
            if kind == "model":
                path = workdir / f"{job['model_sha256']}{SUFFIX.get(reg.backend, '.tflite')}"
                if not path.exists():
                    r = self._request("GET", f"/models/{job['model_sha256']}")
                    if r.status_code != 200:
                        return {**base, "ok": False, "error": f"model download failed ({r.status_code}): {_detail(r)}"}
                    path.write_bytes(r.content)
                m = self._profiler(reg.backend).measure(path, proto)
                path.unlink(missing_ok=True)  # an agent runs for days: keep no model it has measured
                if not m.ok:
                    return {**base, "ok": False, "error": f"{m.error_kind}: {m.error}"}
                return {**base, "ok": True, "latency_ms": m.latency_ms, "stable": m.stable, "record": m.model_dump()}
            if kind == "kernel":
                from exporters.kernel_config import KernelConfig

                from .collect import KERNEL_PROTOCOL, export_kernel_model
                from .dataset import KernelRecord

                cfg = KernelConfig(**job["payload"]["kernel"])
                prec = job["payload"].get("precision", "int8")
                path = export_kernel_model(cfg, prec, reg.backend, workdir)
                m = self._profiler(reg.backend).measure(path, proto or KERNEL_PROTOCOL)
                path.unlink(missing_ok=True)
                if not m.ok:
                    return {**base, "ok": False, "error": f"{m.error_kind}: {m.error}"}
                rec = KernelRecord(config=cfg, precision=prec, backend=reg.backend, measurement=m)
                return {**base, "ok": True, "latency_ms": m.latency_ms, "stable": m.stable,
                        "record": rec.model_dump()}
            if kind == "overhead" and reg.backend == "tflite-android":
                from .collect import OVERHEAD_KERNEL, export_kernel_model

                path = export_kernel_model(OVERHEAD_KERNEL, "int8", reg.backend, workdir)
                ms = [self._profiler(reg.backend).measure(path, proto) for _ in range(3)]
                ok = [m.latency_ms for m in ms if m.ok]
                if not ok:
                    return {**base, "ok": False, "error": f"overhead: {ms[0].error}"}
                doc = {"backend": reg.backend, "overhead_ms": min(ok), "runs": ok,
                       "config": OVERHEAD_KERNEL.model_dump(), "fingerprint": ms[0].fingerprint.model_dump()}
                return {**base, "ok": True, "latency_ms": doc["overhead_ms"], "stable": True, "record": doc}
            if kind == "overhead":
                from .collect import measure_overhead

                prof = self.profilers.pop(reg.backend, None)  # measure_overhead pins its own child
                if prof:
                    prof.close()
                doc = measure_overhead(reg.backend, workdir / "overhead", self.core)
                return {**base, "ok": True, "latency_ms": doc["overhead_ms"], "stable": True, "record": doc}
            return {**base, "ok": False, "error": f"kind: {kind!r} is not a job this agent knows; allowed: "
                                                  "model, kernel, overhead"}
        except Exception as e:  # noqa: BLE001 - the job failed, the agent lives on
            if type(e).__name__ == "AndroidError":  # the phone dropped: the job goes back (error result), and
                self._say(f"job {job['id']}: {e}")  # the next lease waits for the phone to reconnect
            return {**base, "ok": False, "error": f"{type(e).__name__}: {str(e)[:2000]}"}

    # --- session calibration ------------------------------------------------------------------------
    def calibrate_session(self, reg: Registration) -> dict[str, Any] | None:
        """Measure ``session_n`` calib-small networks per hyperspace now and post them as the device's session
        calibration (POST /predictors/{device}/session); returns the server's answer, None when it was refused.

        Why at start-up: on a shared host the per-kernel cost moves between sessions (predictors.calibration), and
        the service predicts in the state its calibration was fitted in. Measured with the evaluation's protocol
        (``predictors.evaluate.evaluate``: rounds, quiet rounds, fastest record), the one the base calibration
        was fitted to. The records stay in the spool (``session-<device>-<time>/results.jsonl``) until posted,
        so a server that is away gets them at the agent's next start."""
        from datetime import datetime, timezone

        from predictors.evaluate import eval_set, evaluate

        if reg.backend not in SESSION_BACKENDS:
            self._say(f"session calibration: {reg.backend} is not measured on this host; skipped")
            return None
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
        out = self.spool / f"session-{reg.device}-{stamp}" / "results.jsonl"
        items = eval_set(["onnxw", "mobilew"], self.session_n, kind="calib-small")
        self._say(f"session calibration of {reg.device}: measuring {len(items)} calib-small networks")
        evaluate(None, reg.backend, items, out)
        return self._post_session(reg, out)

    def _post_session(self, reg: Registration, out: Path) -> dict[str, Any] | None:
        from predictors.evaluate import load_results

        recs = [r for r in load_results(out).values() if r.get("ok") and r.get("measured_ms")]
        body = {"records": recs, "source": f"agent {reg.agent_id} on {socket.gethostname()}"}
        r = self._request("POST", f"/predictors/{reg.device}/session", json=body)
        if r.status_code != 201:
            kept = out.with_name("refused.jsonl")
            out.rename(kept)
            self._say(f"session calibration of {reg.device} refused ({r.status_code}): {_detail(r)}; records kept "
                      f"in {kept}")
            return None
        doc = r.json()
        out.rename(out.with_name("posted.jsonl"))
        self._say(f"session calibration of {reg.device}: predictor v{doc['version']}, scale {doc['scale']:.4f}, "
                  f"per kernel {doc['per_kernel_ms'] * 1e3:.2f} µs (base {doc['base_per_kernel_ms'] * 1e3:.2f}) "
                  f"from {doc['n_models']} networks")
        for w in doc.get("warnings", []):
            self._say(f"session calibration of {reg.device}: warning: {w}")
        return doc

    def flush_sessions(self) -> int:
        """Post session records an earlier run measured but could not deliver (the server was away), if they are
        recent: a session calibration describes the machine's state when it was measured, and an old one would
        move the predictor to a state long gone. Older ones are kept on disk as ``expired.jsonl``."""
        n = 0
        for out in sorted(self.spool.glob("session-*/results.jsonl")):
            if time.time() - out.stat().st_mtime > SESSION_MAX_AGE_S:
                out.rename(out.with_name("expired.jsonl"))
                self._say(f"session records in {out.parent} are older than {SESSION_MAX_AGE_S / 3600:g} h; not posted")
                continue
            reg = next((r for r in self.regs if out.parent.name.startswith(f"session-{r.device}-")), None)
            if reg is not None and self._post_session(reg, out) is not None:
                n += 1
        return n

    def _sessions(self) -> None:
        for reg in list(self.regs):
            try:
                self.calibrate_session(reg)
            except ConnectionError as e:  # the records stay in the spool: posted at the next start (within an hour)
                self._say(f"session calibration of {reg.device} not posted, the server is unreachable: {e}")

    # --- main loop ----------------------------------------------------------------------------------
    def run(self, max_jobs: int | None = None, idle_exit_s: float | None = None) -> int:
        """Serve until stopped (or ``max_jobs`` done, or idle for ``idle_exit_s``); returns jobs done."""
        self.register()
        self.flush_spool()
        self.flush_sessions()
        threading.Thread(target=self._heartbeats, daemon=True, name="hil-heartbeat").start()
        last_session = None
        if self.session_n:
            self._sessions()
            last_session = time.monotonic()
        idle_since = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="hil-agent-") as tmp:
            workdir = Path(tmp)
            while not self.stop.is_set():
                if any(r.lost for r in self.regs):
                    self._say("the server does not know this agent any more; registering again")
                    self.register()
                got = False
                for reg in list(self.regs):
                    if reg.backend == "tflite-android":
                        self._connected_android()  # lease only while the phone is there
                    wait = self.wait_s if len(self.regs) == 1 else min(1.0, self.wait_s)
                    try:
                        r = self._request("POST", "/jobs/lease", json={"agent_id": reg.agent_id, "wait_s": wait})
                    except ConnectionError:
                        break
                    if r.status_code == 404:
                        reg.lost = True
                        continue
                    if r.status_code != 200:
                        continue
                    job = r.json()
                    got = True
                    t0 = time.monotonic()
                    result = self.measure_job(reg, job, workdir)
                    try:
                        status = self._post_result(job["id"], result, reg.device)
                    except ConnectionError:
                        break  # still spooled: posted at the next start
                    self.jobs_done += 1
                    self._recycle()
                    what = (f"{result['latency_ms']:.3f} ms" if result.get("ok") and result.get("latency_ms")
                            else result.get("error", ""))
                    self._say(f"job {job['id']} ({job['kind']}, {reg.device}): {what} [{status}, "
                              f"{time.monotonic() - t0:.1f} s]")
                    if max_jobs is not None and self.jobs_done >= max_jobs:
                        self.stop.set()
                        break
                if (not got and last_session is not None and self.session_every_min is not None
                        and time.monotonic() - last_session > 60 * self.session_every_min and not self.stop.is_set()):
                    self._sessions()  # no job waiting: measure the machine's state again
                    last_session = time.monotonic()
                    got = True  # busy, not idle
                if got:
                    idle_since = time.monotonic()
                elif idle_exit_s is not None and time.monotonic() - idle_since > idle_exit_s:
                    break
        self.close()
        return self.jobs_done

    def close(self) -> None:
        self.stop.set()
        for p in self.profilers.values():
            p.close()
        self.profilers.clear()
        if self.android is not None:
            self.android.close()
        self.http.close()


def _detail(r: httpx.Response) -> str:
    try:
        d = r.json().get("detail")
        return d if isinstance(d, str) else json.dumps(d)[:500]
    except Exception:  # noqa: BLE001
        return r.text[:500]
