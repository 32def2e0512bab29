"""Kernel-profiling campaigns and predictor training, driven by the database.

A *campaign* profiles a device for its predictor: one ``overhead`` job (the runtime's per-invocation and, on
onnxruntime, quantize/dequantize boundary costs) and one ``kernel`` job per config of the profilers' prior
plan, all through the ordinary job queue, so an agent that dies loses nothing and the measurements land in
the same table as every other result.

*Training* writes the device's kernel measurements out as a profilers dataset (``measurements.jsonl`` +
``overhead.json``) and runs ``python -m predictors train`` on it in a child process: the forests are built
off the server's interpreter (no GIL contention with requests), and a crash there cannot take the server
down. The new predictor gets the next version number and is swapped in (see :mod:`server.registry`).
"""
from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session

from . import queue
from .models import Device, Job, MeasurementRow, PredictorRow

log = logging.getLogger("hil.server")


def start_campaign(s: Session, device: Device, per_type: int, max_attempts: int, submitted_by: str,
                   kernel_types: list[str] | None = None, seed: int = 0) -> dict[str, Any]:
    """Queue the jobs that profile ``device`` for a predictor; returns the campaign record (also stored on
    the device). A campaign already running is returned as is."""
    from profilers.collect import make_plan
    from profilers.samplers import kernel_types as all_types

    if device.campaign and device.campaign.get("state") == "running":
        return device.campaign
    name = f"profile-{int(time.time())}"
    types = kernel_types or all_types()
    plan = make_plan(types, per_type, ["int8"], seed)
    queue.submit(s, device.name, "overhead", max_attempts=max_attempts, submitted_by=submitted_by, campaign=name)
    now = time.time()
    s.execute(insert(Job), [  # one executemany: a campaign can be tens of thousands of jobs
        dict(device=device.name, kind="kernel", model_sha256=None, payload={"kernel": cfg.model_dump(), "precision": prec},
             campaign=name, state="queued", attempts=0, max_attempts=max_attempts, version=0, history=[],
             submitted_by=submitted_by, created_at=now) for cfg, prec in plan])
    device.campaign = {"name": name, "state": "running", "total": len(plan) + 1, "per_type": per_type,
                       "kernel_types": types, "started_at": time.time()}
    s.commit()
    return device.campaign


def campaign_status(s: Session, device: Device) -> dict[str, Any] | None:
    if not device.campaign:
        return None
    c = dict(device.campaign)
    c["jobs"] = queue.counts(s, device.name, c["name"])
    c["finished"] = c["jobs"]["done"] + c["jobs"]["failed"]
    return c


def export_dataset(s: Session, device: str, folder: Path) -> int:
    """Write the device's kernel measurements as a profilers dataset folder; returns the record count."""
    folder.mkdir(parents=True, exist_ok=True)
    n = 0
    with open(folder / "measurements.jsonl", "w") as f:
        for rec in s.scalars(select(MeasurementRow.record).where(MeasurementRow.device == device,
                                                                 MeasurementRow.kind == "kernel")
                             .order_by(MeasurementRow.id)):
            f.write(json.dumps(rec) + "\n")
            n += 1
    oh = s.scalar(select(MeasurementRow.record).where(MeasurementRow.device == device,
                                                      MeasurementRow.kind == "overhead")
                  .order_by(MeasurementRow.id.desc()).limit(1))
    if oh:
        (folder / "overhead.json").write_text(json.dumps(oh))
    return n


def latest_version(s: Session, device: str) -> int:
    """The device's highest recorded predictor version (0: none; the bundled predictor is version 0)."""
    return s.scalar(select(func.max(PredictorRow.version)).where(PredictorRow.device == device)) or 0


class Trainer:
    """One training at a time per device, in a child process; status is kept for GET /predictors/{device}."""

    def __init__(self, session_factory, predictor_dir: Path, install) -> None:
        self.session_factory = session_factory
        self.predictor_dir = Path(predictor_dir)
        self.install = install  # callback(device, version, path, trained_at)
        self.status: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def running(self, device: str) -> bool:
        return self.status.get(device, {}).get("state") == "running"

    def start(self, device: str, backend: str, min_records: int = 10, statistic: str = "p10",
              include_unstable: bool = False) -> int:
        """Export the dataset now and train in the background; returns the number of kernel records."""
        with self._lock:
            if self.running(device):
                raise RuntimeError(f"device {device}: a training is running already")
            with self.session_factory() as s:
                version = latest_version(s, device) + 1
                work = self.predictor_dir / device / f"v{version}"
                n = export_dataset(s, device, work / "dataset")
            if n == 0:
                raise ValueError(f"device {device}: no kernel measurements yet; profile it first "
                                 f"(POST /devices/{device}/profile)")
            self.status[device] = {"state": "running", "version": version, "records": n, "started_at": time.time()}
        threading.Thread(target=self._run, args=(device, backend, version, work, min_records, statistic,
                                                 include_unstable), daemon=True, name=f"train-{device}").start()
        return n

    def record(self, device: str, version: int, out: Path, trained_at: float, records: int,
               accuracy: dict[str, Any], attempts: int = 5) -> int:
        """Add the trained predictor's row; returns the version it got.

        The version reserved when the training started is only a floor: a session calibration posted while the
        forests were being built (minutes to an hour) takes the next number then, and the training used to fail
        on the unique (device, version) constraint at the very end, its predictor lost. It now takes the next
        free number after whatever landed meanwhile, so it is still the newest, and is served.
        """
        from sqlalchemy.exc import IntegrityError

        for _ in range(attempts):
            with self.session_factory() as s:
                version = max(version, latest_version(s, device) + 1)
                s.add(PredictorRow(device=device, version=version, path=str(out), trained_at=trained_at,
                                   records=records, accuracy=accuracy))
                try:
                    s.commit()
                    return version
                except IntegrityError:  # another writer took that number between the read and the commit
                    s.rollback()
        raise RuntimeError(f"device {device}: no free predictor version after {attempts} attempts")

    def _run(self, device, backend, version, work: Path, min_records, statistic, include_unstable) -> None:
        out = work / "predictor"
        cmd = [sys.executable, "-m", "predictors", "train", "--backend", backend, "--data", str(work / "dataset"),
               "--device", device, "--out", str(out), "--min-records", str(min_records), "--statistic", statistic]
        if include_unstable:
            cmd.append("--include-unstable")
        st = self.status[device]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
            if proc.returncode != 0:
                raise RuntimeError((proc.stderr or proc.stdout).strip()[-2000:] or f"exit code {proc.returncode}")
            from predictors.artifact import Predictor

            meta = Predictor.load(out).meta
            trained_at = time.time()
            version = self.record(device, version, out, trained_at, st["records"],
                                  {t: i.metrics for t, i in meta.kernels.items()})
            st["version"] = version
            self.install(device, version, out, trained_at)
            st.update(state="done", finished_at=time.time())
            log.info("trained %s v%d from %d records", device, version, st["records"])
        except Exception as e:  # noqa: BLE001 - reported in the status, never raised into the server
            st.update(state="failed", error=str(e), finished_at=time.time())
            log.error("training %s failed: %s", device, e)


def finished_campaigns(s: Session) -> list[Device]:
    """Devices whose running campaign has no job left to do."""
    out = []
    for d in s.scalars(select(Device).where(Device.campaign.is_not(None))):
        c = d.campaign or {}
        if c.get("state") != "running":
            continue
        left = s.scalar(select(func.count()).select_from(Job).where(
            Job.campaign == c["name"], Job.state.in_(("queued", "leased"))))
        if left == 0:
            out.append(d)
    return out
