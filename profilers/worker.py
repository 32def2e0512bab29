"""Measurement in a child process pinned to one core (see :mod:`profilers.child`).

The child loads the runtime and the model; if the model crashes the runtime (segfault, abort,
out-of-memory kill) only the child dies, and the parent returns an error record and starts a fresh
child for the next request. A request that runs past its timeout is killed the same way.
"""
from __future__ import annotations

import hashlib
import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

from .fingerprint import local_fingerprint
from .measurement import Measurement
from .protocol import Protocol
from .runners import BACKENDS, SUFFIX


def pick_core() -> int:
    """The last core this process may use (core 0 tends to take the host's interrupts)."""
    return max(os.sched_getaffinity(0))


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class Profiler:
    """``measure(model) -> Measurement`` for one backend, in a pinned, restartable child."""

    def __init__(self, backend: str, core: int | None = None, protocol: Protocol | None = None,
                 timeout_s: float | None = None):
        if backend not in BACKENDS:
            raise ValueError(f"backend: {backend!r} is not allowed; allowed: {', '.join(BACKENDS)}")
        self.backend = backend
        self.core = pick_core() if core is None else core
        self.protocol = protocol or Protocol()
        self.timeout_s = timeout_s or (self.protocol.budget_s * 3 + 60)
        self._proc: subprocess.Popen | None = None
        self.restarts = 0

    @property
    def fingerprint(self):
        return local_fingerprint(self.backend, self.core)

    def _ensure_child(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            return
        root = str(Path(__file__).resolve().parents[1])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
        # its own session: a Ctrl-C in the terminal reaches the parent (which finishes the measurement in hand
        # and closes the child) instead of killing the child mid-measurement and recording a bogus crash;
        # a parent killed outright still takes the child with it (its stdin closes and it exits)
        self._proc = subprocess.Popen([sys.executable, "-m", "profilers.child", str(self.core)], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, bufsize=1, env=env,
                                      start_new_session=True)

    def _kill_child(self) -> int | None:
        code = None
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.kill()
            code = self._proc.wait(5)
        self._proc = None
        self.restarts += 1
        return code

    def close(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            try:
                self._proc.stdin.close()
                self._proc.wait(2)
            except (OSError, subprocess.TimeoutExpired):
                self._proc.kill()
        self._proc = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def measure(self, model: str | Path, protocol: Protocol | None = None) -> Measurement:
        path = Path(model)
        common = dict(backend=self.backend, model=str(path), core=self.core, fingerprint=self.fingerprint)
        if not path.is_file():
            return Measurement.failure(kind="missing-file", error=f"model file not found: {path}", **common)
        if path.suffix != SUFFIX[self.backend]:
            return Measurement.failure(kind="not-a-model", error=f"{path.name}: backend {self.backend} takes "
                                       f"{SUFFIX[self.backend]} files", **common)
        digest = sha256(path)
        proto = (protocol or self.protocol)
        self._ensure_child()
        t0 = time.perf_counter()
        req = json.dumps({"backend": self.backend, "path": str(path.resolve()), "protocol": proto.model_dump()})
        line = ""
        try:
            self._proc.stdin.write(req + "\n")
            self._proc.stdin.flush()
            ready, _, _ = select.select([self._proc.stdout], [], [], self.timeout_s)
            if ready:
                line = self._proc.stdout.readline()
            elif self._proc.poll() is None:
                self._kill_child()
                return Measurement.failure(kind="timeout", error=f"no result after {self.timeout_s:.0f} s; the "
                                           "measurement was killed", model_sha256=digest, **common)
        except (BrokenPipeError, OSError):
            line = ""
        if not line:
            code = self._kill_child()
            how = f"signal {signal.Signals(-code).name}" if code and code < 0 else f"exit code {code}"
            return Measurement.failure(kind="crash", error=f"the runtime crashed ({how}) on this model",
                                       model_sha256=digest, duration_s=time.perf_counter() - t0, **common)
        reply = json.loads(line)
        if reply["status"] != "ok":
            return Measurement.failure(kind=reply["status"], error=reply["error"], model_sha256=digest, **common)
        payload = reply["stats"]
        return Measurement(model_sha256=digest, **common, **payload)
