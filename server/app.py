"""The FastAPI application: ``create_app(settings)``. Routes follow the contract in DESIGN.md.

Dependencies carry the state (settings, DB sessions, predictor registry, metrics); handlers stay small and
typed. Every refusal is a 4xx whose message names the field and what is allowed.
"""
from __future__ import annotations

import hashlib
import logging
import threading
import time
import uuid
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, Iterator

from fastapi import Body, Depends, FastAPI, HTTPException, Query, Request, Response
from fastapi import Path as PathParam
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from spaces import SpaceError

from . import queue
from .auth import Principal, authenticate
from .config import Settings
from .db import make_engine, migrate, session_factory
from .metrics import Metrics
from .online import OnlineCalibrator
from .models import Agent, Blob, Device, Job, MeasurementRow, PredictorRow
from .registry import ArchError, Registry, predict_archs, predict_stages
from .schemas import (AgentRegister, AgentRegistered, DeviceView, Health, HeartbeatResponse, JobResult,
                      JobResultResponse, JobSubmit, JobView, LeaseRequest, ModelPredictResponse, ModelUploaded,
                      PredictorInfo, PredictorView, PredictRequest, PredictResponse, SessionRequest,
                      SessionResponse, StagesRequest, StagesResponse, TrainRequest, TrainResponse)
from .training import Trainer, campaign_status, finished_campaigns, latest_version, start_campaign

log = logging.getLogger("hil.server")
FORMATS = {"onnxruntime-cpu": "onnx", "tflite-cpu": "tflite", "tflite-android": "tflite"}


class State:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.engine = make_engine(settings.database_url)
        self.sessions = session_factory(self.engine)
        self.registry = Registry()
        self.metrics = Metrics(self.sessions)
        self.online = OnlineCalibrator(self.sessions, self.registry, settings.online_window,
                                       settings.online_max_age_min * 60)
        self.trainer = Trainer(self.sessions, settings.predictor_dir, self._install)
        self.stop = threading.Event()

    def _install(self, device: str, version: int, path: Path, trained_at: float) -> None:
        """A newly trained version: served at once, with the online calibration refitted on it."""
        self.registry.install(device, version, path, trained_at)
        self.online.refit(device)

    def startup(self) -> None:
        migrate(self.engine)
        with self.sessions() as s:
            if self.settings.serve_bundled:
                self._bundled(s)
            latest = select(PredictorRow.device, func.max(PredictorRow.version)).group_by(PredictorRow.device)
            for device, version in s.execute(latest).all():
                row = s.scalar(select(PredictorRow).where(PredictorRow.device == device,
                                                          PredictorRow.version == version))
                try:
                    self.registry.install(device, version, Path(row.path), row.trained_at)
                except Exception as e:  # noqa: BLE001 - a missing folder must not stop the service
                    log.error("predictor %s v%d at %s cannot be loaded: %s", device, version, row.path, e)
        self.online.rebuild()  # derived from the measurements table: a restart serves the same fit
        threading.Thread(target=self._monitor, daemon=True, name="hil-monitor").start()

    def _bundled(self, s: Session) -> None:
        from predictors.bundled import BUNDLED, bundled_predictors

        for spec in bundled_predictors():
            slug, backend = spec.split("/")
            name = f"{backend}@{slug}"
            path = BUNDLED / spec
            loaded = self.registry.install(name, 0, path, path.joinpath("metadata.json").stat().st_mtime)
            if s.get(Device, name) is None:
                fp = loaded.predictor.meta.fingerprint
                s.add(Device(name=name, backend=backend, slug=slug, fingerprint=fp, fingerprint_hash=None,
                             source="bundled", created_at=time.time()))
        s.commit()

    def _monitor(self) -> None:
        """Background duties: train devices whose profiling campaign has ended; pick up predictors that
        another server process trained (several workers may share one database)."""
        while not self.stop.wait(2.0):
            try:
                with self.sessions() as s:
                    for d in finished_campaigns(s):
                        d.campaign = {**d.campaign, "state": "finished", "finished_at": time.time()}
                        s.commit()
                        if self.settings.auto_train and not self.trainer.running(d.name):
                            try:
                                self.trainer.start(d.name, d.backend, min_records=5, include_unstable=True)
                            except (ValueError, RuntimeError) as e:
                                log.error("auto-train %s: %s", d.name, e)
                    for row in s.scalars(select(PredictorRow)):
                        cur = self.registry.get(row.device)
                        if (cur is None or cur.version < row.version) and Path(row.path).is_dir():
                            self.registry.install(row.device, row.version, Path(row.path), row.trained_at)
                            self.online.refit(row.device)
            except Exception as e:  # noqa: BLE001 - keep monitoring through transient DB errors
                log.error("monitor: %s", e)


# --- dependencies ---------------------------------------------------------------------------------
def get_state(request: Request) -> State:
    return request.app.state.hil


def get_session(state: Annotated[State, Depends(get_state)]) -> Iterator[Session]:
    with state.sessions() as s:
        yield s


StateDep = Annotated[State, Depends(get_state)]
SessionDep = Annotated[Session, Depends(get_session)]
# jobs.id is an Integer column (int4 on PostgreSQL): a larger id cannot exist, and binding one overflows the
# driver (SQLite: OverflowError past 2**63) and would be a 500 instead of a 422 that names the field
JobId = Annotated[int, PathParam(ge=1, le=2**31 - 1, description="a job id from POST /jobs or GET /jobs")]
bearer = HTTPBearer(auto_error=False, description="a token from `python -m server token create`")


def _principal(state: StateDep, s: SessionDep,
               cred: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> Principal | None:
    if cred is None:
        return None
    p = authenticate(s, cred.credentials, state.settings.admin_token)
    if p is None:
        raise HTTPException(401, "Authorization: the bearer token is not valid (unknown or revoked)",
                            headers={"WWW-Authenticate": "Bearer"})
    return p


def require(role: str):
    def dep(p: Annotated[Principal | None, Depends(_principal)]) -> Principal:
        if p is None:
            raise HTTPException(401, f"Authorization: this endpoint needs a bearer token with role {role} or admin",
                                headers={"WWW-Authenticate": "Bearer"})
        if not p.may(role):
            raise HTTPException(403, f"Authorization: token {p.name!r} has role {p.role}; this endpoint needs "
                                f"{role} or admin")
        return p
    return dep


def reader(state: StateDep, p: Annotated[Principal | None, Depends(_principal)]) -> Principal | None:
    if not state.settings.open_reads and p is None:
        raise HTTPException(401, "Authorization: reads need a bearer token on this server (HIL_OPEN_READS=0)",
                            headers={"WWW-Authenticate": "Bearer"})
    return p


Reader = Annotated[Principal | None, Depends(reader)]
AgentP = Annotated[Principal, Depends(require("agent"))]
ClientP = Annotated[Principal, Depends(require("client"))]


def _device(s: Session, name: str) -> Device:
    d = s.get(Device, name)
    if d is None:
        known = ", ".join(s.scalars(select(Device.name).order_by(Device.name))) or "none yet"
        raise HTTPException(404, f"device: {name!r} is not known; known: {known}")
    return d


def _agent(s: Session, agent_id: str) -> Agent:
    a = s.get(Agent, agent_id)
    if a is None:
        raise HTTPException(404, f"agent_id: {agent_id!r} is not registered (POST /agents/register first)")
    return a


def _predictor(state: State, s: Session, device: str):
    _device(s, device)
    loaded = state.registry.get(device)
    if loaded is None:
        d = s.get(Device, device)
        c = campaign_status(s, d)
        how = (f"profiling: {c['finished']}/{c['total']} jobs ended" if c and c["state"] == "running"
               else f"profile it: POST /devices/{device}/profile")
        raise HTTPException(409, f"device: {device!r} has no predictor yet ({how})")
    return loaded


INLINE_ARCHS = 64  # batches up to this size are predicted on the event loop (a few hundred µs at most)


def _read_auth(state: State, request: Request) -> None:
    """The reader check of guarded servers, for handlers that avoid dependency injection on the hot path."""
    auth = request.headers.get("authorization", "")
    with state.sessions() as s:
        token = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
        if not token or authenticate(s, token, state.settings.admin_token) is None:
            raise HTTPException(401, "Authorization: reads need a valid bearer token on this server "
                                "(HIL_OPEN_READS=0)", headers={"WWW-Authenticate": "Bearer"})


def _no_predictor(state: State, device: str) -> None:
    """Raise the 404 (unknown device) or 409 (known, no predictor yet) a prediction for ``device`` gets."""
    with state.sessions() as s:
        _predictor(state, s, device)


def _info(loaded) -> PredictorInfo:
    return PredictorInfo(**loaded.info())


def _job_view(state: State, s: Session, job: Job) -> JobView:
    res = s.scalar(select(MeasurementRow).where(MeasurementRow.job_id == job.id))
    result = None
    if res is not None:
        result = {"measurement_id": res.id, "agent_id": res.agent_id, "latency_ms": res.latency_ms,
                  "stable": res.stable, "record": res.record}
    return JobView(id=job.id, device=job.device, kind=job.kind, state=job.state, model_sha256=job.model_sha256,
                   payload=job.payload, campaign=job.campaign, attempts=job.attempts, max_attempts=job.max_attempts,
                   lease_agent=job.lease_agent, lease_expires_at=job.lease_expires_at, error=job.error,
                   created_at=job.created_at, finished_at=job.finished_at, history=job.history, result=result,
                   model_url=f"/models/{job.model_sha256}" if job.model_sha256 else None)


def _finite(v):
    """``v`` with non-finite floats as null: a record may carry NaN statistics (a failed probe), and
    PostgreSQL's JSON, like JSON itself, has no NaN."""
    if isinstance(v, float):
        return v if v == v and v not in (float("inf"), float("-inf")) else None
    if isinstance(v, dict):
        return {k: _finite(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_finite(x) for x in v]
    return v


def _check_model(data: bytes, fmt: str) -> None:
    """Refuse bytes that are not a model of ``fmt`` (422), before they reach a runtime or the queue."""
    if not data:
        raise HTTPException(422, "body: empty; send the model file's bytes (application/octet-stream)")
    if fmt == "onnx":
        import onnx

        try:
            m = onnx.load_model_from_string(data)
            onnx.checker.check_model(m)
        except Exception as e:  # noqa: BLE001 - any parse/check failure is the client's input
            raise HTTPException(422, f"body: not a valid ONNX model ({type(e).__name__}: {str(e)[:300]})") from None
        if len(m.graph.node) == 0:
            raise HTTPException(422, "body: the ONNX model has no nodes")
    else:
        if len(data) < 8 or data[4:8] != b"TFL3":
            raise HTTPException(422, "body: not a TFLite flatbuffer (no TFL3 file identifier)")


# --- app ------------------------------------------------------------------------------------------
class BodyLimit:
    """Pure ASGI middleware: refuse bodies over ``max_bytes`` with 413 (by Content-Length, or while
    streaming when there is none) before anything buffers them."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        cl = headers.get(b"content-length")
        msg = f"body: larger than this server's limit of {self.max_bytes} bytes (HIL_MAX_BODY_BYTES)"
        if cl is not None and cl.isdigit() and int(cl) > self.max_bytes:
            return await JSONResponse({"detail": msg}, status_code=413)(scope, receive, send)
        seen = 0

        async def limited():
            nonlocal seen
            m = await receive()
            if m["type"] == "http.request":
                seen += len(m.get("body", b""))
                if seen > self.max_bytes:
                    raise _TooLarge
            return m
        try:
            return await self.app(scope, limited, send)
        except _TooLarge:
            return await JSONResponse({"detail": msg}, status_code=413)(scope, receive, send)


class _TooLarge(Exception):
    pass


class Timing:
    """Pure ASGI middleware for the request-latency histogram (labelled by route template, not raw path).
    Starlette's ``@app.middleware("http")`` wraps every request in an extra task and stream, which cost more
    CPU than a whole single-arch prediction."""

    def __init__(self, app, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0 = time.perf_counter()
        status = [500]

        async def send_status(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)
        try:
            await self.app(scope, receive, send_status)
        finally:
            route = scope.get("route")
            self.metrics.requests.labels(scope["method"], getattr(route, "path", "unmatched"),
                                         str(status[0])).observe(time.perf_counter() - t0)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings.from_env()
    state = State(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        state.startup()
        yield
        state.stop.set()
        state.engine.dispose()

    app = FastAPI(title="hil-latency", version="0.1.0", lifespan=lifespan,
                  description="How fast does this INT8 network run on that device? Predictions from per-device "
                              "kernel predictors, and a durable queue of real measurements made by device agents.")
    app.state.hil = state
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)

    app.add_middleware(Timing, metrics=state.metrics)

    @app.exception_handler(SpaceError)
    async def space_error(_req, e: SpaceError):
        return JSONResponse({"detail": str(e), "field": e.field}, status_code=422)

    @app.exception_handler(ArchError)
    async def arch_error(_req, e: ArchError):
        return JSONResponse({"detail": str(e), "field": e.field}, status_code=422)

    @app.exception_handler(ValidationError)
    async def pyd_error(_req, e: ValidationError):  # pydantic errors raised inside handlers
        err = e.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        return JSONResponse({"detail": f"{loc}: {err['msg']}", "field": loc}, status_code=422)

    def _json_safe(v):
        """``v`` with every non-finite float as text ("nan", "inf", "-inf"), which JSON can carry."""
        if isinstance(v, float) and not -float("inf") < v < float("inf"):
            return str(v)
        if isinstance(v, dict):
            return {k: _json_safe(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [_json_safe(x) for x in v]
        return v

    @app.exception_handler(RequestValidationError)
    async def request_error(_req, e: RequestValidationError):
        # FastAPI's own 422 (detail: the errors, each with loc naming the field), except that an echoed input
        # JSON cannot carry goes out as text: Python's json parser accepts NaN, Infinity and 1e400 (inf), and
        # rendering such an input back made the 422 itself fail with a 500
        return JSONResponse({"detail": _json_safe(jsonable_encoder(e.errors()))}, status_code=422)

    # ---- health and metrics
    @app.get("/healthz", response_model=Health, tags=["ops"])
    def healthz(state: StateDep, s: SessionDep) -> Health:
        s.execute(select(1))
        return Health(status="ok", database=state.engine.url.get_backend_name(),
                      devices=s.scalar(select(func.count()).select_from(Device)) or 0,
                      predictors=len(state.registry.devices()))

    @app.get("/metrics", tags=["ops"], response_class=Response)
    def metrics(state: StateDep) -> Response:
        return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    # ---- predictions
    @app.post("/predict_latency", response_model=PredictResponse, response_model_exclude_none=True,
              tags=["predict"])
    async def predict_latency(req: PredictRequest, request: Request) -> PredictResponse:
        """Latency (ms) of each arch on the device, from its kernel predictor. Up to 100,000 archs a request.

        The hot path of search loops, so it is async and touches no database when reads are open and the
        device has a predictor: small batches are answered on the event loop (well under a millisecond),
        large ones in the thread pool."""
        state: State = request.app.state.hil
        if not state.settings.open_reads:
            await run_in_threadpool(_read_auth, state, request)
        if len(req.archs) > state.settings.max_archs:
            raise HTTPException(422, f"archs: {len(req.archs)} items; allowed: at most {state.settings.max_archs}"
                                " per request")
        loaded = state.registry.get(req.device)
        if loaded is None:
            await run_in_threadpool(_no_predictor, state, req.device)
        if len(req.archs) <= INLINE_ARCHS and not req.detail:
            lat, kernels, warnings = predict_archs(loaded, req.archs, req.space, req.detail)
        else:
            lat, kernels, warnings = await run_in_threadpool(predict_archs, loaded, req.archs, req.space, req.detail)
        state.metrics.predictions.labels(req.device).inc(len(req.archs))
        return PredictResponse(device=req.device, predictor=_info(loaded), latencies_ms=lat, kernels=kernels,
                               warnings=warnings)

    @app.post("/predict_latency/stages", response_model=StagesResponse, tags=["predict"])
    async def predict_stages_route(req: StagesRequest, request: Request) -> StagesResponse:
        """Latency of stand-alone stages (the rows of SpaceEvo's lookup tables, or first_conv, stage0, head):
        what a search-space search needs to re-predict a lookup table on this device. A null means a kernel
        type without a forest (see warnings)."""
        state: State = request.app.state.hil
        if not state.settings.open_reads:
            await run_in_threadpool(_read_auth, state, request)
        if len(req.stages) > state.settings.max_archs:
            raise HTTPException(422, f"stages: {len(req.stages)} items; allowed: at most "
                                f"{state.settings.max_archs} per request")
        loaded = state.registry.get(req.device)
        if loaded is None:
            await run_in_threadpool(_no_predictor, state, req.device)
        lat, warnings = await run_in_threadpool(predict_stages, loaded, req.hyperspace, req.stages)
        state.metrics.predictions.labels(req.device).inc(len(req.stages))
        return StagesResponse(device=req.device, predictor=_info(loaded), latencies_ms=lat, warnings=warnings)

    def _predict_model(fmt: str, device: str, body: bytes, state: State, s: Session) -> ModelPredictResponse:
        import tempfile

        from predictors.artifact import predict_model

        loaded = _predictor(state, s, device)
        if FORMATS.get(loaded.predictor.meta.backend) != fmt:
            raise HTTPException(422, f"device: {device!r} runs {loaded.predictor.meta.backend}, which takes "
                                f"{FORMATS.get(loaded.predictor.meta.backend)} models, not {fmt}")
        _check_model(body, fmt)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"model.{fmt}"
            path.write_bytes(body)
            try:
                gp = predict_model(loaded.predictor, path)
            except Exception as e:  # noqa: BLE001 - a model our detector cannot read is the input's problem
                raise HTTPException(422, f"body: the model could not be analysed ({type(e).__name__}: "
                                    f"{str(e)[:300]})") from None
        state.metrics.predictions.labels(device).inc()
        return ModelPredictResponse(device=device, predictor=_info(loaded), **gp.model_dump())

    _BODY = Body(..., media_type="application/octet-stream", description="the model file's bytes")
    _DEV = Query(..., min_length=1, max_length=128, description="a device name from GET /devices")

    @app.post("/predict_latency/onnx", response_model=ModelPredictResponse, tags=["predict"])
    def predict_onnx(state: StateDep, s: SessionDep, _p: Reader, device: str = _DEV,
                     body: bytes = _BODY) -> ModelPredictResponse:
        """Latency of any ONNX model (FP32 or INT8 QDQ) on an onnxruntime device; unsupported ops are listed
        and the total is withheld, never counted as 0."""
        return _predict_model("onnx", device, body, state, s)

    @app.post("/predict_latency/tflite", response_model=ModelPredictResponse, tags=["predict"])
    def predict_tflite(state: StateDep, s: SessionDep, _p: Reader, device: str = _DEV,
                       body: bytes = _BODY) -> ModelPredictResponse:
        """Latency of any TFLite model on a TFLite device (see /predict_latency/onnx)."""
        return _predict_model("tflite", device, body, state, s)

    # ---- devices
    def _device_view(state: State, s: Session, d: Device) -> DeviceView:
        fresh = time.time() - 3 * state.settings.heartbeat_s - 5
        online = s.scalar(select(func.count()).select_from(Agent).where(Agent.device == d.name,
                                                                         Agent.last_heartbeat_at > fresh)) or 0
        loaded = state.registry.get(d.name)
        return DeviceView(name=d.name, backend=d.backend, slug=d.slug, source=d.source, fingerprint=d.fingerprint,
                          agents_online=online, predictor=_info(loaded) if loaded else None,
                          jobs=queue.counts(s, d.name), profiling=campaign_status(s, d),
                          training=state.trainer.status.get(d.name))

    @app.get("/devices", response_model=list[DeviceView], tags=["devices"])
    def devices(state: StateDep, s: SessionDep, _p: Reader) -> list[DeviceView]:
        return [_device_view(state, s, d) for d in s.scalars(select(Device).order_by(Device.name))]

    @app.get("/devices/{name}", response_model=DeviceView, tags=["devices"])
    def device(name: str, state: StateDep, s: SessionDep, _p: Reader) -> DeviceView:
        return _device_view(state, s, _device(s, name))

    @app.post("/devices/{name}/profile", response_model=DeviceView, tags=["devices"])
    def profile_device(name: str, state: StateDep, s: SessionDep, p: ClientP,
                       per_type: int = Query(30, ge=1, le=500,
                                            description="kernel configs per kernel type (500: 7,500 jobs, hours)"),
                       kernel_types: str | None = Query(None, description="comma-separated; default all")
                       ) -> DeviceView:
        """Queue a kernel-profiling campaign for the device; its predictor is trained when the jobs end."""
        from profilers.samplers import kernel_types as all_types

        d = _device(s, name)
        if d.source == "bundled":
            raise HTTPException(409, f"device: {name!r} is a bundled predictor with no agent; agents profile the "
                                "devices they register")
        types = None
        if kernel_types:
            types = [t.strip() for t in kernel_types.split(",") if t.strip()]
            bad = [t for t in types if t not in all_types()]
            if bad:
                raise HTTPException(422, f"kernel_types: {', '.join(bad)} not allowed; allowed: "
                                    f"{', '.join(all_types())}")
        start_campaign(s, d, per_type, state.settings.max_attempts, p.name, types)
        return _device_view(state, s, d)

    # ---- agents
    @app.post("/agents/register", response_model=AgentRegistered, tags=["agents"])
    def register(req: AgentRegister, state: StateDep, s: SessionDep, p: AgentP) -> AgentRegistered:
        from profilers.fingerprint import Fingerprint, device_slug

        try:
            fp = Fingerprint(**req.fingerprint)
        except ValidationError as e:
            err = e.errors()[0]
            raise HTTPException(422, f"fingerprint.{'.'.join(map(str, err['loc']))}: {err['msg']}") from None
        if fp.backend != req.backend:
            raise HTTPException(422, f"fingerprint.backend: {fp.backend!r} differs from backend {req.backend!r}")
        slug = device_slug(fp)
        name = req.device or f"{req.backend}@{slug}"
        if len(name) > 128:
            raise HTTPException(422, f"device: {name[:40]!r}... is {len(name)} characters; allowed: at most 128")
        d = s.get(Device, name)
        if d is None:
            d = Device(name=name, backend=req.backend, slug=slug, fingerprint=fp.model_dump(),
                       fingerprint_hash=fp.hash(), source="agent", created_at=time.time())
            s.add(d)
            s.flush()  # the agent row below refers to it
        elif d.backend != req.backend or d.slug != slug:
            raise HTTPException(409, f"device: {name!r} is {d.backend} on {d.slug}; this agent is {req.backend} on "
                                f"{slug}. Register under another --device name")
        elif d.source == "bundled":  # an agent on the bundled predictor's hardware: the device now has one
            d.source, d.fingerprint, d.fingerprint_hash = "agent", fp.model_dump(), fp.hash()
        now = time.time()
        agent = Agent(id=str(uuid.uuid4()), device=name, hostname=req.hostname, token_name=p.name,
                      info={**req.info, "runtime_version": fp.runtime_version}, registered_at=now,
                      last_heartbeat_at=now, jobs_done=0)
        s.add(agent)
        s.commit()
        if state.settings.auto_profile and state.registry.get(name) is None and not d.campaign:
            start_campaign(s, d, state.settings.profile_per_type, state.settings.max_attempts, "auto-profile",
                           state.settings.profile_kernel_types)
        return AgentRegistered(agent_id=agent.id, device=name, lease_s=state.settings.lease_s,
                               heartbeat_s=state.settings.heartbeat_s)

    @app.post("/agents/{agent_id}/heartbeat", response_model=HeartbeatResponse, tags=["agents"])
    def heartbeat(agent_id: str, state: StateDep, s: SessionDep, _p: AgentP) -> HeartbeatResponse:
        a = _agent(s, agent_id)
        n = queue.heartbeat(s, a, state.settings.lease_s)
        return HeartbeatResponse(agent_id=agent_id, leases=n, lease_s=state.settings.lease_s)

    # ---- models and jobs
    @app.post("/models", response_model=ModelUploaded, tags=["jobs"])
    def upload_model(s: SessionDep, _p: ClientP, body: bytes = _BODY,
                     format: str = Query(..., pattern="^(onnx|tflite)$", description="onnx or tflite")
                     ) -> ModelUploaded:
        """Store a model file (content-addressed; uploading the same bytes twice stores them once)."""
        _check_model(body, format)
        sha = hashlib.sha256(body).hexdigest()
        if s.get(Blob, sha) is None:
            s.add(Blob(sha256=sha, format=format, size=len(body), data=body, created_at=time.time()))
            s.commit()
        return ModelUploaded(sha256=sha, format=format, size=len(body))

    @app.get("/models/{sha256}", tags=["jobs"], response_class=Response,
             responses={200: {"content": {"application/octet-stream": {}}}})
    def download_model(sha256: str, s: SessionDep, _p: Reader) -> Response:
        b = s.get(Blob, sha256)
        if b is None:
            raise HTTPException(404, f"sha256: no model {sha256!r} on this server")
        return Response(b.data, media_type="application/octet-stream")

    @app.post("/jobs", response_model=JobView, status_code=201, tags=["jobs"])
    def submit_job(req: JobSubmit, state: StateDep, s: SessionDep, p: ClientP) -> JobView:
        """Ask for a real measurement: a model uploaded with POST /models, or one kernel config."""
        d = _device(s, req.device)
        payload: dict[str, Any] = {}
        if req.kind == "model":
            if req.model_sha256 is None:
                raise HTTPException(422, "model_sha256: required for kind model (upload with POST /models)")
            b = s.get(Blob, req.model_sha256)
            if b is None:
                raise HTTPException(422, f"model_sha256: no model {req.model_sha256!r}; upload it with POST /models")
            if FORMATS.get(d.backend) != b.format:
                raise HTTPException(422, f"model_sha256: a {b.format} model cannot run on {d.name} ({d.backend} "
                                    f"takes {FORMATS.get(d.backend)})")
        else:
            if req.kernel is None:
                raise HTTPException(422, "kernel: required for kind kernel")
            payload = {"kernel": req.kernel.model_dump(), "precision": req.precision}
        if req.protocol is not None:
            payload["protocol"] = req.protocol.model_dump()
        job = queue.submit(s, d.name, req.kind, max_attempts=req.max_attempts or state.settings.max_attempts,
                           submitted_by=p.name, model_sha256=req.model_sha256 if req.kind == "model" else None,
                           payload=payload)
        s.commit()
        return _job_view(state, s, job)

    @app.get("/jobs/{job_id}", response_model=JobView, tags=["jobs"])
    def get_job(job_id: JobId, state: StateDep, s: SessionDep, _p: Reader) -> JobView:
        job = s.get(Job, job_id)
        if job is None:
            raise HTTPException(404, f"job_id: no job {job_id}")
        return _job_view(state, s, job)

    @app.get("/jobs", response_model=list[JobView], tags=["jobs"])
    def list_jobs(state: StateDep, s: SessionDep, _p: Reader, device: str | None = None,
                  job_state: str | None = Query(None, alias="state", pattern="^(queued|leased|done|failed)$"),
                  limit: int = Query(100, ge=1, le=1000)) -> list[JobView]:
        q = select(Job).order_by(Job.id.desc()).limit(limit)
        if device:
            q = q.where(Job.device == device)
        if job_state:
            q = q.where(Job.state == job_state)
        return [_job_view(state, s, j) for j in s.scalars(q)]

    @app.post("/jobs/lease", response_model=JobView, tags=["agents"],
              responses={204: {"description": "no job for this agent's device within wait_s"}})
    def lease_job(req: LeaseRequest, state: StateDep, s: SessionDep, _p: AgentP):
        """The oldest job of the agent's device, leased for lease_s (extended by heartbeats); 204 if none."""
        a = _agent(s, req.agent_id)
        deadline = time.monotonic() + req.wait_s
        while True:
            job = queue.lease(s, a, state.settings.lease_s)
            if job is not None:
                return _job_view(state, s, job)
            if time.monotonic() >= deadline or state.stop.is_set():
                return Response(status_code=204)
            time.sleep(min(0.25, max(0.0, deadline - time.monotonic())))
            s.expire_all()

    @app.post("/jobs/{job_id}/result", response_model=JobResultResponse, tags=["agents"])
    def job_result(job_id: JobId, req: JobResult, state: StateDep, s: SessionDep, _p: AgentP) -> JobResultResponse:
        """Store a job's result. Idempotent: a second result for a finished job stores nothing."""
        a = _agent(s, req.agent_id)
        job = s.get(Job, job_id)
        if job is None:
            raise HTTPException(404, f"job_id: no job {job_id}")
        if job.device != a.device:
            raise HTTPException(409, f"job_id: job {job_id} is for device {job.device!r}, not this agent's "
                                f"{a.device!r}")
        if req.ok and req.record is None:
            raise HTTPException(422, "record: required when ok is true")
        try:
            status, row = queue.post_result(s, job, a, req.ok, _finite(req.record), req.error, req.latency_ms,
                                            req.stable)
        except queue.JobError as e:
            raise HTTPException(409, str(e)) from None
        state.metrics.results.labels(status).inc()
        if status == "stored":
            state.online.observe(row)
        return JobResultResponse(job_id=job_id, status=status, measurement_id=row.id if row else None)

    # ---- predictors
    @app.get("/predictors/{device}", response_model=PredictorView, tags=["predictors"])
    def get_predictor(device: str, state: StateDep, s: SessionDep, _p: Reader) -> PredictorView:
        _device(s, device)
        loaded = state.registry.get(device)
        rows = s.scalars(select(PredictorRow).where(PredictorRow.device == device).order_by(PredictorRow.version))
        return PredictorView(device=device, active=_info(loaded) if loaded else None,
                             versions=[{"version": r.version, "trained_at": r.trained_at, "records": r.records,
                                        "path": r.path} for r in rows],
                             training=state.trainer.status.get(device))

    @app.post("/predictors/{device}/train", response_model=TrainResponse, status_code=202, tags=["predictors"])
    def train_predictor(device: str, state: StateDep, s: SessionDep, _p: ClientP,
                        req: TrainRequest | None = None) -> TrainResponse:
        """Train a new predictor version from the device's kernel measurements (in the background); it is
        served as soon as it is ready. Poll GET /predictors/{device}."""
        d = _device(s, device)
        req = req or TrainRequest()
        try:
            n = state.trainer.start(device, d.backend, req.min_records, req.statistic, include_unstable=True)
        except ValueError as e:
            raise HTTPException(409, str(e)) from None
        except RuntimeError as e:
            raise HTTPException(409, str(e)) from None
        return TrainResponse(device=device, status="training", records=n)

    @app.post("/predictors/{device}/session", response_model=SessionResponse, status_code=201, tags=["predictors"])
    def session_calibration(device: str, req: SessionRequest, state: StateDep, s: SessionDep,
                            p: AgentP) -> SessionResponse:
        """Refit the device's predictor to this session's machine state from calibration networks an agent just
        measured (``predictors eval --set calib-small``): only a global scale and the per-kernel cost move
        (predictors.calibration, "Session calibration"). The result is the device's next predictor version,
        served at once; its base calibration is kept, so a later session refits from the base again."""
        _device(s, device)
        loaded = state.registry.get(device)
        if loaded is None:
            _no_predictor(state, device)
        return _session_version(state, s, device, loaded, req, p.name)

    return app


def _session_version(state: State, s: Session, device: str, loaded, req: SessionRequest,
                     who: str) -> SessionResponse:
    """Fit, save as the next version, record it, install it (see POST /predictors/{device}/session)."""
    from sqlalchemy.exc import IntegrityError

    from predictors.artifact import Predictor
    from predictors.calibration import session_calibrate_records

    data = {"source": req.source or who, "posted_by": who, "base_version": loaded.version,
            "base_path": str(loaded.path)}
    try:  # fitted on the served predictor: it only reads its forests (raw kernel latencies, which its cache holds)
        cal = session_calibrate_records(loaded.predictor, [r.model_dump() for r in req.records], data)
    except ValueError as e:
        raise HTTPException(422, f"records: {e}") from None
    pred = Predictor.load(loaded.path)  # a copy to change: the served one keeps answering until the swap
    pred.meta = pred.meta.model_copy(update={"calibration": cal})
    version = max(loaded.version, latest_version(s, device)) + 1
    out = Path(state.settings.predictor_dir) / device / f"v{version}-session"
    pred.save(out)
    now = time.time()
    ses = cal.session
    s.add(PredictorRow(device=device, version=version, path=str(out), trained_at=now, records=ses.n_models,
                       accuracy={"session": ses.model_dump(exclude={"base"})}))
    try:
        s.commit()
    except IntegrityError:
        s.rollback()
        raise HTTPException(409, f"device: {device!r} got another predictor version {version} meanwhile; "
                            "post the session again") from None
    state.registry.install(device, version, out, now)
    state.online.refit(device)  # recent model measurements, where the device has them, supersede the session's
    log.info("session calibration of %s: v%d, g %.4f, d %.2f us from %d networks", device, version, ses.scale,
             ses.per_kernel_ms * 1e3, ses.n_models)
    return SessionResponse(device=device, version=version, n_models=ses.n_models, scale=ses.scale,
                           per_kernel_ms=ses.per_kernel_ms, base_per_kernel_ms=ses.base.per_kernel_ms, cv=ses.cv,
                           measured_from=ses.measured_from, measured_to=ses.measured_to, warnings=ses.warnings)
