"""benchmark_model output parsing and Android device profiles (issue 7, tflite-android). Pure parsing, no device.

The fixtures follow the formats documented in profilers/android/benchmark_output.py; each says which TFLite
version it stands for and where its lines come from. Numbers in the "published" fixtures are the published ones.
"""
from __future__ import annotations

import json

import pytest

from profilers.android.benchmark_output import (
    BenchmarkErrorKind,
    BenchmarkOutputError,
    parse_benchmark_output,
)
from profilers.android.profiles import DeviceProfile, ProfileError, builtin_dir, list_profiles, load_profile

K = BenchmarkErrorKind

# TFLite 1.12: TI Processor SDK Linux docs (tensorflow-lite-1.12/examples), published output. No log prefixes,
# "Running benchmark for N iterations", warm-up in the short all-same form, "no stats:" summary.
TFLITE_1_12 = """\
STARTING!
Num runs: [50]
Inter-run delay (seconds): [-1]
Num threads: [1]
Benchmark name: []
Output prefix: []
Warmup runs: [1]
Graph: [mobilenet_v1_1.0_224_quant.tflite]
Input layers: []
Input shapes: []
Use nnapi : [0]
Loaded model mobilenet_v1_1.0_224_quant.tflite
resolved reporter
Initialized session in 4.452ms
Running benchmark for 1 iterations
count=1 curr=146161

Running benchmark for 50 iterations
count=50 first=137789 curr=137254 min=137079 max=143416 avg=137722 std=896

Average inference timings in us: Warmup: 146161, Init: 4452, no stats: 137722
"""

# TFLite 2.0 (a published run built from the v2.0.0 tag; timing lines as published, parameter lines as 2.0 prints
# them). "at least ... seconds" headers, still the "no stats:" summary.
TFLITE_2_0 = """\
STARTING!
Min num runs: [100]
Min runs duration (seconds): [1]
Max runs duration (seconds): [150]
Inter-run delay (seconds): [-1]
Num threads: [1]
Benchmark name: []
Output prefix: []
Min warmup runs: [1]
Min warmup runs duration (seconds): [0.5]
Graph: [model.tflite]
Input layers: [inputs,states]
Input shapes: [1,64:1,2464]
Use nnapi : [0]
Use gpu : [0]
Allow fp16 : [0]
Enable op profiling: [0]
Loaded model model.tflite
resolved reporter
Initialized session in 0.896ms
Running benchmark for at least 1 iterations and at least 0.5 seconds but terminate if exceeding 150 seconds.
count=215 first=12231 curr=2106 min=2065 max=12231 avg=2331.42 std=746

Running benchmark for at least 100 iterations and at least 1 seconds but terminate if exceeding 150 seconds.
count=459 first=2143 curr=2101 min=2056 max=2656 avg=2177.1 std=124

Average inference timings in us: Warmup: 2331.42, Init: 896, no stats: 2177.1
"""

# TFLite ~2.1: tools/benchmark/README.md (--enable_op_profiling=true): the op-profiling summary prints its own
# "Timings (microseconds): count=..." line after the runs; the summary says "Inference:". Run-stat lines made up
# to agree with the published summary (79760.9).
TFLITE_2_1_OP_PROFILING = """\
STARTING!
Min num runs: [50]
Num threads: [1]
Min warmup runs: [1]
Graph: [/data/local/tmp/mobilenet_quant_v1_224.tflite]
Enable op profiling: [1]
Loaded model /data/local/tmp/mobilenet_quant_v1_224.tflite
Initialized session in 38.467ms.
Running benchmark for at least 1 iterations and at least 0.5 seconds but terminate if exceeding 150 seconds.
count=7 first=88913 curr=82150 min=80112 max=88913 avg=83235 std=2810

Running benchmark for at least 50 iterations and at least 1 seconds but terminate if exceeding 150 seconds.
count=50 first=79501 curr=81466 min=77401 max=88290 avg=79760.9 std=1931

============================== Run Order ==============================
\t             [node type]\t  [start]\t  [first]\t [avg ms]\t     [%]\t  [cdf%]\t  [mem KB]\t[times called]\t[Name]
\t                 CONV_2D\t    0.000\t    4.269\t    4.269\t  0.107%\t  0.107%\t     0.000\t        0\t[MobilenetV1/MobilenetV1/Conv2d_0/Relu6]
Number of nodes executed: 31
Timings (microseconds): count=50 first=79449 curr=81350 min=77385 max=88213 avg=79732 std=1929
Memory (bytes): count=0
31 nodes observed


Average inference timings in us: Warmup: 83235, Init: 38467, Inference: 79760.9
"""

# TFLite ~2.3/2.4 (NXP i.MX8 build published in a snap README, NNAPI run; the exact version is not stated there). "Inference timings in us: Init: ...,
# First inference: ..." summary, the warm-up in the all-same form (count=1), an exponent-form warm-up average, and
# the ~2.2-2.12 "Peak memory footprint" line. Runtime lines already carry "INFO: ".
TFLITE_2_4_NNAPI = """\
STARTING!
Log parameter values verbosely: [0]
Graph: [/snap/itrue-tensorflow-imx8/current/usr/share/models/mobilenet_v1_1.0_224_quant.tflite]
Use NNAPI: [1]
NNAPI accelerators available: [vsi-npu]
Loaded model /snap/itrue-tensorflow-imx8/current/usr/share/models/mobilenet_v1_1.0_224_quant.tflite
INFO: Created TensorFlow Lite delegate for NNAPI.
Explicitly applied NNAPI delegate, and the model graph will be completely executed by the delegate.
The input model file size (MB): 4.27635
Initialized session in 13.386ms.
Running benchmark for at least 1 iterations and at least 0.5 seconds but terminate if exceeding 150 seconds.
count=1 curr=11403859

Running benchmark for at least 50 iterations and at least 1 seconds but terminate if exceeding 150 seconds.
count=260 first=3918 curr=3711 min=3700 max=4026 avg=3756.87 std=35

Inference timings in us: Init: 13386, First inference: 11403859, Warmup (avg): 1.14039e+07, Inference (avg): 3756.87
Note: as the benchmark tool itself affects memory footprint, the following is only APPROXIMATE to the actual memory footprint of the model at runtime. Take the information at your discretion.
Peak memory footprint (MB): init=0 overall=15.3438
"""

# TFLite ~2.13-2.16: every tool line prefixed by TFLITE_LOG ("INFO: "), "#threads used for CPU inference",
# "Use xnnpack", the "Memory footprint delta" line and, with --report_peak_memory_footprint=true, the periodic peak
# and VmRSS lines (benchmark_model.cc, "exeution" sic). Shape as run by this backend: taskset 80, --num_threads=1.
TFLITE_2_16 = """\
INFO: STARTING!
INFO: Log parameter values verbosely: [0]
INFO: Min num runs: [100]
INFO: Min runs duration (seconds): [2]
INFO: Min warmup runs: [20]
INFO: Min warmup runs duration (seconds): [1]
INFO: Report the peak memory footprint: [1]
INFO: Graph: [/data/local/tmp/hil/seqnet_pixel4_a0_int8.tflite]
INFO: Signature to run: []
INFO: #threads used for CPU inference: [1]
INFO: Use xnnpack: [1]
INFO: Loaded model /data/local/tmp/hil/seqnet_pixel4_a0_int8.tflite
INFO: Initialized TensorFlow Lite runtime.
INFO: Created TensorFlow Lite XNNPACK delegate for CPU.
INFO: Explicitly applied XNNPACK delegate, and the model graph will be completely executed by the delegate.
INFO: The input model file size (MB): 3.41712
INFO: Initialized session in 31.472ms.
INFO: Running benchmark for at least 20 iterations and at least 1 seconds but terminate if exceeding 150 seconds.
INFO: count=97 first=12730 curr=10262 min=10198 max=12730 avg=10318.4 std=291

INFO: Running benchmark for at least 100 iterations and at least 2 seconds but terminate if exceeding 150 seconds.
INFO: count=194 first=10271 curr=10233 min=10188 max=10598 avg=10260.9 std=61

INFO: Inference timings in us: Init: 31472, First inference: 12730, Warmup (avg): 10318.4, Inference (avg): 10260.9
INFO: Note: as the benchmark tool itself affects memory footprint, the following is only APPROXIMATE to the actual memory footprint of the model at runtime. Take the information at your discretion.
INFO: Memory footprint delta from the start of the tool (MB): init=8.98828 overall=11.2305
INFO: Overall peak memory footprint (MB) via periodic monitoring: 14.6367
INFO: Memory status at the end of exeution:
INFO: - VmRSS              : 15 MB
INFO: + RssAnnon           : 6 MB
INFO: + RssFile + RssShmem : 9 MB
"""

# TFLite 2.17+/LiteRT: StatWithPercentiles appends p5/median/p95 (xla/tsl/util/stats_calculator.h). Published
# Termux run of android_aarch64_benchmark_model (note the stray blank lines while it ran).
TFLITE_PERCENTILES = """\
INFO: STARTING!
INFO: Log parameter values verbosely: [0]
INFO: Min num runs: [1000]
INFO: Min warmup runs: [5]
INFO: Graph: [./models/tiny_muaalem_float32.tflite]
INFO: Signature to run: []
INFO: Loaded model ./models/tiny_muaalem_float32.tflite
INFO: Initialized TensorFlow Lite runtime.
INFO: Created TensorFlow Lite XNNPACK delegate for CPU.
VERBOSE: Replacing 2168 out of 2168 node(s) with delegate (TfLiteXNNPackDelegate) node, yielding 1 partitions for subgraph 0.
INFO: The input model file size (MB): 24.6229
INFO: Initialized session in 119.515ms.
INFO: Running benchmark for at least 5 iterations and at least 0.5 seconds but terminate if exceeding 150 seconds.
INFO: count=9 first=87112 curr=51629 min=51629 max=87112 avg=58147.4 std=11478 p5=51629 median=51962 p95=87112

INFO: Running benchmark for at least 1000 iterations and at least 1 seconds but terminate if exceeding 150 seconds.




INFO: count=1000 first=52162 curr=49785 min=49088 max=686105 avg=63743.2 std=60716 p5=49620 median=51891 p95=68628

INFO: Inference timings in us: Init: 119515, First inference: 87112, Warmup (avg): 58147.4, Inference (avg): 63743.2
INFO: Note: as the benchmark tool itself affects memory footprint, the following is only APPROXIMATE to the actual memory footprint of the model at runtime. Take the information at your discretion.
INFO: Memory footprint delta from the start of the tool (MB): init=55.4961 overall=55.4961
"""

# ~2.13+ shape, a slow model: doubles past 999999.5 us come out in exponent form (default ostream precision 6).
# std left out and no memory lines (both optional).
EXPONENT_NO_STD_NO_MEMORY = """\
INFO: STARTING!
INFO: Graph: [/data/local/tmp/big.tflite]
INFO: #threads used for CPU inference: [1]
INFO: Loaded model /data/local/tmp/big.tflite
INFO: Initialized session in 1451.51ms.
INFO: Running benchmark for at least 1 iterations and at least 0.5 seconds but terminate if exceeding 150 seconds.
INFO: count=1 curr=1312408

INFO: Running benchmark for at least 3 iterations and at least 1 seconds but terminate if exceeding 150 seconds.
INFO: count=3 first=1234001 curr=1236500 min=1233000 max=1236500 avg=1.23450e+06

INFO: Inference timings in us: Init: 1451507, First inference: 1312408, Warmup (avg): 1.31241e+06, Inference (avg): 1.2345e+06
"""

# The timed runs in the all-same form (min == max; "(all same)" only when count > 1), std therefore implicit.
ALL_SAME_TIMED = """\
INFO: Graph: [/data/local/tmp/tiny.tflite]
INFO: Running benchmark for at least 1 iterations and at least 0.5 seconds but terminate if exceeding 150 seconds.
INFO: count=4120 first=180 curr=118 min=117 max=180 avg=120.6 std=2

INFO: Running benchmark for at least 50 iterations and at least 1 seconds but terminate if exceeding 150 seconds.
INFO: count=8400 curr=119(all same)

INFO: Inference timings in us: Init: 905, First inference: 180, Warmup (avg): 120.6, Inference (avg): 119
"""


def _logcat(text: str, *, crlf: bool = True) -> str:
    """Wrap each line as `adb logcat -v threadtime` prints the tflite tag, add ANSI colours, noise lines, CRLF."""
    out = []
    for i, line in enumerate(text.splitlines()):
        if not line.strip():
            continue
        out.append(f"\x1b[32m10-07 10:18:41.{100 + i:03d}  4242  4242 I tflite  : {line}\x1b[0m")
        if i % 5 == 2:
            out.append("10-07 10:18:41.150  1187  1230 W ActivityManager: Slow operation: 61ms so far, now at startProcess")
            out.append('WARNING: linker: "/data/local/tmp/benchmark_model" unused DT entry: type 0x6ffffffe arg 0x1d68')
            out.append("W/libc    ( 4242): Access denied finding property \"ro.vendor.perf.scroll_opt\"")
    return ("\r\n" if crlf else "\n").join(out) + "\r\n"


# --------------------------------------------------------------------------------------------- successful runs

def test_tflite_1_12_published_output():
    r = parse_benchmark_output(TFLITE_1_12)
    assert (r.count, r.first_us, r.curr_us, r.min_us, r.max_us, r.avg_us, r.std_us) == (
        50, 137789, 137254, 137079, 143416, 137722, 896)
    assert r.warmup is not None and r.warmup.all_same and r.warmup.count == 1 and r.warmup.avg_us == 146161
    assert (r.init_us, r.warmup_avg_us, r.inference_avg_us) == (4452, 146161, 137722)
    assert r.first_inference_us is None  # not printed before ~2.2
    assert r.summary_format == "average-no-stats"
    assert r.requested_num_runs == 50 and r.num_threads == 1 and r.graph == "mobilenet_v1_1.0_224_quant.tflite"
    assert r.memory is None and r.tflite_version is None


def test_tflite_2_0_at_least_headers():
    r = parse_benchmark_output(TFLITE_2_0)
    assert (r.count, r.avg_us, r.std_us) == (459, 2177.1, 124)
    assert r.count > r.requested_num_runs == 100  # num_runs is a minimum: count= is what ran
    assert (r.requested_min_secs, r.requested_max_secs) == (1.0, 150.0)
    assert r.warmup.count == 215 and r.warmup.requested_min_runs == 1 and r.warmup.requested_min_secs == 0.5
    assert (r.init_us, r.warmup_avg_us, r.inference_avg_us) == (896, 2331.42, 2177.1)
    assert r.params["Input shapes"] == "1,64:1,2464"


def test_tflite_2_1_op_profiling_timings_line_is_not_the_timed_runs():
    r = parse_benchmark_output(TFLITE_2_1_OP_PROFILING)
    assert r.avg_us == 79760.9 and r.first_us == 79501  # not the profiler's "Timings (microseconds): avg=79732"
    assert r.summary_format == "average-inference"
    assert (r.init_us, r.warmup_avg_us, r.inference_avg_us) == (38467, 83235, 79760.9)


def test_tflite_2_4_exponent_warmup_and_peak_memory():
    r = parse_benchmark_output(TFLITE_2_4_NNAPI)
    assert (r.count, r.avg_us, r.min_us, r.max_us) == (260, 3756.87, 3700, 4026)
    assert r.warmup.all_same and r.warmup.avg_us == 11403859 and r.warmup.std_us == 0.0
    assert r.warmup_avg_us == pytest.approx(1.14039e7) and r.first_inference_us == 11403859
    assert r.summary_format == "inference-timings"
    assert r.memory.kind == "peak-rss" and (r.memory.init_mb, r.memory.overall_mb) == (0, 15.3438)
    assert r.model_size_mb == 4.27635 and "NNAPI" in r.delegates


def test_tflite_2_16_prefixed_with_memory_monitor():
    r = parse_benchmark_output(TFLITE_2_16)
    assert (r.count, r.first_us, r.curr_us, r.min_us, r.max_us, r.avg_us, r.std_us) == (
        194, 10271, 10233, 10188, 10598, 10260.9, 61)
    assert r.requested_num_runs == 100 and r.count == 194
    assert (r.init_us, r.first_inference_us, r.warmup_avg_us, r.inference_avg_us) == (31472, 12730, 10318.4, 10260.9)
    assert r.num_threads == 1 and r.use_xnnpack is True and r.graph.endswith("seqnet_pixel4_a0_int8.tflite")
    assert r.delegates == ("XNNPACK",)
    m = r.memory
    assert (m.kind, m.init_mb, m.overall_mb, m.peak_mb) == ("delta", 8.98828, 11.2305, 14.6367)
    assert (m.vmrss_mb, m.rss_anon_mb, m.rss_file_shmem_mb) == (15, 6, 9)


def test_newest_percentiles():
    r = parse_benchmark_output(TFLITE_PERCENTILES)
    assert (r.count, r.avg_us, r.p5_us, r.median_us, r.p95_us) == (1000, 63743.2, 49620, 51891, 68628)
    assert r.warmup.median_us == 51962 and r.warmup.count == 9
    assert r.requested_num_runs == 1000 and r.model_size_mb == 24.6229


def test_exponent_numbers_missing_std_and_memory():
    r = parse_benchmark_output(EXPONENT_NO_STD_NO_MEMORY)
    assert r.avg_us == 1.2345e6 and r.inference_avg_us == 1.2345e6 and r.warmup_avg_us == pytest.approx(1312410)
    assert r.std_us is None and r.memory is None and r.p5_us is None
    assert r.count == 3 and r.init_us == 1451507


def test_timed_runs_all_same_form():
    r = parse_benchmark_output(ALL_SAME_TIMED)
    assert (r.count, r.first_us, r.curr_us, r.min_us, r.max_us, r.avg_us, r.std_us) == (8400, 119, 119, 119, 119, 119, 0)


def test_logcat_crlf_ansi_and_interleaved_noise():
    r = parse_benchmark_output(_logcat(TFLITE_2_16))
    assert (r.count, r.avg_us, r.inference_avg_us) == (194, 10260.9, 10260.9)
    assert r.memory.peak_mb == 14.6367 and r.num_threads == 1
    r = parse_benchmark_output(TFLITE_2_0.replace("\n", "\r\n"))
    assert r.avg_us == 2177.1
    r = parse_benchmark_output("\x1b[1m" + TFLITE_1_12.replace("count=50", "\x1b[0;33mcount=50\x1b[0m"))
    assert r.count == 50


def test_logcat_brief_format_and_bytes():
    brief = "\n".join(f"I/tflite  ( 4242): {ln}" for ln in TFLITE_2_4_NNAPI.splitlines() if ln.strip())
    assert parse_benchmark_output(brief.encode()).avg_us == 3756.87


def test_last_of_several_runs_is_taken():
    second = TFLITE_PERCENTILES.replace("1000 iterations", "5 iterations").replace(
        "count=1000 first=52162 curr=49785 min=49088 max=686105 avg=63743.2",
        "count=24 first=42142 curr=42232 min=42142 max=42763 avg=42435.4").replace(
        "Inference (avg): 63743.2", "Inference (avg): 42435.4")
    r = parse_benchmark_output(TFLITE_PERCENTILES + "~/muaalem-tf $ ./android_aarch64_benchmark_model ...\n" + second)
    assert (r.count, r.avg_us) == (24, 42435.4)


def test_version_line_when_printed():
    r = parse_benchmark_output("INFO: TfLite version: 2.16.1\n" + TFLITE_2_16)
    assert r.tflite_version == "2.16.1"


def test_success_ignores_nonfatal_permission_and_open_warnings():
    noisy = TFLITE_2_16.replace(
        "INFO: Initialized TensorFlow Lite runtime.\n",
        "INFO: Initialized TensorFlow Lite runtime.\nWARNING: Could not open /sys/kernel/debug/perf: Permission denied\n")
    assert parse_benchmark_output(noisy, exit_code=0).avg_us == 10260.9


# --------------------------------------------------------------------------------------------- incomplete output

@pytest.mark.parametrize("text", ["", "\n\r\n  \n", "\x1b[0m"])
def test_no_output(text):
    with pytest.raises(BenchmarkOutputError) as e:
        parse_benchmark_output(text)
    assert e.value.kind is K.INCOMPLETE and "no output" in str(e.value) and e.value.retryable


def test_garbage():
    junk = "lorem ipsum\n\x00\x07\xff binary junk count=abc\nerror: device offline?\nsome=1 other=2\n"
    with pytest.raises(BenchmarkOutputError) as e:
        parse_benchmark_output(junk)
    assert e.value.kind is K.INCOMPLETE
    assert "count=" in e.value.message and "summary" in e.value.message
    assert e.value.tail[-1] == "some=1 other=2"


def _cut_after(text: str, marker: str, keep_marker: bool = True) -> str:
    i = text.index(marker)
    return text[: i + len(marker)] if keep_marker else text[:i]


def test_connection_dropped_during_timed_runs_does_not_use_warmup():
    cut = _cut_after(TFLITE_2_16, "INFO: Running benchmark for at least 100 iterations")
    with pytest.raises(BenchmarkOutputError) as e:
        parse_benchmark_output(cut)
    err = e.value
    assert err.kind is K.INCOMPLETE and "stops during the timed runs" in err.message
    assert "avg_us" not in err.partial  # the warm-up line was not promoted
    assert err.tail[-1].startswith("INFO: Running benchmark for at least 100 iterations")


def test_connection_dropped_after_warmup_stats():
    cut = _cut_after(TFLITE_2_16, "avg=10318.4 std=291\n")
    with pytest.raises(BenchmarkOutputError) as e:
        parse_benchmark_output(cut)
    assert e.value.kind is K.INCOMPLETE and "only one 'Running benchmark' section" in e.value.message


def test_connection_dropped_mid_line():
    cut = _cut_after(TFLITE_2_16, "INFO: count=194 first=10271 curr=10233 min=101")
    with pytest.raises(BenchmarkOutputError) as e:
        parse_benchmark_output(cut)
    assert e.value.kind is K.INCOMPLETE and "summary line" in e.value.message


def test_connection_dropped_in_summary_line():
    cut = _cut_after(TFLITE_2_16, "Warmup (avg): 10318.4, Inference (avg): 102")
    with pytest.raises(BenchmarkOutputError) as e:  # "102" is not the avg: caught by the consistency check
        parse_benchmark_output(cut)
    assert e.value.kind is K.INCOMPLETE and "inconsistent" in e.value.message
    cut = _cut_after(TFLITE_2_16, "Warmup (avg): 10318.4, Infer")
    with pytest.raises(BenchmarkOutputError) as e:
        parse_benchmark_output(cut)
    assert "inference average in the summary line" in e.value.message


def test_summary_without_stats_lines():
    with pytest.raises(BenchmarkOutputError) as e:
        parse_benchmark_output("... tflite  : Average inference timings in us: Warmup: 91471, Init: 4108, Inference: 80660.1")
    assert e.value.kind is K.INCOMPLETE and "statistics line" in e.value.message


def test_pieces_of_different_runs_are_refused():
    mixed = _cut_after(TFLITE_2_16, "avg=10260.9 std=61\n") + "INFO: Inference timings in us: Init: 1, First inference: 2, Warmup (avg): 10318.4, Inference (avg): 555\n"
    with pytest.raises(BenchmarkOutputError) as e:
        parse_benchmark_output(mixed)
    assert e.value.kind is K.INCOMPLETE and "inconsistent" in e.value.message


def test_count_zero_dry_run():
    dry = """INFO: Running benchmark for at least 0 iterations and at least -1 seconds but terminate if exceeding 150 seconds.
INFO: count=0

INFO: Running benchmark for at least 0 iterations and at least -1 seconds but terminate if exceeding 150 seconds.
INFO: count=0

INFO: Inference timings in us: Init: 2011, First inference: 0, Warmup (avg): nan, Inference (avg): nan
"""
    with pytest.raises(BenchmarkOutputError) as e:
        parse_benchmark_output(dry)
    assert e.value.kind is K.INCOMPLETE and "count=0" in e.value.message


def test_error_message_carries_last_lines():
    long = "\n".join(f"INFO: line {i}" for i in range(100))
    with pytest.raises(BenchmarkOutputError) as e:
        parse_benchmark_output(long)
    assert len(e.value.tail) == 20 and e.value.tail[-1] == "INFO: line 99"
    assert "last 20 lines" in str(e.value) and "INFO: line 99" in str(e.value)


# --------------------------------------------------------------------------------------------- failures

MODEL_MISSING = """\
INFO: STARTING!
INFO: Log parameter values verbosely: [0]
INFO: Graph: [/data/local/tmp/hil/missing.tflite]
ERROR: Could not open '/data/local/tmp/hil/missing.tflite'.
ERROR: Failed to mmap model /data/local/tmp/hil/missing.tflite
ERROR: Benchmarking failed.
"""

# Published (Termux, int8 model with a BATCH_MATMUL the kernel cannot prepare).
MODEL_PREPARE_FAILED = """\
INFO: STARTING!
INFO: Min num runs: [5]
INFO: Graph: [./models/tiny_muaalem_int8.tflite]
INFO: Loaded model ./models/tiny_muaalem_int8.tflite
INFO: Initialized TensorFlow Lite runtime.
INFO: Created TensorFlow Lite XNNPACK delegate for CPU.
VERBOSE: Replacing 2136 out of 2168 node(s) with delegate (TfLiteXNNPackDelegate) node, yielding 65 partitions for subgraph 0.
ERROR: tensorflow/lite/kernels/batch_matmul.cc:353 (lhs_data->type == kTfLiteFloat32 && rhs_data->type == kTfLiteInt8) || lhs_data->type == rhs_data->type was not true.
ERROR: Node number 57 (BATCH_MATMUL) failed to prepare.
ERROR: Failed to allocate tensors!
ERROR: Benchmarking failed.
"""


@pytest.mark.parametrize("text,exit_code,needle", [
    (MODEL_MISSING, 1, "Could not open"),
    (MODEL_PREPARE_FAILED, None, "failed to prepare"),
    ("STARTING!\nGraph: [m.tflite]\nFailed to load model m.tflite\nBenchmarking failed.\n", None, "Failed to load model"),
    # An invoke failure in the timed runs is only reported after the summary: still an error.
    (TFLITE_2_16 + "ERROR: Node number 12 (CONV_2D) failed to invoke.\nERROR: Benchmarking failed.\n", 1, "failed to invoke"),
])
def test_model_errors(text, exit_code, needle):
    with pytest.raises(BenchmarkOutputError) as e:
        parse_benchmark_output(text, exit_code=exit_code)
    assert e.value.kind is K.MODEL_ERROR and not e.value.retryable
    assert needle in e.value.message and needle in str(e.value)


@pytest.mark.parametrize("text,exit_code", [
    ("/system/bin/sh: /data/local/tmp/benchmark_model: inaccessible or not found\n", 127),  # mksh, Android 10+
    ("/system/bin/sh: /data/local/tmp/benchmark_model: not found\n", None),  # older mksh
    ("/system/bin/sh: taskset: inaccessible or not found\n", 127),
    ("/system/bin/sh: /sdcard/benchmark_model: can't execute: Permission denied\n", 126),
    ('CANNOT LINK EXECUTABLE "/data/local/tmp/benchmark_model": library "libhexagon_interface.so" not found\n', 1),
    ("/system/bin/sh: /data/local/tmp/benchmark_model: Permission denied\r\n", None),
    ("", 127),  # nothing printed, but the shell says "command not found"
])
def test_tool_missing(text, exit_code):
    with pytest.raises(BenchmarkOutputError) as e:
        parse_benchmark_output(text, exit_code=exit_code)
    assert e.value.kind is K.TOOL_MISSING and not e.value.retryable


@pytest.mark.parametrize("text,exit_code", [
    (_cut_after(TFLITE_2_16, "INFO: Running benchmark for at least 100 iterations and at least 2 seconds but terminate "
                             "if exceeding 150 seconds.\n") + "Segmentation fault \n", 139),
    (_cut_after(TFLITE_2_16, "INFO: Initialized session in 31.472ms.\n") +
     "FATAL: The size of in.bin is 12 bytes. It should be 150528 bytes.\nAborted \n", 134),
    (_cut_after(TFLITE_2_16, "INFO: Initialized session in 31.472ms.\n"), -11),  # killed by SIGSEGV, no message
    (_cut_after(TFLITE_2_16, "INFO: Initialized session in 31.472ms.\n") + "Killed\n", 137),  # low-memory killer
])
def test_crash(text, exit_code):
    with pytest.raises(BenchmarkOutputError) as e:
        parse_benchmark_output(text, exit_code=exit_code)
    assert e.value.kind is K.CRASH and e.value.retryable


def test_crash_after_complete_output_keeps_partial_numbers():
    with pytest.raises(BenchmarkOutputError) as e:
        parse_benchmark_output(TFLITE_2_16 + "Segmentation fault\n")
    assert e.value.kind is K.CRASH
    assert e.value.partial["avg_us"] == 10260.9 and e.value.partial["inference_avg_us"] == 10260.9


def test_benchmark_failed_generic_and_exit_status():
    with pytest.raises(BenchmarkOutputError) as e:
        parse_benchmark_output(_cut_after(TFLITE_2_16, "INFO: Initialized session in 31.472ms.\n") +
                               "ERROR: Benchmarking failed.\n")
    assert e.value.kind is K.FAILED and "Benchmarking failed" in e.value.message
    with pytest.raises(BenchmarkOutputError) as e:  # complete text, but the process said it failed
        parse_benchmark_output(TFLITE_2_16, exit_code=1)
    assert e.value.kind is K.FAILED and e.value.exit_code == 1 and "exit status 1" in e.value.message


# --------------------------------------------------------------------------------------------- device profiles

def test_builtin_profiles():
    names = list_profiles()
    assert {"pixel4", "kirin9000"} <= set(names)
    for name in names:
        p = load_profile(name)
        assert p.name == name and (int(p.taskset_mask, 16) >> p.core_index) & 1
        assert p.benchmark.num_threads == 1 and p.description and p.sources
        assert all(path.startswith(f"/sys/devices/system/cpu/cpu{p.core_index}/") for path in p.cpufreq_paths.values())


def test_pixel4_and_kirin9000_facts():
    px = load_profile("pixel4")
    assert (px.core_index, px.taskset_mask, px.max_freq_khz, px.cpu_core_model) == (7, "80", 2841600, "Cortex-A76")
    assert "SM8150" in px.soc and px.android.min_sdk == 29
    k = load_profile("kirin9000")
    assert (k.core_index, k.taskset_mask, k.max_freq_khz, k.cpu_core_model) == (7, "80", 3130000, "Cortex-A77")
    assert k.android.fixed_performance_mode_command(29) is None
    assert px.android.fixed_performance_mode_command(30) == "cmd power set-fixed-performance-mode-enabled true"


def test_benchmark_args_and_thermal_matching():
    p = load_profile("pixel4")
    args = p.benchmark_args("/data/local/tmp/m.tflite")
    assert args[0] == "--graph=/data/local/tmp/m.tflite"
    assert "--num_threads=1" in args and "--use_xnnpack=true" in args and "--num_runs=100" in args
    assert p.taskset_prefix() == ["taskset", "80"]
    zones = {"/sys/class/thermal/thermal_zone1": "cpu-0-0-usr", "/sys/class/thermal/thermal_zone12": "cpu-1-7-usr\n",
             "/sys/class/thermal/thermal_zone9": "cpu-1-0-usr", "/sys/class/thermal/thermal_zone40": "battery"}
    assert p.thermal_temp_paths(zones) == ["/sys/class/thermal/thermal_zone12/temp",
                                           "/sys/class/thermal/thermal_zone9/temp"]


def _user_profile(**over) -> dict:
    d = json.loads((builtin_dir() / "pixel4.json").read_text())
    d.update(name="myphone", **over)
    return d


def test_user_profile_by_path(tmp_path):
    path = tmp_path / "myphone.json"
    path.write_text(json.dumps(_user_profile(core_index=4, taskset_mask="0x10", max_freq_khz=2419200)))
    p = load_profile(path)
    assert (p.name, p.core_index, p.taskset_mask) == ("myphone", 4, "10")
    assert load_profile(str(path)).core_index == 4


def test_user_profile_directory_from_env(tmp_path, monkeypatch):
    (tmp_path / "myphone.json").write_text(json.dumps(_user_profile()))
    (tmp_path / "other.json").write_text(json.dumps(_user_profile()))  # named "myphone" inside
    monkeypatch.setenv("HIL_ANDROID_PROFILES", str(tmp_path))
    assert "myphone" in list_profiles() and load_profile("myphone").name == "myphone"
    with pytest.raises(ProfileError, match="must equal the file name"):
        load_profile("other")


def test_unknown_name_lists_builtins():
    with pytest.raises(ProfileError) as e:
        load_profile("pixel9")
    assert "unknown device profile 'pixel9'" in str(e.value) and "pixel4" in str(e.value) and "kirin9000" in str(e.value)
    with pytest.raises(ProfileError, match="built-in profiles: .*pixel4"):
        load_profile("/nonexistent/phone.json")


def test_bad_user_files(tmp_path):
    bad_json = tmp_path / "a.json"
    bad_json.write_text('{"name": "a",\n  "soc": }')
    with pytest.raises(ProfileError, match="not valid JSON.*line 2"):
        load_profile(bad_json)
    cases = {
        "mask.json": (_user_profile(taskset_mask="10"), "does not include core_index 7"),
        "hex.json": (_user_profile(taskset_mask="cpu7"), "taskset_mask"),
        "typo.json": (_user_profile(max_temp=40), "max_temp"),
        "flag.json": (_user_profile(benchmark={"num_threads": 1, "extra_args": ["--a=1 --b=2"]}), "extra_args"),
        "threads.json": (_user_profile(benchmark={"num_threads": 2}), "num_threads=2 exceeds"),
        "path.json": (_user_profile(cpufreq_paths={"cur": "cpu7/scaling_cur_freq"}), "cpufreq_paths"),
    }
    for fname, (data, needle) in cases.items():
        f = tmp_path / fname
        f.write_text(json.dumps(data))
        with pytest.raises(ProfileError) as e:
            load_profile(f)
        assert needle in str(e.value), (fname, str(e.value))
    missing = _user_profile()
    del missing["soc"]
    with pytest.raises(ProfileError, match="soc"):
        load_profile(_write(tmp_path / "m.json", missing))
    assert DeviceProfile.model_validate(_user_profile(taskset_mask="0xF0")).taskset_mask == "f0"


def _write(path, data):
    path.write_text(json.dumps(data))
    return path
