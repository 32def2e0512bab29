"""The latency service's HTTP client, as the search CLI uses it: large batches, clear errors.

Search needs latency only through the service (DESIGN.md): a search loop on a laptop asks the service that
holds the device's predictor. Every failure ends in :class:`ServiceError` with a message a user can act on
(the service is not running, the device is unknown and which ones exist, a request was refused and why).
"""
from __future__ import annotations

import os
from typing import Any, Iterable, Sequence

import httpx

DEFAULT_URL = "http://127.0.0.1:8000"


class ServiceError(RuntimeError):
    """The service could not answer (unreachable, refused the request, or no predictor for the device)."""


def service_url(url: str | None = None) -> str:
    return (url or os.environ.get("HIL_SERVICE_URL") or DEFAULT_URL).rstrip("/")


class LatencyClient:
    def __init__(self, url: str | None = None, token: str | None = None, timeout: float = 120.0,
                 batch: int = 20_000):
        self.url = service_url(url)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=self.url, timeout=httpx.Timeout(timeout, connect=5.0), headers=headers)
        self.batch = batch

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> "LatencyClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _call(self, method: str, path: str, **kw) -> Any:
        try:
            r = self.http.request(method, path, **kw)
        except httpx.TransportError as e:
            raise ServiceError(f"the latency service at {self.url} is not reachable ({type(e).__name__}: {e}); "
                               "start it with `make up` (or `python -m server serve`) or pass --service URL "
                               "(default $HIL_SERVICE_URL)") from None
        if r.status_code >= 400:
            try:
                detail = r.json().get("detail")
            except ValueError:
                detail = r.text[:500]
            raise ServiceError(f"{self.url}{path}: {r.status_code} {detail}")
        return r.json()

    def devices(self) -> list[dict]:
        return self._call("GET", "/devices")

    def device(self, name: str) -> dict:
        """The device's record; ServiceError naming the known devices when it does not exist or has no
        predictor."""
        d = self._call("GET", f"/devices/{name}")
        if d.get("predictor") is None:
            prof = d.get("profiling") or {}
            how = (f"it is being profiled ({prof.get('finished')}/{prof.get('total')} jobs)" if prof else
                   "profile it first (POST /devices/{name}/profile)")
            raise ServiceError(f"device {name!r} has no predictor yet: {how}")
        return d

    def predict(self, device: str, space: str, archs: Sequence[str]) -> list[float]:
        """Latency (ms) of subnet strings of one space, in batches of ``batch``."""
        out: list[float] = []
        for i in range(0, len(archs), self.batch):
            doc = self._call("POST", "/predict_latency",
                             json={"device": device, "space": space, "archs": list(archs[i:i + self.batch])})
            out += doc["latencies_ms"]
        return out

    def predict_stages(self, device: str, hyperspace: str, stages: Iterable[dict]) -> tuple[list[float | None], dict]:
        """Latency (ms) of stand-alone stages (see POST /predict_latency/stages); also the predictor info."""
        stages = list(stages)
        out: list[float | None] = []
        info: dict = {}
        for i in range(0, len(stages), self.batch):
            doc = self._call("POST", "/predict_latency/stages",
                             json={"device": device, "hyperspace": hyperspace, "stages": stages[i:i + self.batch]})
            out += doc["latencies_ms"]
            info = doc["predictor"]
        return out, info

    def measure(self, device: str, model: bytes, fmt: str, timeout_s: float = 600.0, poll_s: float = 1.0) -> dict:
        """Upload a model, queue a measurement job on the device and wait for it (an agent must serve the
        device); returns the finished job (its ``result`` holds the measurement)."""
        import time

        sha = self._call("POST", "/models", params={"format": fmt}, content=model,
                         headers={"Content-Type": "application/octet-stream"})["sha256"]
        job = self._call("POST", "/jobs", json={"device": device, "model_sha256": sha})
        deadline = time.monotonic() + timeout_s
        while job["state"] not in ("done", "failed"):
            if time.monotonic() > deadline:
                raise ServiceError(f"job {job['id']} on {device} not finished after {timeout_s:.0f} s (state "
                                   f"{job['state']}); is an agent serving the device? (GET /devices)")
            time.sleep(poll_s)
            job = self._call("GET", f"/jobs/{job['id']}")
        if job["state"] == "failed":
            raise ServiceError(f"job {job['id']} on {device} failed: {job['error']}")
        return job
