"""Android backend support (issue 7, ``tflite-android``): TFLite's official ``benchmark_model`` run on a phone
over adb.

* :mod:`profilers.android.benchmark_output` parses what ``benchmark_model`` prints (every published format we
  found, TFLite 1.12 to today) into a :class:`BenchmarkResult`, or raises a :class:`BenchmarkOutputError` whose
  ``kind`` says whether the model, the tool or the process is to blame.
* :mod:`profilers.android.profiles` holds per-phone measurement profiles (which core, its taskset mask and max
  frequency, thermal zones, benchmark_model flags), built in as JSON files or supplied by the user.
"""
from __future__ import annotations

from .benchmark_output import (
    BenchmarkErrorKind,
    BenchmarkOutputError,
    BenchmarkResult,
    MemoryFootprint,
    RunStats,
    parse_benchmark_output,
)
from .profiles import BenchmarkFlags, DeviceProfile, ProfileError, list_profiles, load_profile

__all__ = [
    "BenchmarkErrorKind", "BenchmarkOutputError", "BenchmarkResult", "MemoryFootprint", "RunStats",
    "parse_benchmark_output", "BenchmarkFlags", "DeviceProfile", "ProfileError", "list_profiles", "load_profile",
]
