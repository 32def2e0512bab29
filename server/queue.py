"""The durable measurement queue: submit, lease, heartbeat, result.

Leases are the whole crash story. An agent leases a job for ``lease_s``; its heartbeats extend every lease
it holds. An agent killed with -9 stops heartbeating, its leases expire, and the next ``lease`` call hands the
job to another agent (or fails it, once ``max_attempts`` leases have been used up: a poison model that
kills every agent that touches it must not circulate forever).

Concurrency: candidates are read ``FOR UPDATE SKIP LOCKED`` on PostgreSQL (ignored by SQLite, whose single
writer serializes anyway), and the state change is a compare-and-set on ``version``, so two agents can never
lease one job, on either database.

Results are idempotent per job: the measurements table has a unique ``job_id``; a second result for a finished
job (a retried POST, or a slow agent whose lease had expired) is answered with the stored one and stores
nothing. The first real result wins, whichever agent made it.
"""
from __future__ import annotations

import time
from typing import Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from .models import Agent, Job, MeasurementRow

STATES = ("queued", "leased", "done", "failed")


class JobError(Exception):
    """A request that cannot be applied to a job in its current state (mapped to HTTP 409)."""


def submit(s: Session, device: str, kind: str, *, max_attempts: int, submitted_by: str,
           model_sha256: str | None = None, payload: dict[str, Any] | None = None,
           campaign: str | None = None) -> Job:
    job = Job(device=device, kind=kind, model_sha256=model_sha256, payload=payload or {}, campaign=campaign,
              state="queued", attempts=0, max_attempts=max_attempts, version=0, history=[],
              submitted_by=submitted_by, created_at=time.time())
    s.add(job)
    s.flush()
    return job


def _expire(job: Job, now: float) -> dict[str, Any]:
    """Values that end an expired lease: back to the queue, or failed when no attempt is left."""
    hist = [*job.history, {"agent": job.lease_agent, "outcome": "lease expired", "at": now}]
    if job.attempts >= job.max_attempts:
        return dict(state="failed", lease_agent=None, lease_expires_at=None, finished_at=now, history=hist,
                    error=f"lease expired {job.attempts} times without a result (the agents died or hung on it)")
    return dict(state="queued", lease_agent=None, lease_expires_at=None, history=hist)


def lease(s: Session, agent: Agent, lease_s: float, now: float | None = None) -> Job | None:
    """Lease the oldest available job of the agent's device, or None. Commits."""
    now = time.time() if now is None else now
    available = or_(Job.state == "queued", and_(Job.state == "leased", Job.lease_expires_at < now))
    for _ in range(20):  # a lost compare-and-set race retries with fresh candidates
        cands = s.scalars(select(Job).where(Job.device == agent.device, available).order_by(Job.id).limit(4)
                          .with_for_update(skip_locked=True).execution_options(populate_existing=True)).all()
        if not cands:
            s.commit()
            return None
        for job in cands:
            if job.state == "leased":  # expired
                vals = _expire(job, now)
                if vals["state"] == "failed":
                    _cas(s, job, vals)
                    continue
            else:
                vals = {}
            hist = [*vals.get("history", job.history), {"agent": agent.id, "outcome": "leased", "at": now}]
            if _cas(s, job, dict(state="leased", lease_agent=agent.id, lease_expires_at=now + lease_s,
                                 attempts=job.attempts + 1, history=hist)):
                s.commit()
                s.refresh(job)
                return job
        s.commit()
    return None


def _cas(s: Session, job: Job, values: dict[str, Any]) -> bool:
    res = s.execute(update(Job).where(Job.id == job.id, Job.version == job.version)
                    .values(version=job.version + 1, **values).execution_options(synchronize_session=False))
    return res.rowcount == 1


def heartbeat(s: Session, agent: Agent, lease_s: float, now: float | None = None) -> int:
    """Record a heartbeat and extend the agent's leases; returns how many leases it holds. Commits."""
    now = time.time() if now is None else now
    agent.last_heartbeat_at = now
    res = s.execute(update(Job).where(Job.lease_agent == agent.id, Job.state == "leased")
                    .values(lease_expires_at=now + lease_s).execution_options(synchronize_session=False))
    s.commit()
    return res.rowcount


def post_result(s: Session, job: Job, agent: Agent, ok: bool, record: dict[str, Any] | None, error: str | None,
                latency_ms: float | None = None, stable: bool = False) -> tuple[str, MeasurementRow | None]:
    """Store an agent's result. Returns (status, measurement): ``stored``, ``duplicate`` (the job had its
    result already; nothing stored), ``requeued`` or ``failed`` (an error result). Commits."""
    now = time.time()
    s.refresh(job)  # the caller's copy may predate a lease or an expiry
    if job.state == "done":
        return "duplicate", s.scalar(select(MeasurementRow).where(MeasurementRow.job_id == job.id))
    if job.state == "failed":
        raise JobError(f"job {job.id} has failed already: {job.error}")
    if job.state == "queued" and job.attempts == 0:
        raise JobError(f"job {job.id} was never leased; lease it first (POST /jobs/lease)")
    if ok:
        row = MeasurementRow(job_id=job.id, device=job.device, kind=job.kind, agent_id=agent.id,
                             model_sha256=job.model_sha256, latency_ms=latency_ms, stable=stable,
                             record=record or {}, created_at=now)
        s.add(row)
        try:
            s.flush()
        except IntegrityError:  # another agent's result landed between our read and write
            s.rollback()
            return "duplicate", s.scalar(select(MeasurementRow).where(MeasurementRow.job_id == job.id))
        hist = [*job.history, {"agent": agent.id, "outcome": "done", "at": now}]
        s.execute(update(Job).where(Job.id == job.id).values(
            state="done", finished_at=now, lease_agent=None, lease_expires_at=None, error=None, history=hist,
            version=Job.version + 1).execution_options(synchronize_session=False))
        agent.jobs_done += 1
        s.commit()
        return "stored", row
    hist = [*job.history, {"agent": agent.id, "outcome": f"error: {error}", "at": now}]
    if job.attempts >= job.max_attempts:
        vals = dict(state="failed", finished_at=now, error=f"failed {job.attempts} times; last error: {error}")
    else:
        vals = dict(state="queued", error=error)
    s.execute(update(Job).where(Job.id == job.id).values(
        lease_agent=None, lease_expires_at=None, history=hist, version=Job.version + 1, **vals)
        .execution_options(synchronize_session=False))
    s.commit()
    return vals["state"] if vals["state"] == "failed" else "requeued", None


def counts(s: Session, device: str | None = None, campaign: str | None = None) -> dict[str, int]:
    """Jobs by state (expired leases count as queued: that is what they are)."""
    q = select(Job.state, func.count()).group_by(Job.state)
    if device is not None:
        q = q.where(Job.device == device)
    if campaign is not None:
        q = q.where(Job.campaign == campaign)
    out = {k: 0 for k in STATES}
    out.update({state: n for state, n in s.execute(q)})
    return out
