"""Prometheus metrics (``GET /metrics``): request latency by route, predictions by device, jobs by state and
agents' heartbeat ages. Job and agent gauges are read from the database at scrape time, so every server
process reports the same truth. Each app has its own registry (tests build many apps in one process)."""
from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from sqlalchemy import func, select

from .models import Agent, Job, MeasurementRow


class DbCollector:
    def __init__(self, session_factory):
        self.session_factory = session_factory

    def collect(self):
        jobs = GaugeMetricFamily("hil_jobs", "Jobs by device and state", labels=["device", "state"])
        beats = GaugeMetricFamily("hil_agent_heartbeat_age_seconds", "Seconds since each agent's last heartbeat",
                                  labels=["agent", "device"])
        meas = GaugeMetricFamily("hil_measurements", "Stored measurements by device and kind",
                                 labels=["device", "kind"])
        now = time.time()
        try:
            with self.session_factory() as s:
                for device, state, n in s.execute(select(Job.device, Job.state, func.count())
                                                  .group_by(Job.device, Job.state)):
                    jobs.add_metric([device, state], n)
                for aid, device, t in s.execute(select(Agent.id, Agent.device, Agent.last_heartbeat_at)):
                    beats.add_metric([aid, device], now - t)
                for device, kind, n in s.execute(select(MeasurementRow.device, MeasurementRow.kind, func.count())
                                                 .group_by(MeasurementRow.device, MeasurementRow.kind)):
                    meas.add_metric([device, kind], n)
        except Exception:  # noqa: BLE001 - a scrape must not fail because the DB is briefly busy
            pass
        yield jobs
        yield beats
        yield meas


class Metrics:
    def __init__(self, session_factory):
        self.registry = CollectorRegistry()
        self.requests = Histogram("hil_http_request_duration_seconds", "HTTP request latency",
                                  ["method", "route", "status"], registry=self.registry,
                                  buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10))
        self.predictions = Counter("hil_predictions", "Architectures predicted", ["device"], registry=self.registry)
        self.results = Counter("hil_job_results", "Job results posted by agents", ["status"], registry=self.registry)
        self.registry.register(DbCollector(session_factory))
