"""Service settings, read once from the environment (``HIL_*`` and ``DATABASE_URL``).

Every setting has a default that works on a fresh clone: an SQLite file under ``var/``, open prediction
reads, bearer tokens for agents and writes. Tests build a :class:`Settings` directly.
"""
from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, Field

VAR = Path(os.environ.get("HIL_VAR", "var"))


class Settings(BaseModel):
    database_url: str = Field(default_factory=lambda: f"sqlite:///{VAR / 'hil.db'}")
    admin_token: str | None = None  # HIL_ADMIN_TOKEN: may do everything; other tokens live hashed in the DB
    open_reads: bool = True  # predictions and GETs without a token (HIL_OPEN_READS=0 guards them)
    lease_s: float = 60.0  # a leased job returns to the queue this long after its agent's last heartbeat
    heartbeat_s: float = 5.0  # what agents are told to use; must be well under lease_s
    max_attempts: int = 3  # leases (or failed results) before a job ends as failed
    max_body_bytes: int = 64 << 20
    max_archs: int = 100_000
    predictor_dir: Path = Field(default_factory=lambda: VAR / "predictors")  # trained here: <device>/v<N>/
    serve_bundled: bool = True  # the predictors shipped in predictors/bundled become devices at start
    auto_profile: bool = False  # a new device with no predictor gets a kernel-profiling campaign
    profile_per_type: int = 30  # kernels per kernel type in such a campaign
    profile_kernel_types: list[str] | None = None  # None: every kernel type the profilers know
    auto_train: bool = True  # train when a campaign's jobs have all ended
    # online calibration (server.online): refit a device's served predictor on its last this many INT8 model
    # measurements (0: off), none older than online_max_age_min
    online_window: int = Field(16, ge=0)
    online_max_age_min: float = Field(30.0, gt=0)

    @classmethod
    def from_env(cls, **overrides) -> "Settings":
        env = os.environ
        kw: dict = {}
        if env.get("DATABASE_URL"):
            kw["database_url"] = env["DATABASE_URL"]
        if env.get("HIL_ADMIN_TOKEN"):
            kw["admin_token"] = env["HIL_ADMIN_TOKEN"]
        if env.get("HIL_OPEN_READS"):
            kw["open_reads"] = env["HIL_OPEN_READS"].lower() not in ("0", "false", "no")
        for name, key in (("lease_s", "HIL_LEASE_S"), ("heartbeat_s", "HIL_HEARTBEAT_S")):
            if env.get(key):
                kw[name] = float(env[key])
        for name, key in (("max_attempts", "HIL_MAX_ATTEMPTS"), ("max_body_bytes", "HIL_MAX_BODY_BYTES"),
                          ("profile_per_type", "HIL_PROFILE_PER_TYPE")):
            if env.get(key):
                kw[name] = int(env[key])
        if env.get("HIL_ONLINE_WINDOW"):
            kw["online_window"] = int(env["HIL_ONLINE_WINDOW"])
        if env.get("HIL_ONLINE_MAX_AGE_MIN"):
            kw["online_max_age_min"] = float(env["HIL_ONLINE_MAX_AGE_MIN"])
        if env.get("HIL_PREDICTOR_DIR"):
            kw["predictor_dir"] = Path(env["HIL_PREDICTOR_DIR"])
        if env.get("HIL_SERVE_BUNDLED"):  # 0: ignore predictors/bundled (profile this host even if one is shipped)
            kw["serve_bundled"] = env["HIL_SERVE_BUNDLED"].lower() not in ("0", "false", "no")
        if env.get("HIL_AUTO_PROFILE"):
            kw["auto_profile"] = env["HIL_AUTO_PROFILE"].lower() not in ("0", "false", "no")
        kw.update(overrides)
        return cls(**kw)
