"""Parse the stdout/stderr of TFLite's ``benchmark_model`` into a :class:`BenchmarkResult`.

``parse_benchmark_output(text, exit_code=None)`` returns a validated result or raises a
:class:`BenchmarkOutputError` whose ``kind`` (:class:`BenchmarkErrorKind`) tells the caller what to do:
``model-error`` (the model cannot be loaded/prepared/invoked: retrying will not help), ``tool-missing`` (the
binary or a helper like ``taskset`` is absent, not executable or cannot link: fix the phone), ``crash`` (the
process died on a signal: retry, maybe reboot), ``benchmark-failed`` (benchmark_model reported failure without a
more specific cause) and ``incomplete`` (no failure message, but the result is not all there: connection dropped
mid-run, garbage, or pieces of different runs that do not agree). The error names what is missing and carries the
last lines of the output.

Where the formats come from (tensorflow/tensorflow unless said otherwise)
------------------------------------------------------------------------
* **Run statistics line**, ``tsl::Stat<>::OutputToStream`` (tensorflow/core/util/stats_calculator.h, now
  xla/tsl/util/stats_calculator.h)::

      count=0                                            # no runs (e.g. --dry_run, or --warmup_runs=0)
      count=<n> curr=<v>[(all same)]                     # min == max; "(all same)" only when n > 1
      count=<n> first=<v> curr=<v> min=<v> max=<v> avg=<double> std=<v>

  ``avg`` is a double written with the default ostream precision (6 significant digits), so large values come out
  in exponent form (``avg=1.23457e+06``). Newer releases print ``StatWithPercentiles`` (same file), which appends
  `` p5=<v> median=<v> p95=<v>``.
* **Which line is which.** ``BenchmarkModel::Run(min_num_times, min_secs, max_secs, ...)``
  (lite/tools/benchmark/benchmark_model.cc) logs ``Running benchmark for at least <n> iterations and at least
  <s> seconds but terminate if exceeding <m> seconds.`` (TFLite 1.12: ``Running benchmark for <n> iterations``),
  runs, then logs the statistics line. ``BenchmarkModel::Run()`` calls it twice, always in this order: first for
  the warm-up (``--warmup_runs``/``--warmup_min_secs``), then for the timed runs (``--num_runs``/``--min_secs``).
  The headers are identical in form, so we tell them apart by order: the statistics line that follows the **last**
  ``Running benchmark ...`` header is the timed runs, the one under the header before it the warm-up. If the last
  header has no statistics line yet (the connection dropped during the timed runs) the output is incomplete: we
  never promote the warm-up line to the timed runs. The op-profiling tables also print ``count=`` lines, but
  prefixed (``Timings (microseconds): count=...``, ``Memory (bytes): count=...``); we only take lines whose
  message starts with ``count=``.
* **num_runs is a minimum.** ``Run`` loops while ``run < min_num_times || now < min_finish`` (and stops past
  ``max_secs``), so the number of timed runs actually made is ``count=``, which can be more (or, if max_secs cut
  it short, less) than ``--num_runs``; ``requested_num_runs`` keeps the asked-for minimum.
* **Summary line**, ``BenchmarkLoggingListener::OnBenchmarkEnd`` (benchmark_model.cc), three generations:

  - TFLite 1.12 (TI Processor SDK docs, ``tensorflow-lite-1.12``) and 2.0 (a published v2.0.0 run):
    ``Average inference timings in us: Warmup: 146161, Init: 4452, no stats: 137722``
  - ~2.1 (tools/benchmark README and the Android benchmark app README):
    ``Average inference timings in us: Warmup: 83235, Init: 38467, Inference: 79760.9`` (the app's logcat
    variant glues ``Overall <mem>`` straight after the last number)
  - ~2.2 to today: ``Inference timings in us: Init: 2517, First inference: 217409, Warmup (avg): 213058,
    Inference (avg): 210028`` (Init and First inference are int64; the averages are doubles, so
    ``Warmup (avg): 1.14039e+07`` occurs, e.g. in a published i.MX8 NNAPI run).

  Its inference average is the same double as the timed runs' ``avg=``, which we use as a consistency check.
* **Memory lines** (same function): ~2.2-2.12 ``Peak memory footprint (MB): init=6.44141 overall=64.8633``
  (max RSS); ~2.13 onwards ``Memory footprint delta from the start of the tool (MB): init=55.4961
  overall=55.4961``, with ``--report_peak_memory_footprint`` also ``Overall peak memory footprint (MB) via periodic
  monitoring: <mb>`` and ``- VmRSS : <n> MB`` / ``+ RssAnnon`` / ``+ RssFile + RssShmem`` lines. Both are
  optional (``if (!init_mem_usage.IsSupported()) return;``).
* **Parameters**, ``LogParams``: ``Graph: [<path>]``, ``Num threads: [1]`` (older) or ``#threads used for CPU
  inference: [1]`` (default_execution_provider.cc), ``Min num runs: [50]`` (TFLite 1.12: ``Num runs: [50]``),
  ``Use xnnpack: [1]``; newer versions only print the flags that were set, plus ``Graph`` always.
* **Line prefixes.** In later releases ``TFLITE_LOG`` (lite/tools/logging.h) writes ``INFO: ``/``WARN: `` to stdout
  and ``ERROR: ``/``FATAL: `` to stderr (the published ~2.3/2.4 i.MX8 output has no prefix on the tool's own lines,
  2.13-era and later outputs do); the runtime's own logging adds ``VERBOSE:``/``WARNING:``; on Android the same
  text also goes to logcat (tag ``tflite``), which we accept in threadtime (``10-07 10:18:41.150 31523 31697 I
  tflite  : ...``) and brief (``I/tflite  (31523): ...``) form. Prefixes are stripped, ANSI escapes removed and
  CRLF/CR line ends normalized (adb shell on a pty turns ``\\n`` into ``\\r\\n``).
* **TFLite version.** No benchmark_model release we found prints it (interpreter.cc carries a TODO "Include the
  TFLite runtime version in the log", b/128420794), so ``tflite_version`` is only filled when some line states it
  (``TfLite version: 2.16.1``, ``LiteRT version: ...``, mlperf-style ``Using TfLite 2.18.0``), e.g. when the
  caller echoes it before the run.
* **Failure messages.** ``Benchmarking failed.`` (benchmark_main.cc), ``Failed to mmap model <path>`` and
  ``Failed to allocate tensors!`` (benchmark_tflite_model.cc), ``Could not open '<path>'.`` (lite/allocation.cc
  ``MMAPAllocation``), ``Node number 57 (BATCH_MATMUL) failed to prepare.`` (runtime), the shell's
  ``<path>: inaccessible or not found`` (mksh, Android 10+; ``not found`` on older releases), ``can't execute:
  Permission denied`` (file not executable, e.g. pushed to /sdcard), ``CANNOT LINK EXECUTABLE`` (bionic linker),
  and ``Segmentation fault``/``Aborted``/``Killed`` from the shell when the process dies on a signal
  (``TFLITE_LOG(FATAL)`` calls ``abort()``).

A crash or ``Benchmarking failed.`` is an error even when the numbers were all printed (an invoke failure in the
timed runs is only reported after the summary); the parsed numbers, if any, are on ``error.partial``.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from enum import Enum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

__all__ = [
    "BenchmarkErrorKind", "BenchmarkOutputError", "BenchmarkResult", "MemoryFootprint", "RunStats",
    "parse_benchmark_output",
]

TAIL_LINES = 20


class BenchmarkErrorKind(str, Enum):
    MODEL_ERROR = "model-error"
    TOOL_MISSING = "tool-missing"
    CRASH = "crash"
    FAILED = "benchmark-failed"
    INCOMPLETE = "incomplete"

    @property
    def retryable(self) -> bool:
        """Whether running the same command again may succeed."""
        return self in (BenchmarkErrorKind.CRASH, BenchmarkErrorKind.INCOMPLETE)


class BenchmarkOutputError(ValueError):
    """benchmark_model failed, or its output holds no complete result."""

    def __init__(self, kind: BenchmarkErrorKind, message: str, *, missing: tuple[str, ...] = (),
                 evidence: tuple[str, ...] = (), tail: tuple[str, ...] = (), exit_code: int | None = None,
                 partial: dict[str, Any] | None = None):
        self.kind = kind
        self.message = message
        self.missing = tuple(missing)
        self.evidence = tuple(evidence)
        self.tail = tuple(tail)
        self.exit_code = exit_code
        self.partial = dict(partial or {})
        text = f"[{kind.value}] {message}"
        if self.tail:
            text += f"\n--- last {len(self.tail)} lines of benchmark_model output ---\n" + "\n".join(self.tail)
        else:
            text += "\n--- benchmark_model printed nothing ---"
        super().__init__(text)

    @property
    def retryable(self) -> bool:
        return self.kind.retryable


class RunStats(BaseModel):
    """One ``count=...`` line. Times in microseconds; all but ``count`` are None when ``count == 0``."""

    model_config = ConfigDict(frozen=True)

    count: int
    first_us: float | None = None
    curr_us: float | None = None
    min_us: float | None = None
    max_us: float | None = None
    avg_us: float | None = None
    std_us: float | None = None
    p5_us: float | None = None
    median_us: float | None = None
    p95_us: float | None = None
    all_same: bool = False  # printed in the short "count=n curr=v" form (min == max): std is 0 by definition
    requested_min_runs: int | None = None  # from the "Running benchmark for at least N iterations" header
    requested_min_secs: float | None = None
    requested_max_secs: float | None = None


class MemoryFootprint(BaseModel):
    model_config = ConfigDict(frozen=True)

    kind: Literal["peak-rss", "delta"]  # "Peak memory footprint (MB)" (~2.2-2.12) / "...delta from the start..."
    init_mb: float
    overall_mb: float
    peak_mb: float | None = None  # --report_peak_memory_footprint: "Overall peak memory footprint (MB) via ..."
    vmrss_mb: float | None = None
    rss_anon_mb: float | None = None
    rss_file_shmem_mb: float | None = None


SummaryFormat = Literal["average-no-stats", "average-inference", "inference-timings"]


class BenchmarkResult(BaseModel):
    """A complete benchmark_model run. ``count``..``std_us`` are the timed runs (not the warm-up)."""

    model_config = ConfigDict(frozen=True)

    count: int  # timed runs actually made (>= num_runs unless max_secs cut them short)
    first_us: float
    curr_us: float
    min_us: float
    max_us: float
    avg_us: float
    std_us: float | None = None
    p5_us: float | None = None
    median_us: float | None = None
    p95_us: float | None = None
    warmup: RunStats | None = None
    requested_num_runs: int | None = None
    requested_min_secs: float | None = None
    requested_max_secs: float | None = None
    init_us: float | None = None
    first_inference_us: float | None = None
    warmup_avg_us: float | None = None
    inference_avg_us: float
    summary_format: SummaryFormat
    model_size_mb: float | None = None
    memory: MemoryFootprint | None = None
    tflite_version: str | None = None
    num_threads: int | None = None
    graph: str | None = None
    use_xnnpack: bool | None = None
    delegates: tuple[str, ...] = ()
    params: dict[str, str] = {}


# --------------------------------------------------------------------------------------------- line cleaning

_NUM = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?|[-+]?(?:nan|inf(?:inity)?)"
_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_SEVERITY = re.compile(r"^(INFO|WARN|WARNING|ERROR|FATAL|VERBOSE|DEBUG)\s*:\s?", re.I)
_PREFIXES = (
    # logcat -v threadtime: "10-07 10:18:41.150 31523 31697 I tflite  : message"
    re.compile(r"^(?:\d{4}-)?\d{2}-\d{2}\s+\d{2}:\d{2}:\d{2}\.\d+\s+\d+\s+\d+\s+(?P<sev>[VDIWEFA])\s+[^:]*?\s*:\s?"),
    # logcat -v brief: "I/tflite  (31523): message"
    re.compile(r"^(?P<sev>[VDIWEFA])/[^\s(:]+\s*\(\s*\d+\s*\):\s?"),
    # logcat -v tag: "I/tflite: message"
    re.compile(r"^(?P<sev>[VDIWEFA])/[^\s:]+\s*:\s"),
    # glog: "I0910 12:36:37.571102 12345 benchmark_model.cc:361] message"
    re.compile(r"^(?P<sev>[IWEF])\d{4}\s+\d{2}:\d{2}:\d{2}\.\d+\s+\d+\s+\S+:\d+\]\s?"),
    # TF C++ logging: "2018-09-10 12:36:37.571102: I tensorflow/.../benchmark_model.cc:361] message"
    re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d+:\s+(?P<sev>[IWEF])\s+\S+:\d+\]\s?"),
)
_LOGCAT_SEVERITY = {"V": "VERBOSE", "D": "DEBUG", "I": "INFO", "W": "WARN", "E": "ERROR", "F": "FATAL", "A": "FATAL"}


@dataclass(frozen=True)
class _Line:
    raw: str  # control characters removed, stripped
    msg: str  # log prefixes removed
    severity: str | None


def _clean(text: str) -> list[_Line]:
    text = _ANSI.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))
    out = []
    for raw in text.split("\n"):
        raw = _CONTROL.sub("", raw).strip()
        if not raw:
            continue
        msg, severity = raw, None
        for _ in range(4):  # "logcat prefix" + "INFO: " + ...
            for rx in _PREFIXES:
                m = rx.match(msg)
                if m:
                    severity = severity or _LOGCAT_SEVERITY.get(m.group("sev").upper())
                    msg = msg[m.end():].strip()
                    break
            else:
                m = _SEVERITY.match(msg)
                if not m:
                    break
                severity = severity or {"WARNING": "WARN"}.get(m.group(1).upper(), m.group(1).upper())
                msg = msg[m.end():].strip()
        out.append(_Line(raw, msg, severity))
    return out


def _num(s: str) -> float:
    return float(s)


def _int(s: str) -> int:
    v = float(s)
    if not math.isfinite(v) or v != int(v):
        raise ValueError(s)
    return int(v)


# --------------------------------------------------------------------------------------------- failures

_TOOL_STRONG = [re.compile(p, re.I) for p in (
    r"inaccessible or not found",
    r"benchmark_model\S*\s*:\s*(?:not found|no such file or directory)",
    r"(?:^|[\s/])(?:sh|mksh|bash|toybox|taskset)\s*:\s.*\bnot found\b",
    r"^(?:/system/bin/)?(?:taskset|sh)\s*:\s*not found",
    r"CANNOT LINK EXECUTABLE",
    r"can'?t execute",
    r"Exec format error",
    r"not executable: (?:32|64)-bit ELF",
    r"syntax error: unexpected",  # mksh interpreting a non-ELF (or wrong-ABI) file as a script
)]
_CRASH = [re.compile(p) for p in (
    r"Segmentation fault", r"\bSIG(?:SEGV|ABRT|BUS|ILL|FPE|KILL)\b", r"Fatal signal \d+",
    r"(?:^|\s)Aborted(?:\s|\(|$)", r"Bus error", r"Illegal instruction", r"Floating point exception",
    r"(?:^|\s)Killed(?:\s|$)", r"terminate called", r"libc\+\+abi: terminating", r"Check failed",
)]
_MODEL = [re.compile(p, re.I) for p in (
    r"Failed to load model", r"Failed to mmap model", r"Could not open\b", r"Failed to allocate tensors",
    r"failed to prepare", r"failed to invoke", r"Failed to invoke", r"Failed to initialize the interpreter",
    r"Failed to apply \S+ delegate", r"Didn't find op for builtin opcode", r"unresolved custom op",
    r"Registration failed", r"not a valid Flatbuffer", r"Model provided has model identifier",
    r"Please specify the name of your TF Lite input file", r"Failed to read the input_layer_value_file",
    r"Disallowed CPU fallback detected",
)]
_TOOL_WEAK = [re.compile(r"Permission denied", re.I)]
_BENCH_FAILED = [re.compile(r"Benchmarking failed", re.I)]


def _find(lines: list[_Line], patterns) -> list[str]:
    return [ln.raw for ln in lines if any(p.search(ln.msg) or p.search(ln.raw) for p in patterns)]


def _kind_from_exit(code: int) -> BenchmarkErrorKind:
    if code in (126, 127):  # POSIX shells: found but not executable / not found
        return BenchmarkErrorKind.TOOL_MISSING
    if code < 0 or 128 < code < 160:  # killed by a signal (Python reports -N, shells 128+N)
        return BenchmarkErrorKind.CRASH
    return BenchmarkErrorKind.FAILED


# --------------------------------------------------------------------------------------------- parsing

_HEADER = re.compile(
    rf"^Running benchmark for (?:at least |max )?(?P<n>\d+) iterations?"
    rf"(?:,? (?:and at least|max) (?P<min>{_NUM}) seconds?)?(?: but terminate if exceeding (?P<max>{_NUM}) seconds?)?",
    re.I)
_STAT_KV = re.compile(rf"(?P<k>[a-z0-9]+)=(?P<v>{_NUM})", re.I)
_SUMMARY = re.compile(r"^(?P<avg>Average )?inference timings in us:\s*(?P<rest>.*)$", re.I)
_SUMMARY_KV = re.compile(rf"(?P<k>[A-Za-z][A-Za-z ()]*?)\s*:\s*(?P<v>{_NUM})")
_PARAM = re.compile(r"^(?P<label>[^\[\]:]{1,80}?)\s*:\s*\[(?P<value>[^\]]*)\]\s*$")
_MODEL_SIZE = re.compile(rf"The input model file size \(MB\):\s*(?P<v>{_NUM})", re.I)
_INIT_SESSION = re.compile(rf"Initialized session in\s*(?P<v>{_NUM})\s*ms", re.I)
_MEM_PEAK = re.compile(rf"Peak memory footprint \(MB\):\s*init=(?P<i>{_NUM})\s+overall=(?P<o>{_NUM})", re.I)
_MEM_DELTA = re.compile(
    rf"Memory footprint delta from the start of the tool \(MB\):\s*init=(?P<i>{_NUM})\s+overall=(?P<o>{_NUM})", re.I)
_MEM_MONITOR = re.compile(rf"Overall peak memory footprint \(MB\) via periodic monitoring:\s*(?P<v>{_NUM})", re.I)
_MEM_RSS = re.compile(rf"^[-+]\s*(?P<k>VmRSS|RssAnnon|RssFile \+ RssShmem)\s*:\s*(?P<v>{_NUM})\s*MB", re.I)
_VERSION = (
    re.compile(r"(?:TensorFlow Lite|TF ?Lite|LiteRT)(?: runtime)? version\s*[:=]?\s*\[?\s*v?"
               r"(?P<v>\d+\.\d+(?:\.\d+)?(?:[-.+]?[0-9A-Za-z]+)*)", re.I),
    re.compile(r"Using TF ?Lite (?P<v>\d+\.\d+(?:\.\d+)?(?:[-.+]?[0-9A-Za-z]+)*)", re.I),
)
_DELEGATE = (
    re.compile(r"Created TensorFlow Lite (?P<d>.+?) delegate", re.I),
    re.compile(r"Explicitly applied (?P<d>\S+) delegate", re.I),
)


def _parse_stats(msg: str) -> RunStats | None:
    if not msg.startswith("count="):
        return None
    kv: dict[str, str] = {}
    for m in _STAT_KV.finditer(msg):
        kv.setdefault(m.group("k").lower(), m.group("v"))
    try:
        count = _int(kv["count"])
    except (KeyError, ValueError):
        return None
    if count == 0:
        return RunStats(count=0)
    f = {}
    for key in ("first", "curr", "min", "max", "avg", "std", "p5", "median", "p95"):
        if key in kv:
            v = _num(kv[key])
            if math.isfinite(v):
                f[key] = v
    if "curr" not in f:
        return None
    if not any(k in f for k in ("first", "min", "max", "avg")):  # "count=n curr=v[(all same)]": min == max
        v = f["curr"]
        return RunStats(count=count, first_us=v, curr_us=v, min_us=v, max_us=v, avg_us=v, std_us=0.0, all_same=True)
    return RunStats(count=count, first_us=f.get("first"), curr_us=f.get("curr"), min_us=f.get("min"),
                    max_us=f.get("max"), avg_us=f.get("avg"), std_us=f.get("std"), p5_us=f.get("p5"),
                    median_us=f.get("median"), p95_us=f.get("p95"))


def _parse_summary(m: re.Match) -> tuple[SummaryFormat, dict[str, float]]:
    rest = m.group("rest")
    out: dict[str, float] = {}
    lead = re.match(rf"^\s*(?P<v>{_NUM})", rest)  # 2017-era "Average inference timings in us: <avg> , Warmup: <w>"
    if lead:
        out["inference_avg_us"] = _num(lead.group("v"))
    labels = {"init": "init_us", "first inference": "first_inference_us", "warmup": "warmup_avg_us",
              "warmup (avg)": "warmup_avg_us", "inference": "inference_avg_us", "inference (avg)": "inference_avg_us",
              "no stats": "inference_avg_us"}
    seen = set()
    for kv in _SUMMARY_KV.finditer(rest):
        label = " ".join(kv.group("k").lower().split())
        seen.add(label)
        if label in labels:
            v = _num(kv.group("v"))
            if math.isfinite(v):
                out[labels[label]] = v
    if not m.group("avg"):
        fmt: SummaryFormat = "inference-timings"
    elif "no stats" in seen or lead:
        fmt = "average-no-stats"
    else:
        fmt = "average-inference"
    return fmt, out


def _bool(v: str) -> bool | None:
    v = v.strip().lower()
    return True if v in ("1", "true", "yes") else False if v in ("0", "false", "no") else None


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-3, abs_tol=1.0)


@dataclass
class _Block:
    header: re.Match | None
    stats: RunStats | None = None

    def with_request(self) -> RunStats | None:
        if self.stats is None or self.header is None:
            return self.stats
        h = self.header
        return self.stats.model_copy(update={
            "requested_min_runs": int(h.group("n")),
            "requested_min_secs": _num(h.group("min")) if h.group("min") else None,
            "requested_max_secs": _num(h.group("max")) if h.group("max") else None,
        })


def parse_benchmark_output(text: str | bytes, exit_code: int | None = None, *,
                           tail_lines: int = TAIL_LINES) -> BenchmarkResult:
    """Parse benchmark_model's combined stdout+stderr.

    ``exit_code`` (optional: old adb versions always report 0) refines the error kind when the text names no
    cause: 126/127 -> tool-missing, a signal -> crash, other non-zero -> benchmark-failed.
    """
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    lines = _clean(text or "")
    tail = tuple(ln.raw for ln in lines[-tail_lines:]) if tail_lines > 0 else ()

    blocks: list[_Block] = []
    summary: tuple[SummaryFormat, dict[str, float]] | None = None
    params: dict[str, str] = {}
    info: dict[str, Any] = {}
    memory: dict[str, Any] = {}
    delegates: list[str] = []
    for ln in lines:
        msg = ln.msg
        h = _HEADER.match(msg)
        if h:
            blocks.append(_Block(h))
            continue
        st = _parse_stats(msg)
        if st is not None:
            if not blocks or blocks[-1].stats is not None:  # a stats line without its header (header lost)
                blocks.append(_Block(None))
            blocks[-1].stats = st
            continue
        sm = _SUMMARY.match(msg)
        if sm:
            summary = _parse_summary(sm)
            continue
        pm = _PARAM.match(msg)
        if pm:
            params[" ".join(pm.group("label").split())] = pm.group("value").strip()
            continue
        if m := _MODEL_SIZE.search(msg):
            info["model_size_mb"] = _num(m.group("v"))
        elif m := _INIT_SESSION.search(msg):
            info["session_init_us"] = _num(m.group("v")) * 1000.0
        elif m := _MEM_DELTA.search(msg):
            memory.update(kind="delta", init_mb=_num(m.group("i")), overall_mb=_num(m.group("o")))
        elif m := _MEM_PEAK.search(msg):
            memory.update(kind="peak-rss", init_mb=_num(m.group("i")), overall_mb=_num(m.group("o")))
        elif m := _MEM_MONITOR.search(msg):
            memory["peak_mb"] = _num(m.group("v"))
        elif m := _MEM_RSS.match(msg):
            key = {"vmrss": "vmrss_mb", "rssannon": "rss_anon_mb"}.get(m.group("k").lower(), "rss_file_shmem_mb")
            memory[key] = _num(m.group("v"))
        for rx in _VERSION:
            if (m := rx.search(msg)) and "tflite_version" not in info:
                info["tflite_version"] = m.group("v").rstrip(".")
        for rx in _DELEGATE:
            if (m := rx.search(msg)) and m.group("d") not in delegates:
                delegates.append(m.group("d"))

    # What the output holds.
    timed_block = blocks[-1] if blocks else None
    timed = timed_block.with_request() if timed_block else None
    warm = blocks[-2].with_request() if len(blocks) >= 2 else None
    lowered = {k.lower(): v for k, v in params.items()}
    partial: dict[str, Any] = {}
    if timed is not None:
        partial.update(timed.model_dump(exclude_none=True))
    if summary:
        partial.update(summary[1])
    complete = (timed is not None and timed.count > 0 and timed.avg_us is not None and summary is not None
                and "inference_avg_us" in summary[1])

    # Failures first: the text's own messages, then the exit status.
    tool = _find(lines, _TOOL_STRONG)
    crash = _find(lines, _CRASH) + [ln.raw for ln in lines if ln.severity == "FATAL"]
    failed = _find(lines, _BENCH_FAILED)
    model = _find(lines, _MODEL)
    weak = _find(lines, _TOOL_WEAK)
    bad_exit = exit_code is not None and exit_code != 0
    kind, evidence = None, []
    if tool:
        kind, evidence = BenchmarkErrorKind.TOOL_MISSING, tool
    elif crash:
        kind, evidence = BenchmarkErrorKind.CRASH, crash
    elif failed or bad_exit or not complete:
        if model:
            kind, evidence = BenchmarkErrorKind.MODEL_ERROR, model
        elif weak:
            kind, evidence = BenchmarkErrorKind.TOOL_MISSING, weak
        elif failed:
            kind, evidence = BenchmarkErrorKind.FAILED, failed
        elif bad_exit:
            kind, evidence = _kind_from_exit(exit_code), [f"exit status {exit_code}"]
    if kind is not None:
        what = {
            BenchmarkErrorKind.TOOL_MISSING: "benchmark_model (or a helper it needs) is missing or cannot run",
            BenchmarkErrorKind.CRASH: "benchmark_model crashed",
            BenchmarkErrorKind.MODEL_ERROR: "benchmark_model could not load, prepare or run the model",
            BenchmarkErrorKind.FAILED: "benchmark_model reported failure",
        }[kind]
        shown = "; ".join(dict.fromkeys(evidence))[:600]
        code = f" (exit status {exit_code})" if bad_exit else ""
        raise BenchmarkOutputError(kind, f"{what}{code}: {shown}", evidence=tuple(dict.fromkeys(evidence)),
                                   tail=tail, exit_code=exit_code, partial=partial)

    # No failure message: is the result all there?
    missing = []
    if not lines:
        raise BenchmarkOutputError(BenchmarkErrorKind.INCOMPLETE, "benchmark_model produced no output",
                                   missing=("count=... line of the timed runs", "inference timings summary"),
                                   tail=tail, exit_code=exit_code)
    if not blocks:
        missing.append("the timed runs' statistics line ('count=... first=... curr=... min=... max=... avg=...'): "
                       "no 'Running benchmark for ...' header or 'count=' line at all")
    elif timed is None:
        missing.append("the timed runs' statistics line ('count=...') after the last 'Running benchmark for ...' "
                       "header: the output stops during the timed runs")
    elif timed.count == 0:
        missing.append("timed runs: the statistics line says count=0 (--num_runs=0 / --dry_run?)")
    elif timed.avg_us is None:
        missing.append("avg= on the timed runs' statistics line")
    if summary is None:
        missing.append("the summary line ('Inference timings in us: Init: ..., Inference (avg): ...' or "
                       "'Average inference timings in us: ...')")
    elif "inference_avg_us" not in summary[1]:
        missing.append("the inference average in the summary line")
    if missing:
        if len(blocks) == 1 and timed is not None and summary is None:
            missing.append("(only one 'Running benchmark' section was printed, i.e. the warm-up; its count= line "
                           "is not taken for the timed runs)")
        raise BenchmarkOutputError(BenchmarkErrorKind.INCOMPLETE,
                                   "benchmark_model output is incomplete: missing " + "; ".join(missing),
                                   missing=tuple(missing), tail=tail, exit_code=exit_code, partial=partial)
    assert timed is not None and summary is not None
    fmt, sv = summary
    for field, value in (("first_us", timed.first_us), ("curr_us", timed.curr_us), ("min_us", timed.min_us),
                         ("max_us", timed.max_us)):
        if value is None:
            raise BenchmarkOutputError(BenchmarkErrorKind.INCOMPLETE,
                                       f"the timed runs' statistics line has no {field.removesuffix('_us')}=",
                                       missing=(field,), tail=tail, exit_code=exit_code, partial=partial)

    # Consistency: the summary repeats the same doubles as the statistics lines.
    if not _close(sv["inference_avg_us"], timed.avg_us):
        raise BenchmarkOutputError(
            BenchmarkErrorKind.INCOMPLETE,
            f"inconsistent output: the summary's inference average {sv['inference_avg_us']:g} us does not match the "
            f"timed runs' avg={timed.avg_us:g} us (pieces of different runs, or a garbled line)",
            tail=tail, exit_code=exit_code, partial=partial)
    if warm is not None and warm.avg_us is not None and "warmup_avg_us" in sv and not _close(sv["warmup_avg_us"],
                                                                                             warm.avg_us):
        raise BenchmarkOutputError(
            BenchmarkErrorKind.INCOMPLETE,
            f"inconsistent output: the summary's warm-up average {sv['warmup_avg_us']:g} us does not match the "
            f"warm-up runs' avg={warm.avg_us:g} us", tail=tail, exit_code=exit_code, partial=partial)

    num_threads = None
    for key in ("num threads", "#threads used for cpu inference"):
        if key in lowered:
            try:
                num_threads = int(lowered[key])
            except ValueError:
                pass
            break
    requested = timed.requested_min_runs
    if requested is None:
        for key in ("min num runs", "num runs"):
            if key in lowered and lowered[key].lstrip("-").isdigit():
                requested = int(lowered[key])
                break
    return BenchmarkResult(
        count=timed.count, first_us=timed.first_us, curr_us=timed.curr_us, min_us=timed.min_us,
        max_us=timed.max_us, avg_us=timed.avg_us, std_us=timed.std_us, p5_us=timed.p5_us,
        median_us=timed.median_us, p95_us=timed.p95_us, warmup=warm,
        requested_num_runs=requested, requested_min_secs=timed.requested_min_secs,
        requested_max_secs=timed.requested_max_secs,
        init_us=sv.get("init_us", info.get("session_init_us")), first_inference_us=sv.get("first_inference_us"),
        warmup_avg_us=sv.get("warmup_avg_us"), inference_avg_us=sv["inference_avg_us"], summary_format=fmt,
        model_size_mb=info.get("model_size_mb"),
        memory=MemoryFootprint(**memory) if "init_mb" in memory else None,
        tflite_version=info.get("tflite_version"), num_threads=num_threads,
        graph=lowered.get("graph") or None, use_xnnpack=_bool(lowered["use xnnpack"]) if "use xnnpack" in lowered
        else None, delegates=tuple(delegates), params=params,
    )
