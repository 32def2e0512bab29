"""Database tables (SQLAlchemy 2, typed). Times are UTC epoch seconds (float): portable across SQLite and
PostgreSQL, and comparisons such as ``lease_expires_at < now`` need no time-zone care.

The schema is created and upgraded only by the Alembic migrations in ``server/migrations``; keep the two
in step (``tests/test_server_db.py`` checks that the migrated schema matches these models).
"""
from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, Boolean, Float, ForeignKey, Integer, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class Token(Base):
    """A bearer token, stored as its SHA-256 (tokens are 256 random bits, so a slow KDF would add nothing)."""

    __tablename__ = "tokens"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    role: Mapped[str] = mapped_column(String(16))  # agent | client | admin
    hash: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    created_at: Mapped[float] = mapped_column(Float)
    revoked_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class Device(Base):
    """Hardware + runtime (+ INT8 recipe), named ``<backend>@<device slug>`` unless its agent names it."""

    __tablename__ = "devices"
    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    backend: Mapped[str] = mapped_column(String(32))
    slug: Mapped[str] = mapped_column(String(96))
    fingerprint: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    fingerprint_hash: Mapped[str | None] = mapped_column(String(32), nullable=True)
    source: Mapped[str] = mapped_column(String(16))  # agent | bundled
    created_at: Mapped[float] = mapped_column(Float)
    campaign: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)  # kernel profiling, if any


class Agent(Base):
    __tablename__ = "agents"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    device: Mapped[str] = mapped_column(ForeignKey("devices.name"), index=True)
    hostname: Mapped[str] = mapped_column(String(255))
    token_name: Mapped[str] = mapped_column(String(128))
    info: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    registered_at: Mapped[float] = mapped_column(Float)
    last_heartbeat_at: Mapped[float] = mapped_column(Float)
    jobs_done: Mapped[int] = mapped_column(Integer, default=0)


class Blob(Base):
    """A model file, content-addressed, uploaded once and measured by any number of jobs."""

    __tablename__ = "blobs"
    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    format: Mapped[str] = mapped_column(String(8))  # onnx | tflite
    size: Mapped[int] = mapped_column(Integer)
    data: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[float] = mapped_column(Float)


class Job(Base):
    """A measurement to make on one device. States: queued -> leased -> done | failed (a lease that expires
    or a failed attempt goes back to queued while attempts remain)."""

    __tablename__ = "jobs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    device: Mapped[str] = mapped_column(ForeignKey("devices.name"), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # model | kernel | overhead
    model_sha256: Mapped[str | None] = mapped_column(ForeignKey("blobs.sha256"), nullable=True)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    campaign: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    state: Mapped[str] = mapped_column(String(8), index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer)
    version: Mapped[int] = mapped_column(Integer, default=0)  # optimistic lock for the lease update
    lease_agent: Mapped[str | None] = mapped_column(String(36), nullable=True)
    lease_expires_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    history: Mapped[list[Any]] = mapped_column(JSON, default=list)  # one entry per lease: agent, outcome
    submitted_by: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[float] = mapped_column(Float)
    finished_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class MeasurementRow(Base):
    """The dataset: one row per finished job, never two (``job_id`` is unique), whoever posts it first."""

    __tablename__ = "measurements"
    __table_args__ = (UniqueConstraint("job_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"))
    device: Mapped[str] = mapped_column(ForeignKey("devices.name"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    agent_id: Mapped[str] = mapped_column(String(36))
    model_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    latency_ms: Mapped[float | None] = mapped_column(Float, nullable=True)
    stable: Mapped[bool] = mapped_column(Boolean, default=False)
    record: Mapped[dict[str, Any]] = mapped_column(JSON)  # the full profilers record (Measurement / KernelRecord)
    created_at: Mapped[float] = mapped_column(Float)


class PredictorRow(Base):
    __tablename__ = "predictors"
    __table_args__ = (UniqueConstraint("device", "version"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    device: Mapped[str] = mapped_column(ForeignKey("devices.name"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    path: Mapped[str] = mapped_column(Text)
    trained_at: Mapped[float] = mapped_column(Float)
    records: Mapped[int] = mapped_column(Integer)
    accuracy: Mapped[dict[str, Any]] = mapped_column(JSON)
