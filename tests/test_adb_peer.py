"""The ADB test peer (tests/adb_peer.py) and the Android agent (profilers/android/device.py) against it: wire
protocol, auth, sync, the shell, benchmark_model's emulation, and the agent's handling of faults."""
from __future__ import annotations

import io
import socket
import struct
import time
from pathlib import Path

import pytest

from profilers.android.benchmark_output import BenchmarkErrorKind, BenchmarkOutputError, parse_benchmark_output
from profilers.android.device import AndroidDevice, AndroidError
from profilers.android.profiles import load_profile
from tests.adb_peer import (A_CLSE, A_CNXN, A_OPEN, HEADER, ROOT_UID, SHELL_UID, AdbPeer, Shell, adb_peer,  # noqa: F401
                            pack_message)

REMOTE = "/data/local/tmp/hil"
BENCH = "benchmark_model --graph"  # fault pattern for the measuring command only (not `chmod .../benchmark_model`)


# --------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def tflite_model(tmp_path_factory) -> Path:
    from exporters.kernel_models import KernelConfig, export_kernel

    path = tmp_path_factory.mktemp("model") / "conv.tflite"
    # big enough that one invoke takes tens of us: benchmark_model prints whole microseconds, and on the Zen 5
    # host an 8x8x8 conv ran in under 1 us, so its min printed as 0
    export_kernel(KernelConfig(type="conv-bn-relu", hw=32, cin=32, cout=32, kernel=3), "tflite", path)
    return path


@pytest.fixture
def binary(tmp_path) -> Path:
    """Stands in for TFLite's Android benchmark_model: the peer emulates whatever is pushed under that name."""
    p = tmp_path / "benchmark_model"
    p.write_bytes(b"\x7fELF\x02\x01\x01" + bytes(9) + struct.pack("<HH", 2, 183) + bytes(64))
    return p


@pytest.fixture(scope="module")
def profile():
    return load_profile("pixel4")


@pytest.fixture(scope="module")
def fast(profile):
    """pixel4 with short runs, for tests that do not check the run counts."""
    return profile.model_copy(update={"benchmark": profile.benchmark.model_copy(update={
        "warmup_runs": 3, "warmup_min_secs": 0.02, "num_runs": 10, "min_secs": 0.05})})


def device(peer: AdbPeer, profile, binary: Path, key_dir: Path, **kw) -> AndroidDevice:
    return AndroidDevice(f"127.0.0.1:{peer.port}", profile, binary, key_dir=key_dir, **kw)


def signer(key_dir: Path):
    from adb_shell.auth.keygen import keygen
    from adb_shell.auth.sign_pythonrsa import PythonRSASigner

    key = key_dir / "adbkey"
    if not key.exists():
        key_dir.mkdir(parents=True, exist_ok=True)
        keygen(str(key))
    return PythonRSASigner((key_dir / "adbkey.pub").read_text(), key.read_text())


def raw_device(peer: AdbPeer, key_dir: Path, auth_timeout_s: float = 2.0):
    from adb_shell.adb_device import AdbDeviceTcp

    dev = AdbDeviceTcp(peer.host, peer.port, default_transport_timeout_s=5)
    dev.connect(rsa_keys=[signer(key_dir)], auth_timeout_s=auth_timeout_s, read_timeout_s=5)
    return dev


def sh(peer: AdbPeer, cmd: str, uid: int = SHELL_UID) -> tuple[int, str]:
    """Run a command in the peer's shell without the network."""
    buf = bytearray()
    status = Shell(peer, uid, buf.extend, buf.extend).run(cmd)
    return status, buf.decode()


# --------------------------------------------------------------------------------------------- wire, auth, sync


def test_raw_adb_shell_push_stat_pull_list(adb_peer, tmp_path):
    dev = raw_device(adb_peer, tmp_path / "keys")
    assert adb_peer.host_banners[-1].startswith("host::")
    assert adb_peer.auth_events == ["token", "signature-bad", "token", "pubkey-accepted"]
    assert dev.shell("getprop ro.product.model") == "Pixel 4\n"
    assert dev.shell("echo $(getprop ro.soc.model) && uname -m") == "SM8150\naarch64\n"

    data = bytes(range(256)) * 1300  # 332,800 bytes: several DATA chunks and WRTE flushes
    dev.push(io.BytesIO(data), f"{REMOTE}/blob.bin", st_mode=0o100755, mtime=1_650_000_000)
    mode, size, mtime = dev.stat(f"{REMOTE}/blob.bin")
    assert (mode, size, mtime) == (0o100755, len(data), 1_650_000_000)
    assert adb_peer.pushed[f"{REMOTE}/blob.bin"].read_bytes() == data
    back = io.BytesIO()
    dev.pull(f"{REMOTE}/blob.bin", back)
    assert back.getvalue() == data
    names = {bytes(f.filename).decode() for f in dev.list(REMOTE)}
    assert names == {".", "..", "blob.bin"}
    assert dev.stat("/no/such/file") == (0, 0, 0)
    assert dev.shell(f"ls -l {REMOTE}").splitlines()[-1].startswith("-rwxr-xr-x 1 shell shell")
    dev.close()

    again = raw_device(adb_peer, tmp_path / "keys")  # the key was "always allowed": the signature is enough
    assert adb_peer.auth_events[-2:] == ["token", "signature-ok"]
    assert len(adb_peer.key_requests) == 1
    assert again.shell("id -u") == "2000\n"
    again.close()
    assert adb_peer.protocol_errors == []


def test_auth_verifies_signatures_and_refuses_unknown_keys(tmp_path):
    from adb_shell.auth.sign_pythonrsa import PythonRSASigner
    from adb_shell.exceptions import TcpTimeoutException

    good = signer(tmp_path / "good")
    other = signer(tmp_path / "other")
    with AdbPeer(tmp_path / "phone", accept_new_keys=False, trusted_keys=[good.GetPublicKey()]) as peer:
        dev = raw_device(peer, tmp_path / "good")  # trusted in advance: no dialog
        assert peer.auth_events == ["token", "signature-ok"]
        dev.close()

        # the trusted public key with someone else's private key: the signature fails, the key is offered, refused
        from adb_shell.adb_device import AdbDeviceTcp

        impostor = PythonRSASigner(good.GetPublicKey(), (tmp_path / "other" / "adbkey").read_text())
        bad = AdbDeviceTcp(peer.host, peer.port, default_transport_timeout_s=5)
        with pytest.raises(TcpTimeoutException):
            bad.connect(rsa_keys=[impostor], auth_timeout_s=0.3, read_timeout_s=2)
        bad.close()
        assert peer.auth_events[-4:] == ["token", "signature-bad", "token", "pubkey-refused"]
        del other


def test_peer_drops_bad_checksum_and_closes_unknown_services(tmp_path):
    with AdbPeer(tmp_path / "phone", require_auth=False) as peer:
        def exchange(s, message):
            s.sendall(message)
            hdr = s.recv(HEADER.size, socket.MSG_WAITALL)
            if not hdr:
                return None
            cmd, a0, a1, n, crc, magic = HEADER.unpack(hdr)
            return cmd, a0, a1, s.recv(n, socket.MSG_WAITALL) if n else b""

        with socket.create_connection((peer.host, peer.port), timeout=5) as s:
            cmd, a0, _, banner = exchange(s, pack_message(A_CNXN, 0x01000000, 4096, b"host::test\0"))
            assert cmd == A_CNXN and banner.startswith(b"device::ro.product.name=flame;ro.product.model=Pixel 4;")
            assert b"features=cmd," in banner and b"shell_v2" not in banner
            assert exchange(s, pack_message(A_OPEN, 7, 0, b"frobnicate:\0"))[:3] == (A_CLSE, 0, 7)
        with socket.create_connection((peer.host, peer.port), timeout=5) as s:
            msg = bytearray(pack_message(A_CNXN, 0x01000000, 4096, b"host::test\0"))
            msg[16] ^= 1  # checksum
            assert exchange(s, bytes(msg)) is None
        assert peer.protocol_errors and "bad checksum" in peer.protocol_errors[-1]


# --------------------------------------------------------------------------------------------- shell


def test_shell_interpreter(adb_peer):
    p = adb_peer
    assert sh(p, "getprop ro.product.model; echo __HIL_EXIT=$?") == (0, "Pixel 4\n__HIL_EXIT=0\n")
    assert sh(p, "getprop no.such.prop") == (0, "\n")
    status, out = sh(p, "for z in /sys/class/thermal/thermal_zone*; do echo \"$z $(cat $z/type) $(cat $z/temp)\"; "
                        "done; echo __HIL_EXIT=$?")
    lines = out.splitlines()
    assert len(lines) == 31 and lines[-1] == "__HIL_EXIT=0"
    assert "/sys/class/thermal/thermal_zone14 cpu-1-7-usr 36100" in lines
    assert sh(p, "foo --bar; echo __HIL_EXIT=$?") == (0, "/system/bin/sh: foo: inaccessible or not found\n"
                                                         "__HIL_EXIT=127\n")
    assert sh(p, "cat /sys/devices/system/cpu/cpu7/cpufreq/scaling_cur_freq") == (0, "2016000\n")
    assert sh(p, "cat /sys/devices/system/cpu/cpu7/cpufreq/cpuinfo_cur_freq")[0] == 1  # 0400 root
    status, out = sh(p, "echo performance > /sys/devices/system/cpu/cpu7/cpufreq/scaling_governor")
    assert status == 1 and "Permission denied" in out
    assert sh(p, "id")[1].startswith("uid=2000(shell) gid=2000(shell)")
    assert sh(p, "su -c id")[0] == 127  # a user build has no su
    assert sh(p, "true && echo a || echo b; false && echo c || echo d") == (0, "a\nd\n")
    assert sh(p, "x='a b'; for w in $x \"$x\"; do echo \"<$w>\"; done") == (0, "<a>\n<b>\n<a b>\n")
    assert sh(p, "echo '$HOME' \"$HOME\" \\$HOME") == (0, "$HOME / $HOME\n")
    assert sh(p, "ls /sys/class/thermal | grep zone2 | wc -l") == (0, "11\n")
    assert sh(p, "cat /nope 2>/dev/null; echo $?") == (0, "1\n")
    assert sh(p, "mkdir -p /data/local/tmp/hil/x && echo hi > /data/local/tmp/hil/x/f && cat /data/local/tmp/hil/x/f"
                 " && rm -f /data/local/tmp/hil/x/f /data/local/tmp/hil/x/missing; echo $?") == (0, "hi\n0\n")
    assert sh(p, "if [ -d /data/local/tmp/hil ]; then echo yes; else echo no; fi") == (0, "yes\n")
    assert sh(p, "uname -m; uname -r") == (0, "aarch64\n4.14.261-gd8e9fb3d3b4d-ab8402046\n")
    assert sh(p, "taskset 80 echo pinned") == (0, "pinned\n")
    assert p.tasksets[-1] == ("80", ["echo", "pinned"])
    assert sh(p, "taskset 100 echo x")[0] == 1  # no cpu8 on this phone
    status, out = sh(p, "for z in; do")
    assert status == 1 and "syntax error" in out
    # as root: sysfs writes work and move the clock like the kernel would
    assert sh(p, "echo performance > /sys/devices/system/cpu/cpu7/cpufreq/scaling_governor && "
                 "cat /sys/devices/system/cpu/cpufreq/policy7/scaling_cur_freq", uid=ROOT_UID) == (0, "2841600\n")


# --------------------------------------------------------------------------------------------- benchmark_model


def _run_benchmark(peer: AdbPeer, model: Path | None, args: str, binary: Path, mode: int = 0o755) -> tuple[int, str]:
    peer.write_file(f"{REMOTE}/benchmark_model", binary.read_bytes(), mode=mode)
    if model is not None:
        peer.write_file(f"{REMOTE}/m.tflite", model.read_bytes(), mode=0o644)
    return sh(peer, f"taskset 80 {REMOTE}/benchmark_model --graph={REMOTE}/m.tflite {args} 2>&1")


def test_benchmark_model_output_parses(adb_peer, tflite_model, binary):
    status, out = _run_benchmark(adb_peer, tflite_model, "--num_threads=1 --use_xnnpack=true --warmup_runs=3 "
                                 "--warmup_min_secs=0 --num_runs=7 --min_secs=0.2 --max_secs=150", binary)
    assert status == 0, out
    assert out.startswith("INFO: STARTING!\n") and "INFO: Loaded model /data/local/tmp/hil/m.tflite" in out
    assert "Running benchmark for at least 7 iterations and at least 0.2 seconds but terminate if exceeding 150 " \
           "seconds." in out
    r = parse_benchmark_output(out, exit_code=status)
    assert r.count > 7  # min_secs keeps it running past num_runs
    assert r.requested_num_runs == 7 and r.warmup is not None and r.warmup.count >= 3
    assert r.summary_format == "inference-timings" and r.inference_avg_us == pytest.approx(r.avg_us, rel=1e-3)
    assert r.num_threads == 1 and r.use_xnnpack is True and r.graph == f"{REMOTE}/m.tflite"
    assert r.memory is not None and r.model_size_mb == pytest.approx(tflite_model.stat().st_size / 1e6, rel=1e-3)
    assert 0 < r.min_us <= r.avg_us <= r.max_us
    assert adb_peer.benchmarks[-1]["params"]["num_runs"] == 7 and adb_peer.benchmarks[-1]["affinity"] == "80"


@pytest.mark.parametrize("case, kind, text", [
    ("missing-model", BenchmarkErrorKind.MODEL_ERROR, "Could not open"),
    ("garbage-model", BenchmarkErrorKind.MODEL_ERROR, "should be 'TFL3'"),
    ("truncated-model", BenchmarkErrorKind.MODEL_ERROR, "Failed to initialize the interpreter"),
    ("not-executable", BenchmarkErrorKind.TOOL_MISSING, "Permission denied"),
    ("no-binary", BenchmarkErrorKind.TOOL_MISSING, "No such file or directory"),
    ("bad-flag", BenchmarkErrorKind.FAILED, "Benchmarking failed"),
])
def test_benchmark_model_failures(adb_peer, tflite_model, binary, tmp_path, case, kind, text):
    model, mode, args = tflite_model, 0o755, "--num_runs=3 --min_secs=0"
    if case == "missing-model":
        model = None
    elif case == "garbage-model":
        model = tmp_path / "g.tflite"
        model.write_bytes(b"definitely not a flatbuffer" * 4)
    elif case == "truncated-model":
        model = tmp_path / "t.tflite"
        model.write_bytes(tflite_model.read_bytes()[:160])
    elif case == "not-executable":
        mode = 0o644
    elif case == "bad-flag":
        args = "--num_runs=many"
    if case == "no-binary":
        status, out = sh(adb_peer, f"taskset 80 {REMOTE}/benchmark_model --graph=x.tflite 2>&1")
    else:
        status, out = _run_benchmark(adb_peer, model, args, binary, mode)
    assert status != 0
    with pytest.raises(BenchmarkOutputError) as e:
        parse_benchmark_output(out, exit_code=status)
    assert e.value.kind == kind and text in out, out


# --------------------------------------------------------------------------------------------- the Android agent


def test_connect_facts_and_fingerprint(adb_peer, fast, binary, tmp_path):
    dev = device(adb_peer, fast, binary, tmp_path)
    dev.connect()
    assert dev.facts == {"model": "Pixel 4", "manufacturer": "Google", "soc": "SM8150", "platform": "msmnile",
                         "release": "12", "sdk": "31", "abi": "arm64-v8a", "serial": "9A281FFAZ0041Q", "rooted": "0"}
    fp = dev.fingerprint()
    assert fp.android["model"] == "Pixel 4" and fp.android["soc"] == "SM8150" and fp.core == 7
    assert fp.governor == "schedutil" and fp.freq_khz == 2016000 and fp.freq_max_khz == 2841600
    assert fp.os == "Android 12 (API 31)" and fp.hostname == "9A281FFAZ0041Q"
    assert 36.0 <= max(dev.temperatures()) <= 36.2  # cpu-1-*-usr zones only
    adb_peer.write_file("/sys/devices/virtual/thermal/thermal_zone14/temp", "45300\n")
    assert max(dev.temperatures()) == pytest.approx(45.3)
    assert (tmp_path / "adbkey").is_file() and len(adb_peer.trusted_keys) == 1
    dev.close()


def test_measure_with_the_pixel4_profile(adb_peer, profile, tflite_model, binary, tmp_path):
    dev = device(adb_peer, profile, binary, tmp_path)
    m = dev.measure(tflite_model)
    assert m.ok, m.error
    assert m.n >= profile.benchmark.num_runs and m.latency_ms > 0 and m.warmups >= profile.benchmark.warmup_runs
    assert m.device_state["benchmark_count"] == m.n and m.device_state["governor"] == "schedutil"
    assert m.fingerprint.android["model"] == "Pixel 4"
    assert not m.stable and "95%" in m.reason  # scaling_cur_freq 2016000 < 0.95 * 2841600
    mask, argv = adb_peer.tasksets[-1]
    assert mask == "80" and argv[0] == f"{REMOTE}/benchmark_model" and "--num_threads=1" in argv
    remote = f"{REMOTE}/{m.model_sha256[:16]}.tflite"
    assert f"--graph={remote}" in argv and remote in adb_peer.pushed and not adb_peer.pushed[remote].exists()
    assert adb_peer.fs.mode_uid(f"{REMOTE}/benchmark_model")[0] == 0o755


def test_measure_rooted_sets_performance_governor(tmp_path, fast, tflite_model, binary):
    with AdbPeer(tmp_path / "phone", rooted=True) as peer:
        dev = device(peer, fast, binary, tmp_path)
        m = dev.measure(tflite_model)
        assert m.ok and dev.facts["rooted"] == "1"
        assert m.device_state["governor"] == "performance" and m.device_state["cur"] == "2841600"
        assert m.fingerprint.freq_khz == 2841600
        assert not peer.errors


def test_garbage_tflite_is_a_failed_measurement(adb_peer, fast, binary, tmp_path):
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"\x00" * 64)
    m = device(adb_peer, fast, binary, tmp_path).measure(bad)
    assert not m.ok and m.error_kind == "model-error" and "TFL3" in m.error


def test_refused_auth_says_tap_allow(tmp_path, fast, binary):
    with AdbPeer(tmp_path / "phone", accept_new_keys=False) as peer:
        dev = device(peer, fast, binary, tmp_path, connect_timeout_s=0.5)
        with pytest.raises(AndroidError, match="tap Allow"):
            dev.connect()
        assert peer.auth_events[-1] == "pubkey-refused"
        # the user taps Allow on the next attempt
        peer.accept_new_keys = True
        dev.connect_timeout_s = 10.0
        dev.connect()
        assert dev.facts["model"] == "Pixel 4"
        # and a phone whose dialog is dismissed at run time
        peer.trusted_keys.clear()
        peer.faults.refuse_auth = True
        with pytest.raises(AndroidError, match="tap Allow"):
            device(peer, fast, binary, tmp_path, connect_timeout_s=0.5).connect()


@pytest.mark.parametrize("mode", ["rst", "fin"])
def test_connection_dropped_mid_benchmark_is_retryable(adb_peer, fast, tflite_model, binary, tmp_path, mode):
    # fin: adb-shell 0.4.4 only notices an orderly close when read_timeout_s runs out, hence the short timeout_s
    dev = device(adb_peer, fast, binary, tmp_path, timeout_s=2.0)
    adb_peer.faults.drop_on, adb_peer.faults.drop_after_bytes = BENCH, 400
    adb_peer.faults.drop_mode, adb_peer.faults.times = mode, 1
    with pytest.raises(AndroidError) as e:
        dev.measure(tflite_model)
    assert e.value.retryable and dev.dev is None
    assert adb_peer.drops == [mode]
    m = dev.measure(tflite_model)  # reconnects, pushes again, measures
    assert m.ok and adb_peer.connections == 2


def test_connection_dropped_when_the_command_starts(adb_peer, fast, tflite_model, binary, tmp_path):
    dev = device(adb_peer, fast, binary, tmp_path)
    adb_peer.faults.drop_on, adb_peer.faults.drop_mode = BENCH, "rst"
    with pytest.raises(AndroidError) as e:
        dev.measure(tflite_model)
    assert e.value.retryable


def test_connection_dropped_during_a_push(adb_peer, fast, tflite_model, binary, tmp_path):
    dev = device(adb_peer, fast, binary, tmp_path)
    dev.connect()
    adb_peer.faults.drop_on, adb_peer.faults.drop_mode = r"^sync:$", "rst"
    with pytest.raises(AndroidError, match="adb push benchmark_model") as e:
        dev.measure(tflite_model)
    assert e.value.retryable and dev.dev is None


def test_garbage_on_the_wire_is_android_error(adb_peer, fast, tflite_model, binary, tmp_path):
    dev = device(adb_peer, fast, binary, tmp_path)
    adb_peer.faults.garbage_on = BENCH
    with pytest.raises(AndroidError, match="InvalidCommandError") as e:
        dev.measure(tflite_model)
    assert e.value.retryable
    adb_peer.faults.garbage_on = None
    adb_peer.faults.garbage_on_connect = True
    with pytest.raises(AndroidError, match="cannot connect"):
        dev.connect()


def test_benchmark_crash_is_retryable(adb_peer, fast, tflite_model, binary, tmp_path):
    adb_peer.faults.benchmark_signal = 11
    with pytest.raises(AndroidError, match="crashed") as e:
        device(adb_peer, fast, binary, tmp_path).measure(tflite_model)
    assert e.value.retryable


def test_delayed_responses_still_work(adb_peer, fast, binary, tmp_path):
    adb_peer.faults.delay_s = 0.01
    dev = device(adb_peer, fast, binary, tmp_path)
    t0 = time.perf_counter()
    dev.connect()
    assert dev.facts["model"] == "Pixel 4" and time.perf_counter() - t0 > 0.2


def test_benchmark_silent_longer_than_connect_timeout(adb_peer, fast, tflite_model, binary, tmp_path):
    dev = device(adb_peer, fast, binary, tmp_path, connect_timeout_s=1.0, timeout_s=30)
    adb_peer.faults.stall_on, adb_peer.faults.stall_s = BENCH, 1.5
    assert dev.measure(tflite_model).ok


def test_eof_aware_transport_notices_an_orderly_close_at_once(adb_peer, tmp_path):
    """The fix suggested for device.py: adb-shell 0.4.4's TcpTransport returns b'' forever after the phone closes
    the connection (the reader spins until read_timeout_s); raising on EOF makes a drop immediate."""
    from adb_shell.adb_device import AdbDevice
    from adb_shell.transport.tcp_transport import TcpTransport

    class EofTcpTransport(TcpTransport):
        def bulk_read(self, numbytes, transport_timeout_s):
            data = super().bulk_read(numbytes, transport_timeout_s)
            if not data:
                raise ConnectionResetError(f"{self._host}:{self._port} closed the connection")
            return data

    dev = AdbDevice(EofTcpTransport(adb_peer.host, adb_peer.port), default_transport_timeout_s=10)
    dev.connect(rsa_keys=[signer(tmp_path)], auth_timeout_s=2)
    adb_peer.faults.drop_on, adb_peer.faults.drop_mode = r"^sleep", "fin"
    t0 = time.perf_counter()
    with pytest.raises(ConnectionResetError):
        dev.shell("sleep 5", transport_timeout_s=60, read_timeout_s=60, timeout_s=60)
    assert time.perf_counter() - t0 < 2
