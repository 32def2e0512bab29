"""Device profiles for the ``tflite-android`` backend: which core to pin, how to check it runs at full speed and
cool, and which ``benchmark_model`` flags to use.

    from profilers.android.profiles import load_profile, list_profiles
    p = load_profile("pixel4")                 # a built-in profile, by name
    p = load_profile("~/phones/mate40.json")   # or any JSON file
    cmd = ["taskset", p.taskset_mask, "/data/local/tmp/benchmark_model", *p.benchmark_args("/data/local/tmp/m.tflite")]

Built-in profiles are the JSON files in ``profilers/android/profiles/`` (``list_profiles()``); more directories can
be listed in ``$HIL_ANDROID_PROFILES`` (``os.pathsep``-separated, searched after the built-ins). To add a phone,
write a JSON file with this schema (unknown keys are refused, so typos surface) and pass its path, or drop it in
one of those directories under ``<name>.json``:

.. code-block:: json

    {
      "name": "pixel4",                      // [a-z0-9][a-z0-9_-]*; must equal the file name in a profile directory
      "description": "why this core, how to prepare the phone ...",
      "device": "Google Pixel 4 / 4 XL",     // optional, free text
      "soc": "Qualcomm Snapdragon 855 (SM8150)",
      "cpu_core_model": "Cortex-A76",
      "core_index": 7,                       // the core benchmark_model is pinned to (cpuN)
      "taskset_mask": "80",                  // hex, as `taskset <mask> cmd` takes it ("0x80" is accepted, stored "80");
                                             // must include core_index
      "max_freq_khz": 2841600,               // cpuinfo_max_freq of that core; the backend compares scaling_cur_freq to it
      "cpufreq_paths": {                     // sysfs files to read (absolute, under /sys/); conventional keys:
        "cur": "/sys/devices/system/cpu/cpu7/cpufreq/scaling_cur_freq",     // cur, max, cpuinfo_max, governor
        "max": "/sys/devices/system/cpu/cpu7/cpufreq/scaling_max_freq",
        "cpuinfo_max": "/sys/devices/system/cpu/cpu7/cpufreq/cpuinfo_max_freq",
        "governor": "/sys/devices/system/cpu/cpu7/cpufreq/scaling_governor"
      },
      "thermal_zones": ["cpu-1-*-usr"],      // thermal zone *types* (fnmatch globs, matched against
                                             // /sys/class/thermal/thermal_zone*/type) or absolute .../temp paths
      "max_temp_c": 40.0,                    // wait until every matched zone reads below this before a run
      "cooldown_timeout_s": 600,             // give up waiting after this long (optional, default 600)
      "benchmark": {                         // benchmark_model flags (all optional; defaults shown)
        "num_threads": 1, "use_xnnpack": true, "warmup_runs": 20, "warmup_min_secs": 1.0,
        "num_runs": 100, "min_secs": 2.0, "max_secs": 150.0, "run_delay": -1.0,
        "enable_op_profiling": false, "extra_args": []     // extra "--flag=value" strings, passed last
      },
      "android": {                           // optional
        "min_sdk": 29,                       // oldest Android API level the profile was written for
        "fixed_performance_mode_min_sdk": 30, // `cmd power set-fixed-performance-mode-enabled` exists from API 30
        "use_fixed_performance_mode": false, // enable it before measuring (only where the phone's SDK allows)
        "notes": ["free text"]
      },
      "sources": ["where the facts above come from"],       // optional provenance
      "unverified": ["facts not checked against a device"]  // optional
    }

(JSON has no comments; they are only explanations here.) ``max_freq_khz`` is what the core reaches at full
speed; with fixed-performance mode on, the phone holds a lower, sustainable operating point instead (Android
docs: "Fixed performance mode does not yield the maximum device performance"), so a backend that enables it must
not insist on ``max_freq_khz``.
"""
from __future__ import annotations

import fnmatch
import json
import os
import re
from importlib import resources
from pathlib import Path
from typing import Mapping

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

__all__ = ["AndroidNotes", "BenchmarkFlags", "DeviceProfile", "ProfileError", "builtin_dir", "list_profiles",
           "load_profile"]

ENV_DIRS = "HIL_ANDROID_PROFILES"
FIXED_PERFORMANCE_MODE_CMD = "cmd power set-fixed-performance-mode-enabled"
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")


class ProfileError(ValueError):
    """A profile cannot be found, read or validated."""


class BenchmarkFlags(BaseModel):
    """``benchmark_model`` flags (lite/tools/benchmark/benchmark_model.cc ``GetFlags``; ``use_xnnpack`` from the
    XNNPACK delegate provider). ``num_runs`` and ``warmup_runs`` are minimums: the tool keeps running until
    ``min_secs`` (``warmup_min_secs``) have passed too, and stops past ``max_secs``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    num_threads: int = Field(1, ge=1)
    use_xnnpack: bool = True
    warmup_runs: int = Field(20, ge=0)
    warmup_min_secs: float = 1.0
    num_runs: int = Field(100, ge=1)
    min_secs: float = 2.0
    max_secs: float = Field(150.0, gt=0)
    run_delay: float = -1.0
    enable_op_profiling: bool = False
    extra_args: tuple[str, ...] = ()

    @field_validator("extra_args")
    @classmethod
    def _flags(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for a in v:
            if not a.startswith("--") or any(c.isspace() for c in a):
                raise ValueError(f"extra_args entries must be single '--flag=value' tokens, got {a!r}")
        return v

    def args(self) -> list[str]:
        b = lambda x: "true" if x else "false"  # noqa: E731
        return [f"--num_threads={self.num_threads}", f"--use_xnnpack={b(self.use_xnnpack)}",
                f"--warmup_runs={self.warmup_runs}", f"--warmup_min_secs={self.warmup_min_secs:g}",
                f"--num_runs={self.num_runs}", f"--min_secs={self.min_secs:g}", f"--max_secs={self.max_secs:g}",
                f"--run_delay={self.run_delay:g}", f"--enable_op_profiling={b(self.enable_op_profiling)}",
                *self.extra_args]


class AndroidNotes(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    min_sdk: int | None = Field(None, ge=1)
    fixed_performance_mode_min_sdk: int = 30  # Android 11 (developer.android.com "Fixed Performance Mode")
    use_fixed_performance_mode: bool = False
    notes: tuple[str, ...] = ()

    def fixed_performance_mode_available(self, sdk: int) -> bool:
        return sdk >= self.fixed_performance_mode_min_sdk

    def fixed_performance_mode_command(self, sdk: int, enabled: bool = True) -> str | None:
        """The shell command to run (None where the phone's SDK has no such command)."""
        if not self.fixed_performance_mode_available(sdk):
            return None
        return f"{FIXED_PERFORMANCE_MODE_CMD} {'true' if enabled else 'false'}"


class DeviceProfile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str
    device: str | None = None
    soc: str
    cpu_core_model: str
    core_index: int = Field(ge=0, le=255)
    taskset_mask: str
    max_freq_khz: int = Field(gt=0)
    cpufreq_paths: dict[str, str]
    thermal_zones: tuple[str, ...] = Field(min_length=1)
    max_temp_c: float = Field(gt=0, lt=125)
    cooldown_timeout_s: float = Field(600.0, gt=0)
    benchmark: BenchmarkFlags = BenchmarkFlags()
    android: AndroidNotes = AndroidNotes()
    sources: tuple[str, ...] = ()
    unverified: tuple[str, ...] = ()

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError(f"name must match {_NAME.pattern} (lower case, digits, '-', '_'), got {v!r}")
        return v

    @field_validator("taskset_mask")
    @classmethod
    def _mask(cls, v: str) -> str:
        s = v.strip().lower().removeprefix("0x")
        if not re.fullmatch(r"[0-9a-f]+", s) or int(s, 16) == 0:
            raise ValueError(f"taskset_mask must be a non-zero hex CPU mask as taskset takes it (e.g. '80'), got {v!r}")
        return format(int(s, 16), "x")

    @field_validator("cpufreq_paths")
    @classmethod
    def _sysfs(cls, v: dict[str, str]) -> dict[str, str]:
        for key, path in v.items():
            if not path.startswith("/sys/"):
                raise ValueError(f"cpufreq_paths[{key!r}] must be an absolute path under /sys/, got {path!r}")
        return v

    @field_validator("thermal_zones")
    @classmethod
    def _zones(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for z in v:
            if not z or (z.startswith("/") and not z.startswith("/sys/")):
                raise ValueError(f"thermal_zones entries are zone type globs or /sys/... paths, got {z!r}")
        return v

    @model_validator(mode="after")
    def _core_in_mask(self) -> "DeviceProfile":
        if not (int(self.taskset_mask, 16) >> self.core_index) & 1:
            raise ValueError(f"taskset_mask {self.taskset_mask!r} does not include core_index {self.core_index} "
                             f"(cpu{self.core_index} alone is {1 << self.core_index:x})")
        if self.benchmark.num_threads > self.mask_cores():
            raise ValueError(f"benchmark.num_threads={self.benchmark.num_threads} exceeds the "
                             f"{self.mask_cores()} core(s) in taskset_mask {self.taskset_mask!r}")
        return self

    def mask_cores(self) -> int:
        return bin(int(self.taskset_mask, 16)).count("1")

    def taskset_prefix(self) -> list[str]:
        return ["taskset", self.taskset_mask]

    def benchmark_args(self, graph: str) -> list[str]:
        """benchmark_model arguments for a model already on the phone at ``graph``."""
        return [f"--graph={graph}", *self.benchmark.args()]

    def thermal_temp_paths(self, zone_types: Mapping[str, str]) -> list[str]:
        """The ``temp`` files to watch, given the phone's zones as ``{"/sys/class/thermal/thermal_zone12":
        "cpu-1-7-usr", ...}`` (zone directory -> contents of its ``type`` file). Absolute paths in
        ``thermal_zones`` are returned as they are; an empty list means no zone matched."""
        out: list[str] = []
        for pattern in self.thermal_zones:
            if pattern.startswith("/"):
                hits = [pattern]
            else:
                hits = [f"{d.rstrip('/')}/temp" for d, t in sorted(zone_types.items())
                        if fnmatch.fnmatchcase(t.strip(), pattern)]
            out += [h for h in hits if h not in out]
        return out


def builtin_dir() -> Path:
    return Path(str(resources.files(__package__) / "profiles"))


def _dirs() -> list[Path]:
    extra = [Path(p).expanduser() for p in os.environ.get(ENV_DIRS, "").split(os.pathsep) if p.strip()]
    return [builtin_dir(), *extra]


def list_profiles() -> list[str]:
    """Names of the built-in profiles, then those in ``$HIL_ANDROID_PROFILES`` (no duplicates)."""
    names: list[str] = []
    for d in _dirs():
        if d.is_dir():
            names += [p.stem for p in sorted(d.glob("*.json")) if p.stem not in names]
    return names


def _read(path: Path) -> DeviceProfile:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ProfileError(f"cannot read device profile {path}: {e.strerror or e}") from e
    except json.JSONDecodeError as e:
        raise ProfileError(f"device profile {path} is not valid JSON: {e.msg} at line {e.lineno} column {e.colno}") from e
    if not isinstance(data, dict):
        raise ProfileError(f"device profile {path} must hold a JSON object, got {type(data).__name__}")
    try:
        return DeviceProfile.model_validate(data)
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(str(x) for x in err['loc']) or '(profile)'}: {err['msg']}"
                             for err in e.errors())
        raise ProfileError(f"device profile {path} is invalid: {problems}") from e


def load_profile(name_or_path: str | os.PathLike) -> DeviceProfile:
    """A built-in profile by name (``"pixel4"``), or a JSON file by path (anything with a path separator or a
    ``.json`` suffix, or an existing file)."""
    s = os.fspath(name_or_path)
    as_path = Path(s).expanduser()
    looks_like_path = isinstance(name_or_path, os.PathLike) or os.sep in s or "/" in s or s.endswith(".json")
    if looks_like_path or (as_path.is_file() and not _NAME.match(s)):
        if not as_path.is_file():
            raise ProfileError(f"no device profile file at {as_path}; built-in profiles: "
                               f"{', '.join(list_profiles()) or '(none)'}")
        return _read(as_path)
    if not _NAME.match(s):
        raise ProfileError(f"{s!r} is neither a profile name nor a path to a JSON file; built-in profiles: "
                           f"{', '.join(list_profiles()) or '(none)'}")
    for d in _dirs():
        path = d / f"{s}.json"
        if path.is_file():
            profile = _read(path)
            if profile.name != s:
                raise ProfileError(f"device profile {path} is named {profile.name!r}; in a profile directory the "
                                   f"name must equal the file name ({s!r})")
            return profile
    hint = f" (also searched ${ENV_DIRS})" if os.environ.get(ENV_DIRS) else ""
    raise ProfileError(f"unknown device profile {s!r}{hint}; built-in profiles: "
                       f"{', '.join(list_profiles()) or '(none)'}; or pass the path to a JSON file")
