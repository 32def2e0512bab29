"""The job queue on both databases: leases, expiry, heartbeats, bounded retries, idempotent results,
and no double lease under concurrency."""
from __future__ import annotations

import threading
import time
import uuid

import pytest
from sqlalchemy import func, select

from server import queue
from server.db import make_engine, migrate, session_factory
from server.models import Agent, Base, Device, Job, MeasurementRow


@pytest.fixture
def sessions(db_url):
    engine = make_engine(db_url)
    migrate(engine)
    factory = session_factory(engine)
    with factory() as s:
        s.add(Device(name="dev", backend="onnxruntime-cpu", slug="test-cpu", source="agent", created_at=time.time()))
        s.commit()
    yield factory
    engine.dispose()


def _agent(s, name="a") -> Agent:
    a = Agent(id=f"{name}-{uuid.uuid4().hex[:8]}", device="dev", hostname="h", token_name="t", info={},
              registered_at=time.time(), last_heartbeat_at=time.time(), jobs_done=0)
    s.add(a)
    s.commit()
    return a


def test_schema_from_migrations_matches_models(db_url):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    engine = make_engine(db_url)
    migrate(engine)
    migrate(engine)  # idempotent
    with engine.connect() as c:
        diffs = compare_metadata(MigrationContext.configure(c), Base.metadata)
    engine.dispose()
    assert diffs == [], f"models and migrations disagree: {diffs}"


def test_lease_expiry_and_second_agent(sessions):
    with sessions() as s:
        a, b = _agent(s, "a"), _agent(s, "b")
        assert queue.lease(s, a, 10) is None
        job = queue.submit(s, "dev", "model", max_attempts=3, submitted_by="t")
        s.commit()
        t0 = time.time()
        got = queue.lease(s, a, 10, now=t0)
        assert got.id == job.id and got.state == "leased" and got.lease_agent == a.id and got.attempts == 1
        assert queue.lease(s, b, 10, now=t0 + 5) is None  # still leased to a
        again = queue.lease(s, b, 10, now=t0 + 11)  # a died: its lease expired
        assert again.id == job.id and again.lease_agent == b.id and again.attempts == 2
        assert [h["outcome"] for h in again.history] == ["leased", "lease expired", "leased"]


def test_heartbeat_extends_leases(sessions):
    with sessions() as s:
        a, b = _agent(s, "a"), _agent(s, "b")
        queue.submit(s, "dev", "model", max_attempts=3, submitted_by="t")
        s.commit()
        t0 = time.time()
        queue.lease(s, a, 10, now=t0)
        assert queue.heartbeat(s, a, 10, now=t0 + 8) == 1
        assert queue.lease(s, b, 10, now=t0 + 12) is None  # extended to t0 + 18
        assert queue.lease(s, b, 10, now=t0 + 19) is not None


def test_poison_job_fails_after_max_attempts(sessions):
    with sessions() as s:
        a = _agent(s)
        job = queue.submit(s, "dev", "model", max_attempts=2, submitted_by="t")
        s.commit()
        t = time.time()
        assert queue.lease(s, a, 1, now=t) is not None
        assert queue.lease(s, a, 1, now=t + 2) is not None  # second and last attempt
        assert queue.lease(s, a, 1, now=t + 4) is None
        s.expire_all()
        j = s.get(Job, job.id)
        assert j.state == "failed" and "lease expired 2 times" in j.error


def test_error_results_retry_then_fail(sessions):
    with sessions() as s:
        a = _agent(s)
        job = queue.submit(s, "dev", "model", max_attempts=2, submitted_by="t")
        s.commit()
        queue.lease(s, a, 10)
        assert queue.post_result(s, s.get(Job, job.id), a, False, None, "runtime-error: boom")[0] == "requeued"
        queue.lease(s, a, 10)
        assert queue.post_result(s, s.get(Job, job.id), a, False, None, "runtime-error: boom")[0] == "failed"
        s.expire_all()
        j = s.get(Job, job.id)
        assert j.state == "failed" and "boom" in j.error and j.attempts == 2
        with pytest.raises(queue.JobError, match="failed already"):
            queue.post_result(s, j, a, True, {"x": 1}, None)


def test_results_are_idempotent(sessions):
    with sessions() as s:
        a, b = _agent(s, "a"), _agent(s, "b")
        job = queue.submit(s, "dev", "model", max_attempts=3, submitted_by="t")
        s.commit()
        with pytest.raises(queue.JobError, match="never leased"):
            queue.post_result(s, job, a, True, {"latency_ms": 1.0}, None)
        t = time.time()
        queue.lease(s, a, 1, now=t)
        queue.lease(s, b, 1, now=t + 2)  # a's lease expired; b holds it now
        st, row = queue.post_result(s, s.get(Job, job.id), b, True, {"latency_ms": 1.0}, None, 1.0, True)
        assert st == "stored" and row.agent_id == b.id
        s.expire_all()
        st2, row2 = queue.post_result(s, s.get(Job, job.id), a, True, {"latency_ms": 9.0}, None, 9.0)  # late
        assert st2 == "duplicate" and row2.id == row.id
        st3, _ = queue.post_result(s, s.get(Job, job.id), b, True, {"latency_ms": 1.0}, None, 1.0)  # retried POST
        assert st3 == "duplicate"
        assert s.scalar(select(func.count()).select_from(MeasurementRow)) == 1
        assert s.get(Job, job.id).state == "done"


def test_concurrent_leases_never_share_a_job(sessions):
    n_jobs, n_agents = 30, 6
    with sessions() as s:
        agents = [_agent(s, f"a{i}") for i in range(n_agents)]
        for _ in range(n_jobs):
            queue.submit(s, "dev", "model", max_attempts=3, submitted_by="t")
        s.commit()
    got: list[tuple[str, int]] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def work(agent):
        try:
            with sessions() as s:
                a = s.get(Agent, agent.id)
                while (job := queue.lease(s, a, 60)) is not None:
                    with lock:
                        got.append((a.id, job.id))
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=work, args=(a,)) for a in agents]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    ids = [j for _, j in got]
    assert sorted(ids) == sorted(set(ids)) and len(ids) == n_jobs
    assert len({a for a, _ in got}) > 1  # the work was really shared
