"""Request and response models of the HTTP API (the contract in DESIGN.md, "Service contract").

Every request model forbids unknown fields, so a misspelt field is a 422 that names it rather than a
silently ignored option.
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from exporters.kernel_config import KernelConfig
from profilers.protocol import Protocol


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PredictRequest(Strict):
    device: str = Field(min_length=1, max_length=128, description="a device name from GET /devices")
    archs: list[str | dict[str, Any]] = Field(
        min_length=1, description="subnet strings (with `space`) or layer-JSON objects (format spaceevo-layers/1)")
    space: str | None = Field(None, description="search space of the subnet strings, e.g. onnxw-151122-023231")
    detail: bool = Field(False, description="also return every kernel's predicted latency (slower path)")


class StageItem(Strict):
    """One stage of a network on its own, as the SpaceEvo lookup tables list them: a ``k#w#e`` group per layer
    joined by ``_`` (``e`` is ``None`` or ``0`` for blocks without expand ratio), the stage input's channels
    and height. ``head`` takes no arch: its input is the last stage's output."""

    stage: Literal["first_conv", "stage0", "stage1", "stage2", "stage3", "stage4", "stage5", "stage6", "head"]
    block: int | None = Field(None, ge=0, le=9, description="block digit of the hyperspace (stage1-6)")
    arch: str = Field("", max_length=2000, description="e.g. 5#32#4_3#48#4")
    input: tuple[int, int] = Field(description="(channels, height) of the stage input, e.g. (32, 80)")


class StagesRequest(Strict):
    device: str = Field(min_length=1, max_length=128)
    hyperspace: Literal["onnxw", "vnni", "mobilew", "pixel4"]
    stages: list[StageItem] = Field(min_length=1)


class StagesResponse(BaseModel):
    device: str
    predictor: "PredictorInfo"
    latencies_ms: list[float | None]
    warnings: list[str] = []


class PredictorInfo(BaseModel):
    version: int
    trained_at: float
    accuracy: dict[str, Any]
    backend: str
    kernel_types: list[str]
    path: str
    online: dict[str, Any] | None = Field(None, description="the online calibration this version is served with "
                                          "(server.online): fitted on the device's last model measurements")


class PredictResponse(BaseModel):
    device: str
    predictor: PredictorInfo
    latencies_ms: list[float | None]
    kernels: list[list[dict[str, Any]]] | None = None
    warnings: list[str] = []


class ModelPredictResponse(BaseModel):
    device: str
    predictor: PredictorInfo
    latency_ms: float | None = Field(description="null when an op or kernel type is not covered (see warnings)")
    kernels: list[dict[str, Any]]
    unknown_kernels: list[str]
    unsupported_ops: dict[str, int]
    warnings: list[str]
    extrapolated: list[str] = Field([], description="kernels outside their forest's training range: the total is "
                                    "given, but rests on an extrapolation")


class AgentRegister(Strict):
    backend: Literal["onnxruntime-cpu", "tflite-cpu", "tflite-android"]
    device: str | None = Field(None, min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._@+-]*$",
                               description="device name; default <backend>@<device slug of the fingerprint>")
    fingerprint: dict[str, Any] = Field(description="profilers.fingerprint.Fingerprint as JSON")
    hostname: str = Field(max_length=255)
    info: dict[str, Any] = {}


class AgentRegistered(BaseModel):
    agent_id: str
    device: str
    lease_s: float
    heartbeat_s: float


class HeartbeatResponse(BaseModel):
    agent_id: str
    leases: int
    lease_s: float


class LeaseRequest(Strict):
    agent_id: str = Field(min_length=1, max_length=36)
    wait_s: float = Field(0.0, ge=0, le=30, description="long-poll: wait up to this long for a job")


class JobSubmit(Strict):
    device: str = Field(min_length=1, max_length=128)
    kind: Literal["model", "kernel"] = "model"
    model_sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$", description="from POST /models (kind model)")
    kernel: KernelConfig | None = Field(None, description="kernel config (kind kernel)")
    precision: Literal["int8", "fp32"] = "int8"
    max_attempts: int | None = Field(None, ge=1, le=20)
    protocol: Protocol | None = Field(None, description="measurement protocol (profilers.protocol.Protocol); "
                                                        "default: the agent's")


class JobView(BaseModel):
    id: int
    device: str
    kind: str
    state: Literal["queued", "leased", "done", "failed"]
    model_sha256: str | None
    payload: dict[str, Any]
    campaign: str | None
    attempts: int
    max_attempts: int
    lease_agent: str | None
    lease_expires_at: float | None
    error: str | None
    created_at: float
    finished_at: float | None
    history: list[dict[str, Any]]
    result: dict[str, Any] | None = None
    model_url: str | None = None


class JobResult(Strict):
    agent_id: str = Field(min_length=1, max_length=36)
    ok: bool
    error: str | None = Field(None, max_length=20000)
    latency_ms: float | None = Field(None, ge=0, allow_inf_nan=False)
    stable: bool = False
    record: dict[str, Any] | None = Field(None, description="the profilers record: Measurement, KernelRecord or "
                                                            "overhead document")


class JobResultResponse(BaseModel):
    job_id: int
    status: Literal["stored", "duplicate", "requeued", "failed"]
    measurement_id: int | None


class ModelUploaded(BaseModel):
    sha256: str
    format: str
    size: int


class TrainRequest(Strict):
    min_records: int = Field(10, ge=2, le=100000, description="kernel types with fewer records get no forest")
    statistic: Literal["p10", "median", "mean"] = "p10"


class TrainResponse(BaseModel):
    device: str
    status: str
    records: int


class SessionRecord(Strict):
    """One calibration network measured end to end in this session (a line of `predictors eval` results.jsonl)."""

    model_config = ConfigDict(extra="ignore")  # a results.jsonl line carries more (rounds_ms, flops, ...)
    name: str = Field(max_length=64, description="<hyperspace>-calib-small-<i> or <hyperspace>-calib-<i>")
    space: str = Field(max_length=128)
    arch: str = Field(max_length=2000)
    measured_ms: float = Field(gt=0, le=1e6, allow_inf_nan=False)
    probe_ms: list[float | None] = Field(default_factory=list, max_length=100)
    measured_at: str | None = Field(None, max_length=40)


class SessionRequest(Strict):
    records: list[SessionRecord] = Field(min_length=1, max_length=1000, description="the session's networks, "
                                         "from `predictors eval --set calib-small` (5 or more)")
    source: str = Field("", max_length=200, description="who measured them (an agent id, a host)")


class SessionResponse(BaseModel):
    device: str
    version: int
    n_models: int
    scale: float
    per_kernel_ms: float
    base_per_kernel_ms: float
    cv: dict[str, Any]
    measured_from: str | None
    measured_to: str | None
    warnings: list[str] = []


class DeviceView(BaseModel):
    name: str
    backend: str
    slug: str
    source: str
    fingerprint: dict[str, Any] | None
    agents_online: int
    predictor: PredictorInfo | None
    jobs: dict[str, int]
    profiling: dict[str, Any] | None
    training: dict[str, Any] | None = None


class PredictorView(BaseModel):
    device: str
    active: PredictorInfo | None
    versions: list[dict[str, Any]]
    training: dict[str, Any] | None = None


class Health(BaseModel):
    status: Literal["ok"]
    database: str
    devices: int
    predictors: int


StagesResponse.model_rebuild()
